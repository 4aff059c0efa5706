// Command rauta is the RAUTA load balancer daemon.
//
//	rauta run --config rauta.yaml   attach, program and serve until SIGINT/SIGTERM; SIGHUP reloads
//	rauta demo [--duration 30s]     a self-contained demo in network namespaces
//	rauta check --config rauta.yaml validate a configuration file (nginx -t)
//	rauta flows [--bpffs DIR]       list a running daemon's flow table (read-only)
//	rauta version
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
	"syscall"

	"github.com/rauta-lb/rauta/daemon"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const usage = `usage: rauta <command> [flags]

commands:
  run      --config FILE   run the load balancer in the foreground
  demo     [--duration D]  run a demo: namespaces, three backends, live traffic
  check    --config FILE   validate a configuration file, run nothing [--portable]
  flows    [--bpffs DIR]   list a running daemon's flows (read-only)
  version                  print the version
`

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

func runMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = runCommand(args[1:], stderr)
	case "demo":
		err = demoCommand(args[1:], stdout, stderr)
	case "check":
		err = checkCommand(args[1:], stdout, stderr)
	case "flows":
		err = flowsCommand(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "rauta", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "rauta: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "rauta: %v\n", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format: %q is neither text nor json", format)
	}
}

func runCommand(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("rauta run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "/etc/rauta/rauta.yaml", "configuration file")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return daemon.Run(ctx, daemon.Options{
		ConfigPath: *configPath,
		Version:    version,
		Logger:     log,
		Reload:     reloadSignals(ctx),
	})
}

// reloadSignals turns SIGHUP into reload requests until ctx ends.
func reloadSignals(ctx context.Context) <-chan struct{} {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case reload <- struct{}{}:
				default: // one pending reload covers any number of signals
				}
			}
		}
	}()
	return reload
}
