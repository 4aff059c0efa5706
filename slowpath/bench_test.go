package slowpath

import (
	"net"
	"net/netip"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkProxyKeepAlive measures keep-alive GETs through the proxy to a
// fasthttp backend, all on loopback in this process (so allocations
// include the client's and the backend's, which are few).
func BenchmarkProxyKeepAlive(b *testing.B) {
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	body := []byte("hello, world\n")
	bsrv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBody(body) }}
	go func() { _ = bsrv.Serve(bln) }()
	defer bsrv.Shutdown()

	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {netip.MustParseAddrPort(bln.Addr().String())}}}
	p := New(Options{NormalizePath: func(s string) (string, error) { return s, nil }})
	p.SetRouter(rt)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = p.Serve(ln, Listener{Service: vip}) }()
	defer p.Shutdown(b.Context())

	c := &fasthttp.HostClient{Addr: ln.Addr().String(), MaxConns: 64}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://bench.example/index.html")
		for pb.Next() {
			if err := c.Do(req, resp); err != nil {
				b.Error(err)
				return
			}
			if resp.StatusCode() != 200 {
				b.Errorf("status %d", resp.StatusCode())
				return
			}
		}
	})
}
