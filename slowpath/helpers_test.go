package slowpath

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rauta-lb/rauta/router"
)

// vip is the service key of the test listener: deliberately not the
// address the proxy listens on, so routing by it proves the service comes
// from the Listener.
var vip = netip.MustParseAddrPort("10.0.0.1:80")

type fakeRoute struct {
	prefix  string
	pool    string
	methods []string // nil: any
}

// fakeRouter routes by path prefix (first match) for one service.
type fakeRouter struct {
	mu      sync.Mutex
	service netip.AddrPort
	routes  []fakeRoute
	pools   map[string][]netip.AddrPort
	// seen records the last Route arguments (read it with last: the
	// proxy's event loops talk to the test over raw sockets, which the
	// race detector does not take for synchronisation).
	seen seenRoute
}

type seenRoute struct {
	host, path, method string
	client             netip.AddrPort
}

func (f *fakeRouter) last() seenRoute {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen
}

func (f *fakeRouter) Route(service netip.AddrPort, method, host, path string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen.host, f.seen.path, f.seen.method = strings.Clone(host), strings.Clone(path), strings.Clone(method)
	if service != f.service {
		return "", router.ErrNoService
	}
	p, _, _ := strings.Cut(path, "?")
	for _, r := range f.routes {
		if !strings.HasPrefix(p, r.prefix) {
			continue
		}
		if r.methods != nil && !contains(r.methods, method) {
			return "", &router.MethodNotAllowedError{Allow: r.methods}
		}
		return r.pool, nil
	}
	return "", router.ErrNoRoute
}

func (f *fakeRouter) Backends(dst []netip.AddrPort, pool string, client, service netip.AddrPort, n int) []netip.AddrPort {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen.client = client
	b := f.pools[pool]
	if len(b) > n {
		b = b[:n]
	}
	return append(dst, b...)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// fakeNormalize rejects what is not origin-form or has dot segments and
// merges repeated slashes, enough to see that the normalised path is the
// one routed and forwarded.
func fakeNormalize(raw string) (string, error) {
	if !strings.HasPrefix(raw, "/") {
		return "", errors.New("not origin-form")
	}
	path, query, hasQuery := strings.Cut(raw, "?")
	for _, seg := range strings.Split(path, "/") {
		if seg == ".." || seg == "." {
			return "", errors.New("dot segment")
		}
	}
	for strings.Contains(path, "//") {
		path = strings.ReplaceAll(path, "//", "/")
	}
	if hasQuery {
		return path + "?" + query, nil
	}
	return path, nil
}

// startProxy serves l on 127.0.0.1:0 and returns the address.
func startProxy(t *testing.T, opts Options, l Listener, r Router) (*Proxy, string) {
	t.Helper()
	if opts.NormalizePath == nil {
		opts.NormalizePath = fakeNormalize
	}
	p := New(opts)
	if r != nil {
		p.SetRouter(r)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln, l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Shutdown")
		}
	})
	return p, ln.Addr().String()
}

// backend is a net/http server on 127.0.0.1 that records requests.
type backend struct {
	addr  netip.AddrPort
	srv   *http.Server
	mu    sync.Mutex
	last  *http.Request
	conns int
}

func startBackend(t *testing.T, h http.HandlerFunc) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: netip.MustParseAddrPort(ln.Addr().String())}
	b.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.mu.Lock()
			b.last = r
			b.mu.Unlock()
			h(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				b.mu.Lock()
				b.conns++
				b.mu.Unlock()
			}
		},
	}
	go func() { _ = b.srv.Serve(ln) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

func (b *backend) lastRequest() *http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

func (b *backend) connCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.conns
}

// rawBackend accepts connections and runs fn on each (after reading one
// request's header), for backends that misbehave in ways net/http won't.
func rawBackend(t *testing.T, fn func(c net.Conn, req *http.Request)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				fn(c, req)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// deadAddr is a loopback port nothing listens on (connect is refused).
func deadAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddrPort(ln.Addr().String())
	_ = ln.Close()
	return a
}

// rawRequest sends raw bytes on a new connection and reads one response.
func rawRequest(t *testing.T, addr, req string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading response to %q: %v", firstLine(req), err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, body
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

func httpClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DisableCompression:  true,
			MaxIdleConnsPerHost: 4,
		},
	}
}

func (p *Proxy) errorCount(r reason) float64 {
	return testutil.ToFloat64(p.metrics.errors.WithLabelValues(reasons[r].label))
}

func (p *Proxy) requestCount(service, pool, code string) float64 {
	return testutil.ToFloat64(p.metrics.requests.WithLabelValues(service, pool, code))
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
