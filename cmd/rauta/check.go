package main

import (
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/rauta-lb/rauta/config"
	"github.com/rauta-lb/rauta/daemon"
	"github.com/rauta-lb/rauta/router"
)

// checkCommand validates a configuration file without running anything,
// as `nginx -t` and `haproxy -c` do: everything `rauta run` would refuse
// at start or reload is reported here, with file:line: field errors.
func checkCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rauta check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "/etc/rauta/rauta.yaml", "configuration file")
	portable := fs.Bool("portable", false, "validate for another host: do not look interfaces up or read certificate files (CI)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("check: unexpected arguments %q", fs.Args())
	}
	opts := config.Options{SkipFileChecks: *portable}
	if !*portable {
		opts.InterfaceExists = func(name string) bool {
			_, err := net.InterfaceByName(name)
			return err == nil
		}
	}
	cfg, err := config.Load(*configPath, opts)
	if err != nil {
		return err
	}
	// Build what the daemon builds from the file (map state, the slow
	// path's routing table): a file that passes here also starts.
	// Certificate pairs were loaded by config validation.
	if _, err := daemon.StateFromConfig(*configPath, cfg); err != nil {
		return err
	}
	if _, err := router.New(cfg); err != nil {
		return fmt.Errorf("%s: %w", *configPath, err)
	}
	fmt.Fprintf(stdout, "%s: ok (%d services, %d pools)\n", *configPath, len(cfg.Services), len(cfg.Pools))
	return nil
}
