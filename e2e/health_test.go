package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rauta-lb/rauta/tools/backend"
	"github.com/rauta-lb/rauta/tools/testbed"
)

const healthConfig = `interfaces: [eth1, eth2]
bpffs: %PINS%
metrics:
  listen: 10.0.2.1:9100
services:
  - name: l4
    vip: 10.0.0.100
    port: 80
    protocol: tcp
    pool: tcp
  - name: site
    vip: 10.0.0.100
    port: 8080
    protocol: http
    routes:
      - path: /
        pool: app
pools:
  app:
    health_check: {interval: 100ms, timeout: 100ms, fall: 2, rise: 2, http_path: /healthz}
    backends:
      - address: 10.0.1.11:80
      - address: 10.0.1.12:80
  # The L4 service reaches the backends on another port: a client port
  # reused across the two services would otherwise meet its own TIME_WAIT
  # on the backend (docs/ARCHITECTURE.md, fast path step 6).
  tcp:
    health_check: {interval: 100ms, timeout: 100ms, fall: 2, rise: 2}
    backends:
      - address: 10.0.1.11:81
      - address: 10.0.1.12:81
`

// A backend that stops answering its health check gets no new connection
// on any path (XDP L4, the XDP HTTP fast path, the slow path) while it is
// down, and gets them again once it is back.
func TestHealthChecksDrainAndRestoreBackends(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tb := testbed.NewT(t, testbed.Options{Backends: 2})
	serve := func(i int) *backend.Server {
		srv := backend.New(fmt.Sprintf("b%d", i))
		for _, port := range []string{":80", ":81"} {
			ln, err := tb.Backends[i-1].Listen("tcp", port)
			if err != nil {
				t.Fatalf("backend %d: %v", i, err)
			}
			go srv.Serve(ln)
		}
		t.Cleanup(func() { srv.Close() })
		return srv
	}
	serve(1)
	b2 := serve(2)
	d := startDaemon(t, tb, healthConfig)
	c := client(tb, false) // a fresh connection, so a fresh backend choice, per request

	urls := []string{"http://10.0.0.100/", "http://10.0.0.100:8080/", "http://10.0.0.100:8080/%69ndex.html"}
	spread := func() map[string]int {
		t.Helper()
		seen := map[string]int{}
		for _, u := range urls {
			for range 30 {
				seen[get(t, c, u).Backend]++
			}
		}
		return seen
	}
	if seen := spread(); seen["b1"] == 0 || seen["b2"] == 0 {
		t.Fatalf("both backends up: want both to serve, got %v", seen)
	}

	b2.Close()
	// The daemon's log lines (logfmt) name each transition.
	for _, b := range []string{"pool=app backend=10.0.1.12:80", "pool=tcp backend=10.0.1.12:81"} {
		if err := d.waitLog(b+" fall=2", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.waitLog(`health change applied" backends_down=2`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if seen := spread(); seen["b2"] != 0 || seen["b1"] != 3*30 {
		t.Fatalf("b2 down: every request belongs to b1, got %v", seen)
	}
	metrics := curl(t, tb, "http://10.0.2.1:9100/metrics")
	for _, want := range []string{
		`rauta_backend_up{backend="10.0.1.11:80",pool="app"} 1`,
		`rauta_backend_up{backend="10.0.1.12:80",pool="app"} 0`,
		`rauta_backend_up{backend="10.0.1.12:81",pool="tcp"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	serve(2)
	for _, b := range []string{"pool=app backend=10.0.1.12:80", "pool=tcp backend=10.0.1.12:81"} {
		if err := d.waitLog(b+" rise=2", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.waitLog(`health change applied" backends_down=0`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if seen := spread(); seen["b2"] == 0 {
		t.Fatalf("b2 back up: want it to serve again, got %v", seen)
	}
}
