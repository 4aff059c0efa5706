package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rauta-lb/rauta/daemon"
	"github.com/rauta-lb/rauta/tools/backend"
	"github.com/rauta-lb/rauta/tools/testbed"
	"github.com/rauta-lb/rauta/xdp"
)

//go:embed demo.yaml
var demoConfig []byte

// demoCommand builds a testbed (client, LB, three backends in network
// namespaces), runs the real daemon on the LB namespace with the built-in
// configuration, sends fresh connections from the client and shows what
// happens, once a second, until Ctrl-C or --duration.
func demoCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rauta demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", 0, "stop after this long (0: until Ctrl-C)")
	clients := fs.Int("clients", 4, "concurrent client loops, each opening a fresh connection per request")
	configPath := fs.String("config", "", "use this configuration instead of the built-in one")
	logLevel := fs.String("log-level", "warn", "daemon log level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("the demo creates network namespaces and loads BPF: run it as root (sudo make demo)")
	}
	log, err := newLogger(stderr, *logLevel, "text")
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}

	fmt.Fprintln(stdout, "rauta demo: building the testbed (client, LB, switch, 3 backends)")
	tb, err := testbed.New(testbed.Options{Backends: 3})
	if err != nil {
		return err
	}
	defer func() {
		if err := tb.Close(); err != nil {
			fmt.Fprintln(stderr, "rauta demo: cleanup:", err)
		}
		fmt.Fprintln(stdout, "rauta demo: testbed removed")
	}()

	// Each backend serves the L4 service on :80 and the HTTP service on
	// :8080 (demo.yaml says why).
	for i, ns := range tb.Backends {
		srv := backend.New(fmt.Sprintf("backend-%d", i+1))
		defer srv.Close()
		for _, port := range []string{":80", ":8080"} {
			ln, err := ns.Listen("tcp", port)
			if err != nil {
				return fmt.Errorf("backend %d: %w", i+1, err)
			}
			go srv.Serve(ln)
		}
	}

	path := *configPath
	if path == "" {
		dir, err := os.MkdirTemp("", "rauta-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "rauta.yaml")
		if err := os.WriteFile(path, demoConfig, 0o600); err != nil {
			return err
		}
	}

	started := make(chan *daemon.Daemon, 1)
	daemonDone := make(chan error, 1)
	daemonCtx, stopDaemon := context.WithCancel(context.Background())
	defer stopDaemon()
	go func() {
		daemonDone <- daemon.Run(daemonCtx, daemon.Options{
			ConfigPath: path,
			Version:    version,
			Logger:     log,
			InNetns:    tb.LB.Do,
			GCInterval: time.Second,
			Started:    func(d *daemon.Daemon) { started <- d },
		})
	}()
	var d *daemon.Daemon
	select {
	case d = <-started:
	case err := <-daemonDone:
		return fmt.Errorf("daemon: %w", err)
	}
	fmt.Fprintf(stdout, "rauta demo: XDP attached in namespace %s; maps pinned in %s\n", tb.LB.Name, d.Loader().PinPath())
	fmt.Fprintf(stdout, "  inspect:  bpftool map dump pinned %s/flows\n", d.Loader().PinPath())
	fmt.Fprintf(stdout, "  metrics:  curl -s http://127.0.0.1:9100/metrics | grep rauta_\n")
	fmt.Fprintf(stdout, "  traffic:  %d clients in %s, each request a fresh TCP connection, in turn to\n", *clients, tb.Client.Name)
	for _, u := range demoURLs {
		fmt.Fprintf(stdout, "            %-32s %s\n", u.url, u.what)
	}
	fmt.Fprintln(stdout)

	var tally demoTally
	var wg sync.WaitGroup
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	for range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clientLoop(trafficCtx, tb.Client.DialContext, &tally)
		}()
	}

	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case err := <-daemonDone:
			stopTraffic()
			wg.Wait()
			return fmt.Errorf("daemon stopped: %w", err)
		case <-ticker.C:
			printDemoLine(stdout, &tally, d)
		}
	}
	stopTraffic()
	wg.Wait()
	stopDaemon()
	if err := <-daemonDone; err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	fmt.Fprintf(stdout, "\nrauta demo: %d requests, %d errors\n", tally.total.Load(), tally.errors.Load())
	return nil
}

// demoURLs are what the clients request, in turn; the tally groups answers
// by label and backend.
var demoURLs = []struct{ label, url, what string }{
	{"l4", "http://10.0.0.100/", "web: L4, Maglev over backends 1:1:2"},
	{"api", "http://10.0.0.100:8080/api/v1", "site: HTTP routed in XDP, /api/ -> backend-1"},
	{"pages", "http://10.0.0.100:8080/index.html", "site: HTTP routed in XDP, / -> backends 2, 3"},
	{"slow", "http://10.0.0.100:8080/%61pi/v1", "site: an escaped path XDP does not route: handed to the slow-path proxy, which normalises it to /api/v1 -> backend-1"},
}

type demoTally struct {
	mu        sync.Mutex
	byBackend map[string]int
	total     atomic.Int64
	errors    atomic.Int64
	lastTotal int64
}

func (t *demoTally) add(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byBackend == nil {
		t.byBackend = map[string]int{}
	}
	t.byBackend[name]++
	t.total.Add(1)
}

func clientLoop(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), tally *demoTally) {
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true},
	}
	for i := 0; ctx.Err() == nil; i++ {
		target := demoURLs[i%len(demoURLs)]
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, target.url, nil)
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				tally.errors.Add(1)
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		tally.add(target.label + ":" + resp.Header.Get("X-Backend"))
	}
}

func printDemoLine(w io.Writer, tally *demoTally, d *daemon.Daemon) {
	tally.mu.Lock()
	total := tally.total.Load()
	rate := total - tally.lastTotal
	tally.lastTotal = total
	names := make([]string, 0, len(tally.byBackend))
	for name := range tally.byBackend {
		names = append(names, name)
	}
	slices.Sort(names)
	var shares []string
	for _, name := range names {
		shares = append(shares, fmt.Sprintf("%s %4.1f%%", name, 100*float64(tally.byBackend[name])/float64(max(total, 1))))
	}
	tally.mu.Unlock()

	flows, err := d.Flows().Dump()
	open := 0
	for _, f := range flows {
		if f.Direction == xdp.ToBackend && f.State == xdp.FlowOpen {
			open++
		}
	}
	flowText := fmt.Sprintf("flows %d (open %d)", len(flows), open)
	if err != nil {
		flowText = "flows: " + err.Error()
	}
	fmt.Fprintf(w, "%6d req/s  | %s | %s | errors %d\n", rate, strings.Join(shares, "  "), flowText, tally.errors.Load())
}
