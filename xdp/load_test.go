package xdp

import (
	"os"
	"testing"

	"github.com/cilium/ebpf/rlimit"
)

func TestLoad(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	objs, err := Load(nil)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer objs.Close()
}
