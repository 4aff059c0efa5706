// Package slowpath is the HTTP/1.1 proxy for connections XDP cannot route
// itself (see DESIGN.md §7): the TC program hands such a connection to a
// listening socket on this host, and this package parses the requests,
// routes each one with the same tables as XDP (package router), and forwards
// it to the backend Maglev picks, over pooled keep-alive connections.
//
// One fasthttp.Server serves each listener, so a request's service (the
// VIP:port the router keys on) is a property of the server that accepted it,
// never of anything the client sent.
package slowpath

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"github.com/rauta-lb/rauta/router"
)

// Router is what the proxy needs from a routing snapshot; *router.Table
// implements it. Route returns router.ErrNoService, router.ErrNoRoute or a
// *router.MethodNotAllowedError; Backends returns up to n backends in Maglev
// preference order, none when the pool has no usable backend.
//
// Route's string arguments view the request's buffers without a copy: they
// are valid only during the call, and an implementation that keeps one
// (a cache key, say) must copy it. Both methods are called concurrently.
// Backends appends to dst, so that a caller can reuse one buffer per
// connection.
type Router interface {
	Route(service netip.AddrPort, method, host, path string) (pool string, err error)
	Backends(dst []netip.AddrPort, pool string, client, service netip.AddrPort, n int) []netip.AddrPort
}

// Listener describes the service one listening socket serves.
type Listener struct {
	// Service is the VIP:port the connections were addressed to: the
	// router's service key.
	Service netip.AddrPort
	// Name labels metrics and log lines; empty means Service.String().
	Name string
	// TLS terminates TLS on the listener; nil serves plain HTTP. Only
	// http/1.1 is offered by ALPN whatever NextProtos says: the proxy does
	// not speak h2.
	TLS *tls.Config
	// RedirectHTTPS answers every request no route matches with 308 to
	// https://host[:HTTPSPort]/path?query instead of proxying it.
	RedirectHTTPS bool
	// HTTPSPort is left out of the Location when 0 or 443.
	HTTPSPort uint16
}

// Options configure a Proxy. Zero values take the documented defaults.
type Options struct {
	// Logger receives the access log (Info) and connection-level errors
	// (Debug). nil discards.
	Logger *slog.Logger
	// AccessLog writes one Info line per request. Off by default: at
	// benchmark rates a log line costs more than the proxying.
	AccessLog bool

	// ConnectTimeout bounds one TCP connect to a backend. Default 5s.
	ConnectTimeout time.Duration
	// ReadHeaderTimeout bounds the wait for a request's header, from the
	// connection's start or its first byte after an idle keep-alive wait.
	// Default 10s: a slow-header client (slowloris) holds a connection no
	// longer.
	ReadHeaderTimeout time.Duration
	// IdleTimeout is the longest any connection may stay silent: a client
	// keep-alive connection between requests, and every read or write
	// once a request is under way, on the client's and the backend's
	// connection alike (a backend slow to answer gets 504, a peer that
	// stops in the middle of a body is dropped). Default 60s.
	IdleTimeout time.Duration
	// RequestTimeout, when positive, bounds a whole request: reading it,
	// the backend's answer and streaming both bodies. Default 0: no bound,
	// so long downloads and event streams live as long as bytes move.
	RequestTimeout time.Duration

	// MaxHeaderBytes limits the request line plus headers; larger requests
	// get 431. Default 8 KiB (nginx's per-line buffer). It is also the size
	// of each client connection's read buffer.
	MaxHeaderBytes int
	// MaxBodyBytes limits a request body; larger ones get 413. 0 (the
	// default) means no limit: a proxy in front of applications should not
	// guess their upload sizes (nginx's 1 MiB default is a common
	// surprise), and bodies are streamed, so size costs no memory.
	MaxBodyBytes int64

	// Dial opens a TCP connection to a backend, within ctx's deadline
	// (ConnectTimeout); net.Dialer's unless set. The daemon sets it when
	// the data path lives in another network namespace than the process
	// (`rauta demo`): backends must be dialled from there.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// NormalizePath is router.NormalizePath unless set (tests). It must
	// return the origin-form path (and query) XDP would route.
	NormalizePath func(raw string) (string, error)
}

const (
	defaultConnectTimeout    = 5 * time.Second
	defaultReadHeaderTimeout = 10 * time.Second
	defaultIdleTimeout       = 60 * time.Second
	// upstreamIdleTimeout closes pooled backend connections idle this
	// long: shorter than the 5s keep-alive of common servers (nginx 75s,
	// Apache and Node 5s), so the proxy, not the backend, closes an idle
	// connection and a request rarely meets one the backend just shut.
	upstreamIdleTimeout   = 4 * time.Second
	defaultMaxHeaderBytes = 8 << 10
	// upstreamReadBuffer must hold a backend's whole response header; a
	// larger one is a 502. It is taken from a pool when the request has been
	// sent and held until the response has been passed on, so every request
	// waiting for its backend holds one: at 1,000 keep-alive clients they
	// were 20 of the daemon's 34 MB live heap at 16 KiB. 8 KiB is nginx's
	// default proxy_buffer_size on 8 KiB-page systems, twice its 4 KiB one on
	// x86-64, which applications live with.
	upstreamReadBuffer = 8 << 10
	// backendChoices is how many Maglev choices a request may try: the
	// first, and two more when connecting fails.
	backendChoices = 3
)

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = defaultConnectTimeout
	}
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = defaultReadHeaderTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = defaultIdleTimeout
	}
	if o.RequestTimeout < 0 {
		o.RequestTimeout = 0
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = defaultMaxHeaderBytes
	}
	if o.MaxBodyBytes < 0 {
		o.MaxBodyBytes = 0
	}
	if o.NormalizePath == nil {
		o.NormalizePath = router.NormalizePath
	}
	return o
}

// ErrShutdown is returned by Serve once Shutdown has been called.
var ErrShutdown = errors.New("slowpath: proxy shut down")

// Proxy is the slow-path HTTP proxy. It is safe for concurrent use.
type Proxy struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics

	// router is swapped whole on reload; a request uses the one it loaded.
	router atomic.Pointer[routerRef]

	clientsMu sync.RWMutex
	clients   map[netip.AddrPort]*fasthttp.HostClient

	// bodies recycles trackedBody: one per proxied response would
	// otherwise be the handler's only allocation of its own.
	bodies sync.Pool

	serversMu sync.Mutex
	servers   []*fasthttp.Server
	// plain are the listeners whose connections the event loops serve.
	plain  []plainListener
	closed bool

	loopsOnce sync.Once
	loops     []*loop
	loopsErr  error
	nextLoop  atomic.Uint32

	tunnels tunnels
}

// plainListener is a plain service's listener and the listener of the
// connections its loops hand to fasthttp.
type plainListener struct {
	ln      net.Listener
	handoff *handoffListener
}

// routerRef boxes the interface for atomic.Pointer.
type routerRef struct{ r Router }

// New returns a proxy with no router: until SetRouter, requests get 503.
func New(opts Options) *Proxy {
	opts = opts.withDefaults()
	return &Proxy{
		opts:    opts,
		log:     opts.Logger,
		metrics: newMetrics(),
		clients: make(map[netip.AddrPort]*fasthttp.HostClient),
	}
}

// SetRouter installs the routing snapshot of a (re)loaded configuration.
// Requests already routed finish with the backend they were given.
func (p *Proxy) SetRouter(r Router) {
	if r == nil {
		p.router.Store(nil)
		return
	}
	p.router.Store(&routerRef{r: r})
}

// Serve serves the listener's connections until Shutdown or an accept
// error. A TLS listener's connections are fasthttp's; a plain listener's
// are the event loops' (loop.go), which hand to fasthttp what they do not
// serve themselves. Serve returns nil after Shutdown.
func (p *Proxy) Serve(ln net.Listener, l Listener) error {
	svc := newService(p, l)
	var fast net.Listener
	if l.TLS != nil {
		cfg := l.TLS.Clone()
		// ALPN: offer only what we speak, so h2 clients fall back to
		// HTTP/1.1 instead of sending frames we would answer with 400.
		cfg.NextProtos = []string{"http/1.1"}
		fast = tls.NewListener(clientListener{Listener: ln, idle: p.opts.IdleTimeout}, cfg)
	} else {
		svc.handoff = newHandoffListener(svc, ln.Addr())
		fast = clientListener{Listener: svc.handoff, idle: p.opts.IdleTimeout, checkMethod: svc}
	}
	p.serversMu.Lock()
	if p.closed {
		p.serversMu.Unlock()
		_ = ln.Close()
		return ErrShutdown
	}
	p.servers = append(p.servers, svc.srv)
	if l.TLS == nil {
		p.plain = append(p.plain, plainListener{ln, svc.handoff})
	}
	p.serversMu.Unlock()

	var err error
	if l.TLS != nil {
		err = svc.srv.Serve(fast)
	} else {
		err = p.servePlain(ln, svc, fast)
	}
	if err != nil {
		p.serversMu.Lock()
		closed := p.closed
		p.serversMu.Unlock()
		if closed {
			return nil
		}
		return fmt.Errorf("slowpath: serve %s: %w", svc.name, err)
	}
	return nil
}

// servePlain accepts ln's connections for the event loops, in turn, and
// runs the fasthttp server of the connections they hand over.
func (p *Proxy) servePlain(ln net.Listener, svc *service, fast net.Listener) error {
	loops, err := p.startLoops()
	if err != nil {
		_ = ln.Close()
		return err
	}
	fastDone := make(chan struct{})
	go func() {
		defer close(fastDone)
		_ = svc.srv.Serve(fast)
	}()
	defer func() {
		// On Shutdown the handoff listener stays open until the loops
		// are done (their connections may still hand requests over), and
		// the server's own shutdown closes it; otherwise the service is
		// gone and so is its fasthttp side.
		p.serversMu.Lock()
		closed := p.closed
		p.serversMu.Unlock()
		if !closed {
			_ = svc.handoff.Close()
			<-fastDone
		}
	}()
	// Made once: per accepted connection they would be allocations.
	logLost := func(err error) {
		p.log.Debug("slowpath: take accepted connection", "service", svc.name, "err", err)
	}
	take := func(fd int, peer netip.AddrPort) { p.toLoop(loops, svc, fd, peer) }
	socket := listenerSocket(ln)
	for {
		fd, peer, err := acceptFD(ln, logLost)
		if err == nil && fd < 0 {
			continue
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			if retryAccept(err) {
				p.log.Debug("slowpath: accept", "service", svc.name, "err", err)
				time.Sleep(acceptRetryDelay)
				continue
			}
			_ = ln.Close()
			return err
		}
		take(fd, peer)
		acceptQueued(socket, take)
	}
}

// toLoop gives an accepted connection to the next loop in turn.
func (p *Proxy) toLoop(loops []*loop, svc *service, fd int, peer netip.AddrPort) {
	l := loops[p.nextLoop.Add(1)%uint32(len(loops))]
	if !l.post(func() { l.adopt(svc, fd, peer) }) {
		unix.Close(fd)
	}
}

// acceptRetryDelay paces accepting while the process is out of file
// descriptors or memory (fasthttp and net/http do the same).
const acceptRetryDelay = 100 * time.Millisecond

// retryAccept reports accept errors that concern one connection or pass
// with time, not the listener.
func retryAccept(err error) bool {
	return errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOBUFS) ||
		errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.ECONNABORTED) || errors.Is(err, unix.EPERM)
}

// Shutdown stops accepting, lets requests in flight finish (idle keep-alive
// connections are closed at once; busy ones get Connection: close), and
// closes idle backend connections. It returns ctx's error if requests are
// still running when ctx ends.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.serversMu.Lock()
	p.closed = true
	servers := p.servers
	p.servers = nil
	plain := p.plain
	p.plain = nil
	p.serversMu.Unlock()
	for _, pl := range plain {
		_ = pl.ln.Close()
	}

	// Upgraded connections have no request to finish: they end now.
	p.tunnels.close()
	var errs []error
	// The loops first: until their connections are done they may hand
	// requests to the fasthttp servers, which must still take them.
	if err := p.stopLoops(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, pl := range plain {
		if err := pl.handoff.drain(ctx); err != nil {
			errs = append(errs, fmt.Errorf("slowpath: shutdown: hand over connections: %w", err))
			break
		}
	}
	for _, s := range servers {
		if err := s.ShutdownWithContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("slowpath: shutdown: %w", err))
		}
	}
	p.clientsMu.RLock()
	for _, hc := range p.clients {
		hc.CloseIdleConnections()
	}
	p.clientsMu.RUnlock()
	return errors.Join(errs...)
}

// client returns the pooled client of one backend, creating it on first
// use. Reads take the read lock only: the map changes once per backend.
func (p *Proxy) client(b netip.AddrPort) *fasthttp.HostClient {
	p.clientsMu.RLock()
	hc := p.clients[b]
	p.clientsMu.RUnlock()
	if hc != nil {
		return hc
	}
	p.clientsMu.Lock()
	defer p.clientsMu.Unlock()
	if hc = p.clients[b]; hc != nil {
		return hc
	}
	hc = p.newClient(b)
	p.clients[b] = hc
	return hc
}

// dial connects to a backend. Its errors are connectErrors, so the handler
// can tell "nothing was sent" (safe to try the next backend) from every
// other failure.
func (p *Proxy) dial(addr string) (net.Conn, error) {
	c, err := p.dialBackend(addr)
	if err != nil {
		return nil, err
	}
	return newIdleConn(c, p.opts.IdleTimeout), nil
}

// dialBackend connects with Options.Dial within the connect timeout.
func (p *Proxy) dialBackend(addr string) (net.Conn, error) {
	dial := p.opts.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.ConnectTimeout)
	defer cancel()
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, &connectError{addr: addr, err: err}
	}
	return c, nil
}

// requestDeadline is when a request that started at start must be done;
// zero without a RequestTimeout.
func (p *Proxy) requestDeadline(start time.Time) time.Time {
	if p.opts.RequestTimeout <= 0 {
		return time.Time{}
	}
	return start.Add(p.opts.RequestTimeout)
}

func (p *Proxy) newClient(b netip.AddrPort) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr: b.String(),
		Dial: p.dial,
		// No cap per backend, like nginx without max_conns (fasthttp's
		// own default is 512).
		MaxConns:            math.MaxInt32,
		MaxConnWaitTimeout:  p.opts.ConnectTimeout,
		MaxIdleConnDuration: upstreamIdleTimeout,
		// The handler decides about retries (see forward); fasthttp's own
		// would resend requests to the same backend after bytes were sent.
		MaxIdemponentCallAttempts: 1,
		ReadBufferSize:            upstreamReadBuffer,
		// The path was normalised by the router's rules; fasthttp must send
		// exactly that, not its own normalisation.
		DisablePathNormalizing:   true,
		NoDefaultUserAgentHeader: true,
		StreamResponseBody:       true,
		// LIFO keeps few connections warm under light load, so the idle
		// timeout can close the rest.
		ConnPoolStrategy: fasthttp.LIFO,
	}
}

// connectError marks a failure to connect to a backend: no byte of the
// request was sent.
type connectError struct {
	addr string
	err  error
}

func (e *connectError) Error() string { return "connect " + e.addr + ": " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// Timeout reports a connect timeout as one, for the 504 decision.
func (e *connectError) Timeout() bool {
	var ne net.Error
	return errors.As(e.err, &ne) && ne.Timeout()
}

// The router package's table is what the daemon passes to SetRouter.
var _ Router = (*router.Table)(nil)
