package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// style is how wrk uses its connections.
type style string

const (
	keepAlive style = "keep-alive"
	connClose style = "close" // "Connection: close": one request per TCP connection
)

var styles = []style{keepAlive, connClose}

// userHZ is the unit of /proc/stat times (USER_HZ, 100 on Linux).
const userHZ = 100

// quietIdle is the CPU idle share below which the machine counts as busy.
const quietIdle = 0.9

type runKey struct {
	Mode  string
	Style style
}

// settings are the load parameters, as given on the command line.
type settings struct {
	Rounds   int
	Threads  int
	Conns    int
	Duration time.Duration
	Warmup   time.Duration
	// XDPMode is the daemons' xdp_mode.
	XDPMode string
	// OriginWorkers is the origin nginx's worker_processes. With fewer
	// workers than CPUs the origin, not the path under test, capped the
	// fast modes: kernel forwarding left 16% of the CPUs idle at 1 worker.
	OriginWorkers int
}

// tally sums, over rounds and warm-up runs included, what happened while
// wrk ran in one mode and style.
type tally struct {
	Requests int64
	System   snapshot // interfaces and TCP/IP stacks (diag.go)
	XDP      snapshot // rauta's XDP counters, rauta-l4 only
}

// report is everything one run measured.
type report struct {
	Started  time.Time
	Command  string
	Host     hostInfo
	Settings settings
	Modes    []mode
	URLs     map[string]string      // by mode name, once the testbed exists
	Runs     map[runKey][]runResult // one per round, in round order
	Tallies  map[runKey]*tally
	XDP      *xdpBench // nil when skipped
	Failure  error     // set when the run stopped early
	// RSS are the rauta process's memory runs, one per round, and
	// RSSCommand the wrk command of each.
	RSS        []rssResult
	RSSCommand string
	// Attached is how the kernel attached the daemons' XDP program to the
	// LB's veths (native or generic), which xdp_mode auto decides.
	Attached []string
}

func newReport(started time.Time, command string, host hostInfo, s settings, modes []mode) *report {
	return &report{
		Started:  started,
		Command:  command,
		Host:     host,
		Settings: s,
		Modes:    modes,
		URLs:     make(map[string]string),
		Runs:     make(map[runKey][]runResult),
		Tallies:  make(map[runKey]*tally),
	}
}

func (r *report) tally(k runKey) *tally {
	t := r.Tallies[k]
	if t == nil {
		t = &tally{System: snapshot{}, XDP: snapshot{}}
		r.Tallies[k] = t
	}
	return t
}

// runResult is one recorded wrk run.
type runResult struct {
	wrkResult
	// OtherLoad is the share of the machine's CPU time that processes
	// outside the bench used during the run; negative if unknown.
	OtherLoad float64
}

func (r runResult) disturbed() bool { return r.OtherLoad > otherLoadLimit }

// summary is one table row: medians over the undisturbed rounds, or over
// all rounds if every one was disturbed.
type summary struct {
	ReqPerSec float64
	P50, P99  time.Duration
	Errors    wrkErrors // summed over all rounds
	Rounds    []runResult
	Used      int // rounds the medians are over
}

func summarize(runs []runResult) (summary, bool) {
	if len(runs) == 0 {
		return summary{}, false
	}
	s := summary{Rounds: runs}
	var clean []runResult
	for _, r := range runs {
		s.Errors = s.Errors.add(r.Errors)
		if !r.disturbed() {
			clean = append(clean, r)
		}
	}
	if len(clean) == 0 {
		clean = runs
	}
	s.Used = len(clean)
	var rps, p50, p99 []float64
	for _, r := range clean {
		rps = append(rps, r.ReqPerSec)
		p50 = append(p50, float64(r.P50))
		p99 = append(p99, float64(r.P99))
	}
	s.ReqPerSec = median(rps)
	s.P50 = time.Duration(median(p50))
	s.P99 = time.Duration(median(p99))
	return s, true
}

// median of a non-empty slice; the mean of the middle two for even sizes.
func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// ratio is a/b over the kernel baseline of the same style.
func (r *report) ratio(modeName string, st style) (float64, bool) {
	return r.ratioTo(modeName, modeKernel, st)
}

// ratioTo is mode's median req/s over base's, in one style.
func (r *report) ratioTo(modeName, baseName string, st style) (float64, bool) {
	base, ok := summarize(r.Runs[runKey{baseName, st}])
	if !ok || base.ReqPerSec == 0 {
		return 0, false
	}
	s, ok := summarize(r.Runs[runKey{modeName, st}])
	if !ok {
		return 0, false
	}
	return s.ReqPerSec / base.ReqPerSec, true
}

// target is a goal, or a ratio reported without one: mode's median req/s
// over base's in one style at least min (0: no target); note qualifies the
// base; required targets say "not measured" when a run is missing, the
// others are left out.
type target struct {
	mode, base string
	style      style
	what       string
	min        float64
	note       string
	required   bool
}

// targets are the issues' goals (DESIGN.md §10), in report order.
var targets = []target{
	{mode: modeRauta, base: modeKernel, style: keepAlive, what: "keep-alive req/s", min: 0.95, required: true},
	{mode: modeRautaHTTP, base: modeNginx, style: keepAlive, what: "keep-alive req/s", min: 1.5},
	{mode: modeRautaHTTP, base: modeHAProxy, style: keepAlive, what: "keep-alive req/s", min: 1.5},
	{mode: modeRautaHTTP, base: modeKernel, style: keepAlive, what: "keep-alive req/s", min: 0.9},
	{mode: modeRautaHTTP, base: modeKernel, style: connClose, what: "close req/s", min: 0.85},
	{mode: modeRautaSlow, base: modeNginx, style: keepAlive, what: "keep-alive req/s", min: 1.0},
	// Informational: the peer pays the testbed's cost of XDP on veth too.
	{mode: modeRautaSlow, base: modeNginxXDP, style: keepAlive, what: "keep-alive req/s", note: "(same XDP on the veths)"},
	{mode: modeRautaTLS, base: modeNginxTLS, style: connClose, what: "close req/s (new TLS connections/s, wrk resumes TLS 1.2 sessions)"},
	{mode: modeRautaTLS, base: modeNginxTLS, style: keepAlive, what: "keep-alive req/s"},
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}

func (r *report) writeTargets(b *strings.Builder) {
	for _, t := range targets {
		base := t.base
		if t.note != "" {
			base += " " + t.note
		}
		v, ok := r.ratioTo(t.mode, t.base, t.style)
		switch {
		case !ok && t.required:
			fmt.Fprintf(b, "**%s %s / %s = n/a (target ≥ %.2f)**: not measured\n\n", t.mode, t.what, base, t.min)
		case !ok:
		case t.min == 0:
			fmt.Fprintf(b, "**%s %s / %s = %.2f**\n\n", t.mode, t.what, base, v)
		default:
			fmt.Fprintf(b, "**%s %s / %s = %.2f (target ≥ %.2f)**: %s\n\n", t.mode, t.what, base, v, t.min, verdict(v >= t.min))
		}
	}
}

// rssTarget is the bound on the daemon's RSS at -rss-conns
// slow-path connections.
const rssTarget = 50 << 20

// writeRSS reports the memory runs against rssTarget.
func (r *report) writeRSS(b *strings.Builder) {
	if len(r.RSS) == 0 {
		return
	}
	// The worst round counts: the bound is on the peak.
	var peak, idle, hwm uint64
	var rounds []string
	for _, res := range r.RSS {
		peak = max(peak, res.Peak)
		idle = max(idle, res.Idle)
		hwm = max(hwm, res.HWM)
		rounds = append(rounds, fmt.Sprintf("%s (%.0f req/s, errors %s)", fmtMB(res.Peak), res.Wrk.ReqPerSec, res.Wrk.Errors.String()))
	}
	fmt.Fprintf(b, "**rauta daemon peak RSS at %d keep-alive connections through the slow path = %s (target < %s)**: %s\n\n",
		r.RSS[0].Conns, fmtMB(peak), fmtMB(rssTarget), verdict(peak < rssTarget))
	fmt.Fprintf(b, "Memory run: `%s` (rauta-slow's URL, keep-alive) after each round's rauta-slow runs, the `rauta run` process's VmRSS read from /proc every %v; peak per round: %s. Idle before the run: %s; VmHWM (peak over the process's life, TLS runs included) after it: %s.\n\n",
		r.RSSCommand, rssSampleEvery, strings.Join(rounds, " / "), fmtMB(idle), fmtMB(hwm))
}

// writeXDPPass shows that nginx-proxy-xdp's packets went through rauta's
// XDP program: the packets it passed to the kernel as addressed to no
// service, per packet the LB's interfaces received (eth1 and eth2, where
// it is attached). About 1 means every packet paid for XDP.
func (r *report) writeXDPPass(b *strings.Builder) {
	var parts []string
	for _, st := range styles {
		t := r.Tallies[runKey{modeNginxXDP, st}]
		if t == nil {
			continue
		}
		var rx uint64
		for k, v := range t.System {
			if strings.HasPrefix(k, "lb/") && strings.HasSuffix(k, " rx_packets") {
				rx += v
			}
		}
		if rx == 0 {
			continue
		}
		passed := passedNotService(t.XDP)
		parts = append(parts, fmt.Sprintf("%s %.2f (%d of %d)", st, float64(passed)/float64(rx), passed, rx))
	}
	if len(parts) == 0 {
		return
	}
	fmt.Fprintf(b, "nginx-proxy-xdp ran behind rauta's XDP program: packets it passed to the kernel (`%s`, reason not_service) per packet received on the LB's veths: %s.\n\n",
		xdpPassed, strings.Join(parts, "; "))
}

func (r *report) write(w io.Writer) error {
	var b strings.Builder
	r.writeHeader(&b)
	r.writeTable(&b)
	r.writeXDP(&b)
	r.writeRautaCounters(&b)
	r.writeProcCounters(&b)
	r.writeSystem(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *report) writeHeader(b *strings.Builder) {
	s := r.Settings
	fmt.Fprintf(b, "# RAUTA L4 benchmark, %s\n\n", r.Started.UTC().Format("2006-01-02 15:04:05 UTC"))
	if r.Failure != nil {
		fmt.Fprintf(b, "> **INCOMPLETE: the run stopped early:** %s\n\n", oneLine(r.Failure.Error()))
	}
	fmt.Fprintf(b, "- Command: `%s`\n", r.Command)
	fmt.Fprintf(b, "- Kernel: %s\n", r.Host.Kernel)
	fmt.Fprintf(b, "- CPU: %s, %d cores\n", r.Host.CPU, r.Host.Cores)
	var tools []string
	tools = append(tools, r.Host.Go)
	for _, t := range r.Host.Tools {
		tools = append(tools, t.Version)
	}
	fmt.Fprintf(b, "- Software: %s\n", strings.Join(tools, "; "))
	if len(r.Attached) > 0 {
		fmt.Fprintf(b, "- rauta's XDP program: `xdp_mode: %s`, attached to the LB's veths in %s mode\n", s.XDPMode, strings.Join(r.Attached, " and "))
	}
	if r.Host.IdleBefore >= 0 {
		note := ""
		if r.Host.IdleBefore < quietIdle {
			note = " (**the machine was busy: other load skews every mode, and the modes differently**)"
		}
		fmt.Fprintf(b, "- CPU idle in the second before the run: %.0f%%%s\n", 100*r.Host.IdleBefore, note)
	}
	warm := "no warm-up run"
	if s.Warmup > 0 {
		warm = fmt.Sprintf("each after a %v warm-up run that is not recorded", s.Warmup)
	}
	var order []string
	for _, m := range r.Modes {
		order = append(order, m.Name)
	}
	fmt.Fprintf(b, "- Load: `wrk -t%d -c%d -d%v --latency` from the client namespace, %s; %d round(s), each running %s in both styles; medians over rounds not disturbed by other load\n\n",
		s.Threads, s.Conns, s.Duration, warm, s.Rounds, strings.Join(order, " → "))
}

func (r *report) writeTable(b *strings.Builder) {
	b.WriteString("## HTTP through the load-balancer namespace (wrk)\n\n")
	b.WriteString("| mode | style | req/s (median) | p50 | p99 | vs kernel | errors | req/s per round | other load per round |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---|---|---|\n")
	for _, m := range r.Modes {
		for _, st := range styles {
			s, ok := summarize(r.Runs[runKey{m.Name, st}])
			if !ok {
				fmt.Fprintf(b, "| %s | %s | – | – | – | – | not measured | | |\n", m.Name, st)
				continue
			}
			ratio := "–"
			if v, ok := r.ratio(m.Name, st); ok {
				ratio = fmt.Sprintf("%.2f", v)
			}
			var rounds, others []string
			for _, r := range s.Rounds {
				mark := ""
				if r.disturbed() {
					mark = "*"
				}
				rounds = append(rounds, fmt.Sprintf("%.0f%s", r.ReqPerSec, mark))
				if r.OtherLoad < 0 {
					others = append(others, "?")
				} else {
					others = append(others, fmt.Sprintf("%.0f%%%s", 100*r.OtherLoad, mark))
				}
			}
			errs := s.Errors.String()
			if s.Errors.total() != 0 {
				errs = "**" + errs + "**"
			}
			fmt.Fprintf(b, "| %s | %s | %.0f | %s | %s | %s | %s | %s | %s |\n",
				m.Name, st, s.ReqPerSec, fmtLatency(s.P50), fmtLatency(s.P99), ratio, errs,
				strings.Join(rounds, " / "), strings.Join(others, " / "))
		}
	}
	b.WriteString("\n")
	r.writeTargets(b)
	r.writeXDPPass(b)
	r.writeRSS(b)
	fmt.Fprintf(b, "*Other load* is the share of the machine's CPU time that processes outside the bench (someone's compile, tests) used during the run. Runs above %.0f%% are marked `*` and left out of the medians, unless every round of that row is. The ratio compares such medians.\n\n", 100*otherLoadLimit)
	fmt.Fprintf(b, "Modes, all to the same origin (nginx, %d worker(s) with a listening socket each, in backend namespace 1):\n\n", r.Settings.OriginWorkers)
	for _, m := range r.Modes {
		fmt.Fprintf(b, "- `%s` (%s, client ports %d-%d): %s\n", m.Name, r.URLs[m.Name], m.Ports[0], m.Ports[1], m.Desc)
	}
	b.WriteString("\nErrors are wrk's socket errors (connect/read/write/timeout) and non-2xx responses, summed over the recorded rounds. ")
	b.WriteString("All connections come from one client address, so the client is tuned like a load generator: each mode uses its own client port range (kernel and rauta-l4 reach the origin from the same address, and a SYN reusing a port the other mode left in TIME_WAIT on the origin would be rejected by PAWS and resent after 1s), and `tcp_tw_reuse=1` (otherwise client TIME_WAIT exhausts the ports within seconds of `Connection: close` traffic).\n\n")
}

func (r *report) writeXDP(b *strings.Builder) {
	b.WriteString("## XDP program cost per packet\n\n")
	if r.XDP == nil {
		b.WriteString("Not run (-xdp-bench=false, or the run stopped before it).\n\n")
		return
	}
	fmt.Fprintf(b, "`%s`: mean kernel-measured BPF_PROG_TEST_RUN time per packet. Established, pass and drop paths repeat 200 times per run on a configuration whose translation is the identity, so every repeat takes the same path (the benchmark checks the counters); their figures include the test-run loop's own cost, `baseline/noop`. New flows cannot repeat: one packet per run, so `new-flow/to-backend` includes the harness's fixed cost (`baseline/noop-repeat1`). `http/…` are the HTTP fast path (BenchmarkXDPHTTP): `http/established/*` repeat like the L4 ones on a spliced connection whose translation is the identity (backend = VIP, backend ISN = cookie); the handshake steps (`http/syn-net`, `http/first-segment-net`, a new connection each run, `http/backend-synack-net`) cannot repeat and are one packet per run minus an interleaved no-op run, as `new-flow/to-backend-net`.\n\n", r.XDP.Command)
	if len(r.XDP.Results) > 0 {
		b.WriteString("| path | ns/pkt |\n|---|---:|\n")
		for _, res := range r.XDP.Results {
			fmt.Fprintf(b, "| %s | %.1f |\n", res.Path, res.NsPerPk)
		}
		b.WriteString("\n")
	}
	if r.XDP.Note != "" {
		b.WriteString(r.XDP.Note + "\n\n")
	}
}

// fmtLatency prints a latency with three significant figures or so.
func fmtLatency(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
