package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/rauta-lb/rauta/tools/impair"
	"github.com/rauta-lb/rauta/tools/testbed"
)

// The issue asks for a 50 MB response and a 10 MB upload byte-exact through
// the HTTP fast path under `tc netem` loss, delay and reordering on both
// sides. This kernel has no sch_netem (nor sch_fq for EDT), so
// tools/impair stands in for it; see its package comment for how.

// impairPoint is one interface impaired in the testbed.
type impairPoint struct {
	name  string // for messages: which directions it covers
	ns    *testbed.Namespace
	iface string
	im    *impair.Impairer
}

// impairBothLegs impairs both directions of both legs of the path:
//
//	client eth0   ingress: LB -> client      egress: client -> LB
//	switch "lb"   ingress: LB -> backends    egress: backends -> LB
//
// Why these interfaces: the LB forwards with XDP redirects, which hand
// frames straight to the peer veth (client eth0, switch port "lb") without
// passing the LB interfaces' TC egress, so the LB -> client and
// LB -> backend directions can only be impaired where they are received.
// impair does that in XDP, one wire frame at a time (TC ingress would see
// GRO aggregates on these veths, whose GRO the testbed turns on). The
// other two directions are impaired in TCX egress of the same two
// interfaces, before they reach the LB's XDP, and the LB namespace is left
// exactly as in production: only rauta's programs run there.
func impairBothLegs(t *testing.T, tb *testbed.Testbed, cfg impair.Config) []*impairPoint {
	t.Helper()
	points := []*impairPoint{
		{name: "client eth0 (in: LB->client, out: client->LB)", ns: tb.Client, iface: "eth0"},
		{name: `switch "lb" (in: LB->backends, out: backends->LB)`, ns: tb.Switch, iface: "lb"},
	}
	for _, p := range points {
		idx, err := p.ns.InterfaceIndex(p.iface)
		if err != nil {
			t.Fatal(err)
		}
		err = p.ns.Do(func() error {
			var err error
			p.im, err = impair.Attach(idx, cfg)
			return err
		})
		if err != nil {
			t.Fatalf("impair %s: %v", p.name, err)
		}
		t.Cleanup(func() {
			if err := p.im.Close(); err != nil {
				t.Errorf("close impairer on %s: %v", p.name, err)
			}
		})
	}
	return points
}

// impairedClient is client() with a timeout for lossy transfers.
//
// Spliced connections negotiate SACK when the client offers it (XDP moves
// the client's SACK blocks into the backend's sequence space); with it the
// 50 MB download under 1% loss on both legs takes well under a second here.
// Before SACK it took 12 s to over 180 s (NewReno recovers one loss per
// round trip, and lost retransmissions cost a timeout each), so a transfer
// that needs the whole timeout points at SACK translation.
func impairedClient(tb *testbed.Testbed) *http.Client {
	c := client(tb, false)
	c.Timeout = 60 * time.Second
	return c
}

func TestHTTPFastPathImpaired(t *testing.T) {
	requireRoot(t)
	const (
		down = 50 << 20
		up   = 10 << 20
	)
	cases := []struct {
		name string
		cfg  impair.Config
	}{
		{"clean", impair.Config{}},
		{"loss1pct", impair.Config{Loss: 0.01}},
		{"delay5ms_reorder2pct", impair.Config{Delay: 5 * time.Millisecond, Reorder: 0.02}},
		{"combined", impair.Config{Loss: 0.01, Delay: 5 * time.Millisecond, Reorder: 0.02}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb := testbed.NewT(t, testbed.Options{Backends: 3})
			startBackends(t, tb)
			startDaemon(t, tb, httpConfig)
			points := impairBothLegs(t, tb, tc.cfg)
			c := impairedClient(tb)

			start := time.Now()
			checkDownload(t, c, fmt.Sprintf("%sbytes/%d", vipURL, down), down)
			tDown := time.Since(start)
			start = time.Now()
			checkUpload(t, c, vipURL+"upload", up)
			tUp := time.Since(start)
			t.Logf("50 MB down in %v, 10 MB up in %v", tDown.Round(time.Millisecond), tUp.Round(time.Millisecond))

			for _, p := range points {
				s, err := p.im.Stats()
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s: %v", p.name, s)
				for _, d := range []struct {
					dir string
					c   impair.Counters
				}{{"in", s.Ingress}, {"out", s.Egress}} {
					what := p.name + " " + d.dir
					switch {
					case d.c.Seen < 1000:
						t.Errorf("%s: only %d packets seen: traffic did not pass here", what, d.c.Seen)
					case d.c.Oversize > 0 || d.c.RingFull > 0 || d.c.SendErrors > 0:
						t.Errorf("%s: packets escaped the impairment: %v", what, d.c)
					case tc.cfg.Loss > 0 && d.c.Dropped == 0:
						t.Errorf("%s: nothing was lost: %v", what, d.c)
					case tc.cfg.Reorder > 0 && d.c.Reordered == 0:
						t.Errorf("%s: nothing was reordered: %v", what, d.c)
					case tc.cfg.Delay > 0 && d.c.Delayed+d.c.Dropped != d.c.Seen:
						t.Errorf("%s: not every packet was delayed or lost: %v", what, d.c)
					}
				}
			}
		})
	}
}
