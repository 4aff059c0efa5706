package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rauta-lb/rauta/certs"
	"github.com/rauta-lb/rauta/tools/backend"
	"github.com/rauta-lb/rauta/tools/testbed"
)

// slowpathConfig has routes XDP handles and requests that only the slow
// path can: pools api (b1), secret (b2), web (b3) and flaky (b4, a server
// that dies mid-response). %CERTS% is replaced by the https service's
// certificate list.
const slowpathConfig = `interfaces: [eth1, eth2]
bpffs: %PINS%
services:
  - name: site
    vip: 10.0.0.100
    port: 80
    protocol: http
    routes:
      - path: /api/
        pool: api
      - path: /secret/
        pool: secret
      - path: /admin/
        methods: [GET, HEAD]
        pool: api
      - path: /bytes/
        pool: web
      - path: /upload
        pool: web
      - path: /flaky/
        pool: flaky
  - name: site-tls
    vip: 10.0.0.100
    port: 443
    protocol: https
    tls:
      certificates:
%CERTS%
    routes:
      - path: /
        pool: web
pools:
  api:
    backends:
      - address: 10.0.1.11:80
  secret:
    backends:
      - address: 10.0.1.12:80
  web:
    backends:
      - address: 10.0.1.13:80
  flaky:
    backends:
      - address: 10.0.1.14:80
`

// slowBed is a testbed running slowpathConfig with certificates for
// a.example.com (the default) and b.example.com.
type slowBed struct {
	tb *testbed.Testbed
	d  *daemon
	// certFiles are the certificate and key files of each name.
	certFiles map[string][2]string
	config    string
}

func newSlowBed(t *testing.T) *slowBed {
	t.Helper()
	requireRoot(t)
	tb := testbed.NewT(t, testbed.Options{Backends: 4})
	for i, ns := range tb.Backends[:3] {
		ln, err := ns.Listen("tcp", ":80")
		if err != nil {
			t.Fatal(err)
		}
		srv := backend.New(fmt.Sprintf("b%d", i+1))
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	startDyingBackend(t, tb.Backends[3])

	dir := t.TempDir()
	var list strings.Builder
	files := map[string][2]string{}
	for _, name := range []string{"a.example.com", "b.example.com"} {
		cert, key, err := certs.WriteSelfSigned(dir, []string{name})
		if err != nil {
			t.Fatal(err)
		}
		files[name] = [2]string{cert, key}
		fmt.Fprintf(&list, "        - {cert: %s, key: %s}\n", cert, key)
	}
	cfg := strings.Replace(slowpathConfig, "%CERTS%\n", list.String(), 1)
	return &slowBed{tb: tb, d: startDaemon(t, tb, cfg), certFiles: files, config: cfg}
}

// startDyingBackend answers every request with a promise of 1 MB and
// closes the connection after 10 bytes of it.
func startDyingBackend(t *testing.T, ns *testbed.Namespace) {
	t.Helper()
	ln, err := ns.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				r := bufio.NewReader(conn)
				for {
					line, err := r.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n0123456789")
			}()
		}
	}()
}

// raw opens a TCP connection from the client to the VIP.
func (b *slowBed) raw(t *testing.T, port int) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := b.tb.Client.DialContext(ctx, "tcp", fmt.Sprintf("10.0.0.100:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { conn.Close() })
	return conn
}

// response reads one response from conn.
func response(t *testing.T, conn net.Conn, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(body)
}

func TestSlowPathAnswersWhatXDPCannotRoute(t *testing.T) {
	b := newSlowBed(t)

	t.Run("request line and Host in separate segments", func(t *testing.T) {
		conn := b.raw(t, 80)
		conn.(interface{ SetNoDelay(bool) error }).SetNoDelay(true)
		io.WriteString(conn, "GET /api/split HTTP/1.1\r\n")
		time.Sleep(50 * time.Millisecond)
		io.WriteString(conn, "Host: example.com\r\nConnection: close\r\n\r\n")
		resp, body := response(t, conn, "GET")
		if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "b1" || !strings.Contains(body, "path=/api/split") {
			t.Fatalf("got %d from %q: %q", resp.StatusCode, resp.Header.Get("X-Backend"), body)
		}
		// The slow path's own connection: from the LB's backend-side address.
		if peer := peerIP(t, resp.Header.Get("X-Peer")); peer != "10.0.1.1" {
			t.Fatalf("backend saw the request from %s, want the proxy at 10.0.1.1", peer)
		}
	})

	cases := []struct {
		name, path, method string
		status             int
		backend, wantPath  string // wantPath: what the backend must see
	}{
		{"no route", "/nothing/here", "GET", 404, "", ""},
		{"method not allowed", "/admin/x", "DELETE", 405, "", ""},
		{"dot segments", "/api/../secret/x", "GET", 200, "b2", "/secret/x"},
		{"escaped dot segments", "/api/%2e%2e/secret/x", "GET", 200, "b2", "/secret/x"},
		{"escaped unreserved", "/%61pi/x", "GET", 200, "b1", "/api/x"},
		{"repeated slashes", "//secret//x", "GET", 200, "b2", "/secret/x"},
		{"above the root", "/../secret/x", "GET", 400, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn := b.raw(t, 80)
			fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n", tc.method, tc.path)
			resp, body := response(t, conn, tc.method)
			if resp.StatusCode != tc.status {
				t.Fatalf("%s %s: status %d, want %d: %q", tc.method, tc.path, resp.StatusCode, tc.status, body)
			}
			if got := resp.Header.Get("X-Backend"); got != tc.backend {
				t.Fatalf("%s %s: answered by %q, want %q", tc.method, tc.path, got, tc.backend)
			}
			if tc.status == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
				t.Fatalf("405 Allow = %q, want \"GET, HEAD\"", resp.Header.Get("Allow"))
			}
			if tc.wantPath != "" && !strings.Contains(body, "path="+tc.wantPath+" ") {
				t.Fatalf("backend saw %q, want the normalised path %s", body, tc.wantPath)
			}
		})
	}
}

func TestSlowPathTLSChoosesCertificateBySNI(t *testing.T) {
	b := newSlowBed(t)
	for _, tc := range []struct{ sni, want string }{
		{"a.example.com", "a.example.com"},
		{"b.example.com", "b.example.com"},
		{"", "a.example.com"},
		{"unknown.example.org", "a.example.com"},
	} {
		conn := b.raw(t, 443)
		tc := tc
		tlsConn := tls.Client(conn, &tls.Config{ServerName: tc.sni, InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
		if err := tlsConn.Handshake(); err != nil {
			t.Fatalf("SNI %q: handshake: %v", tc.sni, err)
		}
		state := tlsConn.ConnectionState()
		if got := state.PeerCertificates[0].DNSNames; len(got) == 0 || got[0] != tc.want {
			t.Errorf("SNI %q: certificate for %v, want %s", tc.sni, got, tc.want)
		}
		if state.NegotiatedProtocol != "http/1.1" {
			t.Errorf("SNI %q: ALPN %q, want http/1.1", tc.sni, state.NegotiatedProtocol)
		}
		fmt.Fprintf(tlsConn, "GET /tls HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", tc.want)
		resp, body := response(t, tlsConn, "GET")
		if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "b3" {
			t.Fatalf("SNI %q: %d from %q: %q", tc.sni, resp.StatusCode, resp.Header.Get("X-Backend"), body)
		}
	}
}

func TestSlowPathClosesGarbageCleanly(t *testing.T) {
	b := newSlowBed(t)
	garbage := map[string][]byte{
		"TLS ClientHello on port 80": clientHello(t),
		"HTTP/2 preface":             []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00"),
		"random bytes":               randomBytes(512),
	}
	for name, payload := range garbage {
		t.Run(name, func(t *testing.T) {
			conn := b.raw(t, 80)
			start := time.Now()
			conn.Write(payload)
			// A 400, then the end of the connection: at once, not at the
			// slow path's 10 s header timeout.
			answer, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("connection not closed cleanly: %v", err)
			}
			if !strings.HasPrefix(string(answer), "HTTP/1.1 400 ") {
				t.Errorf("answer %q, want a 400", answer)
			}
			if waited := time.Since(start); waited > 3*time.Second {
				t.Errorf("closed after %v", waited)
			}
			// The next client is served.
			next := b.raw(t, 80)
			io.WriteString(next, "GET /api/%61fter HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
			resp, body := response(t, next, "GET")
			if resp.StatusCode != 200 || !strings.Contains(body, "path=/api/after") {
				t.Fatalf("next client: %d %q", resp.StatusCode, body)
			}
		})
	}
}

func clientHello(t *testing.T) []byte {
	t.Helper()
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	go tls.Client(client, &tls.Config{ServerName: "a.example.com"}).Handshake()
	buf := make([]byte, 4096)
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := server.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// randomBytes are n pseudo-random bytes, the same every run: a test with
// garbage input must not depend on what the garbage happens to be.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{'r', 'a', 'u', 't', 'a'})
	_, _ = r.Read(b)
	return b
}

// slowClient sends requests through the slow path: plain on port 80 (the
// caller escapes a character of the path, which XDP will not route), or
// TLS on 443.
func (b *slowBed) slowClient(tlsOn bool) *http.Client {
	tr := &http.Transport{DialContext: b.tb.Client.DialContext, MaxIdleConns: 1}
	if tlsOn {
		tr.TLSClientConfig = &tls.Config{ServerName: "b.example.com", InsecureSkipVerify: true}
	}
	return &http.Client{Timeout: 60 * time.Second, Transport: tr}
}

func TestSlowPathLargeTransfersByteExact(t *testing.T) {
	b := newSlowBed(t)
	for _, tc := range []struct {
		name string
		tls  bool
		base string
	}{
		{"plain", false, "http://10.0.0.100/%62ytes/"},
		{"tls", true, "https://10.0.0.100/bytes/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := b.slowClient(tc.tls)
			checkDownload(t, c, fmt.Sprintf("%s%d", tc.base, 50<<20), 50<<20)
			url := strings.Replace(tc.base, "/%62ytes/", "/%75pload", 1)
			checkUpload(t, c, strings.Replace(url, "/bytes/", "/upload", 1), 10<<20)
		})
	}
}

func TestSlowPathBackendDyingCostsOneRequest(t *testing.T) {
	b := newSlowBed(t)
	conn := b.raw(t, 80)
	// Keep-alive: the dying backend's request, then a healthy one on a new
	// connection (the proxy closes the client connection whose response it
	// cannot finish).
	io.WriteString(conn, "GET /fl%61ky/x HTTP/1.1\r\nHost: example.com\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		n, copyErr := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if copyErr == nil && n == 1000000 {
			t.Fatal("a response the backend never finished arrived whole")
		}
	}
	next := b.raw(t, 80)
	io.WriteString(next, "GET /api/%61live HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
	resp2, body := response(t, next, "GET")
	if resp2.StatusCode != 200 || !strings.Contains(body, "path=/api/alive") {
		t.Fatalf("next request: %d %q", resp2.StatusCode, body)
	}
}

// TestSlowPathRedirectsToHTTPS: an http service with redirect_https and a
// route serves the route and answers everything else with 308.
func TestSlowPathRedirectsToHTTPS(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tb := testbed.NewT(t, testbed.Options{Backends: 1})
	startBackends(t, tb)
	cert, key, err := certs.WriteSelfSigned(t.TempDir(), []string{"a.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	startDaemon(t, tb, fmt.Sprintf(`interfaces: [eth1, eth2]
bpffs: %%PINS%%
services:
  - name: plain
    vip: 10.0.0.100
    port: 80
    protocol: http
    redirect_https: true
    routes:
      - path: /.well-known/acme-challenge/
        pool: web
  - name: secure
    vip: 10.0.0.100
    port: 443
    protocol: https
    tls:
      certificates:
        - {cert: %s, key: %s}
    routes:
      - path: /
        pool: web
pools:
  web:
    backends:
      - address: 10.0.1.11:80
`, cert, key))
	out := curl(t, tb, "-D", "-", "-o", "/dev/null", "-H", "Host: a.example.com", "http://10.0.0.100/login?next=/x")
	if !strings.Contains(out, "HTTP/1.1 308") || !strings.Contains(out, "Location: https://a.example.com/login?next=/x") {
		t.Fatalf("want a 308 to https, got:\n%s", out)
	}
	out = curl(t, tb, "-D", "-", "-H", "Host: a.example.com", "http://10.0.0.100/.well-known/acme-challenge/token")
	if !strings.Contains(out, "X-Backend: b1") {
		t.Fatalf("the route of a redirecting service must be served, got:\n%s", out)
	}
	out = curl(t, tb, "-k", "-D", "-", "--resolve", "a.example.com:443:10.0.0.100", "https://a.example.com/after-redirect")
	if !strings.Contains(out, "X-Backend: b1") {
		t.Fatalf("https after the redirect: %s", out)
	}
}

// TestSlowPathReloadsCertificatesWithoutDroppingConnections: SIGHUP after
// the certificate files change makes new handshakes use the new
// certificate, while a connection opened before keeps working.
func TestSlowPathReloadsCertificatesWithoutDroppingConnections(t *testing.T) {
	b := newSlowBed(t)
	before := b.tlsConn(t, "b.example.com")
	serial := before.ConnectionState().PeerCertificates[0].SerialNumber

	// Overwrite b's files with a fresh certificate for the same name.
	newCert, newKey, err := certs.WriteSelfSigned(t.TempDir(), []string{"b.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{newCert: b.certFiles["b.example.com"][0], newKey: b.certFiles["b.example.com"][1]} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b.d.reload(b.config)

	after := b.tlsConn(t, "b.example.com")
	if after.ConnectionState().PeerCertificates[0].SerialNumber.Cmp(serial) == 0 {
		t.Fatal("a handshake after SIGHUP still got the old certificate")
	}
	// The connection from before the reload still serves requests.
	for _, conn := range []*tls.Conn{before, after} {
		io.WriteString(conn, "GET /still-here HTTP/1.1\r\nHost: b.example.com\r\n\r\n")
		resp, body := response(t, conn, "GET")
		if resp.StatusCode != 200 || !strings.Contains(body, "path=/still-here") {
			t.Fatalf("after reload: %d %q", resp.StatusCode, body)
		}
	}
}

func (b *slowBed) tlsConn(t *testing.T, sni string) *tls.Conn {
	t.Helper()
	conn := tls.Client(b.raw(t, 443), &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err := conn.Handshake(); err != nil {
		t.Fatalf("handshake %s: %v", sni, err)
	}
	return conn
}

// TestSlowPathMetricsAndNoKernelSYNs: the handoff and the proxy are on
// /metrics, and the LB's kernel answered no SYN itself even though every
// connection ended in a kernel socket.
func TestSlowPathMetricsAndNoKernelSYNs(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tb := testbed.NewT(t, testbed.Options{Backends: 1})
	startBackends(t, tb)
	startDaemon(t, tb, `interfaces: [eth1, eth2]
bpffs: %PINS%
metrics:
  listen: 10.0.2.1:9100
services:
  - name: site
    vip: 10.0.0.100
    port: 80
    protocol: http
    routes:
      - path: /
        pool: web
pools:
  web:
    backends:
      - address: 10.0.1.11:80
`)
	const n = 50
	for i := range n {
		curl(t, tb, "-o", "/dev/null", fmt.Sprintf("http://10.0.0.100/%%69ndex-%d", i))
	}
	out := curl(t, tb, "http://10.0.2.1:9100/metrics")
	for _, want := range []string{
		`rauta_tc_handoff_total{outcome="assigned"} ` + fmt.Sprint(n),
		`rauta_slowpath_requests_total{code="200",pool="web",service="site"} ` + fmt.Sprint(n),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nstat, err := tb.LB.Command(ctx, "nstat", "-az", "TcpExtSyncookiesSent", "TcpPassiveOpens").CombinedOutput()
	if err != nil {
		t.Fatalf("nstat: %v\n%s", err, nstat)
	}
	for _, line := range lines(string(nstat)) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "TcpExtSyncookiesSent" && f[1] != "0" {
			t.Errorf("the LB's kernel sent SYN cookies itself: %s", line)
		}
	}
}

// TestUpgradesOnBothPaths: a WebSocket-style upgrade works through the
// fast path (XDP routes the request, then the flow turns opaque: the
// backend sees the client's own address) and through the slow path, plain
// (a path XDP does not route) and over TLS, where the proxy tunnels it
// (the backend sees the LB's address). 4 MB echoed each time.
func TestUpgradesOnBothPaths(t *testing.T) {
	b := newSlowBed(t)
	const size = 4 << 20
	for _, tc := range []struct {
		name, path, backend string
		port                int
		tls                 bool
		viaProxy            bool
	}{
		{name: "fast path", path: "/api/ws", port: 80, backend: "b1"},
		{name: "slow path", path: "/api/%77s", port: 80, backend: "b1", viaProxy: true},
		{name: "slow path over TLS", path: "/ws", port: 443, backend: "b3", tls: true, viaProxy: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conn net.Conn = b.raw(t, tc.port)
			client := conn.LocalAddr().(*net.TCPAddr).IP.String()
			if tc.tls {
				conn = tls.Client(conn, &tls.Config{ServerName: "a.example.com", InsecureSkipVerify: true})
			}
			g, err := backend.Echo(conn, "a.example.com", tc.path, size)
			if err != nil {
				t.Fatalf("%+v: %v", g, err)
			}
			peer, _, _ := net.SplitHostPort(g.Peer)
			if g.Backend != tc.backend || (peer == client) == tc.viaProxy {
				t.Errorf("answered by %s, which saw %s (client %s); want %s, through the proxy %v", g.Backend, g.Peer, client, tc.backend, tc.viaProxy)
			}
		})
	}
}

// TestFlowsCommandListsConnections: `rauta flows` reads the pinned flow
// table and shows a spliced fast-path connection (both directions) and one
// handed to the slow path, with readable addresses and states.
func TestFlowsCommandListsConnections(t *testing.T) {
	b := newSlowBed(t)
	open := func(path string) string {
		conn := b.raw(t, 80)
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: a.example.com\r\n\r\n", path)
		if resp, body := response(t, conn, "GET"); resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %q", path, resp.StatusCode, body)
		}
		return conn.LocalAddr().String() // the connection stays open
	}
	fast, slow := open("/api/x"), open("/api/%78")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, rautaBinary, "flows", "--bpffs", b.d.pinPath).CombinedOutput()
	if err != nil {
		t.Fatalf("rauta flows: %v\n%s", err, out)
	}
	// fields: proto source destination direction translated state http service backend idle
	rows := map[string][]string{}
	for _, line := range lines(string(out))[1:] {
		f := strings.Fields(line)
		if len(f) != 10 {
			t.Fatalf("line %q has %d fields, want 10", line, len(f))
		}
		rows[f[1]+" "+f[2]] = f
	}
	for _, want := range [][]string{
		{"tcp", fast, "10.0.0.100:80", "to-backend", "10.0.1.11:80", "open", "spliced"},
		{"tcp", "10.0.1.11:80", fast, "to-client", "10.0.0.100:80", "open", "spliced"},
		{"tcp", slow, "10.0.0.100:80", "to-backend", "-", "open", "slow-path"},
	} {
		got := rows[want[1]+" "+want[2]]
		if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
			t.Errorf("flow %s -> %s: %q, want %q", want[1], want[2], got, want)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("rauta flows:\n%s", out)
	}
}
