package slowpath

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Protocol upgrades (WebSocket, RFC 6455; any Upgrade token, RFC 9110
// §7.8). A request that asks for one goes to the backend on a connection of
// its own, not a pooled one; if the backend answers 101, the client's and
// the backend's connections become one tunnel whose bytes the proxy copies
// without reading, as nginx does with `proxy_set_header Upgrade` and HAProxy
// does by default. Any other answer is passed on and the connection closed.

// upgradeRefusalBodyMax bounds the body of a backend's refusal (400, 401,
// 426, …) that is read and passed on; a longer one is a 502.
const upgradeRefusalBodyMax = 64 << 10

// upgradeProtocol returns the protocol a request asks to switch to, or nil:
// it needs an Upgrade header, "upgrade" among the Connection tokens and no
// body (a body would have to be forwarded before the switch, which no
// upgrading protocol uses). h2c is not passed on: clients such as
// `curl --http2` offer it on ordinary requests, and an HTTP/1.1 proxy
// answers them in HTTP/1.1 (the Upgrade header is dropped as hop-by-hop).
// The result is a copy: stripping the hop-by-hop headers reuses their
// memory.
func upgradeProtocol(h *fasthttp.RequestHeader) []byte {
	proto := h.Peek(fasthttp.HeaderUpgrade)
	// a request without Content-Length and Transfer-Encoding has no body:
	// fasthttp says -2 for it, -1 for chunked
	if cl := h.ContentLength(); len(proto) == 0 || cl > 0 || cl == -1 || hasPrefixFold(proto, "h2c") {
		return nil
	}
	for tok := range connectionTokens(h.PeekAll(fasthttp.HeaderConnection)) {
		if bytes.EqualFold(tok, []byte("upgrade")) {
			return bytes.Clone(proto)
		}
	}
	return nil
}

// upgrade forwards an upgrade request (already rewritten for the backend)
// to the first backend that accepts a connection, and on 101 joins the two
// connections once fasthttp has written the 101 to the client.
func (s *service) upgrade(ctx *fasthttp.RequestCtx, backends []netip.AddrPort, info *requestInfo, proto []byte) {
	h := &ctx.Request.Header
	h.Set(fasthttp.HeaderConnection, "Upgrade")
	h.SetBytesV(fasthttp.HeaderUpgrade, proto)

	var up net.Conn
	var err error
	for _, b := range backends {
		info.backend = b
		if up, err = s.p.dial(b.String()); err == nil {
			break
		}
	}
	if err != nil {
		s.upgradeFailed(ctx, info, err)
		return
	}
	// The handshake has the rest of the request's time, if bounded; the
	// tunnel then has idle timeouts only.
	_ = up.SetDeadline(s.p.requestDeadline(info.start))
	_, err = ctx.Request.Header.WriteTo(up)
	br := bufio.NewReaderSize(up, upstreamReadBuffer)
	var answer fasthttp.ResponseHeader
	if err == nil {
		err = answer.Read(br)
	}
	if err != nil {
		_ = up.Close()
		s.upgradeFailed(ctx, info, err)
		return
	}
	resp := &ctx.Response
	answer.CopyTo(&resp.Header)
	stripHopByHop(&resp.Header)
	status := answer.StatusCode()
	if status != fasthttp.StatusSwitchingProtocols {
		// A refusal: passed on with its (short) body; this connection
		// is not reused.
		defer up.Close()
		n := answer.ContentLength()
		if n < 0 || n > upgradeRefusalBodyMax {
			s.upgradeFailed(ctx, info, errors.New("refusal of an upgrade with a body of unknown or excessive length"))
			return
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			s.upgradeFailed(ctx, info, err)
			return
		}
		resp.SetBodyRaw(body)
		s.record(info, status, int64(n), false)
		return
	}
	resp.Header.Set(fasthttp.HeaderConnection, "Upgrade")
	resp.Header.SetBytesV(fasthttp.HeaderUpgrade, answer.Peek(fasthttp.HeaderUpgrade))
	_ = up.SetDeadline(time.Time{})
	s.record(info, status, 0, false)
	t := s.p.tunnels.add(up)
	if t == nil { // shutting down
		_ = up.Close()
		ctx.SetConnectionClose()
		return
	}
	idle := s.p.opts.IdleTimeout
	ctx.Hijack(func(c net.Conn) {
		t.run(c, br, idle)
		s.p.tunnels.remove(t)
	})
}

// upgradeFailed answers an upgrade the backend side could not complete.
func (s *service) upgradeFailed(ctx *fasthttp.RequestCtx, info *requestInfo, err error) {
	s.p.log.Debug("slowpath: upgrade failed", "service", s.name, "backend", info.backend, "err", err)
	ctx.Response.Reset()
	s.fail(ctx, classify(err), info)
}

// tunnels are the joined connections of a Proxy, closed by Shutdown:
// fasthttp forgets a connection once it is hijacked.
type tunnels struct {
	mu     sync.Mutex
	closed bool
	set    map[*tunnel]struct{}
}

type tunnel struct {
	backend net.Conn
	closed  atomic.Bool
	// active is when a byte last went either way (UnixNano): a tunnel
	// ends when both directions are silent, not one (a client that only
	// listens is not idle).
	active atomic.Int64
	mu     sync.Mutex
	client net.Conn // set by run
}

// add registers a tunnel to backend; nil after close.
func (ts *tunnels) add(backend net.Conn) *tunnel {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.closed {
		return nil
	}
	if ts.set == nil {
		ts.set = make(map[*tunnel]struct{})
	}
	t := &tunnel{backend: backend}
	t.active.Store(time.Now().UnixNano())
	ts.set[t] = struct{}{}
	return t
}

func (ts *tunnels) count() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.set)
}

func (ts *tunnels) remove(t *tunnel) {
	ts.mu.Lock()
	delete(ts.set, t)
	ts.mu.Unlock()
}

// close ends every tunnel and refuses new ones.
func (ts *tunnels) close() {
	ts.mu.Lock()
	ts.closed = true
	set := ts.set
	ts.set = nil
	ts.mu.Unlock()
	for t := range set {
		t.close()
	}
}

// run copies both ways until either side closes, both directions stay
// silent for idle (nginx's proxy_read_timeout), or a write waits that long
// (a peer that stopped reading): both connections are idleConns, whose
// reads and writes time out after idle (fasthttp cleared the client's
// deadlines before the hijack), and a read that timed out is retried
// while the other direction is busy. client is the hijacked connection;
// backend bytes already buffered in br go first.
func (t *tunnel) run(client net.Conn, br *bufio.Reader, idle time.Duration) {
	t.mu.Lock()
	t.client = client
	closed := t.closed.Load()
	t.mu.Unlock()
	if closed {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(t.backend, activeReader{t: t, r: client, idle: idle})
		t.close()
		close(done)
	}()
	_, _ = io.Copy(client, activeReader{t: t, r: br, idle: idle})
	t.close()
	<-done
}

// close ends both directions. The backend connection is closed; the
// client's cannot be (fasthttp closes a hijacked connection only when the
// hijack handler returns), so its pending read and write are cut short by
// a deadline in the past.
func (t *tunnel) close() {
	if t.closed.Swap(true) {
		return
	}
	_ = t.backend.Close()
	t.mu.Lock()
	if t.client != nil {
		_ = t.client.SetDeadline(time.Unix(1, 0))
	}
	t.mu.Unlock()
}

// activeReader reads one direction of a tunnel and records when bytes
// moved; a read that timed out (its idleConn's idle bound) is retried as
// long as the other direction moved bytes within idle, and not once the
// tunnel is closed.
type activeReader struct {
	t    *tunnel
	r    io.Reader
	idle time.Duration
}

func (r activeReader) Read(p []byte) (int, error) {
	for {
		n, err := r.r.Read(p)
		now := time.Now()
		if n > 0 {
			r.t.active.Store(now.UnixNano())
		}
		var ne net.Error
		if n == 0 && errors.As(err, &ne) && ne.Timeout() && !r.t.closed.Load() &&
			now.Sub(time.Unix(0, r.t.active.Load())) < r.idle {
			continue // the other direction was busy
		}
		return n, err
	}
}
