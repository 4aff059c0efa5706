package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rauta-lb/rauta/certs"
	"github.com/rauta-lb/rauta/tools/testbed"
)

const (
	// startupTimeout is how long a freshly started server gets to answer.
	startupTimeout = 10 * time.Second
	// checkTimeout bounds the check request made before each mode's runs.
	checkTimeout = 5 * time.Second
	// originBody is what the origin answers.
	originBody = "ok\n"
)

// bench is one run: a testbed, the servers on it and the report being
// filled in.
type bench struct {
	opts      options
	log       *slog.Logger
	daemonLog *slog.Logger
	rep       *report

	tb  *testbed.Testbed
	dir string // configurations and server logs
	// cert is the certificate rauta-tls and nginx-tls both serve.
	cert struct{ Cert, Key string }
	// rautaBin is the rauta binary the slow-path modes run.
	rautaBin string
}

// run builds the testbed, starts the servers and measures every mode,
// round after round. Everything it starts is stopped before it returns.
func (b *bench) run(ctx context.Context) (err error) {
	b.dir, err = os.MkdirTemp("", "rauta-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	// nginx workers run as nobody and need to reach their directories.
	if err := os.Chmod(b.dir, 0o755); err != nil {
		return err
	}

	b.log.Info("building testbed", "backends", 1)
	b.tb, err = testbed.New(testbed.Options{Backends: 1})
	if err != nil {
		return err
	}
	defer func() {
		if closeErr := b.tb.Close(); closeErr != nil {
			err = errors.Join(err, fmt.Errorf("remove testbed: %w", closeErr))
		}
		b.log.Info("testbed removed")
	}()
	for _, m := range b.opts.Modes {
		b.rep.URLs[m.Name] = m.url(b.tb)
	}
	// wrk sometimes closes before the server does, leaving the client's
	// port in TIME_WAIT for 60s. With one client address and new
	// connections at 20k/s, that exhausts its ports within seconds and
	// connect() then spends the CPUs scanning for a free one (req/s drops
	// tenfold, nearly all of it system time). Load generators allow reusing
	// such ports, as clients on many addresses would never notice.
	if err := setSysctl(b.tb.Client, "net/ipv4/tcp_tw_reuse", "1"); err != nil {
		return err
	}

	if b.selected(modeRautaTLS) || b.selected(modeNginxTLS) {
		// Names are irrelevant (wrk and the check do not verify), but SNI
		// carries the URL's host.
		b.cert.Cert, b.cert.Key, err = certs.WriteSelfSigned(b.dir, []string{"bench.rauta.test", b.tb.VIPs[0].String(), b.tb.LBClientAddr.String()})
		if err != nil {
			return fmt.Errorf("bench certificate: %w", err)
		}
	}
	if len(b.procModes()) > 0 {
		b.log.Info("building rauta for the slow-path modes")
		if b.rautaBin, err = buildRauta(ctx, b.dir); err != nil {
			return err
		}
	}

	stopServers, err := b.startServers(ctx)
	defer func() { err = errors.Join(err, stopServers()) }()
	if err != nil {
		return err
	}

	for round := 1; round <= b.opts.Load.Rounds; round++ {
		for _, m := range b.opts.Modes {
			if err := b.measureMode(ctx, round, m); err != nil {
				return fmt.Errorf("round %d, mode %s: %w", round, m.Name, err)
			}
		}
	}
	return nil
}

// measureMode checks that m works, then runs wrk in both styles.
func (b *bench) measureMode(ctx context.Context, round int, m mode) error {
	if err := setSysctl(b.tb.Client, "net/ipv4/ip_local_port_range", fmt.Sprintf("%d %d", m.Ports[0], m.Ports[1])); err != nil {
		return err
	}
	if m.Name == modeRauta {
		return b.measureRauta(ctx, round, m)
	}
	if m.Name == modeRautaHTTP {
		// measured inside measureRauta, on the same daemon
		return nil
	}
	if isProcMode(m.Name) {
		// The first of them measures all of them, on one rauta process.
		if m.Name != b.procModes()[0].Name {
			return nil
		}
		return b.measureRautaProc(ctx, round)
	}
	url := m.url(b.tb)
	if err := httpCheck(ctx, b.tb.Client, url); err != nil {
		return fmt.Errorf("check before measuring: %w", err)
	}
	for _, st := range styles {
		if err := b.measure(ctx, round, m, st, nil); err != nil {
			return err
		}
	}
	return nil
}

// setSysctl writes a per-namespace sysctl in ns. /proc/sys/net resolves
// against the namespace of the opening thread, hence Do.
func setSysctl(ns *testbed.Namespace, key, value string) error {
	err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/"+key, []byte(value+"\n"), 0o644)
	})
	if err != nil {
		return fmt.Errorf("set %s=%q in %s: %w", strings.ReplaceAll(key, "/", "."), value, ns.Name, err)
	}
	return nil
}

// measureRauta runs the daemon for the duration of one round's rauta-l4
// runs, proving first that the VIP is served by XDP.
func (b *bench) measureRauta(ctx context.Context, round int, m mode) (err error) {
	tb := b.tb
	d, err := startRauta(ctx, tb, b.dir, rautaConfig{
		Interfaces: []string{tb.LBClientIface, tb.LBBackendIface},
		BPFFS:      bpffsDir(),
		XDPMode:    b.opts.Load.XDPMode,
		VIP:        m.target(tb).Addr(),
		Port:       m.target(tb).Port(),
		HTTPPort:   rautaHTTPPort,
		Backend:    origin(tb),
	}, b.opts.ProgStats, b.daemonLog)
	if err != nil {
		return err
	}
	b.log.Info("rauta daemon started; XDP attached", "netns", tb.LB.Name, "interfaces", []string{tb.LBClientIface, tb.LBBackendIface}, "mode", b.noteAttachMode())
	defer func() {
		err = errors.Join(err, d.stop())
		b.log.Info("rauta daemon stopped; XDP detached")
	}()

	for _, served := range b.rautaModes(m) {
		if err := setSysctl(tb.Client, "net/ipv4/ip_local_port_range", fmt.Sprintf("%d %d", served.Ports[0], served.Ports[1])); err != nil {
			return err
		}
		if err := b.checkRauta(ctx, d, served.url(tb)); err != nil {
			return err
		}
		for _, st := range styles {
			if err := b.measure(ctx, round, served, st, d.counters); err != nil {
				return err
			}
		}
	}
	return nil
}

// rautaModes are the modes one daemon run serves: rauta-l4, and rauta-http
// when it was asked for.
func (b *bench) rautaModes(l4 mode) []mode {
	served := []mode{l4}
	for _, m := range b.opts.Modes {
		if m.Name == modeRautaHTTP {
			served = append(served, m)
		}
	}
	return served
}

func (b *bench) selected(name string) bool {
	for _, m := range b.opts.Modes {
		if m.Name == name {
			return true
		}
	}
	return false
}

// procModes are the selected modes the rauta process serves, in -modes
// order.
func (b *bench) procModes() []mode {
	var out []mode
	for _, m := range b.opts.Modes {
		if isProcMode(m.Name) {
			out = append(out, m)
		}
	}
	return out
}

// measureRautaProc runs the rauta binary for one round's slow-path runs
// and, after rauta-slow's, the memory run. nginx-proxy-xdp is measured
// meanwhile, with the process's XDP program on the LB's veths.
func (b *bench) measureRautaProc(ctx context.Context, round int) (err error) {
	tb := b.tb
	cfg := rautaConfig{
		Interfaces:  []string{tb.LBClientIface, tb.LBBackendIface},
		BPFFS:       bpffsDir() + "-proc",
		XDPMode:     b.opts.Load.XDPMode,
		VIP:         tb.VIPs[0],
		Port:        originPort,
		HTTPPort:    rautaHTTPPort,
		Backend:     origin(tb),
		Metrics:     rautaMetricsAddr,
		NoAccessLog: true,
	}
	if b.cert.Cert != "" {
		cfg.TLSPort, cfg.CertFile, cfg.KeyFile = rautaTLSPort, b.cert.Cert, b.cert.Key
	}
	p, err := startRautaProc(ctx, tb, b.dir, b.rautaBin, cfg, b.opts.DaemonLogLevel, b.log)
	if err != nil {
		return err
	}
	b.log.Info("rauta process started; XDP attached", "pid", p.pid(), "netns", tb.LB.Name, "mode", b.noteAttachMode())
	defer func() {
		err = errors.Join(err, p.stop())
		b.log.Info("rauta process stopped; XDP detached")
	}()

	for _, m := range b.procModes() {
		if err := setSysctl(tb.Client, "net/ipv4/ip_local_port_range", fmt.Sprintf("%d %d", m.Ports[0], m.Ports[1])); err != nil {
			return err
		}
		check := b.checkRautaProc
		if m.Name == modeNginxXDP {
			check = b.checkXDPPass
		}
		if err := check(ctx, p, m); err != nil {
			return fmt.Errorf("mode %s: %w", m.Name, err)
		}
		for _, st := range styles {
			if err := b.measure(ctx, round, m, st, p.counters); err != nil {
				return fmt.Errorf("mode %s: %w", m.Name, err)
			}
		}
		if m.Name == modeRautaSlow && b.opts.RSSDuration > 0 {
			res, err := b.measureRSS(ctx, p, m)
			if err != nil {
				return err
			}
			b.rep.RSS = append(b.rep.RSS, res)
			b.rep.RSSCommand = commandLine(append([]string{"wrk"}, b.rssSpec(m.url(tb)).args()...))
		}
	}
	return nil
}

// measure runs the warm-up and the recorded wrk run of one mode and style
// and records the result, with what the system counters (and xdp, if
// given) counted meanwhile.
func (b *bench) measure(ctx context.Context, round int, m mode, st style, xdp func() (snapshot, error)) error {
	key := runKey{m.Name, st}
	t := b.rep.tally(key)
	b.waitQuiet(ctx)
	sysBefore, err := takeSnapshot(ctx, b.tb)
	if err != nil {
		return err
	}
	var xdpBefore snapshot
	if xdp != nil {
		if xdpBefore, err = xdp(); err != nil {
			return err
		}
	}

	s := b.opts.Load
	spec := wrkSpec{Threads: s.Threads, Conns: s.Conns, URL: m.url(b.tb), Close: st == connClose}
	if s.Warmup > 0 {
		spec.Duration = s.Warmup
		warm, err := runWrk(ctx, b.tb.Client, spec)
		if err != nil {
			return fmt.Errorf("%s warm-up: %w", st, err)
		}
		t.Requests += warm.Requests
		t.System[cpuClient] += durationTicks(warm.CPU)
	}
	spec.Duration = s.Duration
	load := startOtherLoad()
	res, err := runWrk(ctx, b.tb.Client, spec)
	if err != nil {
		return fmt.Errorf("%s: %w", st, err)
	}
	other, top := load.share()
	r := runResult{wrkResult: res, OtherLoad: other}
	t.Requests += res.Requests
	t.System[cpuClient] += durationTicks(res.CPU)
	b.rep.Runs[key] = append(b.rep.Runs[key], r)
	b.log.Info("measured", "round", round, "mode", m.Name, "style", st,
		"req/s", fmt.Sprintf("%.0f", res.ReqPerSec), "p50", fmtLatency(res.P50), "p99", fmtLatency(res.P99),
		"errors", res.Errors.String(), "other_load", fmt.Sprintf("%.0f%%", 100*r.OtherLoad))
	if r.disturbed() {
		b.log.Warn("other processes used the CPUs during the run; it is left out of the medians",
			"other_load", fmt.Sprintf("%.0f%%", 100*r.OtherLoad), "top", top)
	}

	sysAfter, err := takeSnapshot(ctx, b.tb)
	if err != nil {
		return err
	}
	t.System.add(sysBefore.delta(sysAfter))
	if xdp != nil {
		xdpAfter, err := xdp()
		if err != nil {
			return err
		}
		t.XDP.add(xdpBefore.delta(xdpAfter))
	}
	return nil
}

// waitQuiet waits, up to -quiet-wait, until the CPUs were at least
// quietIdle idle for a second: the testbed is idle between runs, so
// anything busier is someone else's load, which would skew the run.
func (b *bench) waitQuiet(ctx context.Context) {
	if b.opts.QuietWait <= 0 {
		return
	}
	deadline := time.Now().Add(b.opts.QuietWait)
	for first := true; ; first = false {
		idle := cpuIdle(ctx, time.Second)
		if idle < 0 || idle >= quietIdle || ctx.Err() != nil {
			return
		}
		if time.Now().After(deadline) {
			b.log.Warn("machine still busy; measuring anyway", "cpu_idle", fmt.Sprintf("%.0f%%", 100*idle), "waited", b.opts.QuietWait)
			return
		}
		if first {
			b.log.Info("machine busy; waiting for it to quieten", "cpu_idle", fmt.Sprintf("%.0f%%", 100*idle))
		}
	}
}

// xdpBench runs the XDP program benchmarks from the module root.
func (b *bench) xdpBench(ctx context.Context) *xdpBench {
	dir, err := moduleDir()
	if err != nil {
		return &xdpBench{Note: err.Error()}
	}
	b.log.Info("running XDP benchmarks", "dir", dir, "benchtime", b.opts.XDPBenchtime)
	res := runXDPBench(ctx, dir, b.opts.XDPBenchtime)
	b.log.Info("XDP benchmarks done", "results", len(res.Results))
	return &res
}

// noteAttachMode records for the report how the kernel attached XDP to the
// LB's veths, and returns it.
func (b *bench) noteAttachMode() string {
	var modes []string
	for _, name := range []string{b.tb.LBClientIface, b.tb.LBBackendIface} {
		m, err := b.tb.LB.XDPAttachMode(name)
		if err != nil {
			b.log.Warn("cannot read the XDP attach mode", "err", err)
			m = "unknown"
		}
		if !slices.Contains(modes, m) {
			modes = append(modes, m)
		}
	}
	mode := strings.Join(modes, "/")
	if !slices.Contains(b.rep.Attached, mode) {
		b.rep.Attached = append(b.rep.Attached, mode)
	}
	return mode
}
