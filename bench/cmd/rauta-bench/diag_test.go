package main

import "testing"

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
