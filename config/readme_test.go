package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

// The README's configuration reference is a file operators copy: it must
// parse, with every optional block it shows.
func TestREADMEReferenceParses(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "## Configuration reference")
	if !ok {
		t.Fatal("README has no Configuration reference section")
	}
	_, rest, ok = strings.Cut(rest, "```yaml\n")
	if !ok {
		t.Fatal("the Configuration reference has no yaml block")
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("the Configuration reference's yaml block is not closed")
	}
	cfg, err := Parse("README.md", []byte(block), Options{SkipFileChecks: true})
	if err != nil {
		t.Fatalf("README's configuration reference: %v", err)
	}
	var checked bool
	for _, p := range cfg.Pools {
		if hc := p.HealthCheck; hc != nil {
			checked = hc.Interval == 2*time.Second && hc.HTTPPath == "/healthz"
		}
	}
	if !checked || cfg.XDPMode != XDPModeAuto || len(cfg.Services) == 0 {
		t.Errorf("the reference lost settings it documents: xdp_mode %q, %d services, health check shown %v", cfg.XDPMode, len(cfg.Services), checked)
	}
}
