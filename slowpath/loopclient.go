package slowpath

import (
	"bytes"
	"net/netip"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// clientConn is a client connection served by a loop. Between requests it
// holds no buffer unless the client sent part of a request or pipelined
// one; during an exchange it owns one backend connection.
type clientConn struct {
	l        *loop
	s        *service
	fd       int
	peer     netip.AddrPort
	interest uint32
	deadline time.Time
	method   methodScan
	// in is bytes read and not consumed: part of a request header, or
	// requests pipelined behind the one in flight.
	in []byte
	// out is response bytes the client has not taken yet.
	out []byte
	// closeAfter: the connection ends once the response is written.
	closeAfter bool
	// closing: no request is served any more; the connection closes once
	// out is written, lingering first if the client may still be sending
	// (unread). lingering: out is written and the write side shut; what
	// the client sends is read and dropped until it closes or the deadline.
	closing, lingering bool
	unread             bool
	lingerLeft         int
	// halfClosed: the client shut its write side; it is answered, then
	// the connection closes.
	halfClosed bool

	exchange
}

// exchange is the request in flight and its response.
type exchange struct {
	active  bool
	gen     uint64 // counts exchanges: a late dial result is an earlier one's
	info    requestInfo
	idem    bool
	head    bool
	retried bool
	// bodyDropped: the backend stopped taking the body (it answered
	// early, or closed); the rest is read and dropped.
	bodyDropped bool
	// backends are the Maglev choices; choice the one in use.
	backends []netip.AddrPort
	choice   int
	// reqOut is the request header and the body bytes read with it, kept
	// until the response begins so it can be sent again.
	reqOut   []byte
	bodyLen  int64
	bodyLeft int64 // body bytes still to come from the client
	up       *upstream

	// The response: hdr holds a header split across reads; answered
	// once any byte of it came.
	hdr      []byte
	answered bool
	started  bool // the header was passed to the client
	status   int
	framing  framing
	left     int64 // framingLength: body bytes to come
	chunks   chunkedScanner
	sent     int64
	// reusable: the backend connection may serve another exchange.
	reusable bool
	recorded bool
}

type framing uint8

const (
	framingNone framing = iota
	framingLength
	framingChunked
	framingUntilClose
)

func (c *clientConn) setInterest(events uint32) {
	if c.fd < 0 || c.interest == events {
		return
	}
	if err := c.l.poll.mod(c.fd, events); err == nil {
		c.interest = events
	}
}

func (c *clientConn) event(events uint32) {
	if events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 && c.interest&unix.EPOLLIN == 0 {
		// Level-triggered errors are reported whatever the interest: a
		// connection not being read would be reported forever.
		c.gone()
		return
	}
	if events&unix.EPOLLOUT != 0 {
		c.writable()
	}
	if c.fd >= 0 && events&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		c.readable()
	}
}

func (c *clientConn) readable() {
	l := c.l
	if len(c.in) >= l.p.opts.MaxHeaderBytes && (c.active && c.bodyLeft == 0 || len(c.out) > 0) {
		// Pipelined past what one header may take: read no more until
		// the response is out.
		c.setInterest(c.interest &^ unix.EPOLLIN)
		return
	}
	n, err := rawRead(c.fd, l.buf)
	switch {
	case err == unix.EAGAIN:
		return
	case err != nil:
		c.gone() // reset
		return
	case n == 0:
		c.clientEOF()
		return
	}
	data := l.buf[:n]
	switch {
	case c.lingering:
		if c.lingerLeft -= n; c.lingerLeft <= 0 {
			c.close()
		}
	case c.closing:
		c.unread = true // dropped: no request is served any more
	case c.active && c.bodyLeft > 0:
		c.refresh()
		k := min(int64(len(data)), c.bodyLeft)
		c.bodyLeft -= k
		c.keep(data[k:])
		c.sendBody(data[:k])
	case c.active || len(c.out) > 0:
		// Pipelined: it waits until the response before it is out.
		c.keep(data)
	default:
		if len(c.in) > 0 {
			c.in = append(c.in, data...)
			data = c.in
		}
		if !c.method.scan(l.buf[:n]) {
			c.handoff(data) // fasthttp refuses it (methodCheckConn)
			return
		}
		c.serve(data)
	}
}

// clientEOF handles the client shutting its write side: requests it sent
// whole are still answered (as fasthttp does), then the connection ends.
func (c *clientConn) clientEOF() {
	c.halfClosed = true
	c.setInterest(c.interest &^ unix.EPOLLIN)
	switch {
	case c.lingering:
		c.close()
	case c.active && c.bodyLeft > 0:
		c.gone() // the body was cut short
	case c.active || len(c.out) > 0 || c.closing:
		// endExchange or writable go on with what was sent whole.
	case len(c.in) > 0:
		c.serve(c.in)
	default:
		c.close()
	}
}

// keep appends bytes that must outlive the loop's read buffer.
func (c *clientConn) keep(p []byte) {
	if len(p) > 0 {
		c.in = append(c.in, p...)
	}
}

// serve starts the exchange of the request at the head of data, or keeps
// data for when the rest of the header arrives. data is the loop's buffer
// or c.in.
func (c *clientConn) serve(data []byte) {
	l := c.l
	opts := &l.p.opts
	l.req.Reset()
	l.rd.Reset(data)
	l.reqBR.Reset(&l.rd)
	h := &l.req.Header
	if err := h.Read(l.reqBR); err != nil {
		if len(data) < opts.MaxHeaderBytes && !headerComplete(data) {
			if c.halfClosed {
				c.close() // the rest will not come
				return
			}
			if len(c.in) == 0 {
				c.deadline = l.now.Add(opts.ReadHeaderTimeout)
			}
			c.in = append(c.in[:0], data...)
			return
		}
		c.handoff(data) // fasthttp answers 400 or 431
		return
	}
	consumed := len(data) - l.rd.Len() - l.reqBR.Buffered()
	body := data[consumed:]

	hop := hopByHopFields(data[:consumed])
	cl := int64(h.ContentLength())
	switch {
	case !h.IsHTTP11(), cl == -1, opts.MaxBodyBytes > 0 && cl > opts.MaxBodyBytes,
		hop&hopUpgrade != 0 && upgradeProtocol(h) != nil, len(h.Peek(fasthttp.HeaderExpect)) > 0:
		// HTTP/1.0 framing, chunked bodies, 413s, upgrades and
		// 100-continue are fasthttp's.
		c.handoff(data)
		return
	}
	cl = max(cl, 0)
	info := requestInfo{start: l.now, client: c.peer, log: c.s.logging()}
	d := c.s.decide(&l.req, &info, c.backends[:0])
	if len(d.backends) == 0 {
		c.handoff(data) // the handler answers it, with the same decision
		return
	}

	if h.ConnectionClose() {
		c.closeAfter = true
	}
	c.s.rewriteHeader(&l.req, d.host, d.path, c.peer.Addr(), hop)
	k := min(int64(len(body)), cl)
	// A new exchange; the buffers of the last one are reused.
	c.exchange = exchange{
		active:   true,
		gen:      c.gen + 1,
		info:     info,
		idem:     idempotent(h.Method()),
		head:     h.IsHead(),
		backends: d.backends,
		reqOut:   append(h.AppendBytes(c.reqOut[:0]), body[:k]...),
		bodyLen:  cl,
		bodyLeft: cl - k,
		hdr:      c.hdr[:0],
		reusable: true,
	}
	// Pipelined bytes wait for the response; data may be c.in itself.
	c.in = append(c.in[:0], body[k:]...)
	c.refresh()
	c.connect()
	if c.fd >= 0 && c.up == nil && len(c.reqOut) >= loopReadBuffer {
		c.setInterest(c.interest &^ unix.EPOLLIN) // until connected
	}
}

// headerComplete reports whether data holds the blank line ending a
// header (fasthttp takes bare LF line ends too).
func headerComplete(data []byte) bool {
	return bytes.Contains(data, []byte("\n\r\n")) || bytes.Contains(data, []byte("\n\n"))
}

// refresh moves the deadline on: the exchange made progress.
func (c *clientConn) refresh() {
	o := &c.l.p.opts
	c.deadline = c.l.now.Add(o.IdleTimeout)
	if o.RequestTimeout > 0 && c.active {
		if end := c.info.start.Add(o.RequestTimeout); end.Before(c.deadline) {
			c.deadline = end
		}
	}
}

// connect sends the request to the current backend choice, over a pooled
// connection when there is one.
func (c *clientConn) connect() {
	b := c.backends[c.choice]
	c.info.backend = b
	if up := c.l.takeIdle(b); up != nil {
		c.attach(up)
		return
	}
	c.dial(b)
}

func (c *clientConn) dial(b netip.AddrPort) {
	l := c.l
	gen := c.gen
	go func() {
		fd, err := l.p.dialFD(b)
		if !l.post(func() { c.dialed(gen, b, fd, err) }) && err == nil {
			unix.Close(fd)
		}
	}()
}

// dialed takes a dial's result on the loop.
func (c *clientConn) dialed(gen uint64, b netip.AddrPort, fd int, err error) {
	l := c.l
	var up *upstream
	if err == nil {
		if up, err = l.newUpstream(fd, b); err != nil {
			err = &connectError{addr: b.String(), err: err}
		}
	}
	if c.fd < 0 || !c.active || gen != c.gen {
		// The exchange ended meanwhile; a connection is still worth
		// pooling.
		if up != nil {
			l.release(up)
		}
		return
	}
	if err != nil {
		l.p.log.Debug("slowpath: backend connect failed", "service", c.s.name, "backend", b, "err", err)
		if c.idem && c.choice+1 < len(c.backends) {
			c.choice++
			c.connect()
			return
		}
		c.fail(classify(err))
		return
	}
	c.attach(up)
}

// attach makes up the exchange's backend connection and sends the request.
func (c *clientConn) attach(up *upstream) {
	c.up = up
	up.owner = c
	if !up.send(c.reqOut) {
		c.upstreamFailed(nil)
		return
	}
	c.resumeBody()
}

// resumeBody reads the client's body again once the backend took what
// was sent.
func (c *clientConn) resumeBody() {
	if c.bodyLeft > 0 && c.up != nil && (len(c.up.out) == 0 || c.bodyDropped) && !c.halfClosed {
		c.setInterest(c.interest | unix.EPOLLIN)
	}
}

// sendBody forwards request body bytes; false when the exchange ended.
func (c *clientConn) sendBody(p []byte) bool {
	if c.up == nil {
		// Still connecting: the bytes wait with the request, up to a
		// read buffer's worth.
		c.reqOut = append(c.reqOut, p...)
		if len(c.reqOut) >= loopReadBuffer {
			c.setInterest(c.interest &^ unix.EPOLLIN)
		}
		return true
	}
	if c.bodyDropped {
		return true
	}
	if !c.up.send(p) {
		c.dropBody()
		return true
	}
	if len(c.up.out) > 0 {
		// The backend takes the body slower than the client sends it.
		c.setInterest(c.interest &^ unix.EPOLLIN)
	}
	return true
}

func (c *clientConn) upstreamWritable() {
	if !c.up.flush() {
		if c.bodyLen > 0 {
			c.dropBody()
			return
		}
		c.upstreamFailed(nil)
		return
	}
	c.resumeBody()
}

// dropBody handles a backend that stopped taking the request body: it may
// have answered already (413, 401: the answer is still to be read), so
// the backend is read on and the rest of the body is dropped; the
// connection closes after the answer.
func (c *clientConn) dropBody() {
	c.bodyDropped = true
	c.reusable = false
	c.closeAfter = true
	c.up.out = nil
	c.up.updateInterest()
	c.resumeBody()
}

func (c *clientConn) upstreamReadable() {
	l := c.l
	up := c.up
	n, err := rawRead(up.fd, l.buf)
	if err == unix.EAGAIN {
		return
	}
	if n == 0 || err != nil {
		if c.started && c.framing == framingUntilClose {
			c.reusable = false
			c.finish()
			return
		}
		c.upstreamFailed(err)
		return
	}
	c.refresh()
	c.answered = true
	data := l.buf[:n]
	if !c.started {
		if len(c.hdr) > 0 {
			c.hdr = append(c.hdr, data...)
			data = c.hdr
		}
		c.respond(data)
		return
	}
	c.forward(data, nil)
}

// respond parses the response header at the head of data and passes the
// response on.
func (c *clientConn) respond(data []byte) {
	l := c.l
	r := &l.resp
	var raw []byte // the final response's header
	for {
		r.Reset()
		// The backend's header goes on as it is: no Content-Type of our
		// own (Date is the proxy's, as from the fasthttp server and nginx).
		r.SetNoDefaultContentType(true)
		l.rd.Reset(data)
		l.respBR.Reset(&l.rd)
		if err := r.Read(l.respBR); err != nil {
			if len(data) < upstreamReadBuffer && !headerComplete(data) {
				c.hdr = append(c.hdr[:0], data...)
				return
			}
			c.upstreamFailed(err)
			return
		}
		n := len(data) - l.rd.Len() - l.respBR.Buffered()
		raw, data = data[:n], data[n:]
		status := r.StatusCode()
		if status >= 200 {
			break
		}
		if status == fasthttp.StatusSwitchingProtocols {
			c.upstreamFailed(errUnexpected1xx)
			return
		}
		// 100 and 103 are interim: the final answer follows.
	}
	c.status = r.StatusCode()
	if r.ConnectionClose() {
		c.reusable = false
	}
	cl := int64(r.ContentLength())
	stripHopByHopFields(r, hopByHopFields(raw))
	switch {
	case c.head || c.status == fasthttp.StatusNoContent || c.status == fasthttp.StatusNotModified:
		c.framing = framingNone
		if cl >= 0 {
			r.SetContentLength(int(cl)) // HEAD's length stands
		}
	case cl >= 0:
		c.framing, c.left = framingLength, cl
	case cl == -1:
		c.framing = framingChunked
		r.SetContentLength(-1) // Transfer-Encoding: chunked, passed through
	default:
		c.framing = framingUntilClose
		c.reusable = false
		c.closeAfter = true
	}
	if c.bodyLeft > 0 {
		// An answer before the whole body: the rest of the body will not
		// be read, so nothing after it can be either.
		c.closeAfter = true
	}
	if c.closeAfter {
		r.SetConnectionClose()
	}
	c.started = true
	c.hdr = c.hdr[:0]
	c.reqOut = shrink(c.reqOut)
	l.wbuf = r.AppendBytes(l.wbuf[:0])
	c.forward(data, l.wbuf)
}

// forward passes body bytes from the backend to the client, after head
// (the response header) when there is one, and ends the exchange at the
// end of the body.
func (c *clientConn) forward(data, head []byte) {
	var k int
	end := false
	switch c.framing {
	case framingNone:
		end = true
	case framingLength:
		k = int(min(int64(len(data)), c.left))
		c.left -= int64(k)
		end = c.left == 0
	case framingChunked:
		var err error
		k, end, err = c.chunks.scan(data)
		if err != nil {
			c.upstreamFailed(err)
			return
		}
	case framingUntilClose:
		k = len(data)
	}
	if k < len(data) {
		// More than the response: the backend is out of step.
		c.reusable = false
	}
	c.sent += int64(k)
	out := data[:k]
	if head != nil {
		out = append(head, out...)
		c.l.wbuf = out
	}
	if end {
		// Counted before the last bytes leave: whoever reads the answer
		// finds it in the metrics.
		c.record(false)
	}
	if !c.write(out) {
		return
	}
	if end {
		c.endExchange()
	}
}

// write sends p to the client, keeping what the socket does not take; the
// backend is not read while the client lags. false: the client is gone.
func (c *clientConn) write(p []byte) bool {
	if err := writeOrQueue(c.fd, &c.out, p); err != nil {
		c.gone()
		return false
	}
	if len(c.out) > 0 {
		c.setInterest(c.interest | unix.EPOLLOUT)
		if c.up != nil {
			c.up.updateInterest()
		}
	}
	return true
}

func (c *clientConn) writable() {
	queued := len(c.out)
	if err := flushQueue(c.fd, &c.out); err != nil {
		c.gone()
		return
	}
	if len(c.out) < queued && !c.closing {
		c.refresh() // a client taking its answer slowly is not idle
	}
	if len(c.out) > 0 {
		return
	}
	c.out = shrink(c.out)
	c.setInterest(c.interest &^ unix.EPOLLOUT)
	switch {
	case c.closing:
		c.endClose()
	case c.active:
		if c.up != nil {
			c.up.updateInterest()
		}
	case len(c.in) > 0:
		// Pipelined requests waited for the output.
		c.deadline = c.l.now.Add(c.l.p.opts.ReadHeaderTimeout)
		if !c.halfClosed {
			c.setInterest(c.interest | unix.EPOLLIN)
		}
		c.serve(c.in)
	case c.halfClosed:
		c.close()
	}
}

// shrink drops a buffer grown for a large transfer, keeping a small one.
func shrink(b []byte) []byte {
	if cap(b) > 16<<10 {
		return nil
	}
	return b[:0]
}

// finish ends an exchange whose response was passed on whole.
func (c *clientConn) finish() {
	c.record(false)
	c.endExchange()
}

// record counts the exchange and writes its access log line, once.
func (c *clientConn) record(aborted bool) {
	if !c.recorded {
		c.recorded = true
		c.s.record(&c.info, c.status, c.sent, aborted)
	}
}

// endExchange releases the backend connection and goes on with the next
// request, if the connection stays.
func (c *clientConn) endExchange() {
	if up := c.up; up != nil {
		c.up = nil
		if c.reusable && c.bodyLeft == 0 && len(up.out) == 0 {
			up.reused = true
			c.l.release(up)
		} else {
			up.close()
		}
	}
	c.active = false
	c.backends = c.backends[:0]
	c.reqOut = shrink(c.reqOut)
	c.hdr = shrink(c.hdr)
	if c.closeAfter || c.bodyLeft > 0 {
		// A body the backend did not wait for is still on its way: the
		// next bytes do not start a request.
		c.unread = c.unread || c.bodyLeft > 0
		c.bodyLeft = 0
		c.beginClose()
		return
	}
	if len(c.in) == 0 {
		if c.halfClosed {
			c.beginClose()
			return
		}
		c.setInterest(c.interest | unix.EPOLLIN)
		c.in = shrink(c.in)
		c.deadline = c.l.now.Add(c.l.p.opts.IdleTimeout)
		return
	}
	if !c.halfClosed {
		c.setInterest(c.interest | unix.EPOLLIN)
	}
	c.deadline = c.l.now.Add(c.l.p.opts.ReadHeaderTimeout)
	if len(c.out) == 0 {
		c.serve(c.in)
	}
}

// beginClose stops serving requests: the connection closes once what was
// answered is written.
func (c *clientConn) beginClose() {
	c.closing = true
	c.unread = c.unread || len(c.in) > 0
	c.in = nil
	if len(c.out) > 0 {
		// A client that does not read its answer is dropped after idle.
		c.deadline = c.l.now.Add(c.l.p.opts.IdleTimeout)
		return
	}
	c.endClose()
}

// endClose closes a connection whose output is written. When the client
// may still be sending, its write side is shut first and its bytes read
// and dropped for a while (nginx's lingering close): closing with unread
// bytes sends a reset, which can destroy the answer before the client
// reads it.
func (c *clientConn) endClose() {
	if !c.unread || c.halfClosed {
		c.close()
		return
	}
	if err := unix.Shutdown(c.fd, unix.SHUT_WR); err != nil {
		c.close()
		return
	}
	c.lingering = true
	c.lingerLeft = lingerBytes
	c.deadline = c.l.now.Add(lingerTime)
	c.setInterest(unix.EPOLLIN)
}

// upstreamFailed handles a backend connection that failed or closed
// before the response was complete.
func (c *clientConn) upstreamFailed(err error) {
	up := c.up
	if !c.started && up != nil && up.reused && !c.retried && c.idem && c.bodyLen == 0 && !c.answered {
		// A pooled connection the backend closed while it was idle: the
		// request never reached it, and may go again (RFC 9110 §9.2.2).
		c.retried = true
		c.up = nil
		up.close()
		c.dial(c.info.backend)
		return
	}
	c.l.p.log.Debug("slowpath: backend request failed", "service", c.s.name, "backend", c.info.backend, "err", err)
	c.reusable = false
	if c.started {
		c.abort()
		return
	}
	c.fail(reasonBackendError)
}

// fail answers the request with reason's canned response.
func (c *clientConn) fail(r reason) {
	c.reusable = false
	if r == reasonClientTimeout || c.bodyLeft > 0 {
		c.closeAfter = true // the rest of the body will not be read
	}
	c.s.count(r, &c.info)
	if c.write(cannedResponse(r, c.closeAfter)) {
		c.endExchange()
	}
}

// abort ends a response midway: the client sees the connection close
// before the framing says the body ended.
func (c *clientConn) abort() {
	if !c.recorded {
		c.s.p.metrics.errorCounters[reasonResponseAborted].Inc()
		c.record(true)
	}
	c.reusable = false
	c.close()
}

// gone handles the client closing or failing.
func (c *clientConn) gone() {
	if c.active {
		c.reusable = false
		if c.started {
			c.abort()
			return
		}
	}
	c.close()
}

func (c *clientConn) expire(now time.Time) {
	if now.Before(c.deadline) {
		return
	}
	switch {
	case c.lingering || c.closing:
		c.close() // done lingering, or the client does not read its answer
	case !c.active && len(c.out) > 0:
		c.close() // the client does not take its answer
	case !c.active && len(c.in) > 0:
		// A header that did not arrive in time (slowloris).
		c.s.count(reasonClientTimeout, &requestInfo{start: now, client: c.peer})
		if c.write(cannedResponse(reasonClientTimeout, true)) {
			c.beginClose()
		}
	case !c.active:
		c.close() // idle keep-alive connection
	case c.started:
		c.abort() // a body stalled in either direction
	case c.bodyLeft > 0 && c.up != nil && (len(c.up.out) == 0 || c.bodyDropped):
		c.fail(reasonClientTimeout) // the client stopped sending its body
	default:
		c.l.p.log.Debug("slowpath: backend timeout", "service", c.s.name, "backend", c.info.backend)
		c.fail(reasonBackendTimeout)
	}
}

func (c *clientConn) close() {
	if c.fd >= 0 {
		c.l.closeFD(c.leave())
	}
}

// detach takes the connection out of its loop, closing its backend
// connection, and returns the socket, which is the caller's.
func (c *clientConn) detach() (fd int) {
	fd = c.leave()
	c.l.unregister(fd)
	return fd
}

// leave ends the connection's part in the loop but for its socket.
func (c *clientConn) leave() (fd int) {
	fd = c.fd
	if up := c.up; up != nil {
		c.up = nil
		up.close()
	}
	c.active = false
	c.l.clients--
	c.fd = -1
	c.in, c.out, c.reqOut, c.hdr = nil, nil, nil, nil
	return fd
}
