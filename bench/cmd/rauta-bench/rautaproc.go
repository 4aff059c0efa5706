package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rauta-lb/rauta/tools/testbed"
)

// The slow-path modes run the real rauta binary, not the in-process daemon:
// the daemon's memory at many connections is one of the figures, and the
// bench's own heap (wrk output, reports, the Go toolchain's children) would
// be counted with an in-process one.

// rautaMetricsAddr is where the rauta process serves its metrics, inside
// the LB namespace.
const rautaMetricsAddr = "127.0.0.1:9100"

// procModes are the modes measured while one rauta process runs, in the
// default order. nginx-proxy-xdp is not served by rauta: it only needs the
// process's XDP program on the LB's veths.
var procModes = []string{modeRautaSlow, modeNginxXDP, modeRautaTLS}

func isProcMode(name string) bool {
	for _, n := range procModes {
		if n == name {
			return true
		}
	}
	return false
}

// buildRauta compiles cmd/rauta into dir, from the module the bench runs
// in, so the binary measured is the tree's.
func buildRauta(ctx context.Context, dir string) (string, error) {
	mod, err := moduleDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "rauta")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/rauta")
	cmd.Dir = mod
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/rauta: %w: %s", err, tail(string(out), 2000))
	}
	return bin, nil
}

// rautaProc is `rauta run` in the LB namespace.
type rautaProc struct {
	p    *process
	pins string
	tb   *testbed.Testbed
}

// startRautaProc writes cfg into dir and runs bin with it, entering only
// the LB's network namespace (nsenter --net, as the e2e tests do: `ip netns
// exec` would give it a private /sys without the bpffs its pins go to). It
// returns once the metrics answer, which the daemon serves after XDP is
// attached and the maps are programmed.
func startRautaProc(ctx context.Context, tb *testbed.Testbed, dir, bin string, cfg rautaConfig, level slog.Level, log *slog.Logger) (*rautaProc, error) {
	path, err := renderFile(dir, "rauta-proc.yaml", rautaTemplate, cfg)
	if err != nil {
		return nil, fmt.Errorf("rauta process: %w", err)
	}
	cmd := tb.LB.NetCommand(bin, "run", "--config", path, "--log-level", strings.ToLower(level.String()))
	p, err := startCmd(cmd, tb.LB, dir, "rauta", log)
	if err != nil {
		return nil, err
	}
	// Shutdown detaches XDP and drains the proxy; killing it would leave
	// the program attached for the in-process daemon to trip over.
	p.grace = daemonStartTimeout
	r := &rautaProc{p: p, pins: cfg.BPFFS, tb: tb}
	deadline := time.Now().Add(daemonStartTimeout)
	for {
		_, err := r.scrape(ctx)
		if err == nil {
			break
		}
		if exitErr := p.exited(); exitErr != nil {
			return nil, errors.Join(exitErr, r.stop())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, errors.Join(fmt.Errorf("rauta process: no metrics after %v: %w; its output: %s", daemonStartTimeout, err, p.output()), r.stop())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", r.pid())); err != nil || strings.TrimSpace(string(comm)) != "rauta" {
		// nsenter execs the program without forking; if it ever forked,
		// the RSS read would be nsenter's.
		return nil, errors.Join(fmt.Errorf("rauta process: pid %d is %q, not rauta (%v)", r.pid(), comm, err), r.stop())
	}
	return r, nil
}

func (r *rautaProc) pid() int { return r.p.cmd.Process.Pid }

// stop ends the daemon and removes pins a killed one left behind.
func (r *rautaProc) stop() error {
	err := r.p.stop()
	if rmErr := os.RemoveAll(r.pins); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("remove pins: %w", rmErr))
	}
	return err
}

// scrape reads the daemon's metrics from inside the LB namespace.
func (r *rautaProc) scrape(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DialContext: r.tb.LB.DialContext, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+rautaMetricsAddr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("rauta metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("rauta metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("rauta metrics: %s", resp.Status)
	}
	return string(body), nil
}

// counters are the daemon's non-zero counters (XDP, TC handoff, slow
// path), keyed like the in-process daemon's.
func (r *rautaProc) counters() (snapshot, error) {
	text, err := r.scrape(context.Background())
	if err != nil {
		return nil, err
	}
	return parseCounters(text)
}

// parseCounters takes rauta's counters (`rauta_*_total` series) from
// Prometheus text format, without the rauta_ prefix and the _total suffix,
// dropping zeros. The Go runtime's and process's metrics are left out.
func parseCounters(text string) (snapshot, error) {
	out := snapshot{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// Label values may hold spaces, the value never does.
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		series, value := line[:i], line[i+1:]
		name, labels, _ := strings.Cut(series, "{")
		name, ok := strings.CutSuffix(name, "_total")
		if !ok || !strings.HasPrefix(name, "rauta_") {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		if v == 0 {
			continue
		}
		key := strings.TrimPrefix(name, "rauta_")
		if labels != "" {
			key += "{" + labels
		}
		out[key] += uint64(v)
	}
	return out, sc.Err()
}

// sumCounters adds the series of one counter whose labels contain every
// one of labels (`service="bench-tls"`).
func sumCounters(s snapshot, name string, labels ...string) uint64 {
	var n uint64
	for k, v := range s {
		series, rest, _ := strings.Cut(k, "{")
		if series != name {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(rest, l)
		}
		if all {
			n += v
		}
	}
	return n
}

// procService is the rauta service a slow-path mode's requests go to.
func procService(mode string) string {
	if mode == modeRautaTLS {
		return "bench-tls"
	}
	return "bench-http"
}

// checkRautaProc makes one request and requires that the slow-path proxy
// answered it (a path XDP routed itself would not count there). As with
// checkRauta, the first request may meet a missing neighbour entry, so it
// is retried for a few seconds.
func (b *bench) checkRautaProc(ctx context.Context, r *rautaProc, m mode) error {
	url := m.url(b.tb)
	svc := fmt.Sprintf("service=%q", procService(m.Name))
	before, err := r.counters()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(startupTimeout)
	for {
		err := httpCheck(ctx, b.tb.Client, url)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c, _ := r.counters()
			return fmt.Errorf("check before measuring: %w (rauta counters: %v; its output: %s)", err, c, r.p.output())
		}
		b.log.Warn("check through the slow path failed; retrying", "error", err)
		time.Sleep(200 * time.Millisecond)
	}
	after, err := r.counters()
	if err != nil {
		return err
	}
	if sumCounters(after, "slowpath_requests", svc) <= sumCounters(before, "slowpath_requests", svc) {
		return fmt.Errorf("check before measuring: %s answered but the slow path counted no request of %s (counters: %v)", url, svc, after)
	}
	return nil
}

// checkXDPPass makes one request to a mode rauta does not serve (nginx in
// the LB namespace) and requires that the rauta process's XDP program saw
// its packets and passed them to the kernel as belonging to no service:
// the mode exists to measure a peer behind that program.
func (b *bench) checkXDPPass(ctx context.Context, r *rautaProc, m mode) error {
	before, err := r.counters()
	if err != nil {
		return err
	}
	if err := httpCheck(ctx, b.tb.Client, m.url(b.tb)); err != nil {
		return fmt.Errorf("check before measuring: %w", err)
	}
	after, err := r.counters()
	if err != nil {
		return err
	}
	if passedNotService(after) <= passedNotService(before) {
		return fmt.Errorf("check before measuring: %s answered but rauta's XDP passed no packet to the kernel (is it attached to the LB's veths?) (counters: %v)", m.url(b.tb), after)
	}
	return nil
}

// passedNotService counts the packets XDP passed to the kernel because they
// were addressed to no service.
func passedNotService(s snapshot) uint64 {
	return sumCounters(s, xdpPassed, `reason="not_service"`)
}

// xdpPassed is the rauta process's counter of packets XDP passed to the
// kernel, by service and reason, as parseCounters keys it.
const xdpPassed = "xdp_passed_packets"

// Memory of the daemon: peak VmRSS sampled while many keep-alive
// connections go through the slow path.

// rssResult is one round's memory run.
type rssResult struct {
	Conns           int
	Idle, Peak, HWM uint64 // bytes: before the run, sampled peak, VmHWM after
	Samples         int
	Wrk             wrkResult
}

// rssSampleEvery is how often VmRSS is read during the memory run.
const rssSampleEvery = 50 * time.Millisecond

// readProcStatus reads VmRSS and VmHWM of pid, in bytes.
func readProcStatus(pid int) (rss, hwm uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	if rss, err = statusBytes(s, "VmRSS"); err != nil {
		return 0, 0, err
	}
	if hwm, err = statusBytes(s, "VmHWM"); err != nil {
		return 0, 0, err
	}
	return rss, hwm, nil
}

// statusBytes reads a "Key:   1234 kB" line of /proc/<pid>/status.
func statusBytes(status, key string) (uint64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		rest, ok := strings.CutPrefix(line, key+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("/proc status %s: unexpected %q", key, line)
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc status %s: %w", key, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("/proc status: no %s line", key)
}

// measureRSS runs wrk with -rss-conns keep-alive connections against m
// (the slow path) while sampling the daemon's VmRSS.
func (b *bench) measureRSS(ctx context.Context, r *rautaProc, m mode) (rssResult, error) {
	var res rssResult
	var err error
	if res.Idle, _, err = readProcStatus(r.pid()); err != nil {
		return res, fmt.Errorf("daemon memory: %w", err)
	}
	b.waitQuiet(ctx)
	spec := b.rssSpec(m.url(b.tb))
	res.Conns = spec.Conns
	stop := make(chan struct{})
	sampled := make(chan error, 1)
	go func() {
		tick := time.NewTicker(rssSampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				sampled <- nil
				return
			case <-tick.C:
			}
			rss, _, err := readProcStatus(r.pid())
			if err != nil {
				sampled <- fmt.Errorf("daemon memory: %w", err)
				return
			}
			res.Peak = max(res.Peak, rss)
			res.Samples++
		}
	}()
	res.Wrk, err = runWrk(ctx, b.tb.Client, spec)
	close(stop)
	if sErr := <-sampled; sErr != nil {
		return res, sErr
	}
	if err != nil {
		return res, fmt.Errorf("memory run: %w", err)
	}
	if _, res.HWM, err = readProcStatus(r.pid()); err != nil {
		return res, fmt.Errorf("daemon memory: %w", err)
	}
	b.log.Info("measured daemon memory", "conns", spec.Conns, "idle_rss", fmtMB(res.Idle), "peak_rss", fmtMB(res.Peak),
		"hwm", fmtMB(res.HWM), "req/s", fmt.Sprintf("%.0f", res.Wrk.ReqPerSec), "errors", res.Wrk.Errors.String())
	return res, nil
}

// rssSpec is the memory run's wrk invocation.
func (b *bench) rssSpec(url string) wrkSpec {
	return wrkSpec{Threads: b.opts.Load.Threads, Conns: b.opts.RSSConns, Duration: b.opts.RSSDuration, URL: url}
}

func fmtMB(bytes uint64) string {
	return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20))
}
