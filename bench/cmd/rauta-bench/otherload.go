package main

import (
	"cmp"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Other load: the CPU time that processes outside the bench used during a
// run. On a shared machine a colleague's compile can take half the CPUs in
// the middle of a run; this makes such runs visible (and lets the medians
// leave them out).

// otherLoadLimit is the share of the machine's CPU time that others may use
// during a run before the run counts as disturbed.
const otherLoadLimit = 0.10

// procTimes is one process's CPU time in clock ticks (USER_HZ).
type procTimes struct {
	comm  string
	ppid  int
	start uint64 // start time since boot, to tell a reused pid apart
	// ticks is the time of the process and of its children it has reaped,
	// so that short-lived children (compilers) are seen through their
	// parent.
	ticks uint64
}

// procTable maps pid to times for every process at one moment.
type procTable map[int]procTimes

// readProcTable reads /proc/[pid]/stat for every process. Processes that
// vanish while it reads are skipped.
func readProcTable() procTable {
	t := procTable{}
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if pt, ok := parseProcStat(string(b)); ok {
			t[pid] = pt
		}
	}
	return t
}

// parseProcStat reads the fields of /proc/[pid]/stat that procTimes needs.
// The command name (field 2) is in parentheses and may contain anything,
// so fields are counted from its closing parenthesis.
func parseProcStat(stat string) (procTimes, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return procTimes{}, false
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 20 {
		return procTimes{}, false
	}
	num := func(field int) uint64 {
		v, _ := strconv.ParseUint(f[field-3], 10, 64)
		return v
	}
	ppid, _ := strconv.Atoi(f[4-3])
	comm := stat[:i]
	if j := strings.IndexByte(comm, '('); j >= 0 {
		comm = comm[j+1:]
	}
	return procTimes{
		comm:  comm,
		ppid:  ppid,
		start: num(22),
		ticks: num(14) + num(15) + num(16) + num(17), // utime stime cutime cstime
	}, true
}

// otherTicks returns the CPU time, by process, that processes other than
// self and its descendants used between before and after. Kernel threads
// count (a kworker freeing someone's BPF maps takes CPU like a process
// does), except ksoftirqd, which processes the bench's own packets. A
// process that started in between counts from zero.
func otherTicks(before, after procTable, self int) map[int]uint64 {
	out := map[int]uint64{}
	for pid, a := range after {
		if strings.HasPrefix(a.comm, "ksoftirqd/") || isDescendant(after, pid, self) {
			continue
		}
		var base uint64
		if b, ok := before[pid]; ok && b.start == a.start {
			base = b.ticks
		}
		if a.ticks > base {
			out[pid] = a.ticks - base
		}
	}
	return out
}

// isDescendant reports whether pid is root or below it in t.
func isDescendant(t procTable, pid, root int) bool {
	for range len(t) + 1 { // bounded, in case of a cycle from pid reuse
		if pid == root {
			return true
		}
		p, ok := t[pid]
		if !ok || p.ppid == 0 {
			return false
		}
		pid = p.ppid
	}
	return false
}

// otherLoad measures other processes' share of the CPU time from its start
// until share is called.
type otherLoad struct {
	procs procTable
	cpu   snapshot
}

func startOtherLoad() otherLoad {
	l := otherLoad{procs: readProcTable(), cpu: snapshot{}}
	if err := l.cpu.readCPU(); err != nil {
		l.cpu = nil
	}
	return l
}

// share returns the other processes' share of all CPU time since start,
// or -1 if /proc/stat could not be read, and the largest consumers.
func (l otherLoad) share() (float64, string) {
	after := snapshot{}
	if l.cpu == nil || after.readCPU() != nil {
		return -1, ""
	}
	total := l.cpu.delta(after)[cpuTotal]
	if total == 0 {
		return -1, ""
	}
	procs := readProcTable()
	byPID := otherTicks(l.procs, procs, os.Getpid())
	var sum uint64
	for pid, v := range byPID {
		// A parent that reaps a child gets the child's whole lifetime,
		// maybe mostly before the run: no process counts for more than
		// the run itself.
		v = min(v, total)
		byPID[pid] = v
		sum += v
	}
	pids := slices.SortedFunc(maps.Keys(byPID), func(a, b int) int { return cmp.Compare(byPID[b], byPID[a]) })
	var top []string
	for _, pid := range pids[:min(3, len(pids))] {
		top = append(top, fmt.Sprintf("%s[%d] %.0f%%", procs[pid].comm, pid, 100*float64(byPID[pid])/float64(total)))
	}
	return min(1, float64(sum)/float64(total)), strings.Join(top, ", ")
}
