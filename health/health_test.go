package health

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// fast is a Spec whose transitions take a few tens of milliseconds.
var fast = Spec{Interval: 10 * time.Millisecond, Timeout: 200 * time.Millisecond, Fall: 2, Rise: 2}

// waitDown waits (bounded) until key's state is down, or up.
func waitDown(t *testing.T, m *Monitor, k Key, down bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for m.Down()[k] != down {
		if time.Now().After(deadline) {
			t.Fatalf("%v: down = %v after 5s, want %v", k, !down, down)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// acceptAndClose plays a backend that passes TCP checks, until ln closes.
func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func addrPort(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func TestTCPCheckFallsAndRises(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go acceptAndClose(ln)
	k := Key{Pool: "web", Backend: addrPort(t, ln.Addr())}
	m := New(Options{})
	defer m.Close()
	m.Set([]Target{{Key: k, Spec: fast}})

	// Up from the start, and staying up while it accepts.
	time.Sleep(5 * fast.Interval)
	if m.Down()[k] {
		t.Fatal("a listening backend is down")
	}
	select {
	case <-m.Changed():
		t.Fatal("Changed fired without a change")
	default:
	}

	ln.Close()
	waitDown(t, m, k, true)
	select {
	case <-m.Changed():
	case <-time.After(time.Second):
		t.Fatal("Changed did not fire when the backend went down")
	}

	ln2, err := net.Listen("tcp4", k.Backend.String())
	if err != nil {
		t.Skipf("port %v taken again before the test could reuse it: %v", k.Backend, err)
	}
	defer ln2.Close()
	go acceptAndClose(ln2)
	waitDown(t, m, k, false)
	if got := upValue(t, m, k); got != 1 {
		t.Errorf("rauta_backend_up = %v, want 1", got)
	}
}

func TestHTTPCheckJudgesStatus(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	var paths atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths.Store(r.URL.RequestURI() + " " + r.Host)
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	k := Key{Pool: "api", Backend: addrPort(t, srv.Listener.Addr())}
	spec := fast
	spec.HTTPPath = "/healthz?deep=1"
	m := New(Options{})
	defer m.Close()
	m.Set([]Target{{Key: k, Spec: spec}})

	status.Store(http.StatusServiceUnavailable)
	waitDown(t, m, k, true)
	if got, want := paths.Load(), "/healthz?deep=1 "+k.Backend.String(); got != want {
		t.Errorf("probe asked for %q, want %q", got, want)
	}
	status.Store(http.StatusFound) // 3xx is healthy
	waitDown(t, m, k, false)
	if got := upValue(t, m, k); got != 1 {
		t.Errorf("rauta_backend_up = %v, want 1", got)
	}
}

func TestSetKeepsStateAcrossSpecChangesAndStopsRemoved(t *testing.T) {
	// Nothing listens on a closed listener's port: every probe fails.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := Key{Pool: "web", Backend: addrPort(t, ln.Addr())}
	ln.Close()
	m := New(Options{})
	defer m.Close()
	m.Set([]Target{{Key: dead, Spec: fast}})
	waitDown(t, m, dead, true)

	slower := fast
	slower.Interval = time.Hour // no second probe within the test
	slower.Rise = 1
	m.Set([]Target{{Key: dead, Spec: slower}})
	if !m.Down()[dead] {
		t.Fatal("a changed spec brought a down backend back up without a good probe")
	}
	m.Set(nil)
	if len(m.Down()) != 0 {
		t.Fatalf("removed target still reported: %v", m.Down())
	}
	if n := testutil.CollectAndCount(m); n != 0 {
		t.Errorf("collector exports %d series for no targets", n)
	}
}

func TestProbeCountsAndMetricNames(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	k := Key{Pool: "web", Backend: addrPort(t, ln.Addr())}
	m := New(Options{})
	defer m.Close()
	m.Set([]Target{{Key: k, Spec: fast}})
	time.Sleep(3 * fast.Interval)
	const want = `
# HELP rauta_backend_up 1 while the backend passes its pool's health check, 0 while it is down and drained (pools with a health_check only).
# TYPE rauta_backend_up gauge
rauta_backend_up{backend="BACKEND",pool="web"} 1
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(strings.ReplaceAll(want, "BACKEND", k.Backend.String())), "rauta_backend_up"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m, "rauta_health_probes_total"); n != 2 {
		t.Errorf("rauta_health_probes_total has %d series, want ok and failed", n)
	}
}

func TestParseStatus(t *testing.T) {
	for line, want := range map[string]int{
		"HTTP/1.1 200 OK\r\n":     200,
		"HTTP/1.0 503\r\n":        503,
		"HTTP/1.1 302 Found\r\n":  302,
		"HTTP/2 200\r\n":          0,
		"SSH-2.0-OpenSSH\r\n":     0,
		"HTTP/1.1 2x0 OK\r\n":     0,
		"HTTP/1.1 099 Weird\r\n":  0,
		"HTTP/1.1\r\n":            0,
		"":                        0,
		"HTTP/1.1 404 Not Found":  404,
		"HTTP/1.1 600 Beyond\r\n": 600,
		"HTTP/1.1 2001 OK\r\n":    0,
		"HTTP/1.x 200 OK\r\n":     0,
		"HTTP/1.10 200 OK\r\n":    0,
		"HTTP/1.1 204\n":          204,
	} {
		got, err := parseStatus(line)
		if want == 0 {
			if err == nil {
				t.Errorf("parseStatus(%q) = %d, want an error", line, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("parseStatus(%q) = %d, %v; want %d", line, got, err, want)
		}
	}
}

// upValue is k's rauta_backend_up.
func upValue(t *testing.T, m *Monitor, k Key) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	m.Collect(ch)
	close(ch)
	for metric := range ch {
		if !strings.Contains(metric.Desc().String(), `"rauta_backend_up"`) {
			continue
		}
		var out dto.Metric
		if err := metric.Write(&out); err != nil {
			t.Fatal(err)
		}
		labels := map[string]string{}
		for _, l := range out.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["pool"] == k.Pool && labels["backend"] == k.Backend.String() {
			return out.GetGauge().GetValue()
		}
	}
	t.Fatalf("no rauta_backend_up series for %v", k)
	return 0
}
