package e2e

import (
	"context"
	"math"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rauta-lb/rauta/tools/testbed"
)

const vipURL = "http://10.0.0.100/"

// l4Config has three backends weighted 1:1:2; {{.}} placeholders are
// filled per test.
func l4Config(backends string) string {
	return `interfaces: [eth1, eth2]
bpffs: %PINS%
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    protocol: tcp
    pool: app
pools:
  app:
    maglev_size: 65537
    backends:
` + backends
}

const threeBackends = `      - address: 10.0.1.11:80
        weight: 1
      - address: 10.0.1.12:80
        weight: 1
      - address: 10.0.1.13:80
        weight: 2
`

func TestL4SpreadsByWeightAndPreservesClientAddress(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tb := testbed.NewT(t, testbed.Options{Backends: 3})
	startBackends(t, tb)
	startDaemon(t, tb, l4Config(threeBackends))

	// curl, as an operator would: the backend saw the client's own address.
	out := curl(t, tb, vipURL)
	if !strings.Contains(out, "peer="+tb.ClientAddr.String()+":") {
		t.Fatalf("backend did not see the client address %s: %q", tb.ClientAddr, out)
	}

	const connections = 1000
	c := client(tb, false)
	counts := map[string]int{}
	for range connections {
		r := get(t, c, vipURL)
		counts[r.Backend]++
		if ip := peerIP(t, r.Peer); ip != tb.ClientAddr.String() {
			t.Fatalf("backend %s saw peer %s, want the client %s", r.Backend, ip, tb.ClientAddr)
		}
	}
	// Weights 1:1:2. Each connection is an independent draw, so the share
	// of a backend has a standard deviation of at most
	// sqrt(0.25/1000) = 1.6%; 6% is more than 3.5 of them.
	want := map[string]float64{"b1": 0.25, "b2": 0.25, "b3": 0.5}
	for name, share := range want {
		got := float64(counts[name]) / connections
		if math.Abs(got-share) > 0.06 {
			t.Errorf("backend %s got %.1f%% of %d fresh connections, want %.0f%% ± 6%% (all: %v)",
				name, 100*got, connections, 100*share, counts)
		}
	}
	t.Logf("spread over %d connections: %v", connections, counts)
}

func TestL4ConnectionStaysOnItsBackend(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tb := testbed.NewT(t, testbed.Options{Backends: 3})
	startBackends(t, tb)
	startDaemon(t, tb, l4Config(threeBackends))

	c := client(tb, true)
	first := get(t, c, vipURL)
	for i := range 100 {
		r := get(t, c, vipURL)
		if r != first {
			t.Fatalf("request %d on one keep-alive connection went to %+v, the first to %+v", i, r, first)
		}
	}
}

func TestL4ReloadRemovesBackendKeepsEstablished(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tb := testbed.NewT(t, testbed.Options{Backends: 3})
	startBackends(t, tb)
	d := startDaemon(t, tb, l4Config(threeBackends))

	// Find a keep-alive connection that landed on b1, the one to remove.
	var pinned *httpClientOn
	for i := 0; i < 200 && pinned == nil; i++ {
		c := client(tb, true)
		if r := get(t, c, vipURL); r.Backend == "b1" {
			pinned = &httpClientOn{client: c, reply: r}
		} else {
			c.CloseIdleConnections()
		}
	}
	if pinned == nil {
		t.Fatal("no connection reached b1 in 200 tries")
	}

	d.reload(l4Config(`      - address: 10.0.1.12:80
        weight: 1
      - address: 10.0.1.13:80
        weight: 2
`))

	fresh := client(tb, false)
	counts := map[string]int{}
	for range 300 {
		counts[get(t, fresh, vipURL).Backend]++
	}
	if counts["b1"] != 0 {
		t.Fatalf("removed backend b1 got %d of 300 new connections: %v", counts["b1"], counts)
	}
	if counts["b2"] == 0 || counts["b3"] == 0 {
		t.Fatalf("remaining backends should share new connections: %v", counts)
	}
	for i := range 20 {
		if r := get(t, pinned.client, vipURL); r != pinned.reply {
			t.Fatalf("established connection moved after reload (request %d): %+v, was %+v", i, r, pinned.reply)
		}
	}
}

type httpClientOn struct {
	client *http.Client
	reply  reply
}

func TestBadConfigAttachesNothing(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tb := testbed.NewT(t, testbed.Options{Backends: 1})
	cases := []struct {
		name, config, want string
	}{
		{"unknown pool", strings.Replace(l4Config(threeBackends), "pool: app", "pool: nope", 1), `:8: services[0].pool: unknown pool "nope"`},
		{"unknown interface", strings.Replace(l4Config(threeBackends), "eth2]", "eth9]", 1), `:1: interfaces[1]: unknown interface "eth9"`},
		{"weight out of range", strings.Replace(l4Config(threeBackends), "weight: 2", "weight: 5000", 1), `:18: pools.app.backends[2].weight: 5000 is out of range`},
	}
	for _, tc := range cases {
		d := launchDaemon(t, tb, tc.config)
		select {
		case <-d.exited:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: daemon still running with a bad config", tc.name)
		}
		exitErr, ok := d.err.(*exec.ExitError)
		if !ok || exitErr.ExitCode() == 0 {
			t.Fatalf("%s: want a non-zero exit, got %v", tc.name, d.err)
		}
		logs := d.logs.String()
		if !strings.Contains(logs, d.config) || !strings.Contains(logs, tc.want) {
			t.Errorf("%s: error should name the file and %q; got:\n%s", tc.name, tc.want, logs)
		}
		assertXDPMode(t, tb, "none")
	}
}

func TestBpftoolPrintsFieldNames(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	if _, err := exec.LookPath("bpftool"); err != nil {
		t.Skip("bpftool not installed (make deps-test installs it)")
	}
	tb := testbed.NewT(t, testbed.Options{Backends: 3})
	startBackends(t, tb)
	d := startDaemon(t, tb, l4Config(threeBackends))
	get(t, client(tb, false), vipURL)

	for m, fields := range map[string][]string{
		"flows":    {"saddr", "dport", "nat_addr", "direction", "last_seen_ns"},
		"services": {"vip", "port", "proto", "table_slot", "table_size"},
		"backends": {"addr", "port"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, "bpftool", "map", "dump", "pinned", d.pinPath+"/"+m).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("bpftool map dump %s: %v\n%s", m, err, out)
		}
		for _, f := range fields {
			if !strings.Contains(string(out), `"`+f+`"`) {
				t.Errorf("bpftool dump of %s lacks field %q:\n%.2000s", m, f, out)
			}
		}
	}
	// Once the daemon stops, its pins and links are gone.
	d.stop()
	if out, err := exec.Command("ls", d.pinPath).CombinedOutput(); err == nil {
		t.Errorf("pins left after exit: %s", out)
	}
	assertXDPMode(t, tb, "none")
}
