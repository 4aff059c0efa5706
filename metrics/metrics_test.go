package metrics_test

import (
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rauta-lb/rauta/loader"
	"github.com/rauta-lb/rauta/metrics"
	"github.com/rauta-lb/rauta/xdp"
)

// source is the daemon's side of the collector: the programmer's service
// names and a flow count set by the test.
type source struct {
	prog  *loader.Programmer
	flows atomic.Int64
}

func (s *source) ServiceNames() map[uint32]string { return s.prog.ServiceNames() }
func (s *source) LiveFlows() int                  { return int(s.flows.Load()) }

const version = "v1.2.3-test"

// Every counter, by the metric and label it is exported as: plain counters
// have only the service label, the others a reason too.
var exported = map[xdp.Counter]struct{ metric, reason string }{
	xdp.CounterRxPackets:           {"rauta_xdp_rx_packets_total", ""},
	xdp.CounterRxBytes:             {"rauta_xdp_rx_bytes_total", ""},
	xdp.CounterForwarded:           {"rauta_xdp_forwarded_packets_total", ""},
	xdp.CounterNewFlows:            {"rauta_xdp_new_flows_total", ""},
	xdp.CounterICMPForwarded:       {"rauta_xdp_icmp_translated_total", ""},
	xdp.CounterPassNotIPv4:         {"rauta_xdp_passed_packets_total", "not_ipv4"},
	xdp.CounterPassNotService:      {"rauta_xdp_passed_packets_total", "not_service"},
	xdp.CounterPassNoNeighbour:     {"rauta_xdp_passed_packets_total", "no_neighbour"},
	xdp.CounterPassNoRoute:         {"rauta_xdp_passed_packets_total", "no_route"},
	xdp.CounterPassNotInDevmap:     {"rauta_xdp_passed_packets_total", "egress_not_attached"},
	xdp.CounterPassFragNeeded:      {"rauta_xdp_passed_packets_total", "frag_needed"},
	xdp.CounterDropMalformed:       {"rauta_xdp_dropped_packets_total", "malformed"},
	xdp.CounterDropFragment:        {"rauta_xdp_dropped_packets_total", "fragment"},
	xdp.CounterDropNoBackend:       {"rauta_xdp_dropped_packets_total", "no_backend"},
	xdp.CounterDropICMPUnknownFlow: {"rauta_xdp_dropped_packets_total", "icmp_unknown_flow"},
	xdp.CounterDropTTLExceeded:     {"rauta_xdp_dropped_packets_total", "ttl_exceeded"},
	xdp.CounterDropSpoofedVIP:      {"rauta_xdp_dropped_packets_total", "spoofed_vip"},
	xdp.CounterSYNCookiesSent:      {"rauta_xdp_syn_cookies_sent_total", ""},
	xdp.CounterHandshakesCompleted: {"rauta_xdp_handshakes_completed_total", ""},
	xdp.CounterDropBadCookie:       {"rauta_xdp_dropped_packets_total", "bad_cookie"},
	xdp.CounterPassNoCookieKey:     {"rauta_xdp_passed_packets_total", "no_cookie_key"},
	xdp.CounterPassLocalSocket:     {"rauta_xdp_passed_packets_total", "local_socket"},
	xdp.CounterBackendSYNs:         {"rauta_xdp_backend_syns_total", ""},
	xdp.CounterSpliced:             {"rauta_xdp_spliced_total", ""},
	xdp.CounterSplicedNoRoom:       {"rauta_xdp_spliced_without_request_total", ""},
	xdp.CounterSlowpath:            {"rauta_xdp_slowpath_connections_total", ""},
	xdp.CounterDropHTTPState:       {"rauta_xdp_dropped_packets_total", "http_state"},
	xdp.CounterRebinds:             {"rauta_xdp_rebinds_total", ""},
	xdp.CounterResetUnroutable:     {"rauta_xdp_reset_unroutable_total", ""},
	xdp.CounterBackendRetries:      {"rauta_xdp_backend_retries_total", ""},
}

// exportedFamilies are the metrics this test knows: the scrape is compared
// exactly on them, other families (added since) are left to their own
// tests.
func exportedFamilies() map[string]bool {
	f := map[string]bool{"rauta_build_info": true, "rauta_flows": true}
	for _, ex := range exported {
		f[ex.metric] = true
	}
	return f
}

// A counter added to the program must be added to exported too: the other
// tests compare sums only for the counters listed there.
func TestExportedCoversEveryCounter(t *testing.T) {
	for c := range xdp.NumCounters {
		if _, ok := exported[xdp.Counter(c)]; !ok {
			t.Errorf("counter %d has no expected metric in this test's exported table", c)
		}
	}
}

type env struct {
	objs *xdp.Objects
	prog *loader.Programmer
	src  *source
	reg  *prometheus.Registry
	ncpu int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	objs, err := xdp.Load(nil)
	if err != nil {
		t.Fatalf("load: %+v", err)
	}
	t.Cleanup(func() { objs.Close() })
	prog, err := loader.NewProgrammer(objs)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{objs: objs, prog: prog, src: &source{prog: prog}, ncpu: ebpf.MustPossibleCPU()}
	// The pedantic registry also checks that Collect sends only what
	// Describe announced, and that no series is duplicated. (testutil would
	// need github.com/kylelemons/godebug in go.mod: gathering does it.)
	e.reg = prometheus.NewPedanticRegistry()
	if err := e.reg.Register(metrics.New(objs.Counters, e.src, version, slog.New(slog.DiscardHandler))); err != nil {
		t.Fatalf("register: %v", err)
	}
	return e
}

func service(name, vip string, port uint16) loader.Service {
	return loader.Service{Name: name, VIP: netip.MustParseAddr(vip), Port: port, Protocol: loader.ProtoTCP, Pool: "app"}
}

func (e *env) apply(t *testing.T, services ...loader.Service) {
	t.Helper()
	pool := loader.Pool{Name: "app", MaglevSize: 13, Backends: []loader.Backend{
		{Address: netip.MustParseAddrPort("10.0.1.11:8080"), Weight: 1},
		{Address: netip.MustParseAddrPort("10.0.1.12:8080"), Weight: 1},
	}}
	if err := e.prog.Apply(loader.State{Services: services, Pools: []loader.Pool{pool}}); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

func (e *env) id(t *testing.T, name string) uint32 {
	t.Helper()
	for id, n := range e.prog.ServiceNames() {
		if n == name {
			return id
		}
	}
	t.Fatalf("no service %q in %v", name, e.prog.ServiceNames())
	return 0
}

// fill writes a distinct value into every CPU's slot of every counter of
// service id and returns the sums the collector must export, by counter.
// Values differ by CPU, counter and service, so a collector that reads one
// CPU, the wrong counter or the wrong service gets a different sum.
func (e *env) fill(t *testing.T, id uint32) map[xdp.Counter]uint64 {
	t.Helper()
	sums := map[xdp.Counter]uint64{}
	for c := range xdp.NumCounters {
		per := make([]uint64, e.ncpu)
		for cpu := range per {
			per[cpu] = uint64(id+1)<<32 | uint64(c+1)<<16 | uint64(cpu+1)
			sums[xdp.Counter(c)] += per[cpu]
		}
		if err := e.objs.Counters.Put(xdp.CounterIndex(id, xdp.Counter(c)), per); err != nil {
			t.Fatalf("write counter %d/%d: %v", id, c, err)
		}
	}
	return sums
}

// series identifies one exported time series: metric name and its labels
// as name=value pairs in name order.
type series struct{ metric, labels string }

func (s series) String() string { return s.metric + "{" + s.labels + "}" }

func labels(kv ...string) string {
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		parts = append(parts, fmt.Sprintf("%s=%q", kv[i], kv[i+1]))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// scrape gathers the registry and returns every series of the families
// this test knows with its value. A series of any family naming a service
// that is not in services fails the test.
func (e *env) scrape(t *testing.T, services ...string) map[series]float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	known := exportedFamilies()
	out := map[series]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "service" && !slices.Contains(services, l.GetValue()) {
					t.Errorf("%s: series of service %q, want only %q", mf.GetName(), l.GetValue(), services)
				}
			}
			if !known[mf.GetName()] {
				continue
			}
			var kv []string
			for _, l := range m.GetLabel() {
				kv = append(kv, l.GetName(), l.GetValue())
			}
			var v float64
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				v = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				v = m.GetGauge().GetValue()
			default:
				t.Fatalf("%s: unexpected type %v", mf.GetName(), mf.GetType())
			}
			s := series{mf.GetName(), labels(kv...)}
			if _, dup := out[s]; dup {
				t.Fatalf("duplicate series %s", s)
			}
			out[s] = v
		}
	}
	return out
}

// want is the complete scrape the collector must produce: build info, the
// flow gauge and every counter of every listed service (name → sums).
func want(flows int, services map[string]map[xdp.Counter]uint64) map[series]float64 {
	w := map[series]float64{
		{"rauta_build_info", labels("version", version, "goversion", runtime.Version())}: 1,
		{"rauta_flows", ""}: float64(flows),
	}
	for name, sums := range services {
		for c, ex := range exported {
			kv := []string{"service", name}
			if ex.reason != "" {
				kv = append(kv, "reason", ex.reason)
			}
			w[series{ex.metric, labels(kv...)}] = float64(sums[c])
		}
	}
	return w
}

// expect scrapes and compares the result with want(flows, services).
func (e *env) expect(t *testing.T, flows int, services map[string]map[xdp.Counter]uint64) {
	t.Helper()
	compare(t, e.scrape(t, slices.Collect(maps.Keys(services))...), want(flows, services))
}

// compare fails the test unless got is exactly want: the same series, each
// with the same value.
func compare(t *testing.T, got, want map[series]float64) {
	t.Helper()
	var errs []string
	for s, w := range want {
		g, ok := got[s]
		switch {
		case !ok:
			errs = append(errs, fmt.Sprintf("missing %s (want %v)", s, w))
		case g != w:
			errs = append(errs, fmt.Sprintf("%s = %v, want %v", s, g, w))
		}
	}
	for s, g := range got {
		if _, ok := want[s]; !ok {
			errs = append(errs, fmt.Sprintf("unexpected %s = %v", s, g))
		}
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		t.Errorf("scrape:\n  %s", strings.Join(errs, "\n  "))
	}
}

func TestCollectorSums(t *testing.T) {
	e := newEnv(t)
	e.apply(t, service("web", "10.0.0.100", 80))
	web := e.id(t, "web")
	if web == 0 {
		t.Fatal("service id 0 is reserved for traffic of no service")
	}
	e.src.flows.Store(12345)

	none := e.fill(t, 0)
	webSums := e.fill(t, web)
	e.fill(t, web+1) // an id no service has: must not be exported

	e.expect(t, 12345, map[string]map[xdp.Counter]uint64{
		metrics.NoService: none,
		"web":             webSums,
	})

	// Spot checks, in case want and the collector drifted apart the same way.
	got := e.scrape(t, metrics.NoService, "web")
	if v := got[series{"rauta_xdp_dropped_packets_total", `reason="fragment",service=""`}]; v != float64(none[xdp.CounterDropFragment]) {
		t.Errorf("dropped fragments of no service = %v, want %d", v, none[xdp.CounterDropFragment])
	}
	if v := got[series{"rauta_xdp_rx_packets_total", `service="web"`}]; v != float64(webSums[xdp.CounterRxPackets]) {
		t.Errorf("rx packets of web = %v, want %d", v, webSums[xdp.CounterRxPackets])
	}
	var dropped, info int
	for s := range got {
		switch s.metric {
		case "rauta_xdp_dropped_packets_total":
			dropped++
		case "rauta_build_info":
			info++
			if !strings.Contains(s.labels, `version="`+version+`"`) {
				t.Errorf("build info without the version: %s", s)
			}
		}
	}
	reasons := 0
	for _, ex := range exported {
		if ex.metric == "rauta_xdp_dropped_packets_total" {
			reasons++
		}
	}
	if dropped != 2*reasons || info != 1 {
		t.Errorf("%d dropped series (want %d reasons × 2 services), %d build info (want 1)", dropped, reasons, info)
	}

	// A scrape reads the kernel's current values, and the flow gauge the
	// source's current count.
	e.src.flows.Store(7)
	var per []uint64
	idx := xdp.CounterIndex(web, xdp.CounterForwarded)
	if err := e.objs.Counters.Lookup(idx, &per); err != nil {
		t.Fatal(err)
	}
	per[e.ncpu-1] += 1000
	if err := e.objs.Counters.Put(idx, per); err != nil {
		t.Fatal(err)
	}
	webSums[xdp.CounterForwarded] += 1000
	e.expect(t, 7, map[string]map[xdp.Counter]uint64{
		metrics.NoService: none,
		"web":             webSums,
	})
}

func TestCollectorFollowsApply(t *testing.T) {
	e := newEnv(t)
	e.apply(t, service("web", "10.0.0.100", 80), service("api", "10.0.0.101", 443))
	web, api := e.id(t, "web"), e.id(t, "api")
	none := e.fill(t, 0)
	webSums := e.fill(t, web)
	apiSums := e.fill(t, api)
	e.expect(t, 0, map[string]map[xdp.Counter]uint64{
		metrics.NoService: none, "web": webSums, "api": apiSums,
	})

	// web removed: its series disappear, though its counters still hold
	// values in the map; the others are untouched.
	// (scrape fails on any series of a service it is not told of.)
	e.apply(t, service("api", "10.0.0.101", 443))
	e.expect(t, 0, map[string]map[xdp.Counter]uint64{
		metrics.NoService: none, "api": apiSums,
	})

	// A new service starts from zero rather than inheriting the totals
	// left under its id (web's, which it reuses, or any other): fill every
	// id it might get first.
	for id := uint32(1); id < 8; id++ {
		if id != api {
			e.fill(t, id)
		}
	}
	e.apply(t, service("api", "10.0.0.101", 443), service("db", "10.0.0.102", 5432))
	if db := e.id(t, "db"); db == api || db >= 8 {
		t.Fatalf("db got id %d (api has %d)", db, api)
	}
	e.expect(t, 0, map[string]map[xdp.Counter]uint64{
		metrics.NoService: none, "api": apiSums, "db": {},
	})

	// Every service removed: only the no-service series remain.
	e.apply(t)
	e.expect(t, 0, map[string]map[xdp.Counter]uint64{metrics.NoService: none})
}

// The collector must not write into the map the source returns (a Source
// may hand out a map it keeps), nor fail on a nil one (no service yet).
func TestCollectorLeavesSourceMapAlone(t *testing.T) {
	e := newEnv(t)
	e.apply(t, service("web", "10.0.0.100", 80))
	names := map[uint32]string{e.id(t, "web"): "web"}
	before := maps.Clone(names)
	for _, src := range []*fixedSource{{names: names}, {names: nil}} {
		// Collect called directly: a registry runs it on a goroutine of
		// its own, where a panic would end the test binary.
		col := metrics.New(e.objs.Counters, src, version, slog.New(slog.DiscardHandler))
		ch := make(chan prometheus.Metric)
		go func() {
			for range ch {
			}
		}()
		func() {
			defer close(ch)
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("scrape with names %v: panic: %v", src.names, r)
				}
			}()
			col.Collect(ch)
		}()
	}
	if !maps.Equal(names, before) {
		t.Errorf("Collect changed the source's map: %v, was %v", names, before)
	}
}

type fixedSource struct{ names map[uint32]string }

func (f *fixedSource) ServiceNames() map[uint32]string { return f.names }
func (f *fixedSource) LiveFlows() int                  { return 0 }

func TestCollectorSlowpathReasons(t *testing.T) {
	e := newEnv(t)
	e.apply(t, service("web", "10.0.0.100", 80))
	id := e.id(t, "web")
	reg := prometheus.NewPedanticRegistry()
	col := metrics.New(e.objs.Counters, e.src, version, slog.New(slog.DiscardHandler)).WithSlowpath(e.objs.SlowpathCounters)
	if err := reg.Register(col); err != nil {
		t.Fatal(err)
	}
	perCPU := make([]uint64, e.ncpu)
	for i := range perCPU {
		perCPU[i] = uint64(3 + i)
	}
	reason := uint32(2) // an arbitrary reason: the test reads its name back
	if err := e.objs.SlowpathCounters.Put(id*uint32(xdp.NumSlowpathReasons)+reason, perCPU); err != nil {
		t.Fatal(err)
	}
	var want uint64
	for _, v := range perCPU {
		want += v
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	name := xdp.SlowpathReasonName(xdp.SlowpathReason(reason))
	seen := 0
	for _, mf := range mfs {
		if mf.GetName() != "rauta_xdp_slowpath_reason_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			seen++
			var svc, r string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "service":
					svc = l.GetValue()
				case "reason":
					r = l.GetValue()
				}
			}
			if svc != "web" {
				t.Errorf("slow-path series for service %q", svc)
			}
			got := uint64(m.GetCounter().GetValue())
			if r == name && got != want {
				t.Errorf("reason %s = %d, want %d", r, got, want)
			}
			if r != name && got != 0 {
				t.Errorf("reason %s = %d, want 0", r, got)
			}
		}
	}
	if seen != xdp.NumSlowpathReasons-1 {
		t.Fatalf("%d slow-path series, want one per reason (%d)", seen, xdp.NumSlowpathReasons-1)
	}
}
