package main

import (
	"io"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/rauta-lb/rauta/tools/testbed"
)

func TestParseFlagsDefaults(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := settings{Rounds: 5, Threads: 2, Conns: 64, Duration: 10 * time.Second, Warmup: 2 * time.Second, XDPMode: "auto", OriginWorkers: runtime.NumCPU()}
	if o.Load != want {
		t.Errorf("defaults = %+v, want %+v", o.Load, want)
	}
	if got := modeNames(o.Modes); !slices.Equal(got, []string{"kernel", "rauta-l4", "rauta-http", "nginx-proxy", "haproxy", "rauta-slow", "nginx-proxy-xdp", "rauta-tls", "nginx-tls"}) {
		t.Errorf("default modes = %v", got)
	}
}

func TestParseFlagsRejects(t *testing.T) {
	for _, args := range [][]string{
		{"-rounds", "0"},
		{"-duration", "1500ms"},
		{"-warmup", "-1s"},
		{"-origin-workers", "0"},
		{"-xdp-mode", "offload"},
		{"-conns", "1", "-threads", "2"},
		{"-modes", "kernel,bogus"},
		{"-modes", "kernel,kernel"},
		{"-modes", ","},
		{"extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestCommandLine(t *testing.T) {
	got := commandLine([]string{"/tmp/go-build123/b001/exe/rauta-bench", "-out", "bench/results", "-modes", "kernel,rauta-l4", "-x", "it's"})
	want := `go run ./bench/cmd/rauta-bench -out bench/results -modes kernel,rauta-l4 -x 'it'\''s'`
	if got != want {
		t.Errorf("commandLine = %s, want %s", got, want)
	}
	if got := commandLine([]string{"./rauta-bench", "-rounds", "1"}); got != "./rauta-bench -rounds 1" {
		t.Errorf("commandLine = %s", got)
	}
}

// Port slices may only be shared by proxies with different targets: the
// origin never sees their client ports, and no 4-tuple can repeat.
func TestModePortRangesDisjoint(t *testing.T) {
	tb := &testbed.Testbed{
		VIPs:         []netip.Addr{netip.MustParseAddr("10.0.0.100")},
		BackendAddrs: []netip.Addr{netip.MustParseAddr("10.0.1.11")},
		LBClientAddr: netip.MustParseAddr("10.0.2.1"),
	}
	for i, a := range allModes {
		if a.Ports[0] < clientPortLow || a.Ports[1] > clientPortHigh || a.Ports[1]-a.Ports[0] < 10000 {
			t.Errorf("%s: port range %v", a.Name, a.Ports)
		}
		for _, b := range allModes[i+1:] {
			if a.Ports[1] < b.Ports[0] || b.Ports[1] < a.Ports[0] {
				continue
			}
			if !a.Terminates || !b.Terminates || a.target(tb) == b.target(tb) {
				t.Errorf("%s %v and %s %v overlap", a.Name, a.Ports, b.Name, b.Ports)
			}
		}
	}
}

// nginx-proxy-xdp runs while the rauta process is up, and only then.
func TestProcModes(t *testing.T) {
	for _, name := range []string{modeRautaSlow, modeRautaTLS, modeNginxXDP} {
		if !isProcMode(name) {
			t.Errorf("%s is not measured with the rauta process", name)
		}
	}
	for _, name := range []string{modeNginx, modeKernel, modeRauta, modeNginxTLS} {
		if isProcMode(name) {
			t.Errorf("%s is measured with the rauta process", name)
		}
	}
	modes, err := selectModes("nginx-proxy,nginx-proxy-xdp,rauta-slow")
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{opts: options{Modes: modes}}
	if got := modeNames(b.procModes()); !slices.Equal(got, []string{modeNginxXDP, modeRautaSlow}) {
		t.Errorf("procModes = %v", got)
	}
}

func TestModeURLs(t *testing.T) {
	tb := &testbed.Testbed{
		VIPs:         []netip.Addr{netip.MustParseAddr("10.0.0.100")},
		BackendAddrs: []netip.Addr{netip.MustParseAddr("10.0.1.11")},
		LBClientAddr: netip.MustParseAddr("10.0.2.1"),
	}
	want := map[string]string{
		modeKernel:    "http://10.0.1.11/",
		modeRautaHTTP: "http://10.0.0.100:8080/",
		modeRautaSlow: "http://10.0.0.100:8080/%69ndex.html",
		modeRautaTLS:  "https://10.0.0.100/",
		modeNginxTLS:  "https://10.0.2.1:8443/",
		modeNginx:     "http://10.0.2.1:8080/",
		modeNginxXDP:  "http://10.0.2.1:8080/", // the same nginx, behind XDP
	}
	for _, m := range allModes {
		if w, ok := want[m.Name]; ok {
			if got := m.url(tb); got != w {
				t.Errorf("%s: url %s, want %s", m.Name, got, w)
			}
		}
	}
}
