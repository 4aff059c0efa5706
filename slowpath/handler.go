package slowpath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/rauta-lb/rauta/router"
)

// service serves one Listener: its identity is fixed when the server is
// built, so nothing a client sends can change which service routes it.
type service struct {
	p        *Proxy
	l        Listener
	name     string
	proto    string // X-Forwarded-Proto
	duration prometheus.Observer
	// requests caches this service's request counter per pool and
	// status: a label lookup hashes three strings under a lock, once per
	// request otherwise.
	requests sync.Map // requestKey → prometheus.Counter
	srv      *fasthttp.Server
	// handoff feeds srv the connections event loops hand over (plain
	// listeners only).
	handoff *handoffListener
}

type requestKey struct {
	pool   string
	status int
}

func newService(p *Proxy, l Listener) *service {
	s := &service{p: p, l: l, name: l.Name, proto: "http"}
	if s.name == "" {
		s.name = l.Service.String()
	}
	if l.TLS != nil {
		s.proto = "https"
	}
	s.duration = p.metrics.duration.WithLabelValues(s.name)
	s.srv = &fasthttp.Server{
		Handler:      s.handle,
		ErrorHandler: s.handleError,
		Logger:       fasthttpLogger{log: p.log, service: s.name},
		// The header limit is the read buffer: fasthttp answers a header
		// that does not fit with ErrSmallBuffer, which handleError turns
		// into 431.
		ReadBufferSize: p.opts.MaxHeaderBytes,
		// ReadTimeout covers the header; handle extends the deadline for
		// a body (only then: a deadline change is not free).
		ReadTimeout: p.opts.ReadHeaderTimeout,
		// Writes to the client are bounded by the connection's idle
		// timeout (idleConn), and by RequestTimeout when one is set.
		WriteTimeout: p.opts.RequestTimeout,
		IdleTimeout:  p.opts.IdleTimeout,
		// Bodies stream: the handler enforces MaxBodyBytes itself, because
		// with streaming fasthttp only uses its limit to decide how much to
		// read ahead (8 KiB at most).
		StreamRequestBody:  true,
		MaxRequestBodySize: math.MaxInt32,
		// A proxy forwards multipart bodies; it must not parse them into
		// memory or temporary files.
		DisablePreParseMultipartForm: true,
		// The backend's headers are forwarded as they are: no Server or
		// Content-Type of our own. Date is the proxy's own, as nginx's.
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		CloseOnShutdown:       true,
		// An idle keep-alive connection holds no buffers: its reader,
		// writer and request context go back to the pools between
		// requests, so 1,000 keep-alive clients cost their goroutines,
		// not 1,000 × 12 KiB of buffers plus a context each.
		ReduceMemoryUsage: true,
	}
	return s
}

// b2s views header bytes as a string without copying. The strings are used
// only during the request (routing, normalising, the header rewrite), while
// fasthttp keeps the bytes unchanged; anything kept longer is cloned.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// requestInfo is what the access log and metrics need once the response is
// done, which for a streamed body is after the handler has returned.
type requestInfo struct {
	log     bool // the access log is on: the strings below are filled
	start   time.Time
	client  netip.AddrPort
	method  string
	host    string
	path    string
	pool    string
	backend netip.AddrPort
}

func (s *service) logging() bool {
	return s.p.opts.AccessLog && s.p.log.Enabled(context.Background(), slog.LevelInfo)
}

func (s *service) handle(ctx *fasthttp.RequestCtx) {
	// fasthttp does not recover: a panic here would end every connection
	// of the process, so one request's bug costs that request only.
	defer func() {
		if v := recover(); v != nil {
			s.p.log.Error("slowpath: panic serving request", "service", s.name, "panic", v, "stack", string(debug.Stack()))
			ctx.Response.Reset()
			ctx.SetConnectionClose()
			s.fail(ctx, reasonInternal, &requestInfo{start: ctx.Time(), client: remoteAddr(ctx), log: s.logging()})
		}
	}()

	p := s.p
	req := &ctx.Request
	h := &req.Header
	info := requestInfo{start: ctx.Time(), client: remoteAddr(ctx), log: s.logging()}
	d := s.decide(req, &info, nil)
	switch {
	case d.redirect:
		s.redirect(ctx, d.host, d.path, &info)
		return
	case len(d.backends) == 0:
		if d.allow != nil {
			ctx.Response.Header.Set(fasthttp.HeaderAllow, strings.Join(d.allow, ", "))
		}
		s.fail(ctx, d.fail, &info)
		return
	}
	backends := d.backends

	if limit := p.opts.MaxBodyBytes; limit > 0 {
		switch cl := h.ContentLength(); {
		case int64(cl) > limit:
			s.fail(ctx, reasonBodyTooLarge, &info)
			return
		case cl == -1:
			// Chunked: the length is known only at the end, so the body
			// is counted as it is forwarded.
			req.SetBodyStream(&limitedBody{r: req.BodyStream(), left: limit}, -1)
		}
	}

	if cl := h.ContentLength(); cl != 0 && cl != -2 {
		// The body is read while it is forwarded: give it the rest of
		// the request's time (none: just the idle bound on each read)
		// instead of the header's.
		_ = ctx.SetReadDeadline(p.requestDeadline(info.start))
	}

	// rewriteRequest makes the request HTTP/1.1 for the backend; the
	// client's own version decides how the response is framed.
	http10 := !h.IsHTTP11()
	var proto []byte
	if !http10 {
		proto = upgradeProtocol(h) // HTTP/1.0 has no upgrades
	}
	s.rewriteRequest(ctx, d.host, d.path, info.client.Addr())
	if proto != nil {
		s.upgrade(ctx, backends, &info, proto)
		return
	}
	s.forward(ctx, backends, &info, idempotent(h.Method()), http10)
}

// decision is where a request goes: its backends in Maglev order, or why
// the proxy answers it itself.
type decision struct {
	host     []byte // the Host routed on (the authority of an absolute form)
	path     string // the normalised origin-form target
	backends []netip.AddrPort
	// Without backends: a redirect to https, or fail's reason (with the
	// Allow list of a 405).
	redirect bool
	fail     reason
	allow    []string
}

// decide routes a request. Both ways of serving a connection, the event
// loop and fasthttp, call it, so they cannot route alike requests apart.
// An absolute-form target replaces the Host header (RFC 9112 §3.2.2).
// The backends are appended to dst.
func (s *service) decide(req *fasthttp.Request, info *requestInfo, dst []netip.AddrPort) decision {
	p := s.p
	h := &req.Header
	method := h.Method()
	host := h.Host()
	raw := h.RequestURI()
	if len(raw) > 0 && raw[0] != '/' && hasHTTPScheme(raw) {
		host, raw = absoluteForm(req)
		h.SetHostBytes(host)
		host = h.Host()
	}
	d := decision{host: host}
	if info.log {
		info.method, info.host, info.path = string(method), string(host), string(raw)
	}
	if len(host) == 0 && h.IsHTTP11() {
		// RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400.
		d.fail = reasonBadRequest
		return d
	}
	path, err := p.opts.NormalizePath(b2s(raw))
	if err != nil {
		d.fail = reasonBadRequest
		return d
	}
	d.path = path
	if info.log && path != info.path {
		info.path = strings.Clone(path)
	}
	ref := p.router.Load()
	if ref == nil {
		d.fail = reasonNotConfigured
		return d
	}
	pool, err := ref.r.Route(s.l.Service, b2s(method), b2s(host), path)
	if err != nil {
		var mna *router.MethodNotAllowedError
		switch {
		case errors.As(err, &mna):
			d.fail, d.allow = reasonMethodNotAllowed, mna.Allow
		case s.l.RedirectHTTPS && (errors.Is(err, router.ErrNoRoute) || errors.Is(err, router.ErrNoService)):
			// Routes of a redirecting service still serve (ACME
			// challenges over http); everything else moves to https.
			d.redirect = true
		case errors.Is(err, router.ErrNoService):
			d.fail = reasonNoService
		case errors.Is(err, router.ErrNoRoute):
			d.fail = reasonNoRoute
		default:
			p.log.Error("slowpath: routing failed", "service", s.name, "err", err)
			d.fail = reasonInternal
		}
		return d
	}
	info.pool = pool
	d.backends = ref.r.Backends(dst, pool, info.client, s.l.Service, backendChoices)
	if len(d.backends) == 0 {
		d.fail = reasonNoBackend
	}
	return d
}

// rewriteRequest turns the client's request into the one the backend gets,
// in place: fasthttp's Request is reused rather than copied.
func (s *service) rewriteRequest(ctx *fasthttp.RequestCtx, host []byte, path string, client netip.Addr) {
	req := &ctx.Request
	s.rewriteHeader(req, host, path, client, allHopByHop)
	// fasthttp answered any 100-continue itself, before the body was
	// read (the event loops hand requests with Expect to fasthttp).
	req.Header.Del(fasthttp.HeaderExpect)
	// HostClient takes the scheme from the URI and refuses https on a
	// plain connection; backends are plain HTTP.
	if ctx.IsTLS() {
		req.URI().SetScheme("http")
	}
	// Keep Host as received instead of fasthttp's URI-derived one.
	req.UseHostHeader = true
}

// rewriteHeader is the header of the request the backend gets, for both
// ways of serving a connection; hopByHop are the hop-by-hop fields it may
// have (allHopByHop unless the raw header was looked at: hopByHopFields).
func (s *service) rewriteHeader(req *fasthttp.Request, host []byte, path string, client netip.Addr, hopByHop hopByHopSet) {
	h := &req.Header
	stripHopByHopFields(h, hopByHop)
	setForwarded(h, client, s.proto, host)
	if path != b2s(h.RequestURI()) {
		// The backend sees what was routed: the normalised path, in
		// origin form.
		req.SetRequestURI(path)
	}
	if !h.IsHTTP11() {
		// Backends get HTTP/1.1 whatever the client spoke, so the pooled
		// connection stays keep-alive and bodies can be chunked.
		h.SetProtocol("HTTP/1.1")
	}
}

// forward sends the request to the first backend choice, trying the next
// one only when connecting failed (nothing was sent) and the method is
// idempotent, and once more on the same backend when a pooled connection
// turned out to be closed (see staleConn).
func (s *service) forward(ctx *fasthttp.RequestCtx, backends []netip.AddrPort, info *requestInfo, idem, http10 bool) {
	up := fasthttp.AcquireResponse()
	deadline := s.p.requestDeadline(info.start)
	var err error
	retried := false
	for i := 0; i < len(backends); {
		info.backend = backends[i]
		if deadline.IsZero() {
			err = s.p.client(backends[i]).Do(&ctx.Request, up)
		} else {
			err = s.p.client(backends[i]).DoDeadline(&ctx.Request, up, deadline)
		}
		if err == nil {
			break
		}
		if isConnectError(err) {
			if !idem {
				break
			}
			i++
			continue
		}
		if !retried && idem && !ctx.Request.IsBodyStream() && staleConn(err) {
			retried = true
			continue
		}
		break
	}
	if err != nil {
		fasthttp.ReleaseResponse(up)
		r := classify(err)
		s.p.log.Debug("slowpath: backend request failed", "service", s.name, "backend", info.backend, "err", err)
		if r == reasonBodyTooLarge {
			ctx.SetConnectionClose()
		}
		s.fail(ctx, r, info)
		return
	}

	status := up.StatusCode()
	contentLength := up.Header.ContentLength()
	body := up.BodyStream()
	resp := &ctx.Response
	up.Header.CopyTo(&resp.Header)
	stripHopByHop(&resp.Header)
	if body == nil {
		// No body: HEAD, 1xx/204/304. The copied Content-Length stands.
		fasthttp.ReleaseResponse(up)
		s.record(info, status, 0, false)
		return
	}
	t, _ := s.p.bodies.Get().(*trackedBody)
	if t == nil {
		t = new(trackedBody)
	}
	*t = trackedBody{s: s, body: body, up: up, info: *info, status: status}
	if contentLength < 0 && http10 {
		s.untilClose(ctx, t)
		return
	}
	if contentLength < 0 {
		contentLength = -1 // chunked or close-delimited: reframed chunked
	}
	resp.SetBodyStream(t, contentLength)
}

// untilClose sends a body of unknown length to an HTTP/1.0 client, which
// cannot read chunks (RFC 9112 §7.1 is HTTP/1.1's): the body ends where the
// connection does, as nginx does for such clients. fasthttp frames every
// streamed body of unknown length as chunks, so the connection is taken
// over once the handler returns and the response written by hand.
func (s *service) untilClose(ctx *fasthttp.RequestCtx, t *trackedBody) {
	h := &ctx.Response.Header
	h.SetContentLength(-2) // neither Content-Length nor Transfer-Encoding; Connection: close
	header := h.AppendBytes(nil)
	deadline := s.p.requestDeadline(t.info.start)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		_ = c.SetWriteDeadline(deadline)
		_, err := c.Write(header)
		if err == nil {
			_, err = io.Copy(c, t)
		}
		_ = t.CloseWithError(err)
	})
}

// trackedBody passes the backend's body to the client and, when fasthttp
// closes it after writing, records the request: the access log and the
// duration cover the whole body, and a backend dying midway is counted.
type trackedBody struct {
	s      *service
	body   io.Reader
	up     *fasthttp.Response
	info   requestInfo
	status int
	n      int64
	err    error
}

func (t *trackedBody) Read(p []byte) (int, error) {
	n, err := t.body.Read(p)
	t.n += int64(n)
	if err != nil && err != io.EOF && t.err == nil {
		t.err = err
	}
	return n, err
}

// CloseWithError is called by fasthttp once the response is written (err
// nil) or failed; releasing up closes the backend stream, which pools the
// connection only if the body was read to its end.
func (t *trackedBody) CloseWithError(err error) error {
	if err == nil {
		err = t.err
	}
	fasthttp.ReleaseResponse(t.up)
	aborted := err != nil
	if aborted {
		t.s.p.metrics.errorCounters[reasonResponseAborted].Inc()
		t.s.p.log.Debug("slowpath: response aborted", "service", t.s.name, "backend", t.info.backend, "err", err)
	}
	t.s.record(&t.info, t.status, t.n, aborted)
	// fasthttp drops its reference when it closes a body stream, so
	// nothing calls t again once it is back in the pool.
	p := t.s.p
	*t = trackedBody{}
	p.bodies.Put(t)
	return nil
}

// limitedBody enforces MaxBodyBytes on a chunked request body.
type limitedBody struct {
	r    io.Reader
	left int64
}

var errBodyTooLarge = errors.New("request body too large")

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, errBodyTooLarge
	}
	// Ask for one byte past the limit: seeing it is the only way to know
	// the body is too long before forwarding its end.
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		// Hand over only what is within the limit; callers that ignore
		// an error returned with data get it again on the next Read.
		return n + int(l.left), errBodyTooLarge
	}
	return n, err
}

// fail answers the request itself with reason's status and body.
func (s *service) fail(ctx *fasthttp.RequestCtx, r reason, info *requestInfo) {
	ri := &reasons[r]
	ctx.SetStatusCode(ri.status)
	ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
	ctx.Response.SetBodyRaw(ri.body)
	switch r {
	case reasonBadRequest, reasonHeaderTooLarge, reasonBodyTooLarge, reasonClientTimeout:
		// The connection's state is unknown (unread body, unparsed bytes):
		// the next bytes cannot be trusted to start a request.
		ctx.SetConnectionClose()
	}
	s.count(r, info)
}

// count records a request the proxy answered itself with reason's status.
func (s *service) count(r reason, info *requestInfo) {
	ri := &reasons[r]
	s.p.metrics.errorCounters[r].Inc()
	s.record(info, ri.status, int64(len(ri.body)), false)
}

// redirect answers 308 to the https URL of the same host and path.
func (s *service) redirect(ctx *fasthttp.RequestCtx, host []byte, path string, info *requestInfo) {
	name := hostWithoutPort(host)
	if len(name) == 0 || bytes.ContainsAny(name, "/\\@?# \t") {
		s.fail(ctx, reasonBadRequest, info)
		return
	}
	var scratch [256]byte
	loc := append(scratch[:0], "https://"...)
	loc = append(loc, name...)
	if port := s.l.HTTPSPort; port != 0 && port != 443 {
		loc = append(loc, ':')
		loc = strconv.AppendUint(loc, uint64(port), 10)
	}
	loc = append(loc, path...)
	ctx.Response.Header.SetBytesV(fasthttp.HeaderLocation, loc)
	ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
	ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
	ctx.Response.SetBodyRaw(redirectBody)
	s.record(info, fasthttp.StatusPermanentRedirect, int64(len(redirectBody)), false)
}

var redirectBody = []byte("308 use https\n")

// handleError answers what fasthttp could not parse into a request.
func (s *service) handleError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	r := reasonBadRequest
	switch {
	case errors.As(err, &small):
		r = reasonHeaderTooLarge
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		r = reasonBodyTooLarge
	case errors.As(err, &ne) && ne.Timeout():
		r = reasonClientTimeout
	}
	info := requestInfo{start: ctx.Time(), client: remoteAddr(ctx), log: s.logging()}
	s.p.log.Debug("slowpath: bad request", "service", s.name, "client", info.client, "err", err)
	if info.log {
		info.method = string(ctx.Request.Header.Method())
	}
	s.fail(ctx, r, &info)
}

// record counts a finished request and writes its access log line.
func (s *service) record(info *requestInfo, status int, n int64, aborted bool) {
	var d time.Duration
	if !info.start.IsZero() {
		d = time.Since(info.start)
	}
	key := requestKey{info.pool, status}
	c, ok := s.requests.Load(key)
	if !ok {
		c, _ = s.requests.LoadOrStore(key, s.p.metrics.requests.WithLabelValues(s.name, info.pool, codeLabel(status)))
	}
	c.(prometheus.Counter).Inc()
	s.duration.Observe(d.Seconds())
	if !info.log {
		return
	}
	attrs := [...]slog.Attr{
		slog.String("service", s.name),
		slog.String("client", info.client.String()),
		slog.String("method", info.method),
		slog.String("host", info.host),
		slog.String("path", info.path),
		slog.String("pool", info.pool),
		slog.String("backend", backendString(info.backend)),
		slog.Int("status", status),
		slog.Int64("bytes", n),
		slog.Duration("duration", d),
		slog.Bool("aborted", aborted),
	}
	s.p.log.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs[:]...)
}

func backendString(b netip.AddrPort) string {
	if !b.IsValid() {
		return ""
	}
	return b.String()
}

// classify maps a forwarding error to the answer.
func classify(err error) reason {
	var ne interface{ Timeout() bool }
	switch {
	case errors.Is(err, errBodyTooLarge):
		return reasonBodyTooLarge
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return reasonBackendBusy
	case errors.Is(err, fasthttp.ErrTimeout), errors.As(err, &ne) && ne.Timeout():
		return reasonBackendTimeout
	case isConnectError(err):
		return reasonBackendConnect
	default:
		return reasonBackendError
	}
}

func isConnectError(err error) bool {
	var ce *connectError
	return errors.As(err, &ce)
}

// staleConn reports the errors of a pooled connection the backend closed
// while it was idle: the request is lost before any answer, and an
// idempotent one without a body can be sent again (RFC 9110 §9.2.2).
func staleConn(err error) bool {
	return errors.Is(err, fasthttp.ErrConnectionClosed) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// idempotent methods may be sent to another backend after a connect
// failure (RFC 9110 §9.2.2).
func idempotent(method []byte) bool {
	switch b2s(method) {
	case fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodOptions,
		fasthttp.MethodPut, fasthttp.MethodDelete, fasthttp.MethodTrace:
		return true
	}
	return false
}

func remoteAddr(ctx *fasthttp.RequestCtx) netip.AddrPort { return addrPortOf(ctx.RemoteAddr()) }

func addrPortOf(addr net.Addr) netip.AddrPort {
	if a, ok := addr.(*net.TCPAddr); ok {
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

func hasHTTPScheme(raw []byte) bool {
	return hasPrefixFold(raw, "http://") || hasPrefixFold(raw, "https://")
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && strings.EqualFold(b2s(b[:len(prefix)]), prefix)
}

// absoluteForm returns the authority and the origin-form target of an
// absolute-form request ("GET http://host/path?q HTTP/1.1").
func absoluteForm(req *fasthttp.Request) (host, target []byte) {
	u := req.URI()
	target = append(target, u.PathOriginal()...)
	if len(target) == 0 {
		target = append(target, '/')
	}
	if q := u.QueryString(); len(q) > 0 {
		target = append(target, '?')
		target = append(target, q...)
	}
	return append([]byte(nil), u.Host()...), target
}

// hostWithoutPort drops a :port from a Host value, keeping IPv6 brackets.
func hostWithoutPort(host []byte) []byte {
	if len(host) > 0 && host[0] == '[' {
		if i := bytes.IndexByte(host, ']'); i >= 0 {
			return host[:i+1]
		}
		return nil
	}
	if i := bytes.LastIndexByte(host, ':'); i >= 0 {
		return host[:i]
	}
	return host
}

// fasthttpLogger sends fasthttp's own messages (connection errors) to
// Debug: they are about one client and would flood Info.
type fasthttpLogger struct {
	log     *slog.Logger
	service string
}

func (l fasthttpLogger) Printf(format string, args ...any) {
	if !l.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	l.log.Debug("slowpath: fasthttp", "service", l.service, "msg", fmt.Sprintf(format, args...))
}
