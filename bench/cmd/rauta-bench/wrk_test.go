package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	tests := []struct {
		file string
		want wrkResult
	}{
		{"wrk-keepalive.txt", wrkResult{
			Requests: 121613, ReqPerSec: 110384.37,
			P50: 125 * time.Microsecond, P99: 3470 * time.Microsecond,
		}},
		{"wrk-close.txt", wrkResult{
			Requests: 32561, ReqPerSec: 29614.80,
			P50: 379 * time.Microsecond, P99: 970 * time.Microsecond,
		}},
		{"wrk-non2xx.txt", wrkResult{
			Requests: 108558, ReqPerSec: 108379.39,
			P50: 176 * time.Microsecond, P99: 3480 * time.Microsecond,
			Errors: wrkErrors{Non2xx: 108558},
		}},
		{"wrk-errors.txt", wrkResult{
			Requests: 181532, ReqPerSec: 18135.66,
			P50: 2510 * time.Microsecond, P99: 1020 * time.Millisecond,
			Errors: wrkErrors{Connect: 3, Read: 12, Write: 1, Timeout: 47, Non2xx: 5},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			out, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseWrk(string(out))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("parseWrk =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseWrkRejectsIncompleteOutput(t *testing.T) {
	full, err := os.ReadFile(filepath.Join("testdata", "wrk-keepalive.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]string{
		"empty":         "",
		"no latency":    "  121613 requests in 1.10s, 17.40MB read\nRequests/sec: 110384.37\n",
		"no req/s":      string(full[:len(full)-60]),
		"unknown unit":  "     50%  379.00xs\n     99%    0.97ms\nRequests/sec:  29614.80\n",
		"only 50% line": "     50%  379.00us\nRequests/sec:  29614.80\n",
	}
	for name, out := range tests {
		t.Run(name, func(t *testing.T) {
			if res, err := parseWrk(out); err == nil {
				t.Errorf("parseWrk accepted %q: %+v", out, res)
			}
		})
	}
}

func TestParseWrkDuration(t *testing.T) {
	tests := []struct {
		value, unit string
		want        time.Duration
	}{
		{"379.00", "us", 379 * time.Microsecond},
		{"0.97", "ms", 970 * time.Microsecond},
		{"1.02", "s", 1020 * time.Millisecond},
		{"2.00", "m", 2 * time.Minute},
	}
	for _, tt := range tests {
		got, err := parseWrkDuration(tt.value, tt.unit)
		if err != nil || got != tt.want {
			t.Errorf("parseWrkDuration(%q, %q) = %v, %v; want %v", tt.value, tt.unit, got, err, tt.want)
		}
	}
}

func TestWrkSpecArgs(t *testing.T) {
	spec := wrkSpec{Threads: 2, Conns: 64, Duration: 10 * time.Second, URL: "http://10.0.0.100/"}
	want := []string{"-t2", "-c64", "-d10s", "--latency", "http://10.0.0.100/"}
	if got := spec.args(); !slices.Equal(got, want) {
		t.Errorf("keep-alive args = %q, want %q", got, want)
	}
	spec.Close = true
	want = []string{"-t2", "-c64", "-d10s", "--latency", "-H", "Connection: close", "http://10.0.0.100/"}
	if got := spec.args(); !slices.Equal(got, want) {
		t.Errorf("close args = %q, want %q", got, want)
	}
}

func TestWrkErrorsString(t *testing.T) {
	if got := (wrkErrors{}).String(); got != "0" {
		t.Errorf("no errors = %q, want 0", got)
	}
	got := wrkErrors{Read: 12, Timeout: 3, Non2xx: 1}.String()
	if want := "read 12, timeout 3, non-2xx 1"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}
