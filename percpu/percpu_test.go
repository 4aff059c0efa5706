package percpu

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// TestSumFirstMatchesSum: the batched read gives every key's sum over
// CPUs, across batch boundaries, and stops at the array's end.
func TestSumFirstMatchesSum(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: BPF maps")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	const entries = batchKeys + 100 // two batches
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: entries})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []uint32{0, 1, 7, batchKeys - 1, batchKeys, entries - 1} {
		perCPU := make([]uint64, cpus)
		for c := range perCPU {
			perCPU[c] = uint64(k)*1000 + uint64(c) + 1
		}
		if err := m.Put(k, perCPU); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []int{0, 1, 8, batchKeys, batchKeys + 1, entries, entries + 50} {
		got, err := SumFirst(m, n)
		if err != nil {
			t.Fatalf("SumFirst(%d): %v", n, err)
		}
		if want := min(n, entries); len(got) != want {
			t.Fatalf("SumFirst(%d): %d values, want %d", n, len(got), want)
		}
		for k, v := range got {
			want, err := Sum(m, uint32(k))
			if err != nil {
				t.Fatal(err)
			}
			if v != want {
				t.Fatalf("SumFirst(%d)[%d] = %d, Sum = %d", n, k, v, want)
			}
		}
	}
}
