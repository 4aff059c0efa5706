package loader

import (
	"net/netip"
	"os"
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
