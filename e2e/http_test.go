package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rauta-lb/rauta/tools/testbed"
)

// httpConfig routes by host and path over three single-backend pools, so
// the answering backend names the pool a request reached.
const httpConfig = `interfaces: [eth1, eth2]
bpffs: %PINS%
services:
  - name: site
    vip: 10.0.0.100
    port: 80
    protocol: http
    routes:
      - host: api.example.com
        path: /v1/
        methods: [GET, POST]
        pool: api
      - path: /healthz
        exact: true
        pool: health
      - path: /
        pool: web
pools:
  api:
    backends:
      - address: 10.0.1.11:80
  health:
    backends:
      - address: 10.0.1.12:80
  web:
    backends:
      - address: 10.0.1.13:80
`

func TestHTTPFastPathRoutes(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tb := testbed.NewT(t, testbed.Options{Backends: 3})
	startBackends(t, tb)
	startDaemon(t, tb, httpConfig)

	cases := []struct {
		host, path, backend string
	}{
		{"api.example.com", "/v1/users", "b1"},
		{"API.Example.com:80", "/v1/users?x=1", "b1"},
		{"other.example.com", "/v1/users", "b3"},
		{"api.example.com", "/v2/", "b3"},
		{"any.example.com", "/healthz", "b2"},
		{"any.example.com", "/healthz?full=1", "b2"},
		{"any.example.com", "/healthzx", "b3"},
		{"any.example.com", "/", "b3"},
	}
	for _, tc := range cases {
		out := curl(t, tb, "-H", "Host: "+tc.host, "-D", "-", vipURL[:len(vipURL)-1]+tc.path)
		if !strings.Contains(out, "X-Backend: "+tc.backend) {
			t.Errorf("Host %s path %s: want backend %s, got:\n%s", tc.host, tc.path, tc.backend, out)
		}
		if !strings.Contains(out, "peer="+tb.ClientAddr.String()+":") {
			t.Errorf("backend did not see the client address: %s", out)
		}
	}
}

func TestHTTPFastPathFreshConnectionsAndLargeTransfers(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tb := testbed.NewT(t, testbed.Options{Backends: 3})
	startBackends(t, tb)
	startDaemon(t, tb, httpConfig)

	// 1,000 fresh connections, none may fail.
	c := client(tb, false)
	counts := map[string]int{}
	for range 1000 {
		counts[get(t, c, vipURL+"index.html").Backend]++
	}
	if counts["b3"] != 1000 {
		t.Fatalf("every request for / belongs to pool web (b3): %v", counts)
	}

	// 50 MB down and 10 MB up, byte-exact, on one spliced connection each.
	checkDownload(t, c, fmt.Sprintf("%sbytes/%d", vipURL, 50<<20), 50<<20)
	checkUpload(t, c, vipURL+"upload", 10<<20)
}

// One keep-alive connection whose requests alternate between two pools:
// each request is answered by its own pool (the connection is rebound), and
// all of them travel on the one client connection.
func TestHTTPKeepAliveAcrossPools(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tb := testbed.NewT(t, testbed.Options{Backends: 3})
	startBackends(t, tb)
	startDaemon(t, tb, httpConfig)

	c := client(tb, true)
	var clientPort string
	for i := range 20 {
		req, _ := http.NewRequest(http.MethodGet, vipURL+"v1/items", nil)
		want := "b1"
		if i%2 == 1 {
			req, _ = http.NewRequest(http.MethodGet, vipURL+"page", nil)
			want = "b3"
		}
		req.Host = "api.example.com"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("X-Backend"); got != want {
			t.Fatalf("request %d (%s) answered by %s, want %s", i, req.URL.Path, got, want)
		}
		_, port, _ := net.SplitHostPort(resp.Header.Get("X-Peer"))
		if clientPort == "" {
			clientPort = port
		} else if port != clientPort {
			t.Fatalf("request %d came from client port %s, the connection's is %s: not one connection", i, port, clientPort)
		}
	}
}

// wrk at 100 connections through the fast path, keep-alive: no socket
// error, no non-2xx answer.
func TestHTTPFastPathUnderWrk(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("wrk not installed (make deps-test installs it)")
	}
	t.Parallel()
	tb := testbed.NewT(t, testbed.Options{Backends: 3})
	startBackends(t, tb)
	startDaemon(t, tb, httpConfig)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := tb.Client.Command(ctx, "wrk", "-t2", "-c100", "-d3s", vipURL).CombinedOutput()
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	text := string(out)
	if strings.Contains(text, "Socket errors") || strings.Contains(text, "Non-2xx") {
		t.Fatalf("wrk saw errors:\n%s", text)
	}
	var requests int
	for _, l := range lines(text) {
		if f := strings.Fields(l); len(f) > 1 && f[1] == "requests" {
			fmt.Sscan(f[0], &requests)
		}
	}
	if requests < 1000 {
		t.Fatalf("wrk completed %d requests in 3s, want at least 1,000:\n%s", requests, text)
	}
	t.Logf("wrk: %d requests, no errors", requests)
}

// The fast path in every attach mode on one testbed: auto (generic on
// these veths, see loader.attachMode), and native and generic as
// configured. Native is the mode whose redirects land in the peer veth's
// NAPI, generic the one whose redirects are skbs.
func TestHTTPFastPathInEveryAttachMode(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tb := testbed.NewT(t, testbed.Options{Backends: 3})
	startBackends(t, tb)
	for _, m := range []struct {
		mode     string
		attached string
	}{
		{"auto", "generic"},
		{"native", "native"},
		{"generic", "generic"},
	} {
		d := startDaemon(t, tb, strings.Replace(httpConfig, "bpffs:", "xdp_mode: "+m.mode+"\nbpffs:", 1))
		assertXDPMode(t, tb, m.attached)
		out := curl(t, tb, "-H", "Host: api.example.com", "-D", "-", vipURL+"v1/users")
		if !strings.Contains(out, "X-Backend: b1") {
			t.Errorf("xdp_mode %s: /v1/users on api.example.com not answered by b1:\n%s", m.mode, out)
		}
		c := client(tb, true)
		checkDownload(t, c, fmt.Sprintf("%sbytes/%d", vipURL, 4<<20), 4<<20)
		checkUpload(t, c, vipURL+"upload", 1<<20)
		c.CloseIdleConnections()
		d.stop()
		assertXDPMode(t, tb, "none")
	}
}

// assertXDPMode checks how the program is attached to the LB's interfaces:
// "native", "generic", or "none" once detached.
func assertXDPMode(t *testing.T, tb *testbed.Testbed, want string) {
	t.Helper()
	for _, name := range []string{tb.LBClientIface, tb.LBBackendIface} {
		got, err := tb.LB.XDPAttachMode(name)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%s: XDP attach mode %s, want %s", name, got, want)
		}
	}
}
