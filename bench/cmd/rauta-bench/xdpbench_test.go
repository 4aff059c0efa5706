package main

import (
	"testing"
)

func TestParseXDPBench(t *testing.T) {
	out := `goos: linux
goarch: amd64
pkg: github.com/rauta-lb/rauta/xdp
cpu: AMD EPYC
BenchmarkXDP/new_flow-2         	 2000000	       812.0 ns/op	        61.20 ns/pkt
BenchmarkXDP/established-2      	 2000000	       401.5 ns/op	        35.05 ns/pkt	       0 B/op
BenchmarkXDP/pass-not-service   	 2000000	        90.1 ns/op	         9.800 ns/pkt
BenchmarkXDPHTTP/syn-net-2       	 2000000	      3730 ns/op	       443.0 ns/pkt
BenchmarkXDPHTTP/established/to-client-2 	 2000000	       158.9 ns/op	       113.2 ns/pkt
BenchmarkOther-2                	 1000	      1000 ns/op
PASS
ok  	github.com/rauta-lb/rauta/xdp	4.321s
`
	got := parseXDPBench(out)
	want := []xdpBenchResult{
		{"new_flow", 61.20},
		{"established", 35.05},
		{"pass-not-service", 9.8},
		{"http/syn-net", 443},
		{"http/established/to-client", 113.2},
	}
	if len(got) != len(want) {
		t.Fatalf("parseXDPBench = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("result %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestParseXDPBenchNoBenchmarks(t *testing.T) {
	for _, out := range []string{
		"PASS\nok  \tgithub.com/rauta-lb/rauta/xdp\t0.012s\n",
		"testing: warning: no tests to run\nPASS\n",
		"?   \tgithub.com/rauta-lb/rauta/xdp\t[no test files]\n",
	} {
		if got := parseXDPBench(out); len(got) != 0 {
			t.Errorf("parseXDPBench(%q) = %+v, want nothing", out, got)
		}
	}
}
