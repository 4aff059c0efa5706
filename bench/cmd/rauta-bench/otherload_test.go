package main

import (
	"maps"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice threads
	// itrealvalue starttime ...
	stat := "1234 (go test (x)) S 77 1234 1234 0 -1 4194304 10 0 0 0 150 50 300 20 20 0 8 0 4242 1000 10 18446744073709551615"
	got, ok := parseProcStat(stat)
	want := procTimes{comm: "go test (x)", ppid: 77, start: 4242, ticks: 150 + 50 + 300 + 20}
	if !ok || got != want {
		t.Errorf("parseProcStat = %+v, %v; want %+v", got, ok, want)
	}
	if _, ok := parseProcStat("1 (init) S 0"); ok {
		t.Error("parseProcStat accepted a truncated line")
	}
}

func TestOtherTicks(t *testing.T) {
	const self = 100
	before := procTable{
		1:   {ppid: 0, start: 1, ticks: 1000}, // init
		2:   {ppid: 0, start: 1, ticks: 5},    // kthreadd
		30:  {ppid: 2, start: 2, ticks: 50},   // a kworker
		31:  {comm: "ksoftirqd/0", ppid: 2, start: 2, ticks: 50},
		100: {ppid: 1, start: 10, ticks: 200}, // the bench
		101: {ppid: 100, start: 11, ticks: 10},
		102: {ppid: 101, start: 12, ticks: 10},
		200: {ppid: 1, start: 20, ticks: 40},  // someone's shell
		300: {ppid: 200, start: 30, ticks: 7}, // exits, pid reused below
	}
	after := procTable{
		1:   {ppid: 0, start: 1, ticks: 1001},                    // +1
		2:   {ppid: 0, start: 1, ticks: 6},                       // +1
		30:  {ppid: 2, start: 2, ticks: 90},                      // +40
		31:  {comm: "ksoftirqd/0", ppid: 2, start: 2, ticks: 90}, // the bench's packets: ignored
		100: {ppid: 1, start: 10, ticks: 900},                    // ours: ignored
		101: {ppid: 100, start: 11, ticks: 500},                  // ours
		102: {ppid: 101, start: 12, ticks: 400},                  // ours (grandchild)
		200: {ppid: 1, start: 20, ticks: 140},                    // +100 (reaped a compiler)
		300: {ppid: 200, start: 35, ticks: 25},                   // new process on a reused pid: +25
		400: {ppid: 200, start: 40, ticks: 3},                    // new: +3
	}
	got := otherTicks(before, after, self)
	want := map[int]uint64{1: 1, 2: 1, 30: 40, 200: 100, 300: 25, 400: 3}
	if !maps.Equal(got, want) {
		t.Errorf("otherTicks = %v, want %v", got, want)
	}
}
