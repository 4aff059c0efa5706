package flowcache

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/rauta-lb/rauta/xdp"
)

func newFlowMap(t *testing.T) *ebpf.Map { return newProgramMap(t, "flows", 64) }

// newProgramMap creates a small map of the XDP program's map name, closed
// at cleanup.
func newProgramMap(t *testing.T, name string, entries uint32) *ebpf.Map {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create BPF maps")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	spec, err := xdp.Spec()
	if err != nil {
		t.Fatal(err)
	}
	ms := spec.Maps[name].Copy()
	ms.MaxEntries = entries
	m, err := ebpf.NewMap(ms)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func key(proto uint8, src, dst string) xdp.FlowKey {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	return xdp.FlowKey{
		Saddr: xdp.Addr(s.Addr()), Sport: xdp.Port(s.Port()),
		Daddr: xdp.Addr(d.Addr()), Dport: xdp.Port(d.Port()),
		Proto: proto,
	}
}

func TestCollectRemovesIdleAndClosedFlows(t *testing.T) {
	m := newFlowMap(t)
	now := 1000 * time.Second
	timeouts := Timeouts{TCPIdle: 300 * time.Second, UDPIdle: 30 * time.Second, Closed: 10 * time.Second}
	seen := func(ago time.Duration) uint64 { return uint64(now - ago) }

	entries := []struct {
		key   xdp.FlowKey
		flow  xdp.Flow
		keeps bool
	}{
		{key(unix.IPPROTO_TCP, "10.0.2.2:1000", "10.0.0.100:80"), xdp.Flow{State: xdp.FlowOpen, LastSeenNs: seen(299 * time.Second)}, true},
		{key(unix.IPPROTO_TCP, "10.0.2.2:1001", "10.0.0.100:80"), xdp.Flow{State: xdp.FlowOpen, LastSeenNs: seen(301 * time.Second)}, false},
		{key(unix.IPPROTO_TCP, "10.0.2.2:1002", "10.0.0.100:80"), xdp.Flow{State: xdp.FlowClosing, LastSeenNs: seen(11 * time.Second)}, false},
		{key(unix.IPPROTO_TCP, "10.0.2.2:1003", "10.0.0.100:80"), xdp.Flow{State: xdp.FlowClosed, LastSeenNs: seen(9 * time.Second)}, true},
		{key(unix.IPPROTO_UDP, "10.0.2.2:1004", "10.0.0.100:53"), xdp.Flow{State: xdp.FlowOpen, LastSeenNs: seen(31 * time.Second)}, false},
		{key(unix.IPPROTO_UDP, "10.0.2.2:1005", "10.0.0.100:53"), xdp.Flow{State: xdp.FlowOpen, LastSeenNs: seen(29 * time.Second)}, true},
	}
	for _, e := range entries {
		if err := m.Put(e.key, e.flow); err != nil {
			t.Fatal(err)
		}
	}

	table := &Table{flows: m, now: func() time.Duration { return now }}
	stats, err := table.Collect(timeouts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Live != 3 || stats.Removed != 3 {
		t.Errorf("stats = %+v, want 3 live, 3 removed", stats)
	}
	for _, e := range entries {
		var f xdp.Flow
		err := m.Lookup(e.key, &f)
		if e.keeps && err != nil {
			t.Errorf("flow %+v was removed, want kept: %v", e.key, err)
		}
		if !e.keeps && err == nil {
			t.Errorf("flow %+v was kept, want removed", e.key)
		}
	}
}

func TestDumpIsReadable(t *testing.T) {
	m := newFlowMap(t)
	k := key(unix.IPPROTO_TCP, "10.0.2.2:40000", "10.0.0.100:80")
	f := xdp.Flow{
		NatAddr: xdp.Addr(netip.MustParseAddr("10.0.1.12")), NatPort: xdp.Port(8080),
		Direction: xdp.ToBackend, ServiceId: 3, BackendId: 7, LastSeenNs: uint64(5 * time.Second),
	}
	if err := m.Put(k, f); err != nil {
		t.Fatal(err)
	}
	table := &Table{flows: m, now: func() time.Duration { return 7 * time.Second }}
	got, err := table.Dump()
	if err != nil {
		t.Fatal(err)
	}
	want := Entry{
		Protocol:    unix.IPPROTO_TCP,
		Source:      netip.MustParseAddrPort("10.0.2.2:40000"),
		Destination: netip.MustParseAddrPort("10.0.0.100:80"),
		Translated:  netip.MustParseAddrPort("10.0.1.12:8080"),
		Direction:   xdp.ToBackend,
		ServiceID:   3,
		BackendID:   7,
		Idle:        2 * time.Second,
	}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("Dump() = %+v, want [%+v]", got, want)
	}
}

// More flows than one batch holds: every one is seen, the expired ones
// removed.
func TestCollectAcrossBatches(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create BPF maps")
	}
	spec, err := xdp.Spec()
	if err != nil {
		t.Fatal(err)
	}
	ms := spec.Maps["flows"].Copy()
	ms.MaxEntries = 3 * batchSize
	// One shared LRU list: with per-CPU lists a CPU owns only its share of
	// the entries and would evict inserts this test expects to find.
	ms.Flags &^= unix.BPF_F_NO_COMMON_LRU
	m, err := ebpf.NewMap(ms)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const n = 2*batchSize + 100
	now := time.Hour
	for i := range n {
		k := xdp.FlowKey{Saddr: uint32(i), Daddr: 1, Sport: 1, Dport: 80, Proto: unix.IPPROTO_TCP}
		seen := now - time.Second
		if i%2 == 0 {
			seen = now - 2*time.Minute
		}
		if err := m.Put(k, xdp.Flow{LastSeenNs: uint64(seen)}); err != nil {
			t.Fatal(err)
		}
	}
	table := &Table{flows: m, now: func() time.Duration { return now }}
	stats, err := table.Collect(Timeouts{TCPIdle: time.Minute, UDPIdle: time.Minute, Closed: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Live != n/2 || stats.Removed != n/2 {
		t.Fatalf("stats %+v, want %d live and %d removed", stats, n/2, n/2)
	}
	entries, err := table.Dump()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n/2 {
		t.Fatalf("%d entries left, want %d", len(entries), n/2)
	}
}

// TestStashGCRemovesLeftoversOnly: a stash whose connection has a flow
// stays; one without a flow survives the collection that first sees it (XDP
// writes the stash just before the flow) and goes on the next.
func TestStashGCRemovesLeftoversOnly(t *testing.T) {
	flows := newFlowMap(t)
	stash := newProgramMap(t, "stash", 16)
	live := key(6, "10.0.2.2:40000", "10.0.0.100:80")
	gone := key(6, "10.0.2.2:40001", "10.0.0.100:80")
	value := make([]byte, stash.ValueSize())
	for _, k := range []xdp.FlowKey{live, gone} {
		if err := stash.Put(k, value); err != nil {
			t.Fatal(err)
		}
	}
	if err := flows.Put(live, xdp.Flow{Direction: xdp.ToBackend}); err != nil {
		t.Fatal(err)
	}
	table := &Table{flows: flows, now: func() time.Duration { return 0 }}
	walk := func(live func(xdp.FlowKey)) error {
		_, err := table.Collect(DefaultTimeouts, live)
		return err
	}
	g := NewStashGC(stash)
	if n, err := g.Collect(walk); err != nil || n != 0 {
		t.Fatalf("first collection removed %d (%v), want 0: a stash may precede its flow", n, err)
	}
	if n, err := g.Collect(walk); err != nil || n != 1 {
		t.Fatalf("second collection removed %d (%v), want the leftover", n, err)
	}
	if err := stash.Lookup(gone, value); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("leftover stash still there: %v", err)
	}
	if err := stash.Lookup(live, value); err != nil {
		t.Errorf("the live connection's stash was removed: %v", err)
	}
}

// TestStashGCFollowsTheFlowWalk: a stash whose flow the same walk expires
// counts as flowless, and a failed walk deletes nothing.
func TestStashGCFollowsTheFlowWalk(t *testing.T) {
	flows := newFlowMap(t)
	stash := newProgramMap(t, "stash", 16)
	idle := key(6, "10.0.2.2:40002", "10.0.0.100:80")
	value := make([]byte, stash.ValueSize())
	if err := stash.Put(idle, value); err != nil {
		t.Fatal(err)
	}
	now := time.Hour
	if err := flows.Put(idle, xdp.Flow{Direction: xdp.ToBackend, LastSeenNs: uint64(now - 2*DefaultTimeouts.TCPIdle)}); err != nil {
		t.Fatal(err)
	}
	table := &Table{flows: flows, now: func() time.Duration { return now }}
	walk := func(live func(xdp.FlowKey)) error {
		_, err := table.Collect(DefaultTimeouts, live)
		return err
	}
	failed := errors.New("walk failed")
	fail := func(func(xdp.FlowKey)) error { return failed }

	g := NewStashGC(stash)
	if n, err := g.Collect(walk); err != nil || n != 0 {
		t.Fatalf("first collection removed %d (%v), want 0", n, err)
	}
	if n, err := g.Collect(fail); !errors.Is(err, failed) || n != 0 {
		t.Fatalf("collection over a failed walk removed %d (%v), want 0 and the walk's error", n, err)
	}
	if err := stash.Lookup(idle, value); err != nil {
		t.Fatalf("stash removed over a failed walk: %v", err)
	}
	if n, err := g.Collect(walk); err != nil || n != 1 {
		t.Fatalf("collection after the flow expired removed %d (%v), want 1", n, err)
	}
	if err := stash.Lookup(idle, value); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("stash of the expired flow still there: %v", err)
	}
}
