// Package health actively checks backends, as HAProxy's `check` with
// inter, fall and rise: a backend goes down after Fall failed probes in a
// row and up again after Rise good ones. It only tells; the daemon drains
// a down backend (weight 0) in the maps and the slow path's router, so it
// gets no new flows or requests while its established flows stay.
package health

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Spec is how one pool's backends are probed.
type Spec struct {
	Interval time.Duration // between probes of one backend
	Timeout  time.Duration // one probe
	Fall     int           // failed probes in a row that take a backend down
	Rise     int           // good probes in a row that bring it back
	// HTTPPath makes a probe a GET of this path (healthy on 2xx and 3xx);
	// empty: a TCP connect.
	HTTPPath string
}

// Key names one checked backend: the same address in two pools is checked
// per pool, with each pool's Spec.
type Key struct {
	Pool    string
	Backend netip.AddrPort
}

// Target is one backend to check.
type Target struct {
	Key
	Spec Spec
}

// Options configure a Monitor.
type Options struct {
	// Dial opens a probe's connection; net.Dialer's by default. The
	// daemon dials from the data path's network namespace.
	Dial   func(ctx context.Context, network, address string) (net.Conn, error)
	Logger *slog.Logger
}

// Monitor runs one probe loop per target.
type Monitor struct {
	opts    Options
	changed chan struct{}

	mu     sync.Mutex
	checks map[Key]*check
	wg     sync.WaitGroup

	upDesc, probesDesc *prometheus.Desc
}

// check is one target's loop and state.
type check struct {
	spec   Spec
	cancel context.CancelFunc

	mu                  sync.Mutex
	up                  bool
	fails, oks          int // consecutive
	probesOK, probesBad uint64
}

// New returns a Monitor checking nothing yet.
func New(opts Options) *Monitor {
	if opts.Dial == nil {
		var d net.Dialer
		opts.Dial = d.DialContext
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Monitor{
		opts:    opts,
		changed: make(chan struct{}, 1),
		checks:  map[Key]*check{},
		upDesc: prometheus.NewDesc("rauta_backend_up",
			"1 while the backend passes its pool's health check, 0 while it is down and drained (pools with a health_check only).",
			[]string{"pool", "backend"}, nil),
		probesDesc: prometheus.NewDesc("rauta_health_probes_total",
			"Health probes by result.", []string{"pool", "backend", "result"}, nil),
	}
}

// Changed receives a value after one or more backends went up or down;
// several changes between two reads coalesce into one.
func (m *Monitor) Changed() <-chan struct{} { return m.changed }

// Set makes targets the checked set: loops start for new targets and stop
// for removed ones. A target whose Spec changed keeps its state (a down
// backend stays down until it passes Rise probes of the new Spec).
func (m *Monitor) Set(targets []Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := make(map[Key]Spec, len(targets))
	for _, t := range targets {
		want[t.Key] = t.Spec
	}
	for k, c := range m.checks {
		spec, ok := want[k]
		if ok && spec == c.spec {
			delete(want, k)
			continue
		}
		c.cancel()
		delete(m.checks, k)
		if ok {
			m.start(k, spec, c)
			delete(want, k)
		}
	}
	for k, spec := range want {
		m.start(k, spec, nil)
	}
}

// start runs k's loop, carrying state and counters over from old if not
// nil; m.mu is held.
func (m *Monitor) start(k Key, spec Spec, old *check) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &check{spec: spec, cancel: cancel, up: true}
	if old != nil {
		old.mu.Lock()
		c.up, c.probesOK, c.probesBad = old.up, old.probesOK, old.probesBad
		old.mu.Unlock()
	}
	m.checks[k] = c
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.loop(ctx, k, c)
	}()
}

// Down reports the backends that are down now.
func (m *Monitor) Down() map[Key]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	down := map[Key]bool{}
	for k, c := range m.checks {
		if !c.isUp() {
			down[k] = true
		}
	}
	return down
}

// Close stops every loop and waits for them.
func (m *Monitor) Close() {
	m.mu.Lock()
	for k, c := range m.checks {
		c.cancel()
		delete(m.checks, k)
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// loop probes at once, then every Interval, until ctx ends.
func (m *Monitor) loop(ctx context.Context, k Key, c *check) {
	tick := time.NewTicker(c.spec.Interval)
	defer tick.Stop()
	for {
		err := m.probe(ctx, k.Backend, c.spec)
		if ctx.Err() != nil {
			return
		}
		if up, changed := c.record(err); changed {
			if up {
				m.opts.Logger.Info("backend up", "pool", k.Pool, "backend", k.Backend, "rise", c.spec.Rise)
			} else {
				m.opts.Logger.Warn("backend down: drained until it passes its health check again", "pool", k.Pool, "backend", k.Backend, "fall", c.spec.Fall, "error", err)
			}
			select {
			case m.changed <- struct{}{}:
			default:
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (c *check) isUp() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.up
}

// record counts one probe's result and reports whether it changed the
// backend's state.
func (c *check) record(err error) (up, changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.probesOK++
		c.fails = 0
		c.oks++
		if !c.up && c.oks >= c.spec.Rise {
			c.up, changed = true, true
		}
	} else {
		c.probesBad++
		c.oks = 0
		c.fails++
		if c.up && c.fails >= c.spec.Fall {
			c.up, changed = false, true
		}
	}
	return c.up, changed
}

// maxStatusLine bounds what a probe reads of the answer.
const maxStatusLine = 512

// ErrUnhealthyStatus is an HTTP probe's answer outside 2xx and 3xx.
var ErrUnhealthyStatus = errors.New("unhealthy status")

// probe is one check of one backend: a TCP connect, or an HTTP/1.1 GET
// whose status line decides.
func (m *Monitor) probe(ctx context.Context, backend netip.AddrPort, spec Spec) error {
	ctx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	conn, err := m.opts.Dial(ctx, "tcp", backend.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	if spec.HTTPPath == "" {
		return nil
	}
	// Close (Set, Close) cancels ctx: end a probe waiting for its answer
	// at once rather than at its deadline.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return err
		}
	}
	req := "GET " + spec.HTTPPath + " HTTP/1.1\r\nHost: " + backend.String() +
		"\r\nUser-Agent: rauta-health-check\r\nConnection: close\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		return fmt.Errorf("send probe: %w", err)
	}
	line, err := bufio.NewReaderSize(conn, maxStatusLine).ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("read status line: %w", err)
	}
	status, err := parseStatus(string(line))
	if err != nil {
		return err
	}
	if status < 200 || status > 399 {
		return fmt.Errorf("%w %d", ErrUnhealthyStatus, status)
	}
	return nil
}

// parseStatus reads the code of an HTTP/1.x status line: "HTTP/1.D NNN",
// then a space or the end of the line.
func parseStatus(line string) (int, error) {
	proto, rest, ok := strings.Cut(line, " ")
	if !ok || len(proto) != len("HTTP/1.1") || !strings.HasPrefix(proto, "HTTP/1.") || proto[7] < '0' || proto[7] > '9' ||
		len(rest) < 3 || (len(rest) > 3 && !strings.ContainsRune(" \r\n", rune(rest[3]))) {
		return 0, fmt.Errorf("not an HTTP/1 status line: %q", strings.TrimSpace(line))
	}
	code, err := strconv.Atoi(rest[:3])
	if err != nil || code < 100 {
		return 0, fmt.Errorf("not an HTTP/1 status line: %q", strings.TrimSpace(line))
	}
	return code, nil
}

// Describe implements prometheus.Collector.
func (m *Monitor) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.upDesc
	ch <- m.probesDesc
}

// Collect implements prometheus.Collector: the state at scrape time.
func (m *Monitor) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, c := range m.checks {
		c.mu.Lock()
		up, ok, bad := c.up, c.probesOK, c.probesBad
		c.mu.Unlock()
		b := k.Backend.String()
		v := 0.0
		if up {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(m.upDesc, prometheus.GaugeValue, v, k.Pool, b)
		ch <- prometheus.MustNewConstMetric(m.probesDesc, prometheus.CounterValue, float64(ok), k.Pool, b, "ok")
		ch <- prometheus.MustNewConstMetric(m.probesDesc, prometheus.CounterValue, float64(bad), k.Pool, b, "failed")
	}
}
