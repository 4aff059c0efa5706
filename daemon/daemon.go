// Package daemon runs RAUTA: it loads the configuration, puts the data path
// into the kernel, keeps the maps in step with the configuration across
// reloads, collects idle flows and serves metrics, until its context ends.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rauta-lb/rauta/config"
	"github.com/rauta-lb/rauta/flowcache"
	"github.com/rauta-lb/rauta/health"
	"github.com/rauta-lb/rauta/loader"
	"github.com/rauta-lb/rauta/metrics"
	"github.com/rauta-lb/rauta/router"
	"github.com/rauta-lb/rauta/xdp"
)

// Options configure Run.
type Options struct {
	ConfigPath string
	Version    string
	Logger     *slog.Logger
	// Reload delivers a value for each reload request (SIGHUP).
	Reload <-chan struct{}
	// InNetns runs fn in the network namespace holding the configured
	// interfaces. Nil means the caller's own; `rauta demo` uses it to
	// drive a testbed namespace.
	InNetns func(fn func() error) error
	// GCInterval is how often idle flows are collected (default 5s).
	GCInterval time.Duration
	// CookieKeyInterval is how often the SYN cookie key rotates (default
	// 60s); a cookie stays valid for one to two intervals.
	CookieKeyInterval time.Duration
	// Started, if set, is called once the data path is attached and
	// programmed.
	Started func(*Daemon)
}

// Daemon is a running RAUTA instance.
type Daemon struct {
	opts      Options
	log       *slog.Logger
	loader    *loader.Loader
	flows     *flowcache.Table
	timeouts  atomic.Pointer[flowcache.Timeouts]
	liveFlows atomic.Int64
	reloads   *prometheus.CounterVec
	slow      *slowPath
	stashes   *flowcache.StashGC
	health    *health.Monitor
	// healthPending: the last health change failed to apply.
	healthPending bool
	// cfg is the configuration file as last loaded; what is programmed
	// is cfg with the backends health checks found down drained.
	cfg *config.Config
}

// ErrUnsupported marks configuration this build cannot run yet.
var ErrUnsupported = errors.New("not supported by this build")

// Run loads the configuration, attaches the data path and serves until ctx
// is done. An invalid configuration returns an error before anything is
// attached.
func Run(ctx context.Context, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.InNetns == nil {
		opts.InNetns = func(fn func() error) error { return fn() }
	}
	if opts.GCInterval == 0 {
		opts.GCInterval = 5 * time.Second
	}
	if opts.CookieKeyInterval == 0 {
		opts.CookieKeyInterval = time.Minute
	}
	d := &Daemon{opts: opts, log: opts.Logger}

	cfg, err := d.loadConfig()
	if err != nil {
		return err
	}
	d.cfg = cfg
	state, err := StateFromConfig(d.opts.ConfigPath, cfg)
	if err != nil {
		return err
	}
	d.loader, err = loader.Load(loader.Options{PinPath: cfg.BPFFS, Logger: d.log})
	if err != nil {
		return err
	}
	defer func() {
		if err := d.loader.Close(); err != nil {
			d.log.Error("detach", "error", err)
		} else {
			d.log.Info("detached and unpinned", "pins", cfg.BPFFS)
		}
	}()
	if err := d.loader.Apply(state); err != nil {
		return fmt.Errorf("program maps: %w", err)
	}
	if err := opts.InNetns(func() error { return d.loader.Attach(cfg.Interfaces, string(cfg.XDPMode)) }); err != nil {
		return err
	}
	d.slow = newSlowPath(cfg, d.log, opts.InNetns)
	defer d.slow.close()
	if err := d.slow.apply(cfg); err != nil {
		return err
	}
	// Every backend starts up (HAProxy's default), so what was just
	// programmed stands until a check fails.
	d.health = health.New(health.Options{Dial: netnsDial(opts.InNetns), Logger: d.log.With("component", "health")})
	defer d.health.Close()
	d.health.Set(healthTargets(cfg))
	d.flows = flowcache.New(d.loader.Objects().Flows)
	d.stashes = flowcache.NewStashGC(d.loader.Objects().Stash)
	d.setTimeouts(cfg)
	d.log.Info("rauta running", "services", len(cfg.Services), "pools", len(cfg.Pools),
		"interfaces", cfg.Interfaces, "pins", cfg.BPFFS)

	stopMetrics, err := d.serveMetrics(cfg.Metrics.Listen)
	if err != nil {
		return err
	}
	defer stopMetrics()

	if opts.Started != nil {
		opts.Started(d)
	}

	gc := time.NewTicker(opts.GCInterval)
	defer gc.Stop()
	cookieKey := time.NewTicker(opts.CookieKeyInterval)
	defer cookieKey.Stop()
	for {
		select {
		case <-cookieKey.C:
			if err := d.loader.RotateCookieKey(); err != nil {
				d.log.Error("SYN cookie key rotation", "error", err)
			}
		case <-ctx.Done():
			d.log.Info("shutting down")
			return nil
		case <-opts.Reload:
			d.reload(cfg.Interfaces)
		case <-d.health.Changed():
			d.applyHealth()
		case <-gc.C:
			d.collectFlows()
			if d.healthPending {
				d.applyHealth()
			}
		}
	}
}

// loadConfig reads and validates the file in the data path's namespace
// (whose interfaces it names).
func (d *Daemon) loadConfig() (*config.Config, error) {
	var cfg *config.Config
	err := d.opts.InNetns(func() error {
		var err error
		cfg, err = LoadConfig(d.opts.ConfigPath, false)
		return err
	})
	return cfg, err
}

// LoadConfig reads path and checks everything the daemon would refuse
// before programming anything: the file itself, its interfaces in the
// calling thread's namespace and its certificates (unless portable, for
// checking on another host), the map state and the slow path's routing
// table. `rauta check` and every (re)load use it.
func LoadConfig(path string, portable bool) (*config.Config, error) {
	opts := config.Options{SkipFileChecks: portable}
	if !portable {
		opts.InterfaceExists = func(name string) bool {
			_, err := net.InterfaceByName(name)
			return err == nil
		}
	}
	cfg, err := config.Load(path, opts)
	if err != nil {
		return nil, err
	}
	if _, err := StateFromConfig(path, cfg); err != nil {
		return nil, err
	}
	if _, err := router.New(cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// StateFromConfig is the one translation from a configuration to what the
// maps say; file names the configuration in errors. Tests that program the
// data path from a config.Config use it too, so they program what the
// daemon would.
func StateFromConfig(file string, cfg *config.Config) (loader.State, error) {
	var s loader.State
	for _, svc := range cfg.Services {
		out := loader.Service{Name: svc.Name, VIP: svc.VIP, Port: svc.Port, Pool: svc.Pool}
		switch svc.Protocol {
		case config.ProtocolTCP:
			out.Protocol = loader.ProtoTCP
		case config.ProtocolUDP:
			out.Protocol = loader.ProtoUDP
		case config.ProtocolHTTP, config.ProtocolHTTPS:
			// XDP answers the SYNs of https services too (a flood never
			// reaches the kernel's queues) but routes none of their
			// connections: the slow path terminates TLS and routes by
			// the same routes.
			out.Protocol = loader.ProtoTCP
			out.HTTP = true
			out.SlowpathOnly = svc.Protocol == config.ProtocolHTTPS
			for _, r := range svc.Routes {
				out.Routes = append(out.Routes, loader.Route{
					Host: r.Host, Path: r.Path, Exact: r.Exact, Methods: r.Methods, Pool: r.Pool,
				})
			}
		default:
			return s, fmt.Errorf("%s: service %s: protocol %s: %w", file, svc.Name, svc.Protocol, ErrUnsupported)
		}
		s.Services = append(s.Services, out)
	}
	for _, p := range cfg.Pools {
		pool := loader.Pool{Name: p.Name, MaglevSize: p.MaglevSize}
		for _, b := range p.Backends {
			pool.Backends = append(pool.Backends, loader.Backend{Address: b.Address, Weight: b.Weight})
		}
		s.Pools = append(s.Pools, pool)
	}
	return s, nil
}

// reload applies a changed file. A file that fails validation leaves the
// running configuration in place. Interfaces are fixed for the life of the
// process: changing them needs a restart.
func (d *Daemon) reload(attached []string) {
	file, err := d.loadConfig()
	if err == nil {
		if fmt.Sprint(file.Interfaces) != fmt.Sprint(attached) {
			d.log.Warn("interfaces changed in the file; restart rauta to apply", "attached", attached, "file", file.Interfaces)
		}
		// Probe states are keyed by pool and backend, so the down set of
		// the running file applies to the new one, for the targets it
		// still checks; they are switched once the maps took it.
		err = d.program(file, stillChecked(d.health.Down(), file), d.slow.apply, func() {
			d.setTimeouts(file)
			d.health.Set(healthTargets(file))
		})
	}
	if err != nil {
		d.reloads.WithLabelValues("error").Inc()
		d.log.Error("reload failed; what could not be applied keeps the running configuration", "error", err)
		return
	}
	d.healthPending = false
	d.reloads.WithLabelValues("ok").Inc()
	d.log.Info("configuration reloaded", "services", len(file.Services), "pools", len(file.Pools))
}

// program writes file, with the down backends drained, into the maps and
// hands it to slow (the slow path's apply on a reload, its router only on
// a health change). Once the maps took it, file becomes d.cfg and
// applied runs (nil: nothing more to switch); before that, a failure
// changes nothing.
func (d *Daemon) program(file *config.Config, down map[health.Key]bool, slow func(*config.Config) error, applied func()) error {
	cfg := withHealth(file, down, d.log)
	state, err := StateFromConfig(d.opts.ConfigPath, cfg)
	if err != nil {
		return err
	}
	if err := d.loader.Apply(state); err != nil {
		return fmt.Errorf("program maps: %w", err)
	}
	d.cfg = file
	if applied != nil {
		applied()
	}
	if err := slow(cfg); err != nil {
		return fmt.Errorf("slow path incomplete: %w", err)
	}
	return nil
}

// applyHealth reprograms after backends went up or down. A failure is
// retried on the next GC tick: Changed fires on transitions only.
func (d *Daemon) applyHealth() {
	down := d.health.Down()
	if err := d.program(d.cfg, down, d.slow.route, nil); err != nil {
		d.healthPending = true
		d.log.Error("health change not applied; retrying", "error", err)
		return
	}
	d.healthPending = false
	d.log.Info("health change applied", "backends_down", len(down))
}

func (d *Daemon) setTimeouts(cfg *config.Config) {
	d.timeouts.Store(&flowcache.Timeouts{
		TCPIdle: cfg.Flows.TCPIdleTimeout,
		UDPIdle: cfg.Flows.UDPIdleTimeout,
		Closed:  cfg.Flows.ClosedTimeout,
	})
}

func (d *Daemon) collectFlows() {
	// One walk of the flow table serves both: the stash GC learns which
	// connections still have a flow from the flow GC's walk.
	var (
		stats   flowcache.GCStats
		flowErr error
	)
	n, err := d.stashes.Collect(func(live func(xdp.FlowKey)) error {
		stats, flowErr = d.flows.Collect(*d.timeouts.Load(), live)
		return flowErr
	})
	if flowErr != nil {
		d.log.Warn("flow GC", "error", flowErr)
		return
	}
	d.liveFlows.Store(int64(stats.Live))
	if stats.Removed > 0 {
		d.log.Debug("flow GC", "removed", stats.Removed, "live", stats.Live)
	}
	if err != nil {
		d.log.Warn("stash GC", "error", err)
	} else if n > 0 {
		d.log.Debug("stash GC: requests of vanished connections removed", "removed", n)
	}
}

// ServiceNames implements metrics.Source.
func (d *Daemon) ServiceNames() map[uint32]string { return d.loader.ServiceNames() }

// LiveFlows implements metrics.Source.
func (d *Daemon) LiveFlows() int { return int(d.liveFlows.Load()) }

// Loader exposes the loaded data path, for the demo's live view and tests.
func (d *Daemon) Loader() *loader.Loader { return d.loader }

// Flows exposes the flow table.
func (d *Daemon) Flows() *flowcache.Table { return d.flows }

func (d *Daemon) serveMetrics(listen string) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	d.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rauta_config_reloads_total", Help: "Configuration reloads by result.",
	}, []string{"result"})
	reg.MustRegister(
		metrics.New(d.loader.Objects().Counters, d, d.opts.Version, d.log).WithSlowpath(d.loader.Objects().SlowpathCounters),
		d.reloads,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	reg.MustRegister(d.slow.proxy.Collectors()...)
	reg.MustRegister(d.health)
	if handoff := d.loader.Handoff(); handoff != nil {
		reg.MustRegister(metrics.NewHandoff(handoff.Counters, d.log))
	}
	if listen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("metrics server", "error", err)
		}
	}()
	d.log.Info("metrics listening", "address", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
