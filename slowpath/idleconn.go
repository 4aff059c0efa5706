package slowpath

import (
	"net"
	"sync"
	"time"
)

// idleConn bounds how long each read or write on a connection may wait:
// never past the deadline its owner set (fasthttp's header and keep-alive
// timeouts, the request timeout when one is configured), and never more
// than idle from the moment it starts. So a peer that stops sending or
// reading in the middle of a body is dropped after idle, however long the
// whole transfer may rightly take: nginx's proxy_read_timeout,
// proxy_send_timeout and send_timeout. Both sides of the proxy use it: the
// clients' connections (under TLS when there is TLS) and the backends'.
type idleConn struct {
	net.Conn
	idle        time.Duration
	read, write deadline
}

// clientListener wraps the connections of a service's listener: every one
// in an idleConn, and those of a plain listener (checkMethod set) in a
// methodCheckConn too.
type clientListener struct {
	net.Listener
	idle        time.Duration
	checkMethod *service
}

func (l clientListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	ic := newIdleConn(c, l.idle)
	if l.checkMethod == nil {
		return ic, nil
	}
	return &methodCheckConn{Conn: ic, s: l.checkMethod}, nil
}

func newIdleConn(c net.Conn, idle time.Duration) *idleConn {
	return &idleConn{Conn: c, idle: idle}
}

// deadline is one direction's: the owner's, and the one in force.
type deadline struct {
	mu    sync.Mutex
	owner time.Time // zero: none
	set   time.Time
}

// idleSlack is how much of idle a deadline may already have used up and
// still serve the next operation: moving a deadline costs a timer update,
// so a busy connection moves it once per idle/16, and a silence times out
// after between 15/16 of idle and idle.
const idleSlack = 16

// due returns the deadline an operation starting at now needs, and
// whether it must be set.
func (d *deadline) due(now time.Time, idle time.Duration) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := now.Add(idle)
	if !d.owner.IsZero() && d.owner.Before(t) {
		t = d.owner
	}
	if t.Equal(d.set) || (d.set.Sub(now) >= idle-idle/idleSlack && !d.set.After(t)) {
		return d.set, false
	}
	d.set = t
	return t, true
}

// own records the owner's deadline and returns the one to set now.
func (d *deadline) own(t time.Time, idle time.Duration) time.Time {
	d.mu.Lock()
	d.owner = t
	d.set = time.Time{} // the next due() sets it afresh
	d.mu.Unlock()
	next, _ := d.due(time.Now(), idle)
	return next
}

func (c *idleConn) Read(p []byte) (int, error) {
	if t, ok := c.read.due(time.Now(), c.idle); ok {
		if err := c.Conn.SetReadDeadline(t); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if t, ok := c.write.due(time.Now(), c.idle); ok {
		if err := c.Conn.SetWriteDeadline(t); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(p)
}

func (c *idleConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.read.own(t, c.idle))
}

func (c *idleConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.write.own(t, c.idle))
}

// CloseWrite half-closes a TCP connection (the lingering close after a
// refused request needs it).
func (c *idleConn) CloseWrite() error { return closeWrite(c.Conn) }

// closeWrite half-closes c when it can (TCP, and the wrappers above it).
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *idleConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}
