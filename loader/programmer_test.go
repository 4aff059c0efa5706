package loader

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/rauta-lb/rauta/xdp"
)

func newProgrammer(t *testing.T) (*Programmer, *xdp.Objects) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	objs, err := xdp.Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { objs.Close() })
	p, err := NewProgrammer(objs)
	if err != nil {
		t.Fatal(err)
	}
	return p, objs
}

func state(backends ...Backend) State {
	return State{
		Services: []Service{{Name: "web", VIP: netip.MustParseAddr("10.0.0.100"), Port: 80, Protocol: ProtoTCP, Pool: "app"}},
		Pools:    []Pool{{Name: "app", MaglevSize: 13, Backends: backends}},
	}
}

func be(addr string, weight uint32) Backend {
	return Backend{Address: netip.MustParseAddrPort(addr), Weight: weight}
}

func lookupService(t *testing.T, objs *xdp.Objects) xdp.Service {
	t.Helper()
	var svc xdp.Service
	key := xdp.ServiceKey{Vip: xdp.Addr(netip.MustParseAddr("10.0.0.100")), Port: xdp.Port(80), Proto: ProtoTCP}
	if err := objs.Services.Lookup(key, &svc); err != nil {
		t.Fatalf("service entry: %v", err)
	}
	return svc
}

// tableOwners reads a service's Maglev table back as backend addresses.
func tableOwners(t *testing.T, objs *xdp.Objects, svc xdp.Service) map[netip.AddrPort]int {
	t.Helper()
	var innerID ebpf.MapID
	if err := objs.MaglevTables.Lookup(svc.TableSlot, &innerID); err != nil {
		t.Fatalf("table slot %d: %v", svc.TableSlot, err)
	}
	inner, err := ebpf.NewMapFromID(innerID)
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	owners := map[netip.AddrPort]int{}
	for i := range svc.TableSize {
		var id uint32
		if err := inner.Lookup(i, &id); err != nil {
			t.Fatal(err)
		}
		var b xdp.Backend
		if err := objs.Backends.Lookup(id, &b); err != nil {
			t.Fatal(err)
		}
		owners[netip.AddrPortFrom(xdp.AddrFrom(b.Addr), xdp.PortFrom(b.Port))]++
	}
	return owners
}

func TestApplyWritesTablesAndSwitchesAtomically(t *testing.T) {
	p, objs := newProgrammer(t)
	if err := p.Apply(state(be("10.0.1.11:80", 1), be("10.0.1.12:8080", 1))); err != nil {
		t.Fatal(err)
	}
	first := lookupService(t, objs)
	if first.TableSize != 13 || first.Id == 0 {
		t.Fatalf("service entry %+v: want table size 13 and a non-zero id", first)
	}
	owners := tableOwners(t, objs, first)
	if len(owners) != 2 || owners[netip.MustParseAddrPort("10.0.1.12:8080")] == 0 {
		t.Fatalf("table owners %v: want both backends", owners)
	}

	// Same state: nothing rebuilt.
	if err := p.Apply(state(be("10.0.1.11:80", 1), be("10.0.1.12:8080", 1))); err != nil {
		t.Fatal(err)
	}
	if again := lookupService(t, objs); again != first {
		t.Fatalf("unchanged state moved the service entry: %+v -> %+v", first, again)
	}

	// Remove a backend: a new slot, the old one freed, the service id kept,
	// the removed backend's entry zeroed.
	if err := p.Apply(state(be("10.0.1.12:8080", 1))); err != nil {
		t.Fatal(err)
	}
	second := lookupService(t, objs)
	if second.TableSlot == first.TableSlot || second.Id != first.Id {
		t.Fatalf("after change: %+v, before: %+v; want a new slot and the same id", second, first)
	}
	var innerID ebpf.MapID
	if err := objs.MaglevTables.Lookup(first.TableSlot, &innerID); err == nil {
		t.Fatalf("old table slot %d still installed", first.TableSlot)
	}
	if owners := tableOwners(t, objs, second); len(owners) != 1 {
		t.Fatalf("owners after removal %v: want only 10.0.1.12:8080", owners)
	}
	live := 0
	iter := objs.Backends.Iterate()
	var id uint32
	var b xdp.Backend
	for iter.Next(&id, &b) {
		if b.Addr != 0 {
			live++
		}
	}
	if live != 1 {
		t.Fatalf("%d backend entries non-zero, want 1", live)
	}
}

func TestApplyRemovesServicesAndVIPs(t *testing.T) {
	p, objs := newProgrammer(t)
	if err := p.Apply(state(be("10.0.1.11:80", 1))); err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(State{Pools: state().Pools}); err != nil {
		t.Fatal(err)
	}
	var svc xdp.Service
	key := xdp.ServiceKey{Vip: xdp.Addr(netip.MustParseAddr("10.0.0.100")), Port: xdp.Port(80), Proto: ProtoTCP}
	if err := objs.Services.Lookup(key, &svc); err == nil {
		t.Fatal("removed service still in the map")
	}
	var one uint32
	if err := objs.Vips.Lookup(key.Vip, &one); err == nil {
		t.Fatal("VIP of the removed service still in the map")
	}
	if names := p.ServiceNames(); len(names) != 0 {
		t.Fatalf("ServiceNames() = %v after removal", names)
	}
}

func TestApplyDrainedPoolHasEmptyTable(t *testing.T) {
	p, objs := newProgrammer(t)
	if err := p.Apply(state(be("10.0.1.11:80", 0))); err != nil {
		t.Fatal(err)
	}
	if svc := lookupService(t, objs); svc.TableSize != 0 {
		t.Fatalf("all-drained pool: table size %d, want 0 (new flows dropped)", svc.TableSize)
	}
}

func TestApplyRejectsUnknownPool(t *testing.T) {
	p, _ := newProgrammer(t)
	s := state(be("10.0.1.11:80", 1))
	s.Services[0].Pool = "missing"
	if err := p.Apply(s); err == nil {
		t.Fatal("Apply accepted a service with an unknown pool")
	}
}

// httpState is one HTTP service on 10.0.0.100:80 with routes rs to pool app.
func httpState(rs ...Route) State {
	s := state(be("10.0.1.11:80", 1))
	s.Services[0].Pool = ""
	s.Services[0].HTTP = true
	s.Services[0].Routes = rs
	return s
}

// routeCount counts the routes map's entries.
func routeCount(t *testing.T, objs *xdp.Objects) int {
	t.Helper()
	n := 0
	var k xdp.RouteKey
	var r xdp.Route
	iter := objs.Routes.Iterate()
	for iter.Next(&k, &r) {
		n++
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestApplySlowpathOnly: a service XDP cannot route (asked for, or with a
// route or method XDP cannot express) is programmed with ServiceSlowpath and
// no routes instead of failing Apply; fixing its routes brings them back.
func TestApplySlowpathOnly(t *testing.T) {
	plain := Route{Path: "/", Pool: "app"}
	cases := []struct {
		name  string
		state State
	}{
		{"asked-for", func() State { s := httpState(plain); s.Services[0].SlowpathOnly = true; return s }()},
		{"wildcard-host", httpState(plain, Route{Host: "*.example.com", Path: "/", Pool: "app"})},
		{"host-too-long", httpState(plain, Route{Host: strings.Repeat("h", 65), Path: "/", Pool: "app"})},
		{"path-too-long", httpState(plain, Route{Path: "/" + strings.Repeat("p", 127), Pool: "app"})},
		{"method-without-bit", httpState(Route{Path: "/", Methods: []string{"PROPFIND"}, Pool: "app"})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, objs := newProgrammer(t)
			if !tc.state.Services[0].SlowpathOnly {
				if _, err := serviceRoutes(tc.state.Services[0]); !errors.Is(err, ErrUnroutable) {
					t.Errorf("serviceRoutes error = %v, want ErrUnroutable", err)
				}
			}
			if err := p.Apply(tc.state); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if svc := lookupService(t, objs); svc.Flags != xdp.ServiceHTTP|xdp.ServiceSlowpath {
				t.Errorf("flags %#x, want HTTP|slowpath", svc.Flags)
			}
			if n := routeCount(t, objs); n != 0 {
				t.Errorf("%d routes written for a slow-path-only service", n)
			}
			// The pool stays programmed: the slow path picks its backends
			// with the same Maglev tables.
			var pool xdp.Pool
			if err := objs.Pools.Lookup(p.poolIDs.byKey["app"], &pool); err != nil || pool.TableSize != 13 {
				t.Errorf("pool entry %+v (%v), want its table", pool, err)
			}

			// Routes XDP can express: the flag goes, the routes come.
			fixed := httpState(plain)
			if _, err := serviceRoutes(fixed.Services[0]); err != nil {
				t.Fatalf("serviceRoutes(%+v) error = %v", fixed.Services[0], err)
			}
			if err := p.Apply(fixed); err != nil {
				t.Fatal(err)
			}
			if svc := lookupService(t, objs); svc.Flags != xdp.ServiceHTTP {
				t.Errorf("flags %#x after fixing the routes, want HTTP only", svc.Flags)
			}
			if n := routeCount(t, objs); n != 1 {
				t.Errorf("%d routes after fixing the routes, want 1", n)
			}
			// And back: the routes go again.
			if err := p.Apply(tc.state); err != nil {
				t.Fatal(err)
			}
			if n := routeCount(t, objs); n != 0 {
				t.Errorf("%d routes left after turning slow-path only", n)
			}
		})
	}
}

// TestApplyNewServiceStartsAtZero: a service that gets the id of a removed
// one starts with all its counters at zero, its slow-path reasons included.
func TestApplyNewServiceStartsAtZero(t *testing.T) {
	p, objs := newProgrammer(t)
	if err := p.Apply(state(be("10.0.1.11:80", 1))); err != nil {
		t.Fatal(err)
	}
	id := lookupService(t, objs).Id
	cpus := ebpf.MustPossibleCPU()
	ones := make([]uint64, cpus)
	for i := range ones {
		ones[i] = 1
	}
	counterKey := xdp.CounterIndex(id, xdp.CounterRxPackets)
	reasonKey := id*uint32(xdp.NumSlowpathReasons) + 1
	if err := objs.Counters.Put(counterKey, ones); err != nil {
		t.Fatal(err)
	}
	if err := objs.SlowpathCounters.Put(reasonKey, ones); err != nil {
		t.Fatal(err)
	}
	// Remove it, then add another service, which reuses the id.
	if err := p.Apply(State{Pools: state().Pools}); err != nil {
		t.Fatal(err)
	}
	next := state(be("10.0.1.11:80", 1))
	next.Services[0].Name = "other"
	if err := p.Apply(next); err != nil {
		t.Fatal(err)
	}
	if got := lookupService(t, objs).Id; got != id {
		t.Fatalf("the new service got id %d, not the freed %d: the test needs reuse", got, id)
	}
	for name, m := range map[string]struct {
		m   *ebpf.Map
		key uint32
	}{"counters": {objs.Counters, counterKey}, "slowpath_counters": {objs.SlowpathCounters, reasonKey}} {
		var perCPU []uint64
		if err := m.m.Lookup(m.key, &perCPU); err != nil {
			t.Fatal(err)
		}
		for _, v := range perCPU {
			if v != 0 {
				t.Errorf("%s of the reused id %d: %v, want zeros", name, id, perCPU)
				break
			}
		}
	}
}
