// Package percpu reads the per-CPU counters the BPF programs keep: each CPU
// increments its own copy without atomics, and a reader adds them up.
package percpu

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Sum returns the value of a per-CPU array's key summed over all CPUs.
func Sum(m *ebpf.Map, key uint32) (uint64, error) {
	var perCPU []uint64
	if err := m.Lookup(key, &perCPU); err != nil {
		return 0, fmt.Errorf("read per-CPU counter %d: %w", key, err)
	}
	var sum uint64
	for _, v := range perCPU {
		sum += v
	}
	return sum, nil
}
