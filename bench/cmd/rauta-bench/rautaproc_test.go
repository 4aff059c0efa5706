package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseCounters(t *testing.T) {
	text := `# HELP rauta_slowpath_requests_total Requests answered by the slow-path proxy.
# TYPE rauta_slowpath_requests_total counter
rauta_slowpath_requests_total{code="200",pool="origin",service="bench-http"} 34282
rauta_slowpath_requests_total{code="200",pool="origin",service="bench-tls"} 1.5e+06
rauta_slowpath_requests_total{code="400",pool="",service="bench-tls"} 0
rauta_slowpath_errors_total{reason="a reason with spaces"} 3
rauta_tc_handoff_total{outcome="assigned"} 128
rauta_flows 12
rauta_slowpath_request_duration_seconds_bucket{service="bench-http",le="0.001"} 5
go_memstats_frees_total 216640
process_cpu_seconds_total 5.2
`
	got, err := parseCounters(text)
	if err != nil {
		t.Fatal(err)
	}
	want := snapshot{
		`slowpath_requests{code="200",pool="origin",service="bench-http"}`: 34282,
		`slowpath_requests{code="200",pool="origin",service="bench-tls"}`:  1500000,
		`slowpath_errors{reason="a reason with spaces"}`:                   3,
		`tc_handoff{outcome="assigned"}`:                                   128,
	}
	if len(got) != len(want) {
		t.Errorf("parseCounters = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
	if n := sumCounters(got, "slowpath_requests", `service="bench-tls"`); n != 1500000 {
		t.Errorf("sumCounters(bench-tls) = %d", n)
	}
	if n := sumCounters(got, "slowpath_requests"); n != 1534282 {
		t.Errorf("sumCounters(all) = %d", n)
	}
	if _, err := parseCounters("rauta_x_total{a=\"b\"} notanumber\n"); err == nil {
		t.Error("parseCounters accepted a bad value")
	}
}

func TestStatusBytes(t *testing.T) {
	status := "Name:\trauta\nVmPeak:\t 1300000 kB\nVmHWM:\t   53040 kB\nVmRSS:\t   26728 kB\nThreads:\t9\n"
	if got, err := statusBytes(status, "VmRSS"); err != nil || got != 26728<<10 {
		t.Errorf("VmRSS = %d, %v", got, err)
	}
	if got, err := statusBytes(status, "VmHWM"); err != nil || got != 53040<<10 {
		t.Errorf("VmHWM = %d, %v", got, err)
	}
	if _, err := statusBytes(status, "VmSwap"); err == nil {
		t.Error("missing key accepted")
	}
	if _, err := statusBytes("VmRSS:\t12 pages\n", "VmRSS"); err == nil {
		t.Error("unknown unit accepted")
	}
}

func TestReportSlowPathTargets(t *testing.T) {
	modes, err := selectModes("nginx-proxy,rauta-slow,nginx-proxy-xdp,rauta-tls,nginx-tls")
	if err != nil {
		t.Fatal(err)
	}
	r := newReport(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "rauta-bench -rounds 2", hostInfo{}, settings{Rounds: 2, Threads: 2, Conns: 64, Duration: 10 * time.Second}, modes)
	rps := func(v ...float64) []runResult {
		var out []runResult
		for _, x := range v {
			out = append(out, runResult{wrkResult: wrkResult{ReqPerSec: x}})
		}
		return out
	}
	r.Runs[runKey{modeNginx, keepAlive}] = rps(40000, 40000)
	r.Runs[runKey{modeRautaSlow, keepAlive}] = rps(44000, 44000)
	r.Runs[runKey{modeNginxXDP, keepAlive}] = rps(37000, 37000)
	r.Runs[runKey{modeNginxTLS, connClose}] = rps(4000, 4000)
	r.Runs[runKey{modeRautaTLS, connClose}] = rps(2000, 2000)
	r.Runs[runKey{modeNginxTLS, keepAlive}] = rps(30000)
	r.Runs[runKey{modeRautaTLS, keepAlive}] = rps(15000)
	r.RSS = []rssResult{
		{Conns: 1000, Idle: 20 << 20, Peak: 40 << 20, HWM: 41 << 20, Wrk: wrkResult{ReqPerSec: 9000}},
		{Conns: 1000, Idle: 21 << 20, Peak: 52 << 20, HWM: 53 << 20, Wrk: wrkResult{ReqPerSec: 8000, Errors: wrkErrors{Read: 3}}},
	}
	r.RSSCommand = "wrk -t2 -c1000 -d5s --latency http://10.0.0.100:8080/%69ndex.html"
	r.Tallies[runKey{modeRautaSlow, keepAlive}] = &tally{Requests: 1000, XDP: snapshot{`xdp_slowpath_connections{service="bench-http"}`: 64}}
	r.Tallies[runKey{modeNginxXDP, keepAlive}] = &tally{Requests: 1000,
		XDP: snapshot{
			`xdp_passed_packets{reason="not_service",service=""}`: 3960,
			`xdp_passed_packets{reason="not_ipv4",service=""}`:    7, // ARP: not nginx's
		},
		System: snapshot{"lb/eth1 rx_packets": 2000, "lb/eth2 rx_packets": 2000, "lb/eth1 tx_packets": 2000, "client/eth0 rx_packets": 2000},
	}

	var b strings.Builder
	if err := r.write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"**rauta-slow keep-alive req/s / nginx-proxy = 1.10 (target ≥ 1.00)**: met\n\n" +
			"**rauta-slow keep-alive req/s / nginx-proxy-xdp (same XDP on the veths) = 1.19**\n\n",
		"per packet received on the LB's veths: keep-alive 0.99 (3960 of 4000).",
		"| nginx-proxy-xdp | keep-alive | 1000 | `xdp_passed_packets{reason=\"not_service\",service=\"\"}` | 3960 | 3.96 |",
		"**rauta-tls close req/s (new TLS connections/s, wrk resumes TLS 1.2 sessions) / nginx-tls = 0.50**",
		"**rauta-tls keep-alive req/s / nginx-tls = 0.50**",
		// The worst round counts.
		"**rauta daemon peak RSS at 1000 keep-alive connections through the slow path = 52.0 MiB (target < 50.0 MiB)**: NOT met",
		"`wrk -t2 -c1000 -d5s --latency http://10.0.0.100:8080/%69ndex.html`",
		"40.0 MiB (9000 req/s, errors 0) / 52.0 MiB (8000 req/s, errors read 3)",
		"Idle before the run: 21.0 MiB",
		"| rauta-slow | keep-alive | 1000 | `xdp_slowpath_connections{service=\"bench-http\"}` | 64 | 0.064 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
