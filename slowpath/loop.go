package slowpath

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// The event loops serve plain-HTTP client connections and their backend
// connections without a goroutine per connection: nginx's design. A
// goroutine per connection costs, per keep-alive request, two reads that
// find nothing (one on each side, before parking), two goroutine wake-ups
// through the netpoller and, when a write into a veth runs the receiver's
// stack inline for longer than 20 µs, a P retaken by sysmon; it measured
// 0.74 × nginx's requests per second on the same CPUs.
//
// A loop handles the requests it can serve with a fixed plan: HTTP/1.1
// with no body or a Content-Length one, routed to a pool with a backend,
// without Upgrade or Expect. Every other request, and any connection whose
// bytes are not a request, is handed to the service's fasthttp server with
// the bytes read so far (handoff.go): fasthttp answers errors, redirects,
// chunked uploads, HTTP/1.0 and upgrades with the same handler as on TLS
// listeners, and keeps that connection. Both ways route with decide and
// rewrite with rewriteHeader, so they cannot disagree about a request.

const (
	// loopReadBuffer is the one read buffer of a loop: a read's bytes are
	// consumed (parsed, forwarded) or copied to their connection before
	// the next read, so idle connections hold no buffer.
	loopReadBuffer = 64 << 10
	// maxLoopTick bounds how late a timeout is noticed.
	maxLoopTick = 100 * time.Millisecond
	minLoopTick = 5 * time.Millisecond
)

// loop is one event loop: an epoll instance, the connections registered
// in it, and the idle backend connections they share. Only the loop's
// goroutine touches its connections; others reach it through post.
type loop struct {
	p     *Proxy
	poll  *poller
	conns map[int]loopConn
	// clients counts the client connections, for Shutdown.
	clients int
	buf     []byte
	// wbuf assembles a header and the body bytes read with it, so both
	// leave in one write.
	wbuf []byte
	// The request and response being parsed; at most one at a time.
	req      fasthttp.Request
	resp     fasthttp.ResponseHeader
	rd       bytes.Reader
	reqBR    *bufio.Reader // MaxHeaderBytes: a larger request header is fasthttp's 431
	respBR   *bufio.Reader // upstreamReadBuffer: a larger response header is a 502
	idle     map[netip.AddrPort][]*upstream
	now      time.Time
	tick     time.Duration
	lastScan time.Time
	stopping bool

	mu      sync.Mutex
	inbox   []func()
	stopped bool
	done    chan struct{}
}

// loopConn is a socket registered in a loop.
type loopConn interface {
	event(events uint32)
	// expire is called on every timer scan.
	expire(now time.Time)
	close()
}

func newLoop(p *Proxy) (*loop, error) {
	poll, err := newPoller()
	if err != nil {
		return nil, err
	}
	l := &loop{
		p:     p,
		poll:  poll,
		conns: map[int]loopConn{},
		buf:   make([]byte, loopReadBuffer),
		idle:  map[netip.AddrPort][]*upstream{},
		tick:  loopTick(p.opts),
		done:  make(chan struct{}),
	}
	l.reqBR = bufio.NewReaderSize(&l.rd, p.opts.MaxHeaderBytes)
	l.respBR = bufio.NewReaderSize(&l.rd, upstreamReadBuffer)
	return l, nil
}

// loopTick is a tenth of the shortest timeout, within bounds.
func loopTick(o Options) time.Duration {
	d := min(o.ReadHeaderTimeout, o.IdleTimeout, o.ConnectTimeout)
	if o.RequestTimeout > 0 {
		d = min(d, o.RequestTimeout)
	}
	return min(max(d/10, minLoopTick), maxLoopTick)
}

// post runs fn on the loop's goroutine; false when the loop has ended.
func (l *loop) post(fn func()) bool {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return false
	}
	l.inbox = append(l.inbox, fn)
	if len(l.inbox) == 1 {
		// Under the lock: once the loop has stopped, the eventfd's number
		// may belong to another file.
		l.poll.wakeup()
	}
	l.mu.Unlock()
	return true
}

func (l *loop) run() {
	defer close(l.done)
	// Timeouts are checked every tick, and a quiet loop needs waking for
	// that.
	tick := time.NewTicker(l.tick)
	defer tick.Stop()
	go func() {
		for {
			select {
			case <-tick.C:
				l.post(l.noop)
			case <-l.done:
				return
			}
		}
	}()
	l.now = time.Now()
	l.lastScan = l.now
	for {
		events, err := l.poll.wait()
		if err != nil {
			l.p.log.Error("slowpath: event loop stopped", "err", err)
			break
		}
		l.now = time.Now()
		for _, ev := range events {
			fd := int(ev.Fd)
			if fd == l.poll.wake {
				l.poll.woken()
				l.runInbox()
				continue
			}
			// A closed connection's fd may come back as a new one's in
			// the same batch: handlers take a spurious event calmly.
			if c, ok := l.conns[fd]; ok {
				l.dispatch(c, ev.Events)
			}
		}
		if l.now.Sub(l.lastScan) >= l.tick {
			l.lastScan = l.now
			for _, c := range l.conns {
				l.safely(c, func() { c.expire(l.now) })
			}
		}
		if l.stopping && l.clients == 0 {
			break
		}
	}
	l.mu.Lock()
	l.stopped = true
	inbox := l.inbox
	l.inbox = nil
	l.mu.Unlock()
	for _, fn := range inbox {
		fn() // their connections see l.stopping and close
	}
	for _, c := range l.conns {
		c.close()
	}
	l.poll.close()
}

func (l *loop) noop() {}

// dispatch runs one event.
func (l *loop) dispatch(c loopConn, events uint32) {
	l.safely(c, func() { c.event(events) })
}

// safely runs fn for c: a bug met by one connection closes that
// connection (when known), not the process.
func (l *loop) safely(c loopConn, fn func()) {
	defer func() {
		if v := recover(); v != nil {
			l.p.log.Error("slowpath: panic in event loop", "panic", v, "stack", string(debug.Stack()))
			if up, ok := c.(*upstream); ok && up.owner != nil {
				up.owner.close() // its exchange cannot go on
			}
			if c != nil {
				c.close()
			}
		}
	}()
	fn()
}

func (l *loop) runInbox() {
	l.mu.Lock()
	inbox := l.inbox
	l.inbox = nil
	l.mu.Unlock()
	for i, fn := range inbox {
		l.safely(nil, fn)
		inbox[i] = nil
	}
}

// register adds a connection's socket with the given interest.
func (l *loop) register(fd int, c loopConn, events uint32) error {
	if err := l.poll.add(fd, events); err != nil {
		return err
	}
	l.conns[fd] = c
	return nil
}

// unregister takes fd out of the loop; the socket stays open.
func (l *loop) unregister(fd int) {
	l.poll.del(fd)
	delete(l.conns, fd)
}

// closeFD closes a socket of the loop. Its descriptor is the only one of
// that socket (accept4, or detachFD's duplicate), and closing the last
// descriptor takes a socket out of every epoll set: an EPOLL_CTL_DEL
// first would be one more system call per connection.
func (l *loop) closeFD(fd int) {
	delete(l.conns, fd)
	unix.Close(fd)
}

// adopt starts serving a client connection accepted by svc's listener.
func (l *loop) adopt(s *service, fd int, peer netip.AddrPort) {
	if l.stopping {
		unix.Close(fd)
		return
	}
	c := &clientConn{l: l, s: s, fd: fd, peer: peer, interest: unix.EPOLLIN}
	if err := l.register(fd, c, c.interest); err != nil {
		l.p.log.Debug("slowpath: adopt connection", "err", err)
		unix.Close(fd)
		return
	}
	l.clients++
	c.deadline = l.now.Add(l.p.opts.ReadHeaderTimeout)
}

// shutdown closes idle client connections and lets busy ones finish their
// response; the loop ends when none is left.
func (l *loop) shutdown() {
	l.stopping = true
	for _, lc := range l.conns {
		if c, ok := lc.(*clientConn); ok && !c.closing {
			if c.active {
				c.closeAfter = true // after this response
			} else {
				c.beginClose()
			}
		}
	}
}

// forceClose ends every connection at once.
func (l *loop) forceClose() {
	l.stopping = true
	for _, c := range l.conns {
		c.close()
	}
}

// takeIdle returns a pooled connection to b, the most recently used.
func (l *loop) takeIdle(b netip.AddrPort) *upstream {
	ups := l.idle[b]
	if len(ups) == 0 {
		return nil
	}
	up := ups[len(ups)-1]
	ups[len(ups)-1] = nil
	l.idle[b] = ups[:len(ups)-1]
	return up
}

// release pools a backend connection whose last exchange ended cleanly.
func (l *loop) release(up *upstream) {
	if l.stopping {
		up.close()
		return
	}
	up.owner = nil
	up.out = up.out[:0]
	up.idleSince = l.now
	up.updateInterest() // a close or stray bytes end it
	l.idle[up.backend] = append(l.idle[up.backend], up)
}

// dropIdle removes a pooled connection from its pool.
func (l *loop) dropIdle(up *upstream) {
	ups := l.idle[up.backend]
	for i, u := range ups {
		if u == up {
			copy(ups[i:], ups[i+1:])
			ups[len(ups)-1] = nil
			l.idle[up.backend] = ups[:len(ups)-1]
			return
		}
	}
}

// upstream is a connection to a backend, owned by a client connection
// during an exchange and pooled in between.
type upstream struct {
	l        *loop
	fd       int
	backend  netip.AddrPort
	interest uint32
	owner    *clientConn
	// out is request bytes the backend has not taken yet (owned).
	out []byte
	// reused: it served an exchange before, so a failure before any
	// answer may be the backend having closed it while idle.
	reused    bool
	idleSince time.Time
}

func (l *loop) newUpstream(fd int, b netip.AddrPort) (*upstream, error) {
	up := &upstream{l: l, fd: fd, backend: b, interest: unix.EPOLLIN}
	if err := l.register(fd, up, up.interest); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return up, nil
}

func (up *upstream) event(events uint32) {
	if c := up.owner; c != nil {
		if events&unix.EPOLLOUT != 0 {
			c.upstreamWritable()
		}
		if events&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) != 0 && up.owner == c && c.up == up {
			c.upstreamReadable()
		}
		return
	}
	// Idle in the pool: the backend closed it, or sent what nobody asked.
	up.close()
}

func (up *upstream) expire(now time.Time) {
	if up.owner == nil && now.Sub(up.idleSince) >= upstreamIdleTimeout {
		up.close()
	}
}

// close closes the connection, taking it out of the pool when it is there.
func (up *upstream) close() {
	if up.fd < 0 {
		return
	}
	if up.owner == nil {
		up.l.dropIdle(up)
	}
	up.l.closeFD(up.fd)
	up.fd = -1
	up.owner = nil
}

// updateInterest reads the backend unless its client lags, and waits to
// write while request bytes are pending.
func (up *upstream) updateInterest() {
	var events uint32
	if up.owner == nil || len(up.owner.out) == 0 {
		events |= unix.EPOLLIN
	}
	if len(up.out) > 0 {
		events |= unix.EPOLLOUT
	}
	up.setInterest(events)
}

func (up *upstream) setInterest(events uint32) {
	if up.fd < 0 || up.interest == events {
		return
	}
	if err := up.l.poll.mod(up.fd, events); err == nil {
		up.interest = events
	}
}

// flush writes pending request bytes; false when the connection failed.
func (up *upstream) flush() bool {
	if err := flushQueue(up.fd, &up.out); err != nil {
		return false
	}
	up.updateInterest()
	return true
}

// send writes p, keeping what the socket does not take in out.
func (up *upstream) send(p []byte) bool {
	if err := writeOrQueue(up.fd, &up.out, p); err != nil {
		return false
	}
	up.updateInterest()
	return true
}

// writeOrQueue writes p to fd, unless bytes are queued already, and queues
// what the socket does not take. An error is the connection's.
func writeOrQueue(fd int, queue *[]byte, p []byte) error {
	if len(*queue) == 0 {
		n, err := rawWrite(fd, p)
		if err != nil && err != unix.EAGAIN {
			return err
		}
		p = p[n:]
	}
	*queue = append(*queue, p...)
	return nil
}

// flushQueue writes queued bytes until the socket takes no more.
func flushQueue(fd int, queue *[]byte) error {
	for len(*queue) > 0 {
		n, err := rawWrite(fd, *queue)
		if err == unix.EAGAIN {
			return nil
		}
		if err != nil {
			return err
		}
		*queue = (*queue)[:copy(*queue, (*queue)[n:])]
	}
	return nil
}

// dialFD connects to a backend with Options.Dial and takes the socket out
// of the Go runtime's poller for a loop's.
func (p *Proxy) dialFD(b netip.AddrPort) (int, error) {
	c, err := p.dialBackend(b.String())
	if err != nil {
		return -1, err
	}
	fd, err := detachFD(c)
	if err != nil {
		return -1, &connectError{addr: b.String(), err: err}
	}
	return fd, nil
}

// detachFD duplicates a connection's socket and closes the connection:
// the duplicate, non-blocking like the original, is the caller's.
func detachFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		c.Close()
		return -1, fmt.Errorf("%T has no file descriptor", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		c.Close()
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(s uintptr) {
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		dupErr = err
	}
	c.Close()
	if dupErr != nil {
		return -1, fmt.Errorf("duplicate socket: %w", dupErr)
	}
	return fd, nil
}

// rawRead and rawWrite are recv(2) and send(2) on non-blocking sockets,
// without telling the Go scheduler: they never block, and a send into a
// veth that runs the receiver's stack inline may take longer than 20 µs,
// after which a syscall announced to the scheduler loses its P to sysmon
// and must get one back. recv and send, not read and write, skip the VFS
// layer (file position lock, fsnotify), as nginx does.
func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	// MSG_NOSIGNAL: a peer that closed is an EPIPE, not a signal.
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// startLoops starts one event loop per P, once.
func (p *Proxy) startLoops() ([]*loop, error) {
	p.loopsOnce.Do(func() {
		n := runtime.GOMAXPROCS(0)
		for range n {
			l, err := newLoop(p)
			if err != nil {
				p.loopsErr = fmt.Errorf("slowpath: event loop: %w", err)
				for _, l := range p.loops {
					l.post(l.forceClose)
				}
				p.loops = nil
				return
			}
			p.loops = append(p.loops, l)
			go l.run()
		}
	})
	return p.loops, p.loopsErr
}

// stopLoops ends the loops: idle connections at once, busy ones when
// their response is written or when ctx ends.
func (p *Proxy) stopLoops(ctx context.Context) error {
	p.loopsOnce.Do(func() {}) // no loop may start after this
	for _, l := range p.loops {
		l.post(l.shutdown)
	}
	for _, l := range p.loops {
		select {
		case <-l.done:
		case <-ctx.Done():
			for _, l := range p.loops {
				l.post(l.forceClose)
			}
			for _, l := range p.loops {
				<-l.done
			}
			return fmt.Errorf("slowpath: shutdown: %w", ctx.Err())
		}
	}
	return nil
}

var errUnexpected1xx = errors.New("101 Switching Protocols without an upgrade")
