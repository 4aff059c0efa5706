package main

import (
	"os"
	"testing"
	"time"
)

func TestParseProcNet(t *testing.T) {
	text := `Ip: Forwarding DefaultTTL InReceives ForwDatagrams
Ip: 1 64 12938 42
Tcp: RtoAlgorithm RetransSegs
Tcp: 1 7
`
	got := parseProcNet(text)
	if got["Ip"]["ForwDatagrams"] != 42 || got["Tcp"]["RetransSegs"] != 7 || got["Ip"]["InReceives"] != 12938 {
		t.Errorf("parseProcNet = %v", got)
	}
}

func TestSnapshotDelta(t *testing.T) {
	before := snapshot{"a": 1, "b": 5, "c": 3}
	after := snapshot{"a": 4, "b": 5, "c": 2, "d": 1}
	got := before.delta(after)
	want := snapshot{"a": 3, "d": 1}
	if len(got) != len(want) || got["a"] != 3 || got["d"] != 1 {
		t.Errorf("delta = %v, want %v", got, want)
	}
	sum := snapshot{"a": 1}
	sum.add(got)
	if sum["a"] != 4 || sum["d"] != 1 {
		t.Errorf("add = %v", sum)
	}
}

func TestReadProcessCPU(t *testing.T) {
	self, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skip(err)
	}
	before, ok := parseProcStat(string(self))
	if !ok {
		t.Fatalf("parseProcStat(%q) failed", self)
	}
	id, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Skip(err)
	}
	s := snapshot{}
	s.readProcessCPU(map[string]string{id: cpuLB, "net:[0]": cpuOrigin})
	// This process is in its own namespace, with every other process there.
	if s[cpuLB] < before.ticks {
		t.Errorf("CPU of the processes in %s = %d ticks, less than this process's %d", id, s[cpuLB], before.ticks)
	}
	if _, ok := s[cpuOrigin]; ok {
		t.Errorf("a namespace no process is in got CPU time: %v", s)
	}
}

func TestDurationTicks(t *testing.T) {
	if got := durationTicks(1234 * time.Millisecond); got != 123 {
		t.Errorf("durationTicks(1.234s) = %d, want 123 (USER_HZ 100)", got)
	}
}
