package slowpath

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func nameHandler(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		fmt.Fprintf(w, "%s %s %s", name, r.Method, r.URL.RequestURI())
	}
}

func get(t *testing.T, c *http.Client, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestRoutesToPool(t *testing.T) {
	a := startBackend(t, nameHandler("a"))
	b := startBackend(t, nameHandler("b"))
	rt := &fakeRouter{
		service: vip,
		routes:  []fakeRoute{{prefix: "/a", pool: "pa"}, {prefix: "/b", pool: "pb"}},
		pools:   map[string][]netip.AddrPort{"pa": {a.addr}, "pb": {b.addr}},
	}
	p, addr := startProxy(t, Options{}, Listener{Service: vip, Name: "web"}, rt)
	c := httpClient()

	resp, body := get(t, c, "http://"+addr+"/a/x?q=1", map[string]string{"Host": "Example.com"})
	if resp.StatusCode != 200 || body != "a GET /a/x?q=1" {
		t.Fatalf("/a: %d %q", resp.StatusCode, body)
	}
	seen := rt.last()
	if seen.host != "Example.com" || seen.path != "/a/x?q=1" || seen.method != "GET" {
		t.Errorf("router saw host %q path %q method %q", seen.host, seen.path, seen.method)
	}
	if seen.client.Addr() != netip.MustParseAddr("127.0.0.1") || seen.client.Port() == 0 {
		t.Errorf("Backends got client %v, want 127.0.0.1:port", seen.client)
	}
	// The normalised path is routed and forwarded.
	_, body = get(t, c, "http://"+addr+"//b//y", nil)
	if body != "b GET /b/y" {
		t.Fatalf("//b//y: %q", body)
	}
	if got := p.requestCount("web", "pa", "200"); got != 1 {
		t.Errorf("requests{web,pa,200} = %v", got)
	}
	if got := p.requestCount("web", "pb", "200"); got != 1 {
		t.Errorf("requests{web,pb,200} = %v", got)
	}
	// Keep-alive both ways: the backend saw one connection for many requests.
	for range 20 {
		get(t, c, "http://"+addr+"/a/z", nil)
	}
	if n := a.connCount(); n != 1 {
		t.Errorf("backend a accepted %d connections for 21 sequential requests, want 1", n)
	}
}

func TestAbsoluteForm(t *testing.T) {
	a := startBackend(t, nameHandler("a"))
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "pa"}},
		pools: map[string][]netip.AddrPort{"pa": {a.addr}}}
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, rt)
	resp, body := rawRequest(t, addr, "GET http://other.example/p//q?x=1 HTTP/1.1\r\nHost: ignored\r\n\r\n")
	if resp.StatusCode != 200 || string(body) != "a GET /p/q?x=1" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if host := rt.last().host; host != "other.example" {
		t.Errorf("routed host %q, want the absolute-form authority", host)
	}
	if h := a.lastRequest().Host; h != "other.example" {
		t.Errorf("backend Host %q", h)
	}
}

func TestErrorAnswers(t *testing.T) {
	ok := startBackend(t, nameHandler("ok"))
	slow := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	})
	garbage := rawBackend(t, func(c net.Conn, _ *http.Request) {
		_, _ = io.WriteString(c, "this is not HTTP\r\n\r\n")
	})
	reset := rawBackend(t, func(c net.Conn, _ *http.Request) {
		_ = c.(*net.TCPConn).SetLinger(0) // RST
	})
	dead := deadAddr(t)
	rt := &fakeRouter{
		service: vip,
		routes: []fakeRoute{
			{prefix: "/ok", pool: "ok"},
			{prefix: "/get-only", pool: "ok", methods: []string{"GET", "HEAD"}},
			{prefix: "/empty", pool: "empty"},
			{prefix: "/dead", pool: "dead"},
			{prefix: "/garbage", pool: "garbage"},
			{prefix: "/reset", pool: "reset"},
			{prefix: "/slow", pool: "slow"},
		},
		pools: map[string][]netip.AddrPort{
			"ok": {ok.addr}, "dead": {dead}, "garbage": {garbage}, "reset": {reset}, "slow": {slow.addr},
		},
	}
	p, addr := startProxy(t, Options{RequestTimeout: 500 * time.Millisecond, MaxBodyBytes: 1000, Logger: testLogger(t)}, Listener{Service: vip}, rt)
	// A listener whose service the router does not know.
	p2, addr2 := startProxy(t, Options{}, Listener{Service: netip.MustParseAddrPort("10.9.9.9:80")}, rt)

	big := strings.Repeat("a", 10000)
	cases := []struct {
		name   string
		p      *Proxy
		addr   string
		req    string
		status int
		reason reason
		body   string
	}{
		{"no route", p, addr, "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404, reasonNoRoute, "404 no route\n"},
		{"no service", p2, addr2, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n", 404, reasonNoService, "404 no service\n"},
		{"method", p, addr, "POST /get-only HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, reasonMethodNotAllowed, "405 method not allowed\n"},
		{"dot segment", p, addr, "GET /ok/../x HTTP/1.1\r\nHost: x\r\n\r\n", 400, reasonBadRequest, "400 bad request\n"},
		{"no host", p, addr, "GET /ok HTTP/1.1\r\n\r\n", 400, reasonBadRequest, "400 bad request\n"},
		{"malformed", p, addr, "GET /ok HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, reasonBadRequest, ""},
		{"no backend", p, addr, "GET /empty HTTP/1.1\r\nHost: x\r\n\r\n", 503, reasonNoBackend, "503 no backend available\n"},
		{"refused", p, addr, "GET /dead HTTP/1.1\r\nHost: x\r\n\r\n", 502, reasonBackendConnect, "502 backend unreachable\n"},
		{"garbage", p, addr, "GET /garbage HTTP/1.1\r\nHost: x\r\n\r\n", 502, reasonBackendError, "502 bad gateway\n"},
		{"reset", p, addr, "GET /reset HTTP/1.1\r\nHost: x\r\n\r\n", 502, reasonBackendError, "502 bad gateway\n"},
		{"timeout", p, addr, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", 504, reasonBackendTimeout, "504 backend timeout\n"},
		{"header too large", p, addr, "GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n", 431, reasonHeaderTooLarge, "431 request header too large\n"},
		{"body too large", p, addr, "POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + strings.Repeat("b", 2000), 413, reasonBodyTooLarge, "413 request body too large\n"},
		{"chunked body too large", p, addr, "POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" + strings.Repeat("b", 2000) + "\r\n0\r\n\r\n", 413, reasonBodyTooLarge, "413 request body too large\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.p.errorCount(tc.reason)
			resp, body := rawRequest(t, tc.addr, tc.req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.status, body)
			}
			if tc.body != "" && string(body) != tc.body {
				t.Errorf("body %q, want %q", body, tc.body)
			}
			if got := tc.p.errorCount(tc.reason) - before; got != 1 {
				t.Errorf("errors_total{reason=%q} rose by %v, want 1", reasons[tc.reason].label, got)
			}
			if tc.status == 405 {
				if a := resp.Header.Get("Allow"); a != "GET, HEAD" {
					t.Errorf("Allow %q", a)
				}
			}
		})
	}
	if got := p.requestCount(vip.String(), "", "404"); got != 1 {
		t.Errorf("requests{pool=\"\",code=404} = %v, want 1", got)
	}
	if got := p.requestCount(vip.String(), "slow", "504"); got != 1 {
		t.Errorf("requests{pool=slow,code=504} = %v, want 1", got)
	}
	// A body within the limit passes.
	resp, body := rawRequest(t, addr, "POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	if resp.StatusCode != 200 || string(body) != "ok POST /ok" {
		t.Errorf("small POST: %d %q", resp.StatusCode, body)
	}
}

func TestHopByHopHeaders(t *testing.T) {
	respHeaders := make(chan http.Header, 1)
	be := rawBackend(t, func(c net.Conn, req *http.Request) {
		respHeaders <- req.Header
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n"+
			"Connection: X-Resp-Hop\r\n"+
			"X-Resp-Hop: 1\r\n"+
			"Keep-Alive: timeout=5\r\n"+
			"Proxy-Authenticate: Basic\r\n"+
			"Upgrade: foo\r\n"+
			"Trailer: X-T\r\n"+
			"X-Resp-Keep: 1\r\n"+
			"Transfer-Encoding: chunked\r\n\r\n"+
			"5\r\nhello\r\n0\r\nX-T: v\r\n\r\n")
	})
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {be}}}
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, rt)

	resp, body := rawRequest(t, addr, "GET /h HTTP/1.1\r\n"+
		"Host: Example.COM:8080\r\n"+
		"Connection: keep-alive, X-Hop, x-other-hop\r\n"+
		"X-Hop: 1\r\n"+
		"X-Other-Hop: 1\r\n"+
		"Keep-Alive: timeout=5\r\n"+
		"TE: trailers\r\n"+
		"Upgrade: websocket\r\n"+
		"Proxy-Authorization: Basic eA==\r\n"+
		"Proxy-Connection: keep-alive\r\n"+
		"X-Keep: yes\r\n"+
		"X-Forwarded-For: 192.0.2.1\r\n"+
		"X-Forwarded-Proto: https\r\n"+
		"X-Forwarded-Host: spoofed\r\n\r\n")
	if resp.StatusCode != 200 || string(body) != "hello" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	var got http.Header
	select {
	case got = <-respHeaders:
	case <-time.After(5 * time.Second):
		t.Fatal("backend got no request")
	}
	for _, h := range []string{"Connection", "X-Hop", "X-Other-Hop", "Keep-Alive", "Te", "Upgrade", "Proxy-Authorization", "Proxy-Connection", "Expect"} {
		if v, ok := got[h]; ok {
			t.Errorf("backend got hop-by-hop %s: %q", h, v)
		}
	}
	if got.Get("X-Keep") != "yes" {
		t.Errorf("X-Keep lost: %v", got)
	}
	if v := got.Get("X-Forwarded-For"); v != "192.0.2.1, 127.0.0.1" {
		t.Errorf("X-Forwarded-For %q", v)
	}
	if v := got.Get("X-Forwarded-Proto"); v != "http" {
		t.Errorf("X-Forwarded-Proto %q", v)
	}
	if v := got.Get("X-Forwarded-Host"); v != "Example.COM:8080" {
		t.Errorf("X-Forwarded-Host %q", v)
	}
	for _, h := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate", "Upgrade", "Trailer"} {
		if v, ok := resp.Header[h]; ok {
			t.Errorf("client got hop-by-hop %s: %q", h, v)
		}
	}
	if resp.Header.Get("X-Resp-Keep") != "1" {
		t.Errorf("X-Resp-Keep lost: %v", resp.Header)
	}
	if resp.Close {
		t.Errorf("backend's Connection header closed the client connection")
	}
}

func TestHostKeptAndForwardedHeaders(t *testing.T) {
	be := startBackend(t, nameHandler("a"))
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {be.addr}}}
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, rt)
	resp, _ := get(t, httpClient(), "http://"+addr+"/x", map[string]string{"Host": "app.example"})
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	r := be.lastRequest()
	if r.Host != "app.example" {
		t.Errorf("Host %q", r.Host)
	}
	if v := r.Header.Get("X-Forwarded-For"); v != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q", v)
	}
	if v := r.Header.Get("X-Forwarded-Host"); v != "app.example" {
		t.Errorf("X-Forwarded-Host %q", v)
	}
	if v := r.Header.Get("User-Agent"); v != "Go-http-client/1.1" {
		t.Errorf("User-Agent %q", v)
	}
}

func TestRetryOnConnectFailure(t *testing.T) {
	live := startBackend(t, nameHandler("live"))
	dead := deadAddr(t)
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {dead, live.addr}}}
	p, addr := startProxy(t, Options{}, Listener{Service: vip}, rt)

	resp, body := rawRequest(t, addr, "GET /r HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 200 || string(body) != "live GET /r" {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	resp, body = rawRequest(t, addr, "PUT /r HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	if resp.StatusCode != 200 || string(body) != "live PUT /r" {
		t.Fatalf("PUT: %d %q", resp.StatusCode, body)
	}
	before := p.errorCount(reasonBackendConnect)
	resp, body = rawRequest(t, addr, "POST /r HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	if resp.StatusCode != 502 {
		t.Fatalf("POST: %d %q, want 502 (not retried)", resp.StatusCode, body)
	}
	if got := p.errorCount(reasonBackendConnect) - before; got != 1 {
		t.Errorf("backend_connect rose by %v", got)
	}
}

// TestNoRetryAfterSend: a backend that takes the request and closes gets
// it at most twice (the one stale-connection retry), never the next choice.
func TestNoFailoverAfterSend(t *testing.T) {
	hits := make(chan struct{}, 10)
	closer := rawBackend(t, func(c net.Conn, _ *http.Request) { hits <- struct{}{} })
	other := startBackend(t, nameHandler("other"))
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {closer, other.addr}}}
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, rt)
	resp, body := rawRequest(t, addr, "POST /r HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	if resp.StatusCode != 502 {
		t.Fatalf("POST: %d %q", resp.StatusCode, body)
	}
	if len(hits) != 1 {
		t.Errorf("POST reached the backend %d times", len(hits))
	}
	resp, _ = rawRequest(t, addr, "GET /r HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 502 {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	if other.connCount() != 0 {
		t.Error("a request already sent failed over to the next backend")
	}
}

func TestGarbageClients(t *testing.T) {
	be := startBackend(t, nameHandler("a"))
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {be.addr}}}
	// A header timeout far above the time the test allows: garbage must be
	// recognised, not timed out.
	p, addr := startProxy(t, Options{ReadHeaderTimeout: 30 * time.Second}, Listener{Service: vip}, rt)

	random := make([]byte, 16<<10)
	var x uint32 = 2463534242
	for i := range random {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		random[i] = byte(x)
	}
	noNewline := make([]byte, 600)
	for i := range noNewline {
		noNewline[i] = 0x80 + byte(i%100) // bytes no request line has
	}
	inputs := map[string]struct {
		in  []byte
		ans bool // a 400 must come (else closing is enough)
	}{
		"tls client hello": {tlsClientHello(t), true},
		"h2 preface":       {[]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00"), true},
		"random":           {random, true},
		"nul":              {make([]byte, 100), true},
		"no newline":       {noNewline, true},
		"method too long":  {[]byte(strings.Repeat("A", 40)), true},
		"space first":      {[]byte(" GET / HTTP/1.1\r\n"), true},
		"half request":     {[]byte("GET / HTTP/1.1\r\nHost"), false},
	}
	for name, tc := range inputs {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			start := time.Now()
			_, _ = c.Write(tc.in)
			if name == "half request" {
				_ = c.(*net.TCPConn).CloseWrite()
			}
			// A 400 and close, or just close for a client that closed
			// first: never a wait for the header timeout.
			out, err := io.ReadAll(c)
			if err != nil && !isReset(err) {
				t.Fatalf("reading: %v (got %q)", err, out)
			}
			if waited := time.Since(start); waited > 2*time.Second {
				t.Errorf("closed after %v", waited)
			}
			if (tc.ans || len(out) > 0) && !strings.HasPrefix(string(out), "HTTP/1.1 400 ") {
				t.Errorf("answer %q, want a 400", firstLine(string(out)))
			}
			resp, body := rawRequest(t, addr, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp.StatusCode != 200 || string(body) != "a GET /after" {
				t.Errorf("next client: %d %q", resp.StatusCode, body)
			}
		})
	}
	if p.errorCount(reasonBadRequest) < 7 {
		t.Errorf("bad_request = %v", p.errorCount(reasonBadRequest))
	}
	// Empty lines before a request are not garbage (RFC 9112 §2.2).
	if resp, body := rawRequest(t, addr, "\r\n\r\nGET /crlf HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || string(body) != "a GET /crlf" {
		t.Errorf("request after empty lines: %d %q", resp.StatusCode, body)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func TestBackendDiesMidResponse(t *testing.T) {
	dying := rawBackend(t, func(c net.Conn, _ *http.Request) {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
		_, _ = c.Write(make([]byte, 100000))
		// and close
	})
	ok := startBackend(t, nameHandler("ok"))
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/die", pool: "d"}, {prefix: "/", pool: "ok"}},
		pools: map[string][]netip.AddrPort{"d": {dying}, "ok": {ok.addr}}}
	p, addr := startProxy(t, Options{}, Listener{Service: vip}, rt)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	_, _ = io.WriteString(c, "GET /die HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil {
		t.Fatalf("body of %d bytes ended cleanly; want a truncated body", n)
	}
	// The client connection is closed, not reused for a desynchronised
	// next response.
	if _, err := br.ReadByte(); err == nil {
		t.Error("connection still open after a truncated response")
	}
	// Next request is fine.
	resp2, body := rawRequest(t, addr, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp2.StatusCode != 200 || string(body) != "ok GET /x" {
		t.Errorf("next: %d %q", resp2.StatusCode, body)
	}
	deadline := time.Now().Add(2 * time.Second)
	for p.errorCount(reasonResponseAborted) != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := p.errorCount(reasonResponseAborted); got != 1 {
		t.Errorf("response_aborted = %v", got)
	}
}

func TestRedirectHTTPS(t *testing.T) {
	// A redirecting service still serves its routes (ACME challenges);
	// everything else moves to https.
	be := startBackend(t, nameHandler("acme"))
	acme := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/.well-known/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {be.addr}}}
	_, addr := startProxy(t, Options{}, Listener{Service: vip, RedirectHTTPS: true, HTTPSPort: 8443}, acme)
	if resp, _ := rawRequest(t, addr, "GET /.well-known/acme-challenge/x HTTP/1.1\r\nHost: example.com\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("routed request on a redirecting service: status %d, want it proxied", resp.StatusCode)
	}
	resp, _ := rawRequest(t, addr, "GET /a//b?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
	if resp.StatusCode != 308 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if l := resp.Header.Get("Location"); l != "https://example.com:8443/a/b?q=1" {
		t.Errorf("Location %q", l)
	}
	_, addr = startProxy(t, Options{}, Listener{Service: vip, RedirectHTTPS: true, HTTPSPort: 443}, acme)
	resp, _ = rawRequest(t, addr, "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n")
	if l := resp.Header.Get("Location"); resp.StatusCode != 308 || l != "https://[2001:db8::1]/" {
		t.Errorf("%d Location %q", resp.StatusCode, l)
	}
}

func TestNotConfigured(t *testing.T) {
	p, addr := startProxy(t, Options{}, Listener{Service: vip}, nil)
	resp, _ := rawRequest(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 503 || p.errorCount(reasonNotConfigured) != 1 {
		t.Errorf("%d, not_configured=%v", resp.StatusCode, p.errorCount(reasonNotConfigured))
	}
	// SetRouter takes effect for the next request.
	be := startBackend(t, nameHandler("a"))
	p.SetRouter(&fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {be.addr}}})
	resp, _ = rawRequest(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Errorf("after SetRouter: %d", resp.StatusCode)
	}
}

func TestProtocolCorners(t *testing.T) {
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/nocontent":
			w.WriteHeader(204)
		case "/stream":
			// No Content-Length: net/http sends chunks.
			for i := range 3 {
				fmt.Fprintf(w, "part %d;", i)
				w.(http.Flusher).Flush()
			}
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s %s", r.Proto, r.Method, b)
		default:
			w.Header().Set("Content-Length", "11")
			_, _ = io.WriteString(w, "hello world")
		}
	})
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {be.addr}}}
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, rt)

	t.Run("HEAD keeps Content-Length", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		// Two requests on one connection: a HEAD body miscount would
		// desynchronise the second.
		_, _ = io.WriteString(c, "HEAD /x HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n")
		head, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
		if err != nil {
			t.Fatal(err)
		}
		if head.StatusCode != 200 || head.ContentLength != 11 {
			t.Errorf("HEAD: %d, Content-Length %d", head.StatusCode, head.ContentLength)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "hello world" {
			t.Errorf("GET after HEAD: %q", b)
		}
	})
	t.Run("204", func(t *testing.T) {
		resp, body := rawRequest(t, addr, "GET /nocontent HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp.StatusCode != 204 || len(body) != 0 {
			t.Errorf("%d %q", resp.StatusCode, body)
		}
	})
	t.Run("HTTP/1.0 client", func(t *testing.T) {
		resp, body := rawRequest(t, addr, "POST /echo HTTP/1.0\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
		if resp.StatusCode != 200 || string(body) != "HTTP/1.1 POST abc" {
			t.Errorf("%d %q", resp.StatusCode, body)
		}
		if resp.ProtoMinor != 0 && resp.TransferEncoding != nil {
			t.Errorf("chunked answer to HTTP/1.0: %v", resp.TransferEncoding)
		}
	})
	t.Run("HTTP/1.0 client, body of unknown length", func(t *testing.T) {
		// An HTTP/1.0 client cannot read chunks: the body ends where
		// the connection does.
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "GET /stream HTTP/1.0\r\nHost: x\r\n\r\n")
		raw, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("reading to the end: %v (got %q)", err, raw)
		}
		head, body, ok := strings.Cut(string(raw), "\r\n\r\n")
		if !ok || !strings.HasPrefix(head, "HTTP/1.") || !strings.Contains(head, " 200 ") {
			t.Fatalf("response %q", raw)
		}
		if strings.Contains(strings.ToLower(head), "transfer-encoding") || strings.Contains(strings.ToLower(head), "content-length") {
			t.Errorf("header %q frames the body for an HTTP/1.0 client", head)
		}
		if body != "part 0;part 1;part 2;" {
			t.Errorf("body %q", body)
		}
	})
	t.Run("Expect 100-continue", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		_, _ = io.WriteString(c, "PUT /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
			t.Fatalf("want 100 Continue, got %q %v", line, err)
		}
		_, _ = br.ReadString('\n') // blank line
		_, _ = io.WriteString(c, "abc")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "HTTP/1.1 PUT abc" {
			t.Errorf("%q", b)
		}
		if _, ok := be.lastRequest().Header["Expect"]; ok {
			t.Error("Expect forwarded")
		}
	})
}

// TestBackendConnectionClose: the backend closing its connection is its
// hop's business; the client's connection stays open.
func TestBackendConnectionClose(t *testing.T) {
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		_, _ = io.WriteString(w, "bye")
	})
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {be.addr}}}
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, rt)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for i := range 3 {
		_, _ = io.WriteString(c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "bye" || resp.Close {
			t.Fatalf("request %d: %d %q close=%v", i, resp.StatusCode, b, resp.Close)
		}
	}
	if n := be.connCount(); n != 3 {
		t.Errorf("backend saw %d connections, want 3 (one per request)", n)
	}
}
