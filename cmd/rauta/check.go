package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/rauta-lb/rauta/daemon"
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
	cfg, err := daemon.LoadConfig(*configPath, *portable)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%d services, %d pools)\n", *configPath, len(cfg.Services), len(cfg.Pools))
	return nil
}
