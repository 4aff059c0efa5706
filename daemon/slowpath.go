package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/rauta-lb/rauta/certs"
	"github.com/rauta-lb/rauta/config"
	"github.com/rauta-lb/rauta/router"
	"github.com/rauta-lb/rauta/slowpath"
)

// slowPath runs the proxy behind the TC handoff: one listener per http and
// https VIP:port, routing with a router.Table built from the same
// configuration the maps were written from.
type slowPath struct {
	log     *slog.Logger
	proxy   *slowpath.Proxy
	inNetns func(fn func() error) error
	vips    *localVIPs

	mu     sync.Mutex
	served map[netip.AddrPort]*listener
	wg     sync.WaitGroup
}

// listener is one served VIP:port. Its settings fingerprint tells a reload
// whether the socket can stay (certificates are reloaded in place) or must
// be replaced.
type listener struct {
	ln          net.Listener
	fingerprint string
	certs       *certs.Store // https only
}

// defaultMemoryLimit is the Go runtime's soft memory limit when GOMEMLIMIT
// is not set. The proxy's heap is mostly buffers of requests in flight,
// freed as soon as each is answered, and GOGC=100 alone lets the heap grow
// to twice what is live before collecting: at 1,000 keep-alive clients the
// daemon peaked at 65 MiB RSS with 22 MiB idle. Under the limit the
// collector runs earlier instead (44 MiB at the same load and throughput).
// It is soft: a live heap above it (many thousands of busy connections)
// makes the collector run often, at most half the CPU, never fails an
// allocation; set GOMEMLIMIT (e.g. GOMEMLIMIT=off) to choose otherwise.
const defaultMemoryLimit = 40 << 20

// limitMemory applies defaultMemoryLimit unless the environment chose a
// limit, and never lowers one already set in the process.
func limitMemory() {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return
	}
	if debug.SetMemoryLimit(-1) < defaultMemoryLimit {
		return
	}
	debug.SetMemoryLimit(defaultMemoryLimit)
}

func newSlowPath(cfg *config.Config, log *slog.Logger, inNetns func(fn func() error) error) *slowPath {
	sp := cfg.Slowpath
	limitMemory()
	return &slowPath{
		log: log,
		proxy: slowpath.New(slowpath.Options{
			Logger:         log.With("component", "slowpath"),
			AccessLog:      sp.AccessLog,
			ConnectTimeout: sp.ConnectTimeout,
			IdleTimeout:    sp.IdleTimeout,
			RequestTimeout: sp.RequestTimeout,
			MaxHeaderBytes: sp.MaxHeaderBytes,
			MaxBodyBytes:   sp.MaxBodyBytes,
			// Backends are reached from the data path's namespace, which
			// is not the process's own under `rauta demo`.
			Dial: netnsDial(inNetns),
		}),
		inNetns: inNetns,
		vips:    newLocalVIPs(),
		served:  map[netip.AddrPort]*listener{},
	}
}

// apply makes the proxy serve cfg: a new routing table, listeners opened
// for new services and closed for removed ones, certificates reloaded.
// Connections already accepted keep going on a closed listener.
func (s *slowPath) apply(cfg *config.Config) error {
	if err := s.route(cfg); err != nil {
		return err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	wanted := map[netip.AddrPort]config.Service{}
	vips := map[netip.Addr]bool{}
	for _, svc := range cfg.Services {
		if !svc.IsHTTP() {
			continue
		}
		wanted[netip.AddrPortFrom(svc.VIP, svc.Port)] = svc
		vips[svc.VIP] = true
	}
	if err := s.inNetns(func() error { return s.vips.ensure(vips) }); err != nil {
		return fmt.Errorf("slow path: %w", err)
	}

	var errs []error
	for addr, l := range s.served {
		svc, ok := wanted[addr]
		if ok && fingerprint(svc) == l.fingerprint {
			if l.certs != nil {
				if err := l.certs.Reload(); err != nil {
					errs = append(errs, fmt.Errorf("service %s: reload certificates (keeping the loaded ones): %w", svc.Name, err))
				}
			}
			continue
		}
		l.ln.Close()
		delete(s.served, addr)
	}
	for addr, svc := range wanted {
		if _, ok := s.served[addr]; ok {
			continue
		}
		if err := s.serve(addr, svc); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.inNetns(func() error { return s.vips.release(vips) }); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// route switches the proxy to cfg's routing table (routes, pools,
// weights), leaving listeners and certificates alone: what a backend going
// up or down changes.
func (s *slowPath) route(cfg *config.Config) error {
	table, err := router.New(cfg)
	if err != nil {
		return fmt.Errorf("slow path: %w", err)
	}
	s.proxy.SetRouter(table)
	return nil
}

func (s *slowPath) serve(addr netip.AddrPort, svc config.Service) error {
	l := &listener{fingerprint: fingerprint(svc)}
	desc := slowpath.Listener{Service: addr, Name: svc.Name}
	if svc.Protocol == config.ProtocolHTTPS {
		store, err := certs.New(svc.TLS.Certificates)
		if err != nil {
			return fmt.Errorf("service %s: %w", svc.Name, err)
		}
		l.certs = store
		desc.TLS = store.TLSConfig()
	}
	if svc.RedirectHTTPS {
		desc.RedirectHTTPS = true
		desc.HTTPSPort = svc.RedirectPort
	}
	err := s.inNetns(func() error {
		// Not MPTCP (Go's default where the kernel has it): the kernel
		// attaches the handoff's request sockets to plain TCP listeners
		// only. No TCP keep-alive probes on accepted connections, as in
		// nginx and HAProxy: idle timeouts end silent clients and
		// tunnels, and Go's default costs four socket options per
		// connection (4.4% of the proxy's CPU on new connections).
		lc := net.ListenConfig{KeepAlive: -1}
		lc.SetMultipathTCP(false)
		var err error
		l.ln, err = lc.Listen(context.Background(), "tcp4", addr.String())
		return err
	})
	if err != nil {
		return fmt.Errorf("service %s: slow-path listener: %w", svc.Name, err)
	}
	s.served[addr] = l
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.proxy.Serve(l.ln, desc); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Debug("slow-path listener stopped", "service", svc.Name, "error", err)
		}
	}()
	s.log.Info("slow path listening", "service", svc.Name, "address", addr.String(), "protocol", string(svc.Protocol))
	return nil
}

// fingerprint is what a listener's socket and TLS store were made from.
func fingerprint(svc config.Service) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s|%s|%v|%d", svc.Name, svc.Protocol, svc.RedirectHTTPS, svc.RedirectPort)
	for _, c := range svc.TLS.Certificates {
		fmt.Fprintf(&b, "|%s,%s", c.Cert, c.Key)
	}
	return b.String()
}

// close stops accepting, gives requests in flight a few seconds, and
// removes the VIPs it added.
func (s *slowPath) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.proxy.Shutdown(ctx); err != nil {
		s.log.Warn("slow path shutdown", "error", err)
	}
	s.mu.Lock()
	for addr, l := range s.served {
		l.ln.Close()
		delete(s.served, addr)
	}
	s.mu.Unlock()
	s.wg.Wait()
	if err := s.inNetns(func() error { return s.vips.release(nil) }); err != nil {
		s.log.Warn("remove VIPs", "error", err)
	}
}
