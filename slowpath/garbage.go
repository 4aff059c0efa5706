package slowpath

import (
	"io"
	"net"
	"time"
)

// Garbage on a plain listener. fasthttp reads a whole request line before
// it judges one, so bytes that can never begin a request but hold no
// newline (random data, a binary protocol on the wrong port) kept the
// connection until the header timeout. The first bytes of a connection are
// checked here instead, as nginx does: a method is one token followed by a
// space, so the first byte that cannot be part of one gets a 400 and the
// connection closed at once. Only the first request's method is checked;
// later ones, and TLS listeners (whose bytes are only known after the
// handshake), are fasthttp's to judge.

// maxMethodLen bounds a method; registered ones are at most 17 bytes.
const maxMethodLen = 32

type methodCheckConn struct {
	net.Conn
	s      *service
	method methodScan
}

func (c *methodCheckConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.method.scan(p[:n]) {
		c.refuse()
		return 0, io.EOF
	}
	return n, err
}

// methodScan follows the first bytes of a connection until its method has
// ended with a space. Both ways of serving a connection use it: fasthttp's
// (methodCheckConn) and the event loop's, which hands garbage to the
// former to be refused.
type methodScan struct {
	// n is how many method bytes were seen; -1 once the method ended.
	n int
}

// scan takes the connection's next bytes and reports whether they can
// still begin a request.
func (m *methodScan) scan(p []byte) bool {
	if m.n < 0 {
		return true
	}
	for _, b := range p {
		switch {
		case b == ' ' && m.n > 0:
			m.n = -1
			return true
		case (b == '\r' || b == '\n') && m.n == 0:
			// empty lines before a request are ignored (RFC 9112 §2.2)
		case isTokenChar(b) && m.n < maxMethodLen:
			m.n++
		default:
			m.n = -1
			return false
		}
	}
	return true
}

// Lingering close, as nginx's lingering_close: after the 400 the client's
// remaining bytes are read and dropped (up to lingerBytes, for up to
// lingerTime) before the connection closes; closing with unread bytes
// would send an RST that can overtake the answer.
const (
	lingerTime  = time.Second
	lingerBytes = 64 << 10
)

// refuse answers 400, lingers, and makes fasthttp see the end of the
// connection.
func (c *methodCheckConn) refuse() { c.s.refuse(c.Conn, reasonBadRequest) }

// refuse answers r's canned response on conn with Connection: close,
// counts it, and lingers; the caller closes conn.
func (s *service) refuse(conn net.Conn, r reason) {
	now := time.Now()
	_ = conn.SetDeadline(now.Add(lingerTime))
	_, _ = conn.Write(cannedResponse(r, true))
	s.count(r, &requestInfo{start: now, client: addrPortOf(conn.RemoteAddr())})
	_ = closeWrite(conn)
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, lingerBytes))
}

// isTokenChar reports whether b may appear in a token (RFC 9110 §5.6.2).
func isTokenChar(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	switch b {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}
