package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDemoServesEveryURLFromItsBackend runs the demo briefly: every URL
// the clients request is answered by the backend its service and route
// name, the slow path's included (its backends are dialled from the
// testbed, not from the host), and nothing fails.
func TestDemoServesEveryURLFromItsBackend(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the demo needs root")
	}
	var out, errs bytes.Buffer
	if err := demoCommand([]string{"--duration", "4s", "--clients", "2"}, &out, &errs); err != nil {
		t.Fatalf("demo: %v\n%s", err, errs.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var last string
	for _, l := range lines {
		if strings.Contains(l, "req/s") {
			last = l
		}
	}
	if last == "" {
		t.Fatalf("no progress line:\n%s", out.String())
	}
	// Labels without a backend (e.g. "slow: 25.0%") are answers that did
	// not come from a testbed backend.
	if m := regexp.MustCompile(`\b(l4|api|pages|slow): `).FindString(last); m != "" {
		t.Errorf("answers without a backend (%q) in %q", m, last)
	}
	for _, want := range []string{"api:backend-1", "pages:backend-2", "pages:backend-3", "slow:backend-1", "l4:backend-3"} {
		if !strings.Contains(last, want) {
			t.Errorf("%s missing from %q", want, last)
		}
	}
	if !strings.Contains(out.String(), ", 0 errors") {
		t.Errorf("the demo saw errors:\n%s", out.String())
	}
}
