package xdp_test

import (
	"strings"
	"testing"

	"github.com/rauta-lb/rauta/xdp"
)

// TestSlowpathReasonsAllHaveNames: every reason below NumSlowpathReasons has
// a name of its own; one past them falls back to reason_N.
func TestSlowpathReasonsAllHaveNames(t *testing.T) {
	seen := map[string]bool{}
	for r := range xdp.NumSlowpathReasons {
		name := xdp.SlowpathReasonName(xdp.SlowpathReason(r))
		if strings.HasPrefix(name, "reason_") || seen[name] {
			t.Errorf("reason %d: name %q", r, name)
		}
		seen[name] = true
	}
	if got := xdp.SlowpathReasonName(xdp.SlowpathReason(xdp.NumSlowpathReasons)); !strings.HasPrefix(got, "reason_") {
		t.Errorf("reason past the last: %q, want reason_N", got)
	}
}

func TestNameFallsBackToTheNumber(t *testing.T) {
	for _, c := range []struct {
		names []string
		v     uint8
		want  string
	}{
		{xdp.ProtoNames[:], 6, "tcp"},
		{xdp.ProtoNames[:], 17, "udp"},
		{xdp.ProtoNames[:], 1, "1"},
		{xdp.ProtoNames[:], 200, "200"},
		{xdp.DirectionNames[:], xdp.ToClient, "to-client"},
		{xdp.FlowStateNames[:], xdp.FlowClosing, "closing"},
		{xdp.SpliceNames[:], xdp.SpliceNone, "-"},
		{xdp.SpliceNames[:], xdp.SpliceSlowpath, "slow-path"},
	} {
		if got := xdp.Name(c.names, c.v); got != c.want {
			t.Errorf("Name(%q, %d) = %q, want %q", c.names, c.v, got, c.want)
		}
	}
}
