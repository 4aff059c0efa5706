// Package percpu reads the per-CPU counters the BPF programs keep: each CPU
// increments its own copy without atomics, and a reader adds them up.
package percpu

import (
	"errors"
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

// batchKeys bounds one batched read: 4096 keys of a per-CPU array is
// 32 KiB per CPU.
const batchKeys = 4096

// SumFirst returns keys 0..n-1 of a per-CPU array, each summed over all
// CPUs (fewer if the array is shorter), read in batches: one system call
// per batch, where Sum costs one per key.
func SumFirst(m *ebpf.Map, n int) ([]uint64, error) {
	n = min(n, int(m.MaxEntries()))
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("read per-CPU counters: %w", err)
	}
	sums := make([]uint64, 0, n)
	keys := make([]uint32, min(n, batchKeys))
	values := make([]uint64, len(keys)*cpus)
	var cursor ebpf.MapBatchCursor
	for len(sums) < n {
		chunk := min(n-len(sums), len(keys))
		got, err := m.BatchLookup(&cursor, keys[:chunk], values[:chunk*cpus], nil)
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, fmt.Errorf("read per-CPU counters %d..: %w", len(sums), err)
		}
		for i := range got {
			var sum uint64
			for _, v := range values[i*cpus : (i+1)*cpus] {
				sum += v
			}
			sums = append(sums, sum)
		}
		if err != nil || got == 0 { // the end of the array
			break
		}
	}
	return sums, nil
}
