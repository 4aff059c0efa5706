package xdp_test

// Program tests of the HTTP fast path (xdp/splice.h, xdp/http_parse.h,
// bpf/include/handshake.h, bpf/include/syncookie.h): every transition and
// failure path, each packet checked for its verdict, every byte of the frame
// that comes out (so every rewritten field and both checksums), the counters
// it moves and the flow-table entries it leaves.

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"

	"github.com/rauta-lb/rauta/loader"
	"github.com/rauta-lb/rauta/syncookie"
	"github.com/rauta-lb/rauta/xdp"
)

// TestHTTPSYN: a client SYN becomes a SYN-ACK whose ISN is a cookie that
// carries the client's options; nothing is stored. The cookie's options
// reach the backend in the SYN made of the first request.
func TestHTTPSYN(t *testing.T) {
	e := newSpliceEnv(t)
	ts := []byte{8, 10, 0, 0, 0, 1, 0, 0, 0, 0}
	cases := []struct {
		name string
		opts []byte
		isn  uint32
		mss  uint16 // the MSS the cookie carries
		ws   uint8  // the window scale the cookie carries
		sack bool   // SACK-permitted: offered back, and carried to the backend
	}{
		{"linux-mss1460-sack-ts-ws7", append(append([]byte{2, 4, 0x05, 0xb4, 4, 2}, ts...), 1, 3, 3, 7), 0x01020304, 1460, 7, true},
		{"mss1400-ws2", []byte{2, 4, 0x05, 0x78, 1, 3, 3, 2}, 0x8000_0000, 1220, 2, false},
		{"mss536-no-ws", []byte{2, 4, 0x02, 0x18}, 0x1234_5678, 536, syncookie.NoWindowScale, false},
		{"no-options", nil, 0xffff_ffff, 536, syncookie.NoWindowScale, false},
		{"ws0-before-mss1220-then-eol", []byte{1, 3, 3, 0, 2, 4, 0x04, 0xc4, 0, 0, 0, 0}, 7, 1220, 0, false},
		{"mss1440-ws15-clamped-to-14", []byte{2, 4, 0x05, 0xa0, 1, 3, 3, 15}, 0xdead_beef, 1440, 14, false},
		{"mss0-ignored-sack-ws14", []byte{2, 4, 0, 0, 4, 2, 3, 3, 14, 0, 0, 0}, 0x0bad_f00d, 536, 14, true},
		{"sack-only", []byte{1, 1, 4, 2}, 99, 536, syncookie.NoWindowScale, true},
		{"sack-malformed-length-ignored", []byte{4, 3, 1, 1}, 98, 536, syncookie.NoWindowScale, false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.conn(uint16(42000+i), tc.isn, tc.ws)
			tuple := syncookie.Tuple{Client: c.cl, VIP: vipWeb}
			in := c.fromClient(syn, tc.isn, 0, nil)
			in.opts = tc.opts
			want := syncookie.Options{MSS: tc.mss, WScale: tc.ws, SACK: tc.sack}
			cookie := syncookie.Make(tuple, tc.isn, want, 0, spKeys[0])
			lbWS := -1
			if tc.ws <= 14 {
				lbWS = 7 // ours, only when the client offered one (RFC 7323)
			}
			synAck := spSeg{srcMAC: eth1MAC, dstMAC: clientMAC, src: vipWeb, dst: c.cl, df: true, ttl: 64,
				seq: cookie, ack: tc.isn + 1, flags: synAck, window: 1460, opts: lbOpts(1460, lbWS, tc.sack)}
			out := e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
				counters: []xdp.Counter{xdp.CounterSYNCookiesSent}, out: synAck.frame()})

			_, tcp := decodeTCP(t, out)
			got, ok := syncookie.Check(tuple, tc.isn, tcp.Seq, e.keys)
			if !ok || got != want {
				t.Errorf("cookie %#x carries %+v (valid %v), want %+v", tcp.Seq, got, ok, want)
			}
			opts := tcpOptions(tcp)
			if _, ok := opts[layers.TCPOptionKindSACKPermitted]; ok != tc.sack {
				t.Errorf("the SYN-ACK offers SACK: %v, want %v", ok, tc.sack)
			}
			if tcp.Window != 1460 {
				t.Errorf("SYN-ACK window %d, want 1460", tcp.Window)
			}
			e.noFlow(t, c.fwd(), "after the SYN")

			// The cookie's options, not the SYN's, reach the backend.
			c.cookie, c.lbSeq = cookie, cookie
			c.co = want
			c.request(t, httpGet("x.test", "/a/"+tc.name), beA)
		})
	}

	t.Run("key-slot-1", func(t *testing.T) {
		e.setKeys(t, spKeys, 1)
		defer e.setKeys(t, spKeys, 0)
		c := e.conn(42100, 5000, 7)
		in := c.fromClient(syn, c.isn, 0, nil)
		in.opts = []byte{2, 4, 0x05, 0xb4, 1, 3, 3, 7}
		cookie := syncookie.Make(syncookie.Tuple{Client: c.cl, VIP: vipWeb}, c.isn, c.co, 1, spKeys[1])
		if cookie&0x10 == 0 {
			t.Fatalf("cookie %#x of slot 1 without the slot bit", cookie)
		}
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterSYNCookiesSent},
			out: spSeg{srcMAC: eth1MAC, dstMAC: clientMAC, src: vipWeb, dst: c.cl, df: true, ttl: 64,
				seq: cookie, ack: c.isn + 1, flags: synAck, window: 1460, opts: lbOpts(1460, 7, false)}.frame()})
	})

	t.Run("no-cookie-key", func(t *testing.T) {
		defer e.setKeys(t, spKeys, 0)
		for _, k := range []struct {
			name string
			keys [2]syncookie.Key
			cur  int
		}{
			{"both-slots-zero", [2]syncookie.Key{}, 0},
			{"current-slot-zero", [2]syncookie.Key{spKeys[0], {}}, 1},
		} {
			t.Run(k.name, func(t *testing.T) {
				e.setKeys(t, k.keys, k.cur)
				c := e.conn(42110, 6000, 7)
				in := c.fromClient(syn, c.isn, 0, nil)
				in.opts = []byte{2, 4, 0x05, 0xb4, 1, 3, 3, 7}
				e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpPass,
					counters: []xdp.Counter{xdp.CounterPassNoCookieKey}})
				e.noFlow(t, c.fwd(), "after a SYN without key")
			})
		}
		// Without keys no cookie validates.
		e.setKeys(t, [2]syncookie.Key{}, 0)
		c := e.conn(42111, 6000, 7)
		c.cookie = syncookie.Make(syncookie.Tuple{Client: c.cl, VIP: vipWeb}, c.isn, c.co, 0, spKeys[0])
		in := c.fromClient(tcpFlags{ACK: true, PSH: true}, c.isn+1, c.cookie+1, httpGet("x.test", "/a/"))
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpDrop, counters: []xdp.Counter{xdp.CounterDropBadCookie}})
		e.noFlow(t, c.fwd(), "after a request without key")
	})
}

// TestHTTPHandshakeACK: the client's ACK completing the handshake is checked
// and dropped; a bad cookie never creates state; cookies of the previous
// key slot still validate, older ones do not.
func TestHTTPHandshakeACK(t *testing.T) {
	e := newSpliceEnv(t)
	port := uint16(42200)
	next := func() *spConn { port++; return e.conn(port, 0x4000_0000+uint32(port), 7) }
	bare := func(c *spConn, seq, ack uint32) spSeg { return c.fromClient(ackOnly, seq, ack, nil) }
	req := func(c *spConn, seq, ack uint32) spSeg {
		return c.fromClient(tcpFlags{ACK: true, PSH: true}, seq, ack, httpGet("x.test", "/a/"))
	}

	t.Run("valid", func(t *testing.T) {
		c := next()
		e.step(t, spStep{in: e.eth1, frame: bare(c, c.isn+1, c.cookie+1).frame(), verdict: xdpDrop,
			counters: []xdp.Counter{xdp.CounterHandshakesCompleted}})
		e.noFlow(t, c.fwd(), "after the bare ACK")
	})

	bad := []struct {
		name     string
		seq, ack func(c *spConn) uint32
		from     func(c *spConn) *spConn
	}{
		{"wrong-ack", func(c *spConn) uint32 { return c.isn + 1 }, func(c *spConn) uint32 { return c.cookie + 2 }, nil},
		{"ack-is-cookie", func(c *spConn) uint32 { return c.isn + 1 }, func(c *spConn) uint32 { return c.cookie }, nil},
		{"wrong-client-isn", func(c *spConn) uint32 { return c.isn + 2 }, func(c *spConn) uint32 { return c.cookie + 1 }, nil},
		{"forged-mss-bits", func(c *spConn) uint32 { return c.isn + 1 }, func(c *spConn) uint32 { return c.cookie ^ 0x40 + 1 }, nil},
		{"forged-wscale-bits", func(c *spConn) uint32 { return c.isn + 1 }, func(c *spConn) uint32 { return c.cookie ^ 0x01 + 1 }, nil},
		{"forged-key-slot-bit", func(c *spConn) uint32 { return c.isn + 1 }, func(c *spConn) uint32 { return c.cookie ^ 0x10 + 1 }, nil},
		{"other-port", func(c *spConn) uint32 { return c.isn + 1 }, func(c *spConn) uint32 { return c.cookie + 1 },
			func(c *spConn) *spConn { o := *c; o.cl = netip.AddrPortFrom(client, c.cl.Port()+1000); return &o }},
		{"other-client", func(c *spConn) uint32 { return c.isn + 1 }, func(c *spConn) uint32 { return c.cookie + 1 },
			func(c *spConn) *spConn { o := *c; o.cl = netip.AddrPortFrom(clientGW, c.cl.Port()); return &o }},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			c := next()
			s := c
			if b.from != nil {
				s = b.from(c)
			}
			for _, in := range []spSeg{bare(s, b.seq(c), b.ack(c)), req(s, b.seq(c), b.ack(c))} {
				if s.cl.Addr() == clientGW {
					in.srcMAC = gatewayMAC
				}
				e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpDrop,
					counters: []xdp.Counter{xdp.CounterDropBadCookie}})
				e.noFlow(t, s.fwd(), "after a bad cookie")
				if _, ok := e.stash(t, s.fwd()); ok {
					t.Error("a bad cookie stashed a request")
				}
			}
		})
	}

	t.Run("key-rotation", func(t *testing.T) {
		defer e.setKeys(t, spKeys, 0)
		c, c2 := next(), next() // cookies of slot 0
		// The daemon writes a fresh key into slot 1 and flips to it.
		fresh, _ := syncookie.NewKey()
		e.setKeys(t, [2]syncookie.Key{spKeys[0], fresh}, 1)
		e.step(t, spStep{in: e.eth1, frame: bare(c, c.isn+1, c.cookie+1).frame(), verdict: xdpDrop,
			counters: []xdp.Counter{xdp.CounterHandshakesCompleted}})
		c.request(t, httpGet("x.test", "/a/previous-slot"), beA)

		// One more rotation overwrites slot 0: its cookies are dead.
		fresh2, _ := syncookie.NewKey()
		e.setKeys(t, [2]syncookie.Key{fresh2, fresh}, 0)
		for _, in := range []spSeg{bare(c2, c2.isn+1, c2.cookie+1), req(c2, c2.isn+1, c2.cookie+1)} {
			e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpDrop,
				counters: []xdp.Counter{xdp.CounterDropBadCookie}})
		}
		e.noFlow(t, c2.fwd(), "after a rotated-out cookie")
	})

	t.Run("both-slots-overwritten", func(t *testing.T) {
		defer e.setKeys(t, spKeys, 0)
		c := next()
		k0, _ := syncookie.NewKey()
		k1, _ := syncookie.NewKey()
		e.setKeys(t, [2]syncookie.Key{k0, k1}, 0)
		for _, in := range []spSeg{bare(c, c.isn+1, c.cookie+1), req(c, c.isn+1, c.cookie+1)} {
			e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpDrop,
				counters: []xdp.Counter{xdp.CounterDropBadCookie}})
		}
		e.noFlow(t, c.fwd(), "after a rotated-out cookie")
	})

	// Without a flow, a client segment must be the handshake's ACK or the
	// first request: anything else fits no state.
	for _, s := range []struct {
		name string
		fl   tcpFlags
	}{
		{"data-without-ack", tcpFlags{PSH: true}},
		{"rst", tcpFlags{RST: true, ACK: true}},
		{"rst-without-ack", tcpFlags{RST: true}},
		{"syn-ack", synAck},
	} {
		t.Run("no-flow-"+s.name, func(t *testing.T) {
			c := next()
			var payload []byte
			if !s.fl.RST && !s.fl.SYN {
				payload = httpGet("x.test", "/a/")
			}
			in := c.fromClient(s.fl, c.isn+1, c.cookie+1, payload)
			e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpDrop,
				counters: []xdp.Counter{xdp.CounterDropHTTPState}})
			e.noFlow(t, c.fwd(), "after "+s.name)
		})
	}
}

// ackOnly is the ACK flag alone (ack is shadowed by the sequence arguments).
var ackOnly = tcpFlags{ACK: true}

// TestHTTPRouting: which pool a first request reaches. Pools a, b and c have
// one backend each, so the backend SYN's destination names the pool.
func TestHTTPRouting(t *testing.T) {
	e := newSpliceEnv(t)
	raw := func(s string) []byte { return []byte(s) }
	cases := []struct {
		name         string
		host, target string
		req          []byte // instead of a GET of host and target
		want         netip.AddrPort
	}{
		{"host-beats-hostless", "api.example.com", "/v1/users", nil, beA},
		{"other-host-takes-hostless", "other.example.com", "/v1/users", nil, beB},
		{"host-route-not-covering-path-falls-back", "api.example.com", "/healthz", nil, beC},
		{"host-route-beats-longer-hostless", "www.example.com", "/v1/admin/x", nil, beC},
		{"longest-prefix-wins", "x.test", "/v1/admin/users", nil, beC},
		{"longest-prefix-needs-whole-prefix", "x.test", "/v1/adminx", nil, beB},
		{"prefix-longer-than-path", "x.test", "/v1/admin", nil, beB},
		{"exact-beats-prefix", "x.test", "/healthz", nil, beC},
		{"query-stops-path", "x.test", "/healthz?verbose=1", nil, beC},
		{"query-with-unsafe-bytes-ignored", "x.test", "/v1/admin?next=/v1/admin/%2e%2e/../x", nil, beB},
		{"prefix-below-exact", "x.test", "/healthz/live", nil, beA},
		{"prefix-extends-exact", "x.test", "/healthzz", nil, beA},
		{"host-with-port", "api.example.com:8443", "/v1/x", nil, beA},
		{"host-uppercase", "API.Example.COM", "/v1/x", nil, beA},
		{"host-trailing-dot", "api.example.com.", "/v1/x", nil, beA},
		{"host-uppercase-dot-port", "API.EXAMPLE.COM.:80", "/v1/x", nil, beA},
		{"method-allowed-get", "x.test", "/static/app.js", nil, beC},
		{"method-allowed-head", "", "", raw("HEAD /static/app.js HTTP/1.1\r\nHost: x.test\r\n\r\n"), beC},
		{"http-1.0", "", "", raw("GET /v1/x HTTP/1.0\r\nHost: api.example.com\r\n\r\n"), beA},
		{"host-header-name-uppercase", "", "", raw("GET /v1/x HTTP/1.1\r\nHOST: api.example.com\r\n\r\n"), beA},
		{"host-header-after-others", "", "", raw("GET /v1/x HTTP/1.1\r\nUser-Agent: a\r\nX-Host: www.example.com\r\nHostname: www.example.com\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n"), beA},
		{"host-with-ows", "", "", raw("GET /v1/x HTTP/1.1\r\nHost:\t api.example.com \r\n\r\n"), beA},
		{"host-without-space", "", "", raw("GET /v1/x HTTP/1.1\r\nHost:api.example.com\r\n\r\n"), beA},
		{"path-of-127-bytes", "x.test", "/a/" + strings.Repeat("x", 124), nil, beA},
		{"request-with-body", "", "", raw("POST /b/form HTTP/1.1\r\nHost: x.test\r\nContent-Length: 3\r\n\r\na=1"), beB},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req
			if req == nil {
				req = httpGet(tc.host, tc.target)
			}
			c := e.conn(uint16(43000+i), 0x2000_0000+uint32(i)*7919, 7)
			c.request(t, req, tc.want)
		})
	}
}

// TestHTTPSlowPath: every request XDP must not route on raw bytes is passed
// to the kernel unchanged, its flow marked SPLICE_SLOWPATH with the reason,
// counted; later segments follow it there.
func TestHTTPSlowPath(t *testing.T) {
	e := newSpliceEnv(t)
	tls := []byte{0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03}
	tls = append(tls, make([]byte, 32+1+2+2+1+1)...)
	get := func(target string) []byte { return httpGet("x.test", target) }
	bigReq := []byte("POST /a/upload HTTP/1.1\r\nHost: x.test\r\nContent-Length: 1400\r\n\r\n")
	bigReq = append(bigReq, make([]byte, 1461-len(bigReq))...)
	// post is a POST to /a/ with header field lines fields and a 3-byte body.
	post := func(fields string) []byte {
		return []byte("POST /a/ HTTP/1.1\r\nHost: x.test\r\n" + fields + "\r\n\r\nabc")
	}
	cases := []struct {
		name   string
		req    []byte
		reason string
		bug    string // a reported bug keeps the case from running
	}{
		{"percent", get("/a/%2e%2e/c/x"), "unsafe_path", ""},
		{"percent-plain", get("/a/%41"), "unsafe_path", ""},
		{"backslash", get("/a/..\\c/x"), "unsafe_path", ""},
		{"double-slash-leading", get("//a/x"), "unsafe_path", ""},
		// where a "/" route exists, the leading "//" is routed by it
		{"double-slash-leading-under-root-route", httpGet("www.example.com", "//v1/admin/x"), "unsafe_path", ""},
		{"double-slash-inside", get("/a//x"), "unsafe_path", ""},
		{"dot-segment", get("/a/./x"), "unsafe_path", ""},
		{"dot-dot-segment", get("/b/../a/x"), "unsafe_path", ""},
		{"trailing-dot-dot", get("/a/.."), "unsafe_path", ""},
		{"trailing-dot-dot-before-query", get("/a/..?x=1"), "unsafe_path", ""},
		{"trailing-dot", get("/a/."), "unsafe_path", ""},
		{"only-dot-dot", get("/.."), "unsafe_path", ""},
		{"tab-in-path", []byte("GET /a/\tx HTTP/1.1\r\nHost: x.test\r\n\r\n"), "unsafe_path", ""},
		{"non-ascii-in-path", get("/a/\xc3\xa9"), "unsafe_path", ""},
		{"absolute-form", get("http://x.test/a/"), "target_form", ""},
		{"asterisk-form", []byte("OPTIONS * HTTP/1.1\r\nHost: x.test\r\n\r\n"), "target_form", ""},
		{"connect", []byte("CONNECT x.test:443 HTTP/1.1\r\nHost: x.test:443\r\n\r\n"), "connect", ""},
		{"h2c-preface", []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), "h2c_preface", ""},
		{"tls-client-hello", tls, "tls", ""},
		{"missing-host", []byte("GET /a/ HTTP/1.1\r\nUser-Agent: x\r\n\r\n"), "no_host", ""},
		{"empty-host", []byte("GET /a/ HTTP/1.1\r\nHost: \r\n\r\n"), "no_host", ""},
		{"host-only-port", []byte("GET /a/ HTTP/1.1\r\nHost: :80\r\n\r\n"), "no_host", ""},
		{"host-underscore", httpGet("bad_host.test", "/a/"), "bad_host", ""},
		{"host-at-sign", httpGet("user@x.test", "/a/"), "bad_host", ""},
		{"host-ipv6-literal", httpGet("[::1]:80", "/a/"), "bad_host", ""},
		{"host-port-not-digits", httpGet("x.test:8o", "/a/"), "bad_host", ""},
		{"host-65-bytes", httpGet(strings.Repeat("h", 65), "/a/"), "bad_host", ""},
		{"request-line-without-crlf", []byte("GET /a/x HTTP/1.1"), "incomplete", ""},
		{"request-line-cut", []byte("GET /a/x HT"), "incomplete", ""},
		{"host-not-in-segment", []byte("GET /a/x HTTP/1.1\r\nUser-Agent: x\r\n"), "incomplete", ""},
		{"host-line-cut", []byte("GET /a/x HTTP/1.1\r\nHost: x.te"), "incomplete", ""},
		{"no-route", get("/nothing/here"), "no_route", ""},
		{"no-route-paths-are-case-sensitive", get("/A/x"), "no_route", ""},
		{"no-route-host-less-prefix-needs-slash", get("/v1"), "no_route", ""},
		{"method-not-allowed", []byte("POST /static/x HTTP/1.1\r\nHost: x.test\r\n\r\n"), "method", ""},
		{"path-of-128-bytes", get("/a/" + strings.Repeat("x", 125)), "long_path", ""},
		{"unknown-method", []byte("FOO /a/ HTTP/1.1\r\nHost: x.test\r\n\r\n"), "not_http", ""},
		{"lowercase-method", []byte("get /a/ HTTP/1.1\r\nHost: x.test\r\n\r\n"), "not_http", ""},
		{"method-too-long", []byte("PROPFINDX /a/ HTTP/1.1\r\nHost: x.test\r\n\r\n"), "not_http", ""},
		{"http-2-version", []byte("GET /a/ HTTP/2.0\r\nHost: x.test\r\n\r\n"), "not_http", ""},
		{"request-over-stash", bigReq, "stash_full", ""},
		{"content-length-garbage", post("Content-Length: abc"), "bad_content_length", ""},
		{"content-length-list", post("Content-Length: 3, 3"), "bad_content_length", ""},
		{"content-length-duplicate", post("Content-Length: 3\r\ncontent-length: 3"), "bad_content_length", ""},
		{"content-length-signed", post("Content-Length: +3"), "bad_content_length", ""},
		{"content-length-empty", post("Content-Length: "), "bad_content_length", ""},
		{"content-length-hex", post("Content-Length: 0x3"), "bad_content_length", ""},
		{"content-length-over-1gib", post("Content-Length: 1073741825"), "bad_content_length", ""},
		{"content-length-space-before-colon", post("Content-Length : 3"), "not_http", ""},
		{"transfer-encoding-chunked", post("Transfer-Encoding: chunked"), "chunked", ""},
		{"transfer-encoding-any-case-any-coding", post("TRANSFER-encoding: gzip"), "chunked", ""},
		{"transfer-encoding-with-content-length", post("Content-Length: 3\r\nTransfer-Encoding: chunked"), "chunked", ""},
		{"duplicate-host", []byte("GET /a/ HTTP/1.1\r\nHost: x.test\r\nHost: y.test\r\n\r\n"), "bad_host", ""},
		{"host-with-trailing-junk", []byte("GET /a/ HTTP/1.1\r\nHost: x.test y.test\r\n\r\n"), "bad_host", ""},
		{"folded-header-line", []byte("GET /a/ HTTP/1.1\r\nHost: x.test\r\nX-A: 1\r\n Content-Length: 3\r\n\r\nabc"), "not_http", ""},
		{"header-line-without-colon", []byte("GET /a/ HTTP/1.1\r\nHost: x.test\r\nbogus\r\n\r\n"), "not_http", ""},
		{"bare-lf-header-end", []byte("GET /a/ HTTP/1.1\nHost: x.test\n\n"), "not_http", ""},
		{"header-end-not-in-segment", []byte("GET /a/x HTTP/1.1\r\nHost: x.test\r\nAccept: */*\r\n"), "incomplete", ""},
		{"pipelined-in-first-segment", append(httpGet("x.test", "/a/1"), httpGet("x.test", "/b/2")...), "pipelined", ""},
		{"body-longer-than-content-length", []byte("POST /a/ HTTP/1.1\r\nHost: x.test\r\nContent-Length: 2\r\n\r\nabc"), "pipelined", ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.bug != "" {
				knownBug(t, tc.bug)
			}
			r := slowReason(t, tc.reason)
			c := e.conn(uint16(44000+i), 0x3000_0000+uint32(i)*104729, 7)
			in := c.fromClient(tcpFlags{ACK: true, PSH: true}, c.isn+1, c.cookie+1, tc.req)
			e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpPass,
				counters: []xdp.Counter{xdp.CounterSlowpath}, slow: []xdp.SlowpathReason{r}})
			want := xdp.Flow{Direction: xdp.ToBackend, ServiceId: e.sid, ClientIsn: c.isn, LbIsn: c.cookie,
				Mss: c.co.MSS, ClientWscale: c.co.WScale, Sack: boolField(c.co.SACK), ClientWindow: c.window,
				Splice: xdp.SpliceSlowpath, Reason: uint16(r)}
			f := e.checkFlow(t, c.fwd(), want)
			if _, ok := e.stash(t, c.fwd()); ok {
				t.Error("a slow-path request was stashed")
			}
			for _, be := range []netip.AddrPort{beA, beB, beC} {
				e.noFlow(t, c.rev(be), "reverse entry of a slow-path flow")
			}
			if i > 0 {
				return
			}
			// The connection's next segment goes to the kernel too.
			more := c.fromClient(ackOnly, c.isn+1+uint32(len(tc.req)), c.cookie+1, []byte("more"))
			e.step(t, spStep{in: e.eth1, frame: more.frame(), verdict: xdpPass,
				counters: []xdp.Counter{xdp.CounterPassNotService}})
			if g, _ := e.flow(t, c.fwd()); g != f {
				t.Errorf("flow changed by a later slow-path segment:\n  %s", strings.Join(flowDiff(g, f), "\n  "))
			}
		})
	}
}

// reqOfLen is a request to /a/ of exactly n bytes (n >= 64).
func reqOfLen(n int) []byte {
	head := "GET /a/len HTTP/1.1\r\nHost: x.test\r\nX-Pad: "
	tail := "\r\n\r\n"
	return []byte(head + strings.Repeat("p", n-len(head)-len(tail)) + tail)
}

// TestHTTPSpliceFailures: the backend handshake's retransmissions and
// failures, and the stash's life.
func TestHTTPSpliceFailures(t *testing.T) {
	e := newSpliceEnv(t)

	t.Run("request-lengths", func(t *testing.T) {
		// every length modulo 4 (the stash checksum pads to words), the
		// largest stash, and sequence numbers wrapping
		for i, n := range []int{100, 101, 102, 103, 1460} {
			c := e.conn(uint16(45000+i), 0xffff_ff00+uint32(i), 7)
			c.request(t, reqOfLen(n), beA)
			c.splice(t, 0xffff_fffe-uint32(i), 7)
		}
	})

	t.Run("client-retransmits-request-while-syn-sent", func(t *testing.T) {
		c := e.conn(45100, 0x1111, 7)
		in := c.request(t, httpGet("x.test", "/a/retransmit"), beA)
		before, _ := e.flow(t, c.fwd())
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterBackendSYNs, xdp.CounterForwarded},
			out:      c.backendSYN(in, beA, c.isn).frame()})
		if after, _ := e.flow(t, c.fwd()); after != before {
			t.Errorf("flow changed by the retransmission:\n  %s", strings.Join(flowDiff(after, before), "\n  "))
		}
		// Anything else from the client waits for the backend.
		for _, s := range []spSeg{
			c.fromClient(ackOnly, c.isn+1, c.cookie+1, nil),
			c.fromClient(tcpFlags{ACK: true, PSH: true}, c.isn+1+uint32(len(c.req)), c.cookie+1, []byte("x")),
		} {
			e.step(t, spStep{in: e.eth1, frame: s.frame(), verdict: xdpDrop,
				counters: []xdp.Counter{xdp.CounterDropHTTPState}})
		}
		c.splice(t, 0x2222, 7)
	})

	t.Run("backend-synack-retransmitted", func(t *testing.T) {
		c := e.conn(45101, 0x3333, 7)
		c.request(t, httpGet("x.test", "/a/synack-again"), beA)
		c.splice(t, 0x4444, 7)
		// Our ACK was lost: the same SYN-ACK gets the same ACK and request.
		sa := c.synAck(0x4444, 7)
		e.step(t, spStep{in: e.eth2, frame: sa.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterSpliced}, out: c.spliceACK(sa).frame()})
		fwd, rev := c.wantFlows(t, xdp.SpliceEstablished)
		e.checkFlow(t, c.fwd(), fwd)
		e.checkFlow(t, c.rev(beA), rev)
		// A SYN-ACK for another SYN is not ours.
		other := c.fromBackend(beA, synAck, 0x4444, c.isn+2, 65160, nil)
		e.step(t, spStep{in: e.eth2, frame: other.frame(), verdict: xdpDrop,
			counters: []xdp.Counter{xdp.CounterDropHTTPState}})
	})

	t.Run("stash-kept-until-acknowledged", func(t *testing.T) {
		c := e.conn(45102, 0x5555, 7)
		req := httpGet("x.test", "/a/stash")
		c.request(t, req, beA)
		c.splice(t, 0x6666, 7)
		if st, ok := e.stash(t, c.fwd()); !ok || string(st) != string(req) {
			t.Fatalf("stash after the splice %q (present %v)", st, ok)
		}
		end := c.isn + 1 + uint32(len(req))
		for _, a := range []struct {
			ack  uint32
			kept bool
		}{{end - 1, true}, {end, false}} {
			in := c.fromBackend(beA, ackOnly, 0x6667, a.ack, 500, nil)
			e.step(t, spStep{in: e.eth2, frame: in.frame(), verdict: xdpRedirect,
				counters: []xdp.Counter{xdp.CounterForwarded}, out: toClientOut(in, c.cookie+1, 500).frame()})
			if _, ok := e.stash(t, c.fwd()); ok != a.kept {
				t.Errorf("backend acknowledged up to %d of %d: stash present %v, want %v", a.ack-c.isn-1, len(req), ok, a.kept)
			}
			rev, _ := e.flow(t, c.rev(beA))
			want := uint8(0)
			if a.kept {
				want = 1
			}
			if rev.StashPending != want {
				t.Errorf("backend acknowledged up to %d: reverse entry stash_pending %d, want %d", a.ack-c.isn-1, rev.StashPending, want)
			}
		}
		// With the request acknowledged there is nothing to send again.
		sa := c.synAck(0x6666, 7)
		e.step(t, spStep{in: e.eth2, frame: sa.frame(), verdict: xdpDrop,
			counters: []xdp.Counter{xdp.CounterDropHTTPState}})
	})

	t.Run("backend-refuses", func(t *testing.T) {
		c := e.conn(45103, 0x7777, 7)
		c.request(t, httpGet("x.test", "/a/refused"), beA)
		in := c.fromBackend(beA, rst, 0, c.isn+1, 0, nil)
		// The client gets the RST from VIP:80 at the sequence it expects
		// from the LB.
		e.step(t, spStep{in: e.eth2, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterForwarded}, out: toClientOut(in, c.cookie+1, 0).frame()})
		e.noFlow(t, c.fwd(), "after the backend refused")
		e.noFlow(t, c.rev(beA), "after the backend refused")
		if _, ok := e.stash(t, c.fwd()); ok {
			t.Error("stash left after the backend refused")
		}
	})

	t.Run("challenge-ack-while-syn-sent", func(t *testing.T) {
		c := e.conn(45104, 0x8888, 7)
		in := c.request(t, httpGet("x.test", "/a/challenged"), beA)
		// The backend still has an older connection on this tuple.
		ch := c.fromBackend(beA, ackOnly, 0x9999, 0x1234_5678, 502, nil)
		e.step(t, spStep{in: e.eth2, frame: ch.frame(), verdict: xdpRedirect,
			out: rstFrom(ch, c.cl, beA, 0x1234_5678).frame()})
		fwd, rev := c.wantFlows(t, xdp.SpliceSYNSent)
		e.checkFlow(t, c.fwd(), fwd)
		e.checkFlow(t, c.rev(beA), rev)
		// The client's retransmission brings the SYN again.
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterBackendSYNs, xdp.CounterForwarded},
			out:      c.backendSYN(in, beA, c.isn).frame()})
		c.splice(t, 0xaaaa, 7)
	})

	t.Run("client-rst-while-syn-sent", func(t *testing.T) {
		c := e.conn(45105, 0xbbbb, 7)
		c.request(t, httpGet("x.test", "/a/abandoned"), beA)
		in := c.fromClient(rst, c.isn+1+uint32(len(c.req)), c.cookie+1, nil)
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpDrop})
		e.noFlow(t, c.fwd(), "after the client's RST")
		e.noFlow(t, c.rev(beA), "after the client's RST")
		if _, ok := e.stash(t, c.fwd()); ok {
			t.Error("stash left after the client's RST")
		}
	})
}

// TestHTTPEstablished: translation of established segments both ways,
// window rescaling, teardown.
func TestHTTPEstablished(t *testing.T) {
	e := newSpliceEnv(t)
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

	const none = syncookie.NoWindowScale
	for i, w := range []struct {
		cws     uint8 // the client's window scale
		bws     int   // the backend's, -1 none
		win     uint16
		want    uint16 // the window the client gets
		comment string
	}{
		{7, 0, 64240, 64240 >> 7, "backend unscaled"},
		{7, 7, 64240, 64240, "same scale: unchanged"},
		{7, 9, 1000, 4000, "scaled up"},
		{7, 9, 64240, 65535, "clamped"},
		{7, -1, 64240, 64240 >> 7, "backend offered no scaling"},
		{7, 14, 3, 3 << 14 >> 7, "largest scale"},
		{7, 15, 3, 3 << 14 >> 7, "scale over 14 taken as 14"},
		{0, 0, 64240, 64240 >> 7, "client scale 0: the LB announced 7"},
		{0, 7, 64240, 64240, "client scale 0, backend 7"},
		{none, 9, 1000, 1000, "client without scaling: never rescaled"},
		{none, -1, 64240, 64240, "nobody scales"},
	} {
		t.Run(fmt.Sprintf("window-client-%d-backend-%d-%d", w.cws, w.bws, w.win), func(t *testing.T) {
			c := e.conn(uint16(46000+i), 0x0100_0000*uint32(i+1), w.cws)
			req := httpGet("x.test", "/a/window")
			c.request(t, req, beA)
			bisn := uint32(0x7000_0000) + uint32(i)
			c.splice(t, bisn, w.bws)
			in := c.fromBackend(beA, tcpFlags{ACK: true, PSH: true}, bisn+1, c.isn+1+uint32(len(req)), w.win, resp)
			e.step(t, spStep{in: e.eth2, frame: in.frame(), verdict: xdpRedirect,
				counters: []xdp.Counter{xdp.CounterForwarded}, out: toClientOut(in, c.cookie+1, w.want).frame()})
			// The client's window goes to the backend as it is: the
			// backend was told the client's scale.
			ca := c.fromClient(ackOnly, c.isn+1+uint32(len(req)), c.cookie+1+uint32(len(resp)), nil)
			ca.window = 1234
			e.step(t, spStep{in: e.eth1, frame: ca.frame(), verdict: xdpRedirect,
				counters: []xdp.Counter{xdp.CounterForwarded}, out: toBackendOut(ca, beA, bisn+1+uint32(len(resp))).frame()})
		})
	}

	// established connection on port, response delivered
	open := func(t *testing.T, port uint16) (*spConn, uint32, uint32) {
		c := e.conn(port, 0x0a0b_0c0d+uint32(port), 7)
		req := httpGet("x.test", "/a/teardown")
		c.request(t, req, beA)
		c.splice(t, 0xf000_0000, 7)
		in := c.fromBackend(beA, tcpFlags{ACK: true, PSH: true}, c.bisn+1, c.isn+1+uint32(len(req)), 501, resp)
		e.step(t, spStep{in: e.eth2, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterForwarded}, out: toClientOut(in, c.cookie+1, 501).frame()})
		return c, c.isn + 1 + uint32(len(req)), c.bisn + 1 + uint32(len(resp)) // client and backend next seq
	}
	states := func(t *testing.T, c *spConn, fwd, rev uint8) {
		t.Helper()
		f, _ := e.flow(t, c.fwd())
		r, _ := e.flow(t, c.rev(beA))
		if f.State != fwd || r.State != rev {
			t.Errorf("states forward %d reverse %d, want %d and %d", f.State, r.State, fwd, rev)
		}
	}
	seqDelta := func(c *spConn) uint32 { return c.cookie - c.bisn }

	t.Run("fin", func(t *testing.T) {
		c, cseq, bseq := open(t, 46100)
		in := c.fromClient(fin, cseq, bseq+seqDelta(c), nil)
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterForwarded}, out: toBackendOut(in, beA, bseq).frame()})
		states(t, c, xdp.FlowClosing, xdp.FlowClosing)
		bf := c.fromBackend(beA, fin, bseq, cseq+1, 501, nil)
		e.step(t, spStep{in: e.eth2, frame: bf.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterForwarded}, out: toClientOut(bf, bseq+seqDelta(c), 501).frame()})
		states(t, c, xdp.FlowClosing, xdp.FlowClosing)
	})

	t.Run("client-rst", func(t *testing.T) {
		c, cseq, bseq := open(t, 46101)
		in := c.fromClient(rst, cseq, bseq+seqDelta(c), nil)
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterForwarded}, out: toBackendOut(in, beA, bseq).frame()})
		f, _ := e.flow(t, c.fwd())
		if f.State != xdp.FlowClosed {
			t.Errorf("forward entry state %d after the client's RST, want closed", f.State)
		}
	})

	t.Run("client-rst-closes-reverse-entry", func(t *testing.T) {
		c, cseq, bseq := open(t, 46102)
		in := c.fromClient(rst, cseq, bseq+seqDelta(c), nil)
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterForwarded}, out: toBackendOut(in, beA, bseq).frame()})
		states(t, c, xdp.FlowClosed, xdp.FlowClosed)
	})

	t.Run("backend-rst", func(t *testing.T) {
		c, cseq, bseq := open(t, 46103)
		in := c.fromBackend(beA, rst, bseq, cseq, 0, nil)
		e.step(t, spStep{in: e.eth2, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterForwarded}, out: toClientOut(in, bseq+seqDelta(c), 0).frame()})
		states(t, c, xdp.FlowClosed, xdp.FlowClosed)
	})

	t.Run("syn-on-closed-connection-starts-anew", func(t *testing.T) {
		c, cseq, bseq := open(t, 46104)
		in := c.fromClient(fin, cseq, bseq+seqDelta(c), nil)
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterForwarded}, out: toBackendOut(in, beA, bseq).frame()})
		// The same tuple again: cookie handshake, the old entries gone.
		s := c.fromClient(syn, 0x5eed, 0, nil)
		s.opts = []byte{2, 4, 0x05, 0xb4, 1, 3, 3, 7}
		n := e.conn(c.cl.Port(), 0x5eed, 7)
		e.step(t, spStep{in: e.eth1, frame: s.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterSYNCookiesSent},
			out: spSeg{srcMAC: eth1MAC, dstMAC: clientMAC, src: vipWeb, dst: c.cl, df: true, ttl: 64,
				seq: n.cookie, ack: 0x5eed + 1, flags: synAck, window: 1460, opts: lbOpts(1460, 7, false)}.frame()})
		e.noFlow(t, c.fwd(), "after a SYN on a closing connection")
		e.noFlow(t, c.rev(beA), "after a SYN on a closing connection")
		n.request(t, httpGet("x.test", "/b/again"), beB)
	})
}

// TestHTTPKeepAliveRebind: later requests on a spliced connection stay,
// move to another pool's backend, or reset the client.
func TestHTTPKeepAliveRebind(t *testing.T) {
	e := newSpliceEnv(t)
	resp1 := []byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
	resp2 := []byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo!")

	c := e.conn(47000, 0xc000_0000, 7)
	r1 := httpGet("x.test", "/a/first")
	c.request(t, r1, beA)
	const bisnA, bisnB = 0x1000_0000, 0xfffffff0
	c.splice(t, bisnA, 7)
	deltaA := c.cookie - bisnA
	in := c.fromBackend(beA, tcpFlags{ACK: true, PSH: true}, bisnA+1, c.isn+1+uint32(len(r1)), 501, resp1)
	e.step(t, spStep{in: e.eth2, frame: in.frame(), verdict: xdpRedirect,
		counters: []xdp.Counter{xdp.CounterForwarded}, out: toClientOut(in, c.cookie+1, 501).frame()})

	// The second request routes to pool b: the segment becomes a SYN to
	// b's backend, the client's sequence continuing (ISN seq-1), the LB's
	// at what the client acknowledged.
	seq2, ack2 := c.isn+1+uint32(len(r1)), c.cookie+1+uint32(len(resp1))
	r2 := httpGet("x.test", "/b/second")
	in2 := c.fromClient(tcpFlags{ACK: true, PSH: true}, seq2, ack2, r2)
	in2.window = 2000
	c.window = 2000
	e.step(t, spStep{in: e.eth1, frame: in2.frame(), verdict: xdpRedirect,
		counters: []xdp.Counter{xdp.CounterRebinds, xdp.CounterBackendSYNs, xdp.CounterForwarded},
		out:      c.backendSYN(in2, beB, seq2-1).frame()})
	c.be, c.pool, c.req, c.reqSeq, c.lbSeq = beB, "b", r2, seq2, ack2-1
	fwd, rev := c.wantFlows(t, xdp.SpliceSYNSent)
	// what the SYN-ACK will overwrite is left from the first backend
	fwd.SeqDelta, fwd.BackendWscale = deltaA, 7
	rev.SeqDelta, rev.BackendWscale = deltaA, 7
	e.checkFlow(t, c.fwd(), fwd)
	e.checkFlow(t, c.rev(beB), rev)
	if old, ok := e.flow(t, c.rev(beA)); !ok || old.Splice != xdp.SpliceOrphan {
		t.Errorf("old backend's entry (present %v): splice %d, want orphan", ok, old.Splice)
	}
	if st, ok := e.stash(t, c.fwd()); !ok || string(st) != string(r2) {
		t.Errorf("stash %q (present %v), want the second request", st, ok)
	}

	// The old backend speaks: it gets an RST at the sequence it expects,
	// and its entry goes.
	oldFin := c.fromBackend(beA, fin, bisnA+1+uint32(len(resp1)), seq2, 501, nil)
	e.step(t, spStep{in: e.eth2, frame: oldFin.frame(), verdict: xdpRedirect,
		out: rstFrom(oldFin, c.cl, beA, seq2).frame()})
	e.noFlow(t, c.rev(beA), "after the orphaned backend was reset")

	// b's SYN-ACK completes the rebind.
	c.splice(t, bisnB, 9)
	in = c.fromBackend(beB, tcpFlags{ACK: true, PSH: true}, bisnB+1, seq2+uint32(len(r2)), 100, resp2)
	e.step(t, spStep{in: e.eth2, frame: in.frame(), verdict: xdpRedirect,
		counters: []xdp.Counter{xdp.CounterForwarded}, out: toClientOut(in, ack2, 400).frame()})

	// A third request for pool b goes on as data.
	seq3, ack3 := seq2+uint32(len(r2)), ack2+uint32(len(resp2))
	in3 := c.fromClient(tcpFlags{ACK: true, PSH: true}, seq3, ack3, httpGet("x.test", "/b/third"))
	e.step(t, spStep{in: e.eth1, frame: in3.frame(), verdict: xdpRedirect,
		counters: []xdp.Counter{xdp.CounterForwarded}, out: toBackendOut(in3, beB, bisnB+1+uint32(len(resp2))).frame()})
	f, _ := e.flow(t, c.fwd())
	if f.Splice != xdp.SpliceEstablished || f.NatAddr != xdp.Addr(backend2) {
		t.Errorf("after a same-pool request: splice %d to %s", f.Splice, xdp.AddrFrom(f.NatAddr))
	}

	// A request XDP cannot route resets the client at the sequence it
	// expects, and the connection is forgotten.
	seq4 := seq3 + uint32(len(in3.payload))
	in4 := c.fromClient(tcpFlags{ACK: true, PSH: true}, seq4, ack3, httpGet("x.test", "/a/%41"))
	e.step(t, spStep{in: e.eth1, frame: in4.frame(), verdict: xdpRedirect,
		counters: []xdp.Counter{xdp.CounterResetUnroutable, xdp.CounterSlowpath},
		slow:     []xdp.SlowpathReason{slowReason(t, "unsafe_path")},
		out:      rstFrom(in4, vipWeb, c.cl, ack3).frame()})
	e.noFlow(t, c.fwd(), "after an unroutable later request")
	e.noFlow(t, c.rev(beB), "after an unroutable later request")
	if _, ok := e.stash(t, c.fwd()); ok {
		t.Error("stash left after an unroutable later request")
	}

	t.Run("unroutable-reasons", func(t *testing.T) {
		for i, u := range []struct {
			req    []byte
			reason string
		}{
			{httpGet("x.test", "/nothing"), "no_route"},
			{[]byte("POST /static/x HTTP/1.1\r\nHost: x.test\r\n\r\n"), "method"},
			{[]byte("GET /b/x HTTP/1.1\r\n"), "incomplete"},
			{httpGet("x.test", "http://x.test/b/"), "target_form"},
		} {
			c := e.conn(uint16(47100+i), 0x100+uint32(i), 7)
			r1 := httpGet("x.test", "/a/first")
			c.request(t, r1, beA)
			c.splice(t, 0x200, 7)
			in := c.fromClient(tcpFlags{ACK: true, PSH: true}, c.isn+1+uint32(len(r1)), c.cookie+1, u.req)
			e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
				counters: []xdp.Counter{xdp.CounterResetUnroutable, xdp.CounterSlowpath},
				slow:     []xdp.SlowpathReason{slowReason(t, u.reason)},
				out:      rstFrom(in, vipWeb, c.cl, c.cookie+1).frame()})
			e.noFlow(t, c.fwd(), "after an unroutable later request")
			e.noFlow(t, c.rev(beA), "after an unroutable later request")
		}
	})

	t.Run("orphan-rst-is-dropped", func(t *testing.T) {
		c := e.conn(47200, 0x300, 7)
		r1 := httpGet("x.test", "/a/first")
		c.request(t, r1, beA)
		c.splice(t, 0x400, 7)
		seq2 := c.isn + 1 + uint32(len(r1))
		in := c.fromClient(tcpFlags{ACK: true, PSH: true}, seq2, c.cookie+1, httpGet("x.test", "/c/next"))
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterRebinds, xdp.CounterBackendSYNs, xdp.CounterForwarded},
			out:      c.backendSYN(in, beC, seq2-1).frame()})
		r := c.fromBackend(beA, rst, 0x401, seq2, 0, nil)
		e.step(t, spStep{in: e.eth2, frame: r.frame(), verdict: xdpDrop})
		e.noFlow(t, c.rev(beA), "after the orphaned backend's RST")
	})

	t.Run("pipelined-request-waits-for-response", func(t *testing.T) {
		c := e.conn(47300, 0x500, 7)
		r1 := httpGet("x.test", "/a/first")
		c.request(t, r1, beA)
		c.splice(t, 0x600, 7)
		in := c.fromBackend(beA, tcpFlags{ACK: true, PSH: true}, 0x601, c.isn+1+uint32(len(r1)), 501, resp1)
		e.step(t, spStep{in: e.eth2, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterForwarded}, out: toClientOut(in, c.cookie+1, 501).frame()})
		// A pipelined request for pool b, sent before the response arrived
		// (it acknowledges none of it).
		in2 := c.fromClient(tcpFlags{ACK: true, PSH: true}, c.isn+1+uint32(len(r1)), c.cookie+1, httpGet("x.test", "/b/pipelined"))
		v, _ := e.runBig(t, in2.frame(), e.eth1)
		f, _ := e.flow(t, c.fwd())
		if f.NatAddr == xdp.Addr(backend2) && int32(f.LbIsn-(c.cookie+uint32(len(resp1)))) < 0 {
			t.Fatalf("rebound to pool b (verdict %s) with the LB's sequence at cookie+%d, inside the %d bytes already sent from pool a",
				verdictName(v), f.LbIsn-c.cookie, len(resp1))
		}
	})
}

// The checksum helpers above rely on IPv4 without options; make sure the
// frames they describe decode as intended.
func TestHTTPSegBuilder(t *testing.T) {
	s := spSeg{srcMAC: clientMAC, dstMAC: eth1MAC, src: netip.AddrPortFrom(client, 1), dst: vipWeb, tos: 1, id: 2, df: true,
		ttl: 3, seq: 4, ack: 5, flags: tcpFlags{ACK: true, PSH: true, FIN: true}, window: 6, opts: lbOpts(1460, 7, false), payload: []byte("odd")}
	ip, tcp := decodeTCP(t, s.frame())
	if ip.TOS != 1 || ip.Id != 2 || ip.Flags != layers.IPv4DontFragment || ip.TTL != 3 || tcp.Seq != 4 || tcp.Ack != 5 ||
		!tcp.ACK || !tcp.PSH || !tcp.FIN || tcp.SYN || tcp.RST || tcp.Window != 6 || string(tcp.Payload) != "odd" {
		t.Errorf("decoded %+v %+v", ip, tcp)
	}
	if mss := tcpOptions(tcp)[layers.TCPOptionKindMSS]; binary.BigEndian.Uint16(mss) != 1460 {
		t.Errorf("MSS %v", mss)
	}
}

// TestHTTPSpliceICMP: ICMP errors about spliced connections are translated
// like their flow, including the quoted sequence number where the two sides
// number differently: a host ignores an error whose quoted sequence number
// lies outside what it has in flight (Linux: OutOfWindowIcmps), which would
// break path MTU discovery.
func TestHTTPSpliceICMP(t *testing.T) {
	e := newSpliceEnv(t)
	c := e.conn(48000, 0x0102_0304, 7)
	req := httpGet("x.test", "/a/icmp")
	c.request(t, req, beA)
	const bisn = 0x9000_0000
	c.splice(t, bisn, 7)
	icmpFwd := delta{d(e.sid, xdp.CounterICMPForwarded): 1, d(e.sid, xdp.CounterForwarded): 1}
	// The quoted TCP header's first 8 bytes hold the ports and the sequence
	// number; seqAt sets it in a quote.
	seqAt := func(q []byte, seq uint32) []byte {
		q = append([]byte(nil), q...)
		binary.BigEndian.PutUint32(q[20+4:], seq)
		return q
	}
	// sameButICMPChecksum compares frames with the (valid, checked)
	// ICMP checksums left out: incremental updates may give the other
	// zero of one's complement.
	sameButICMPChecksum := func(t *testing.T, got, want []byte) {
		t.Helper()
		got, want = append([]byte(nil), got...), append([]byte(nil), want...)
		for _, f := range [][]byte{got, want} {
			if len(f) > ethHlen+24 {
				f[ethHlen+22], f[ethHlen+23] = 0, 0
			}
		}
		equalFrames(t, got, want)
	}

	t.Run("from-backend-side", func(t *testing.T) {
		// quotes client → backend: the client's own numbering
		quoted := tcpPkt(eth2MAC, macOf(backend1), c.cl, beA, tcpFlags{ACK: true, PSH: true})
		quoted.seq, quoted.ack, quoted.ttl = c.isn+1, bisn+1, 63
		in := icmpErr{srcMAC: macOf(backend1), dstMAC: eth2MAC, src: backend1, dst: client, ttl: 64,
			typ: 3, code: 4, mtu: 1400, quote: quoteOf(quoted)}
		out := e.step(t, spStep{in: e.eth2, frame: in.frame(), verdict: xdpRedirect, raw: icmpFwd, out: nil, verdictOnly: true})
		mustCheckFrame(t, out)
		want := in
		want.src, want.ttl = vip, 63
		want.srcMAC, want.dstMAC = eth1MAC, clientMAC
		want.quote = rewriteQuote(in.quote, c.cl, vipWeb)
		sameButICMPChecksum(t, out, want.frame())
	})

	t.Run("from-client-side", func(t *testing.T) {
		// quotes VIP:80 → client with the LB's numbering, 10 bytes into the
		// response
		quoted := tcpPkt(eth1MAC, clientMAC, vipWeb, c.cl, tcpFlags{ACK: true, PSH: true})
		quoted.seq, quoted.ack, quoted.ttl = c.cookie+1+10, c.isn+1+uint32(len(req)), 63
		in := icmpErr{srcMAC: gatewayMAC, dstMAC: eth1MAC, src: clientGW, dst: vip, ttl: 64,
			typ: 3, code: 4, mtu: 1400, quote: quoteOf(quoted)}
		out := e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect, raw: icmpFwd, verdictOnly: true})
		mustCheckFrame(t, out)
		want := in
		want.dst, want.ttl = backend1, 63
		want.srcMAC, want.dstMAC = eth2MAC, macOf(backend1)
		want.quote = seqAt(rewriteQuote(in.quote, beA, c.cl), bisn+1+10)
		sameButICMPChecksum(t, out, want.frame())
	})
}

// TestHTTPReusedTuple: a client SYN on the tuple of a connection the LB
// still holds open (the client lost it: crash, NAT port reuse; or the
// kernel reset a slow-path connection, which XDP never sees) starts a new
// connection. Its first request must not be treated as the old connection's.
func TestHTTPReusedTuple(t *testing.T) {
	e := newSpliceEnv(t)
	synOpts := []byte{2, 4, 0x05, 0xb4, 1, 3, 3, 7}

	t.Run("after-established", func(t *testing.T) {
		old := e.conn(49000, 0x1000, 7)
		old.request(t, httpGet("x.test", "/a/old"), beA)
		old.splice(t, 0x2000, 7)
		e.reconnect(t, old, 0x7777_0000, synOpts)
	})
	t.Run("after-slow-path", func(t *testing.T) {
		old := e.conn(49001, 0x3000, 7)
		in := old.fromClient(tcpFlags{ACK: true, PSH: true}, old.isn+1, old.cookie+1, httpGet("x.test", "/a/%2e"))
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpPass,
			counters: []xdp.Counter{xdp.CounterSlowpath}, slow: []xdp.SlowpathReason{slowReason(t, "unsafe_path")}})
		e.reconnect(t, old, 0x8888_0000, synOpts)
	})
}

// reconnect opens a new connection with ISN isn on old's tuple and checks
// its first request goes to a backend as a new connection.
func (e *spEnv) reconnect(t *testing.T, old *spConn, isn uint32, synOpts []byte) {
	t.Helper()
	s := old.fromClient(syn, isn, 0, nil)
	s.opts = synOpts
	v, _ := e.runBig(t, s.frame(), e.eth1)
	if v != xdpRedirect {
		// A challenge ACK would be fine too; then the client resets and
		// retries. Anything but a SYN-ACK ends the check here.
		return
	}
	n := e.conn(old.cl.Port(), isn, 7)
	in := n.fromClient(tcpFlags{ACK: true, PSH: true}, isn+1, n.cookie+1, httpGet("x.test", "/a/new"))
	v, out := e.runBig(t, in.frame(), e.eth1)
	if v != xdpRedirect {
		t.Fatalf("the new connection's first request: verdict %s, want the SYN to a backend", verdictName(v))
	}
	spEqualFrames(t, out, n.backendSYN(in, beA, isn).frame())
}

// TestHTTPBodyLooksLikeRequest: a later segment that begins with a method
// may be the body of a request in flight, not a new request. Requests are
// framed by Content-Length: only a segment beginning where the current
// request ends is parsed as the next one.
func TestHTTPBodyLooksLikeRequest(t *testing.T) {
	e := newSpliceEnv(t)
	body := []byte("GET /b/x HTTP/1.1\r\nHost: x.test\r\n\r\n")
	resp := []byte("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
	c := e.conn(49100, 0x4000, 7)
	head := []byte(fmt.Sprintf("POST /a/upload HTTP/1.1\r\nHost: x.test\r\nContent-Length: %d\r\n\r\n", len(body)))
	c.request(t, head, beA)
	const bisnA = 0x5000
	c.splice(t, bisnA, 7)
	deltaA := c.cookie - bisnA
	// The backend acknowledges the headers and waits for the body.
	a := c.fromBackend(beA, ackOnly, bisnA+1, c.isn+1+uint32(len(head)), 501, nil)
	e.step(t, spStep{in: e.eth2, frame: a.frame(), verdict: xdpRedirect,
		counters: []xdp.Counter{xdp.CounterForwarded}, out: toClientOut(a, c.cookie+1, 501).frame()})
	in := c.fromClient(tcpFlags{ACK: true, PSH: true}, c.isn+1+uint32(len(head)), c.cookie+1, body)
	e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
		counters: []xdp.Counter{xdp.CounterForwarded}, out: toBackendOut(in, beA, bisnA+1).frame()})
	before, _ := e.flow(t, c.fwd())
	if want := c.isn + 1 + uint32(len(head)+len(body)); before.ReqNext != want || before.NatAddr != xdp.Addr(backend1) {
		t.Errorf("after the body: req_next %#x (want %#x), backend %s", before.ReqNext, want, xdp.AddrFrom(before.NatAddr))
	}

	// Retransmissions of the body, and of the request's first segment,
	// go on unchanged.
	for _, re := range []spSeg{in, c.fromClient(tcpFlags{ACK: true, PSH: true}, c.isn+1, c.cookie+1, head)} {
		e.step(t, spStep{in: e.eth1, frame: re.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterForwarded}, out: toBackendOut(re, beA, bisnA+1).frame()})
	}
	after, _ := e.flow(t, c.fwd())
	after.NhLen = before.NhLen // grows with the largest packet forwarded
	if after != before {
		t.Errorf("flow changed by retransmissions:\n  %s", strings.Join(flowDiff(after, before), "\n  "))
	}

	// The response, then a request after the body: routed again (here to
	// pool b, so the connection is rebound).
	r := c.fromBackend(beA, tcpFlags{ACK: true, PSH: true}, bisnA+1, c.isn+1+uint32(len(head)+len(body)), 501, resp)
	e.step(t, spStep{in: e.eth2, frame: r.frame(), verdict: xdpRedirect,
		counters: []xdp.Counter{xdp.CounterForwarded}, out: toClientOut(r, c.cookie+1, 501).frame()})
	seq2, ack2 := c.isn+1+uint32(len(head)+len(body)), c.cookie+1+uint32(len(resp))
	r2 := httpGet("x.test", "/b/after-body")
	in2 := c.fromClient(tcpFlags{ACK: true, PSH: true}, seq2, ack2, r2)
	e.step(t, spStep{in: e.eth1, frame: in2.frame(), verdict: xdpRedirect,
		counters: []xdp.Counter{xdp.CounterRebinds, xdp.CounterBackendSYNs, xdp.CounterForwarded},
		out:      c.backendSYN(in2, beB, seq2-1).frame()})
	c.be, c.pool, c.req, c.reqSeq, c.lbSeq = beB, "b", r2, seq2, ack2-1
	fwd, rev := c.wantFlows(t, xdp.SpliceSYNSent)
	fwd.SeqDelta, fwd.BackendWscale = deltaA, 7
	rev.SeqDelta, rev.BackendWscale = deltaA, 7
	e.checkFlow(t, c.fwd(), fwd)
	e.checkFlow(t, c.rev(beB), rev)
}

// TestHTTPFraming: how later client segments are framed: bodies split
// across segments, segments past the next request's start, pipelining,
// later requests XDP cannot frame, upgrades.
func TestHTTPFraming(t *testing.T) {
	e := newSpliceEnv(t)
	port := uint16(49300)
	// open is a spliced connection whose first request req went to pool a.
	open := func(t *testing.T, req []byte) *spConn {
		t.Helper()
		port++
		c := e.conn(port, 0x0700_0000+uint32(port)*1013, 7)
		c.request(t, req, beA)
		c.splice(t, 0x0800_0000, 7)
		return c
	}
	data := tcpFlags{ACK: true, PSH: true}
	// reset checks that in resets the client for reason, the connection
	// forgotten.
	reset := func(t *testing.T, c *spConn, in spSeg, reason string) {
		t.Helper()
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterResetUnroutable, xdp.CounterSlowpath},
			slow:     []xdp.SlowpathReason{slowReason(t, reason)},
			out:      rstFrom(in, vipWeb, c.cl, in.ack).frame()})
		e.noFlow(t, c.fwd(), "after the reset")
		e.noFlow(t, c.rev(beA), "after the reset")
	}

	t.Run("body-begun-in-first-segment", func(t *testing.T) {
		rest := []byte("GET /b/x HTTP/1.1\r\nHost: x.test\r\n\r\n")
		head := fmt.Sprintf("POST /a/up HTTP/1.1\r\nHost: x.test\r\nContent-Length: %d\r\n\r\n", 10+len(rest))
		first := []byte(head + "0123456789")
		c := open(t, first) // wantFlows expects req_next past the whole body
		in := c.fromClient(data, c.isn+1+uint32(len(first)), c.cookie+1, rest)
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterForwarded}, out: toBackendOut(in, beA, c.bisn+1).frame()})
	})

	t.Run("segment-past-next-request-start-dropped", func(t *testing.T) {
		r1 := httpGet("x.test", "/a/first")
		c := open(t, r1)
		next := c.isn + 1 + uint32(len(r1))
		// The segment beginning the next request was lost; the one after
		// it (whatever it holds) must wait for it.
		for _, p := range [][]byte{[]byte("tail of a request"), httpGet("x.test", "/a/looks-like-one")} {
			in := c.fromClient(data, next+100, c.cookie+1, p)
			e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpDrop,
				counters: []xdp.Counter{xdp.CounterDropHTTPState}})
		}
		// The request itself, when it comes, is routed.
		r2 := httpGet("x.test", "/a/second")
		in := c.fromClient(data, next, c.cookie+1, r2)
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterForwarded}, out: toBackendOut(in, beA, c.bisn+1).frame()})
		if f, _ := e.flow(t, c.fwd()); f.ReqNext != next+uint32(len(r2)) {
			t.Errorf("req_next %#x, want %#x", f.ReqNext, next+uint32(len(r2)))
		}
	})

	t.Run("pipelined-later-requests-reset", func(t *testing.T) {
		r1 := httpGet("x.test", "/a/first")
		c := open(t, r1)
		two := append(httpGet("x.test", "/a/second"), httpGet("x.test", "/b/third")...)
		reset(t, c, c.fromClient(data, c.isn+1+uint32(len(r1)), c.cookie+1, two), "pipelined")
	})

	t.Run("body-segment-running-past-request-reset", func(t *testing.T) {
		head := []byte("POST /a/up HTTP/1.1\r\nHost: x.test\r\nContent-Length: 4\r\n\r\n")
		c := open(t, head)
		in := c.fromClient(data, c.isn+1+uint32(len(head)), c.cookie+1, append([]byte("bodyGET "), httpGet("x.test", "/b/")...))
		reset(t, c, in, "pipelined")
	})

	for _, u := range []struct {
		name, reason string
		req          []byte
	}{
		{"later-chunked", "chunked", []byte("POST /a/x HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n")},
		{"later-bad-length", "bad_content_length", []byte("POST /a/x HTTP/1.1\r\nHost: x.test\r\nContent-Length: 1x\r\n\r\n")},
		{"later-header-not-in-segment", "incomplete", []byte("POST /a/x HTTP/1.1\r\nHost: x.test\r\nContent-Length: 1\r\n")},
		{"later-not-http", "not_http", []byte{0x81, 0x85, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"later-unknown-method", "not_http", []byte("PROPFIND /a/ HTTP/1.1\r\nHost: x.test\r\n\r\n")},
	} {
		t.Run(u.name+"-reset", func(t *testing.T) {
			r1 := httpGet("x.test", "/a/first")
			c := open(t, r1)
			reset(t, c, c.fromClient(data, c.isn+1+uint32(len(r1)), c.cookie+1, u.req), u.reason)
		})
	}

	t.Run("upgrade", func(t *testing.T) {
		r1 := []byte("GET /a/ws HTTP/1.1\r\nHost: x.test\r\nConnection: Upgrade\r\nUPGRADE: websocket\r\n\r\n")
		c := open(t, r1)
		next := c.isn + 1 + uint32(len(r1))
		// After the 101, WebSocket frames: the backend switched protocols.
		frames := []spSeg{
			c.fromClient(data, next, c.cookie+1, []byte{0x81, 0x85, 1, 2, 3, 4, 5, 6, 7, 8, 9}),
			c.fromClient(data, next+11, c.cookie+1, httpGet("x.test", "/b/inside-websocket")),
			c.fromClient(data, next+5000, c.cookie+1, []byte("anything")),
		}
		for _, in := range frames {
			e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
				counters: []xdp.Counter{xdp.CounterForwarded}, out: toBackendOut(in, beA, c.bisn+1).frame()})
		}
		if f, _ := e.flow(t, c.fwd()); f.Framing != xdp.FramingOpaque || f.NatAddr != xdp.Addr(backend1) {
			t.Errorf("framing %d to %s, want opaque to %s", f.Framing, xdp.AddrFrom(f.NatAddr), backend1)
		}
	})

	t.Run("upgrade-declined", func(t *testing.T) {
		r1 := []byte("GET /a/ws HTTP/1.1\r\nHost: x.test\r\nUpgrade: websocket\r\n\r\n")
		c := open(t, r1)
		// The backend answered 200: the next request is a request.
		r2 := httpGet("x.test", "/a/second")
		in := c.fromClient(data, c.isn+1+uint32(len(r1)), c.cookie+1, r2)
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterForwarded}, out: toBackendOut(in, beA, c.bisn+1).frame()})
		if f, ok := e.flow(t, c.fwd()); !ok || f.Framing != xdp.FramingHTTP {
			t.Errorf("framing %d (flow present %v) after a request without Upgrade, want HTTP", f.Framing, ok)
		}
	})
}

// TestHTTPSlowpathService: a service flagged slow-path only (by the loader,
// asked for or because a route needs the slow path) still answers the
// handshake with a cookie, but its first request is not even parsed: the
// flow is marked slow path with reason "service" and the segment passed.
func TestHTTPSlowpathService(t *testing.T) {
	e := newSpliceEnv(t)
	for _, tc := range []struct {
		name  string
		apply func(*loader.State)
	}{
		{"asked-for", func(s *loader.State) { s.Services[0].SlowpathOnly = true }},
		{"wildcard-route", func(s *loader.State) {
			s.Services[0].Routes = append(s.Services[0].Routes, loader.Route{Host: "*.example.com", Path: "/", Pool: "b"})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := routedState()
			tc.apply(&s)
			e.apply(t, s)
			defer e.apply(t, routedState())
			if e.serviceID(t, "site") != e.sid {
				t.Fatal("the service changed id")
			}

			c := e.conn(49200, 0x0600_0000, 7)
			in := c.fromClient(syn, c.isn, 0, nil)
			in.opts = []byte{2, 4, 0x05, 0xb4, 1, 3, 3, 7}
			e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
				counters: []xdp.Counter{xdp.CounterSYNCookiesSent},
				out: spSeg{srcMAC: eth1MAC, dstMAC: clientMAC, src: vipWeb, dst: c.cl, df: true, ttl: 64,
					seq: c.cookie, ack: c.isn + 1, flags: synAck, window: 1460, opts: lbOpts(1460, 7, false)}.frame()})
			e.noFlow(t, c.fwd(), "after the SYN")

			// A request XDP would route to pool a goes to the kernel.
			req := c.fromClient(tcpFlags{ACK: true, PSH: true}, c.isn+1, c.cookie+1, httpGet("x.test", "/a/x"))
			r := slowReason(t, "service")
			e.step(t, spStep{in: e.eth1, frame: req.frame(), verdict: xdpPass,
				counters: []xdp.Counter{xdp.CounterSlowpath}, slow: []xdp.SlowpathReason{r}})
			e.checkFlow(t, c.fwd(), xdp.Flow{Direction: xdp.ToBackend, ServiceId: e.sid, ClientIsn: c.isn,
				LbIsn: c.cookie, Mss: c.co.MSS, ClientWscale: c.co.WScale, Sack: boolField(c.co.SACK), ClientWindow: c.window,
				Splice: xdp.SpliceSlowpath, Reason: uint16(r)})
			if _, ok := e.stash(t, c.fwd()); ok {
				t.Error("a slow-path service's request was stashed")
			}
			e.noFlow(t, c.rev(beA), "reverse entry of a slow-path service's flow")
			// and so does the rest of the connection
			more := c.fromClient(ackOnly, c.isn+1+uint32(len(req.payload)), c.cookie+1, []byte("more"))
			e.step(t, spStep{in: e.eth1, frame: more.frame(), verdict: xdpPass,
				counters: []xdp.Counter{xdp.CounterPassNotService}})

			// A bad cookie is still dropped, as for any HTTP service.
			bad := c.fromClient(tcpFlags{ACK: true, PSH: true}, c.isn+1, c.cookie+2, httpGet("x.test", "/a/x"))
			bad.src = netip.AddrPortFrom(client, 49201)
			e.step(t, spStep{in: e.eth1, frame: bad.frame(), verdict: xdpDrop,
				counters: []xdp.Counter{xdp.CounterDropBadCookie}})
		})
	}
}

// maglevOrder is the order in which a connection with key k is offered to
// the backends of the pool with id poolID: the Maglev table from slot
// flowHash(k) % size on, wrapping, each backend once, empty entries
// skipped. The slow path (router.Table.Backends) must give the same.
func (e *spEnv) maglevOrder(tb testing.TB, poolID uint32, k xdp.FlowKey) []netip.AddrPort {
	tb.Helper()
	var pool xdp.Pool
	if err := e.objs.Pools.Lookup(poolID, &pool); err != nil {
		tb.Fatal(err)
	}
	var innerID ebpf.MapID
	if err := e.objs.MaglevTables.Lookup(pool.TableSlot, &innerID); err != nil {
		tb.Fatal(err)
	}
	inner, err := ebpf.NewMapFromID(innerID)
	if err != nil {
		tb.Fatal(err)
	}
	defer inner.Close()
	var order []netip.AddrPort
	seen := map[uint32]bool{}
	idx := flowHash(k) % pool.TableSize
	for i := range pool.TableSize {
		var id uint32
		if err := inner.Lookup((idx+i)%pool.TableSize, &id); err != nil {
			tb.Fatal(err)
		}
		var b xdp.Backend
		if err := e.objs.Backends.Lookup(id, &b); err != nil {
			tb.Fatal(err)
		}
		if b.Addr == 0 || seen[id] {
			continue
		}
		seen[id] = true
		order = append(order, netip.AddrPortFrom(xdp.AddrFrom(b.Addr), xdp.PortFrom(b.Port)))
	}
	return order
}

// TestHTTPBackendRefusesNextChoice: a backend that refuses the spliced
// SYN (RST) is replaced by the pool's next Maglev choice, the SYN the same
// (client ISN and options), up to three backends; then the client is reset.
func TestHTTPBackendRefusesNextChoice(t *testing.T) {
	e := newSpliceEnv(t)
	s := routedState()
	s.Pools[0] = loader.Pool{Name: "a", MaglevSize: tableSize, Backends: []loader.Backend{
		{Address: beA, Weight: 1}, {Address: beB, Weight: 1}, {Address: beC, Weight: 1},
	}}
	e.apply(t, s)
	poolA := e.poolID(t, "a")

	// first sends the first request of a connection on port and checks the
	// SYN goes to the first choice; it returns the connection, the request
	// segment and the backends in Maglev order.
	first := func(t *testing.T, port uint16) (*spConn, spSeg, []netip.AddrPort) {
		t.Helper()
		c := e.conn(port, 0x0900_0000+uint32(port)*7, 7)
		order := e.maglevOrder(t, poolA, c.fwd())
		if len(order) != 3 {
			t.Fatalf("Maglev order %v, want the three backends", order)
		}
		req := httpGet("x.test", "/a/refused")
		in := c.fromClient(tcpFlags{ACK: true, PSH: true}, c.isn+1, c.cookie+1, req)
		c.be, c.pool, c.req, c.reqSeq, c.lbSeq = order[0], "a", req, c.isn+1, c.cookie
		e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterNewFlows, xdp.CounterBackendSYNs, xdp.CounterForwarded},
			out:      c.backendSYN(in, order[0], c.isn).frame()})
		return c, in, order
	}
	// refuse has backend c.be refuse and checks the SYN goes to next.
	refuse := func(t *testing.T, c *spConn, req spSeg, next netip.AddrPort) {
		t.Helper()
		r := c.fromBackend(c.be, rst, 0, c.isn+1, 0, nil)
		old := c.be
		e.step(t, spStep{in: e.eth2, frame: r.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterBackendRetries, xdp.CounterBackendSYNs, xdp.CounterForwarded},
			out:      c.backendSYN(req, next, c.isn).frame()})
		c.be = next
		c.refusals++
		fwd, rev := c.wantFlows(t, xdp.SpliceSYNSent)
		e.checkFlow(t, c.fwd(), fwd)
		e.checkFlow(t, c.rev(next), rev)
		e.noFlow(t, c.rev(old), "the refusing backend's entry")
		if st, ok := e.stash(t, c.fwd()); !ok || string(st) != string(c.req) {
			t.Errorf("stash %q (present %v), want the request", st, ok)
		}
	}

	t.Run("second-choice-accepts", func(t *testing.T) {
		c, req, order := first(t, 49400)
		refuse(t, c, req, order[1])
		// A late RST from the first backend changes nothing: it has no
		// entry any more.
		late := c.fromBackend(order[0], rst, 0, c.isn+1, 0, nil)
		v, _ := e.runBig(t, late.frame(), e.eth2)
		if v != xdpPass {
			t.Errorf("late RST of the refusing backend: verdict %s, want pass (no flow)", verdictName(v))
		}
		c.splice(t, 0x0a00_0000, 7)
	})

	t.Run("exhausted", func(t *testing.T) {
		c, req, order := first(t, 49401)
		refuse(t, c, req, order[1])
		refuse(t, c, req, order[2])
		// The third refusal resets the client at the sequence number it
		// expects from the LB.
		r := c.fromBackend(order[2], rst, 0, c.isn+1, 0, nil)
		e.step(t, spStep{in: e.eth2, frame: r.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterForwarded}, out: toClientOut(r, c.cookie+1, 0).frame()})
		e.noFlow(t, c.fwd(), "after the last backend refused")
		for _, be := range order {
			e.noFlow(t, c.rev(be), "after the last backend refused")
		}
		if _, ok := e.stash(t, c.fwd()); ok {
			t.Error("stash left after the last backend refused")
		}
	})

	t.Run("client-retransmission-goes-to-current-choice", func(t *testing.T) {
		c, req, order := first(t, 49402)
		refuse(t, c, req, order[1])
		e.step(t, spStep{in: e.eth1, frame: req.frame(), verdict: xdpRedirect,
			counters: []xdp.Counter{xdp.CounterBackendSYNs, xdp.CounterForwarded},
			out:      c.backendSYN(req, order[1], c.isn).frame()})
	})

	t.Run("emptied-backend-skipped", func(t *testing.T) {
		c, req, order := first(t, 49403)
		// The second choice's entry is zeroed, as a reload that removes a
		// backend leaves it while packets may still read the old table.
		var id uint32
		var b xdp.Backend
		found := false
		iter := e.objs.Backends.Iterate()
		for iter.Next(&id, &b) {
			if xdp.AddrFrom(b.Addr) == order[1].Addr() && xdp.PortFrom(b.Port) == order[1].Port() {
				found = true
				break
			}
		}
		if err := iter.Err(); err != nil || !found {
			t.Fatalf("backend %s not in the backends map (walk error %v)", order[1], err)
		}
		if err := e.objs.Backends.Put(id, xdp.Backend{}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := e.objs.Backends.Put(id, b); err != nil {
				t.Errorf("restore backend %s: %v", order[1], err)
			}
		}()
		refuse(t, c, req, order[2])
	})
}

// TestHTTPSACKBlocks: a client that offered SACK gets it in both handshakes,
// and its SACK blocks, which acknowledge the backend's bytes in the LB's
// sequence space, reach the backend moved into the backend's, wherever the
// option sits, with the checksum right. A client without SACK has its
// options left alone.
func TestHTTPSACKBlocks(t *testing.T) {
	e := newSpliceEnv(t)
	edges := func(opts []byte, at int, values ...uint32) []byte {
		out := append([]byte(nil), opts...)
		for i, v := range values {
			binary.BigEndian.PutUint32(out[at+4*i:], v)
		}
		return out
	}
	cases := []struct {
		name   string
		sack   bool
		opts   []byte // with zero edges, filled in below
		at     int    // where the first edge sits
		blocks int
		ipOpts []byte // the translation must find TCP after them
	}{
		{"one-block-linux-layout", true, []byte{1, 1, 5, 10, 0, 0, 0, 0, 0, 0, 0, 0}, 4, 1, nil},
		{"three-blocks", true, append([]byte{1, 1, 5, 26}, make([]byte, 24)...), 4, 3, nil},
		{"unaligned", true, []byte{1, 5, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 3, 1, nil},
		{"no-sack-negotiated", false, []byte{1, 1, 5, 10, 0, 0, 0, 0, 0, 0, 0, 0}, 4, 1, nil},
		{"ip-options", true, []byte{1, 1, 5, 10, 0, 0, 0, 0, 0, 0, 0, 0}, 4, 1, []byte{1, 1, 1, 0}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.conn(uint16(47000+i), 0x0c00_0000+uint32(i)*7919, 7)
			c.co.SACK = tc.sack
			c.cookie = syncookie.Make(syncookie.Tuple{Client: c.cl, VIP: vipWeb}, c.isn, c.co, e.cur, e.keys[e.cur])
			c.lbSeq = c.cookie
			req := httpGet("x.test", "/a/sack")
			c.request(t, req, beA) // the backend SYN carries SACK-permitted iff the client offered it
			c.splice(t, 0x0d00_0000, 7)
			delta := c.cookie - c.bisn

			var lb, be []uint32
			for b := range tc.blocks {
				left := c.cookie + 1 + uint32(1000*(2*b+1))
				lb = append(lb, left, left+500)
				be = append(be, left-delta, left+500-delta)
			}
			cseq := c.isn + 1 + uint32(len(req))
			in := c.fromClient(tcpFlags{ACK: true}, cseq, c.cookie+1, nil)
			in.opts = edges(tc.opts, tc.at, lb...)
			in.ipOpts = tc.ipOpts
			want := toBackendOut(in, beA, c.bisn+1)
			if tc.sack {
				want.opts = edges(tc.opts, tc.at, be...)
			}
			e.step(t, spStep{in: e.eth1, frame: in.frame(), verdict: xdpRedirect,
				counters: []xdp.Counter{xdp.CounterForwarded}, out: want.frame()})
		})
	}
}

// TestHTTPKernelSocketSegments: a segment of an HTTP service's tuple with
// no flow and no valid cookie reaches the kernel when the kernel has a
// connection on that tuple (one the slow path owns whose flow entry
// expired, one the kernel handshook itself after a TIME_WAIT), whatever
// its flags: in particular the RST a client answers a TIME_WAIT socket's
// ACK with, which alone frees the port. Without such a socket the same
// segments are dropped.
func TestHTTPKernelSocketSegments(t *testing.T) {
	e := newSpliceEnv(t)
	c := e.conn(48000, 0x0e00_0000, 7)
	segments := map[string]spSeg{
		"rst":      c.fromClient(tcpFlags{RST: true}, c.isn+1, 0, nil),
		"rst-ack":  c.fromClient(tcpFlags{RST: true, ACK: true}, c.isn+1, 0x1234, nil),
		"ack-data": c.fromClient(tcpFlags{ACK: true, PSH: true}, c.isn+1, 0x1234, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")),
		"syn":      c.fromClient(syn, c.isn, 0, nil),
	}
	for name, seg := range segments {
		t.Run("no-socket-"+name, func(t *testing.T) {
			want := xdp.CounterDropBadCookie
			var verdict uint32 = xdpDrop
			switch {
			case name == "syn":
				want, verdict = xdp.CounterSYNCookiesSent, xdpRedirect
			case name != "ack-data":
				want = xdp.CounterDropHTTPState
			}
			e.step(t, spStep{in: e.eth1, frame: seg.frame(), verdict: verdict, counters: []xdp.Counter{want},
				verdictOnly: name == "syn"})
		})
	}

	// A kernel connection on exactly that tuple, in the test's namespace
	// (where the VIP is local): the client's address made local too, a
	// listener on the VIP and a connection from the client's port to it.
	var ln net.Listener
	var conn net.Conn
	err := e.w.Do(func() error {
		a := c.cl.Addr().String() + "/32"
		if out, err := exec.Command("ip", "addr", "add", a, "dev", "lo").CombinedOutput(); err != nil {
			return fmt.Errorf("ip addr add %s: %v: %s", a, err, out)
		}
		var err error
		if ln, err = net.Listen("tcp4", vipWeb.String()); err != nil {
			return err
		}
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(c.cl)}
		conn, err = d.Dial("tcp4", vipWeb.String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	defer conn.Close()
	for name, seg := range segments {
		t.Run("kernel-socket-"+name, func(t *testing.T) {
			e.step(t, spStep{in: e.eth1, frame: seg.frame(), verdict: xdpPass,
				counters: []xdp.Counter{xdp.CounterPassLocalSocket}})
			e.forgetFlows(t, netip.MustParsePrefix("10.0.2.0/24"))
		})
	}
	// A data segment leaves a slow-path entry behind, so the next one
	// passes on the flow lookup alone.
	t.Run("kernel-socket-entry", func(t *testing.T) {
		e.step(t, spStep{in: e.eth1, frame: segments["ack-data"].frame(), verdict: xdpPass,
			counters: []xdp.Counter{xdp.CounterPassLocalSocket}})
		if f, ok := e.flow(t, c.fwd()); !ok || f.Splice != xdp.SpliceSlowpath {
			t.Fatalf("flow after a kernel connection's segment: %+v (present %v), want a slow-path entry", f, ok)
		}
		e.step(t, spStep{in: e.eth1, frame: segments["ack-data"].frame(), verdict: xdpPass,
			counters: []xdp.Counter{xdp.CounterPassNotService}})
	})
}
