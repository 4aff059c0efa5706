package loader

import (
	"testing"

	"github.com/cilium/ebpf/link"
)

func TestAttachMode(t *testing.T) {
	cases := []struct {
		mode, linkType string
		want           link.XDPAttachFlags
		fallback       bool
	}{
		{ModeAuto, "veth", link.XDPGenericMode, false},
		{"", "veth", link.XDPGenericMode, false},
		{ModeAuto, "device", link.XDPDriverMode, true},
		{ModeNative, "veth", link.XDPDriverMode, false},
		{ModeNative, "device", link.XDPDriverMode, false},
		{ModeGeneric, "device", link.XDPGenericMode, false},
		{ModeGeneric, "veth", link.XDPGenericMode, false},
	}
	for _, c := range cases {
		plan, err := attachMode(c.mode, c.linkType)
		if err != nil {
			t.Fatalf("attachMode(%q, %q): %v", c.mode, c.linkType, err)
		}
		if plan.flags != c.want || plan.fallback != c.fallback {
			t.Errorf("attachMode(%q, %q) = flags %v fallback %v, want %v %v", c.mode, c.linkType, plan.flags, plan.fallback, c.want, c.fallback)
		}
	}
	if _, err := attachMode("offload", "device"); err == nil {
		t.Error("attachMode accepted an unknown mode")
	}
}
