package loader

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf/link"
	"github.com/rauta-lb/rauta/tools/testbed"
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

// auto on a device without native XDP (lo) falls back to generic; native
// there is refused with advice.
func TestAttachAutoFallsBackOnDriversWithoutXDP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: BPF and network namespaces")
	}
	tb := testbed.NewT(t, testbed.Options{Backends: 1})
	suffix := make([]byte, 4)
	rand.Read(suffix)
	l, err := Load(Options{PinPath: filepath.Join("/sys/fs/bpf", "rauta-attach-test-"+hex.EncodeToString(suffix))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close loader: %v", err)
		}
	})
	err = tb.LB.Do(func() error {
		if err := l.Attach([]string{"lo"}, ModeNative); err == nil || !strings.Contains(err.Error(), "set xdp_mode: auto or generic") {
			return fmt.Errorf("native on lo: err = %v, want a refusal that names auto and generic", err)
		}
		if err := l.Attach([]string{"lo", tb.LBClientIface}, ModeAuto); err != nil {
			return err
		}
		for _, name := range []string{"lo", tb.LBClientIface} {
			if mode, err := tb.LB.XDPAttachMode(name); err != nil || mode != "generic" {
				return fmt.Errorf("%s: XDP attach mode %s (%v), want generic", name, mode, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
