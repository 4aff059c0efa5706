package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{5}, 5},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestReportTable(t *testing.T) {
	modes, err := selectModes("kernel,rauta-l4,haproxy")
	if err != nil {
		t.Fatal(err)
	}
	s := settings{Rounds: 3, Threads: 2, Conns: 64, Duration: 10 * time.Second, Warmup: 2 * time.Second}
	r := newReport(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "rauta-bench -rounds 3",
		hostInfo{Kernel: "Linux 6.18", CPU: "Test CPU", Cores: 2, Go: "go1.26"}, s, modes)
	run := func(rps float64, p50, p99 time.Duration, e wrkErrors) runResult {
		return runResult{wrkResult: wrkResult{ReqPerSec: rps, P50: p50, P99: p99, Errors: e}}
	}
	ms := time.Millisecond
	r.Runs[runKey{modeKernel, keepAlive}] = []runResult{
		run(100000, 1*ms, 5*ms, wrkErrors{}), run(90000, 2*ms, 6*ms, wrkErrors{}), run(110000, 3*ms, 7*ms, wrkErrors{}),
	}
	disturbed := run(30000, 9*ms, 90*ms, wrkErrors{})
	disturbed.OtherLoad = 0.4
	r.Runs[runKey{modeRauta, keepAlive}] = []runResult{
		run(96000, 1*ms, 4*ms, wrkErrors{}), run(99000, 1*ms, 4*ms, wrkErrors{Read: 2}), disturbed, run(98000, 1*ms, 4*ms, wrkErrors{Timeout: 1}),
	}
	r.Tallies[runKey{modeRauta, keepAlive}] = &tally{Requests: 1000,
		XDP: snapshot{`forwarded_packets{service="bench"}`: 4000},
		// The processes were charged more than the busy time: rest is 0.
		System: snapshot{"lb Ip ForwDatagrams": 3, cpuTotal: 4, cpuBusy: 2, cpuOrigin: 3},
	}
	r.Tallies[runKey{modeKernel, keepAlive}] = &tally{Requests: 2000, System: snapshot{"lb Ip ForwDatagrams": 8000,
		cpuTotal: 40, cpuBusy: 30, cpuSoftirq: 15, cpuLB: 3, cpuOrigin: 10, cpuClient: 12}}
	r.Failure = errors.New("round 3, mode haproxy: boom")

	var b strings.Builder
	if err := r.write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Command: `rauta-bench -rounds 3`",
		"Kernel: Linux 6.18",
		"CPU: Test CPU, 2 cores",
		"INCOMPLETE",
		"| kernel | keep-alive | 100000 | 2.00ms | 6.00ms | 1.00 | 0 | 100000 / 90000 / 110000 | 0% / 0% / 0% |",
		"| rauta-l4 | keep-alive | 98000 | 1.00ms | 4.00ms | 0.98 | **read 2, timeout 1** | 96000 / 99000 / 30000* / 98000 | 0% / 0% / 40%* / 0% |",
		"| haproxy | close | – | – | – | – | not measured | | |",
		"rauta-l4 keep-alive req/s / kernel = 0.98 (target ≥ 0.95)**: met",
		"| keep-alive | 1000 | `forwarded_packets{service=\"bench\"}` | 4000 | 4 |",
		"| counter | kernel keep-alive | rauta-l4 keep-alive |",
		"| requests | 2000 | 1000 |",
		"| lb Ip ForwDatagrams | 4 | 0.003 |",
		// 30 ticks of 10 ms over 2000 requests: 150 µs each.
		"| kernel | keep-alive | 75% | 50% | 150.0 | 15.0 | 50.0 | 60.0 | 25.0 |",
		"| rauta-l4 | keep-alive | 50% | 0% | 20.0 | 0.0 | 30.0 | 0.0 | 0.0 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestSummarizeAllDisturbed(t *testing.T) {
	runs := []runResult{
		{wrkResult: wrkResult{ReqPerSec: 10}, OtherLoad: 0.5},
		{wrkResult: wrkResult{ReqPerSec: 30}, OtherLoad: 0.2},
	}
	s, ok := summarize(runs)
	if !ok || s.ReqPerSec != 20 || s.Used != 2 {
		t.Errorf("summarize = %+v, want the median of all rounds (20) when every round is disturbed", s)
	}
}

func TestFmtLatency(t *testing.T) {
	tests := map[time.Duration]string{
		412 * time.Microsecond:  "412µs",
		1234 * time.Microsecond: "1.23ms",
		1500 * time.Millisecond: "1.50s",
	}
	for d, want := range tests {
		if got := fmtLatency(d); got != want {
			t.Errorf("fmtLatency(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestReportTargets: each goal with its verdict, an informational ratio
// without one, "not measured" for the required L4 goal, nothing for a goal
// whose peer did not run (haproxy).
func TestReportTargets(t *testing.T) {
	modes, err := selectModes("kernel,rauta-l4,rauta-http,nginx-proxy,haproxy,rauta-slow,nginx-proxy-xdp")
	if err != nil {
		t.Fatal(err)
	}
	r := newReport(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "rauta-bench",
		hostInfo{Kernel: "Linux 6.18", CPU: "Test CPU", Cores: 2, Go: "go1.26"}, settings{Rounds: 1}, modes)
	one := func(rps float64) []runResult { return []runResult{{wrkResult: wrkResult{ReqPerSec: rps}}} }
	r.Runs[runKey{modeKernel, keepAlive}] = one(100000)
	r.Runs[runKey{modeKernel, connClose}] = one(20000)
	r.Runs[runKey{modeRautaHTTP, keepAlive}] = one(90000)
	r.Runs[runKey{modeRautaHTTP, connClose}] = one(16000)
	r.Runs[runKey{modeNginx, keepAlive}] = one(60000)
	r.Runs[runKey{modeRautaSlow, keepAlive}] = one(48000)
	r.Runs[runKey{modeNginxXDP, keepAlive}] = one(60000)
	var b strings.Builder
	if err := r.write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"**rauta-l4 keep-alive req/s / kernel = n/a (target ≥ 0.95)**: not measured",
		"**rauta-http keep-alive req/s / nginx-proxy = 1.50 (target ≥ 1.50)**: met",
		"**rauta-http keep-alive req/s / kernel = 0.90 (target ≥ 0.90)**: met",
		"**rauta-http close req/s / kernel = 0.80 (target ≥ 0.85)**: NOT met",
		"**rauta-slow keep-alive req/s / nginx-proxy = 0.80 (target ≥ 1.00)**: NOT met",
		"**rauta-slow keep-alive req/s / nginx-proxy-xdp (same XDP on the veths) = 0.80**\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "/ haproxy =") {
		t.Errorf("a goal against haproxy, which did not run:\n%s", out)
	}
}
