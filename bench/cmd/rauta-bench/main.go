// Command rauta-bench measures RAUTA's XDP L4 path against plain kernel
// forwarding, an nginx reverse proxy and HAProxy, all on one testbed and in
// one run, and writes a Markdown report (DESIGN.md §10). It needs root.
//
//	go run ./bench/cmd/rauta-bench -out bench/results [-rounds 3 -conns 64 -duration 10s ...]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "rauta-bench:", err)
		}
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	Out            string
	Load           settings
	Modes          []mode
	XDPBench       bool
	ProgStats      bool
	QuietWait      time.Duration
	XDPBenchtime   string
	LogLevel       slog.Level
	DaemonLogLevel slog.Level
	// The rauta-slow memory run.
	RSSConns    int
	RSSDuration time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("rauta-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Out, "out", "bench/results", "directory the Markdown report is written to")
	fs.IntVar(&o.Load.Rounds, "rounds", 5, "rounds; each runs every mode once per connection style")
	fs.IntVar(&o.Load.Threads, "threads", 2, "wrk threads (-t)")
	fs.IntVar(&o.Load.Conns, "conns", 64, "wrk connections (-c)")
	fs.DurationVar(&o.Load.Duration, "duration", 10*time.Second, "length of each recorded wrk run (whole seconds)")
	fs.DurationVar(&o.Load.Warmup, "warmup", 2*time.Second, "unrecorded wrk run before each recorded one (whole seconds, 0 for none)")
	modes := fs.String("modes", strings.Join(modeNames(allModes), ","), "comma-separated modes to measure, in this order")
	fs.BoolVar(&o.XDPBench, "xdp-bench", true, "also run the XDP ns/packet benchmarks (go test -bench BenchmarkXDP ./xdp/)")
	fs.DurationVar(&o.QuietWait, "quiet-wait", 2*time.Minute, "before each mode and style, wait up to this long for the CPUs to be 90% idle (others' load skews results; 0: don't wait)")
	fs.BoolVar(&o.ProgStats, "xdp-prog-stats", false, "have the kernel time the XDP program during the rauta-l4 runs (BPF run-time stats; adds two clock reads per packet)")
	fs.StringVar(&o.XDPBenchtime, "xdp-benchtime", "2000000x", "-benchtime for the XDP benchmarks")
	fs.StringVar(&o.Load.XDPMode, "xdp-mode", "auto", "xdp_mode of the rauta daemons: auto (generic on veths), native or generic")
	fs.IntVar(&o.Load.OriginWorkers, "origin-workers", runtime.NumCPU(), "worker processes of the origin nginx every mode reaches (default: one per CPU, so the origin does not cap the fast modes)")
	fs.IntVar(&o.RSSConns, "rss-conns", 1000, "keep-alive connections of the rauta-slow memory run, during which the daemon's RSS is sampled")
	fs.DurationVar(&o.RSSDuration, "rss-duration", 5*time.Second, "length of the rauta-slow memory run (whole seconds, 0 to skip it)")
	fs.TextVar(&o.LogLevel, "log-level", slog.LevelInfo, "progress log level")
	fs.TextVar(&o.DaemonLogLevel, "daemon-log-level", slog.LevelWarn, "log level of the rauta daemon (in-process, and the rauta process of the slow-path modes)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() != 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.Modes, err = selectModes(*modes); err != nil {
		return o, err
	}
	switch {
	case o.RSSDuration < 0 || o.RSSDuration%time.Second != 0:
		return o, fmt.Errorf("-rss-duration %v: wrk takes whole seconds (0 to skip)", o.RSSDuration)
	case o.RSSConns < o.Load.Threads:
		return o, fmt.Errorf("-rss-conns %d: wrk needs at least one connection per thread (-threads %d)", o.RSSConns, o.Load.Threads)
	}
	return o, o.Load.validate()
}

func (s settings) validate() error {
	switch {
	case s.Rounds < 1:
		return fmt.Errorf("-rounds %d: need at least 1", s.Rounds)
	case s.Threads < 1:
		return fmt.Errorf("-threads %d: need at least 1", s.Threads)
	case s.Conns < s.Threads:
		return fmt.Errorf("-conns %d: wrk needs at least one connection per thread (-threads %d)", s.Conns, s.Threads)
	case s.Duration < time.Second || s.Duration%time.Second != 0:
		return fmt.Errorf("-duration %v: wrk takes whole seconds, at least 1s", s.Duration)
	case s.Warmup < 0 || s.Warmup%time.Second != 0:
		return fmt.Errorf("-warmup %v: wrk takes whole seconds (0 for no warm-up)", s.Warmup)
	case s.XDPMode != "auto" && s.XDPMode != "native" && s.XDPMode != "generic":
		return fmt.Errorf("-xdp-mode %q: want auto, native or generic", s.XDPMode)
	case s.OriginWorkers < 1:
		return fmt.Errorf("-origin-workers %d: need at least 1", s.OriginWorkers)
	}
	return nil
}

func run(argv []string, stdout, stderr io.Writer) error {
	opts, err := parseFlags(argv[1:], stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: opts.LogLevel}))
	daemonLog := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: opts.DaemonLogLevel})).With("component", "rauta")
	if os.Geteuid() != 0 {
		return errors.New("the bench creates network namespaces and loads XDP: run it as root (sudo make bench)")
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return fmt.Errorf("report directory: %w", err)
	}
	if err := raiseFileLimit(); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	started := time.Now()
	host := readHostInfo(ctx)
	if host.IdleBefore >= 0 && host.IdleBefore < quietIdle {
		log.Warn("the machine is busy; results will be noisy", "cpu_idle", fmt.Sprintf("%.0f%%", 100*host.IdleBefore))
	}
	rep := newReport(started, commandLine(argv), host, opts.Load, opts.Modes)
	b := &bench{opts: opts, log: log, daemonLog: daemonLog, rep: rep}
	runErr := b.run(ctx)
	if runErr != nil {
		rep.Failure = runErr
	}
	if ctx.Err() == nil && opts.XDPBench {
		rep.XDP = b.xdpBench(ctx)
	}
	if len(rep.Runs) == 0 {
		return runErr
	}

	path := filepath.Join(opts.Out, started.UTC().Format("2006-01-02T150405Z")+"-l4.md")
	f, err := os.Create(path)
	if err != nil {
		return errors.Join(runErr, fmt.Errorf("write report: %w", err))
	}
	err = errors.Join(rep.write(f), f.Close())
	if err != nil {
		return errors.Join(runErr, fmt.Errorf("write report %s: %w", path, err))
	}
	if err := rep.write(stdout); err != nil {
		return errors.Join(runErr, err)
	}
	log.Info("report written", "path", path)
	return runErr
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit for the
// bench and, because it is set explicitly, for everything it starts: wrk
// and the servers need more than the usual 1024 descriptors for the memory
// run's -rss-conns connections (the slow path holds one client and one
// backend socket per connection). Go raises its own soft limit at start
// but restores the original for children unless Setrlimit was called.
func raiseFileLimit() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("RLIMIT_NOFILE: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", lim.Max, err)
	}
	return nil
}

// commandLine reconstructs how the bench was started, shell-quoted. Under
// `go run` argv[0] is a temporary binary, so it shows the go run form.
func commandLine(argv []string) string {
	prog := argv[0]
	if strings.Contains(prog, "/go-build") {
		prog = "go run ./bench/cmd/rauta-bench"
	}
	parts := []string{prog}
	for _, a := range argv[1:] {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./:,@%+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// moduleDir finds the directory of the go.mod above the working directory,
// where the XDP benchmarks are run from.
func moduleDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod in the working directory or above: run from the repository")
		}
		dir = parent
	}
}
