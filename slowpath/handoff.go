package slowpath

import (
	"bytes"
	"context"
	"net"
	"os"
	"sync"
)

// Handing a connection from an event loop to fasthttp. The loop gives up
// the socket with the bytes it read and did not serve; the service's
// fasthttp server accepts it from a handoffListener and reads those bytes
// first, as if they had just arrived.

// handoff gives the connection to the service's fasthttp server. data is
// what was read and not served: the start of the request fasthttp will
// answer.
func (c *clientConn) handoff(data []byte) {
	l := c.l
	prefix := bytes.Clone(data) // data may be c.in, which detach drops
	f := os.NewFile(uintptr(c.detach()), "")
	nc, err := net.FileConn(f) // a duplicate, in the Go runtime's poller
	f.Close()
	if err != nil {
		l.p.log.Debug("slowpath: hand connection to fasthttp", "service", c.s.name, "err", err)
		return
	}
	l.p.metrics.handoffs.Inc()
	c.s.handoff.push(&prefixConn{Conn: nc, prefix: prefix})
}

// handoffListener is the listener of a plain service's fasthttp server:
// it accepts the connections event loops hand over.
type handoffListener struct {
	s     *service
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	// pending counts pushed connections not yet accepted or dropped.
	pending sync.WaitGroup
}

func newHandoffListener(s *service, addr net.Addr) *handoffListener {
	return &handoffListener{s: s, addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// push queues c for Accept without blocking the loop. Once the listener
// is closed (the service was removed, or the proxy is shutting down) the
// request c carries is answered 503 rather than lost: the loops keep
// serving a removed service's open connections, and hand over what they
// do not serve.
func (h *handoffListener) push(c net.Conn) {
	h.pending.Add(1)
	go func() {
		defer h.pending.Done()
		select {
		case h.conns <- c:
		case <-h.done:
			h.s.refuse(c, reasonNotConfigured)
			c.Close()
		}
	}()
}

// drain waits until every connection pushed so far has been accepted (or
// refused after Close), or ctx ends. Shutdown drains once the loops are done,
// before the fasthttp server closes this listener: a request a loop handed
// over in its last moments is then answered, not closed unanswered. Only
// loops push, so no push can start while drain waits.
func (h *handoffListener) drain(ctx context.Context) error {
	drained := make(chan struct{})
	go func() {
		h.pending.Wait()
		close(drained)
	}()
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoffListener) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *handoffListener) Addr() net.Addr { return h.addr }

// prefixConn reads prefix before the connection's own bytes.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the TCP connection (a refusal's lingering close).
func (c *prefixConn) CloseWrite() error { return closeWrite(c.Conn) }
