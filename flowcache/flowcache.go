// Package flowcache is the Go view of the data path's flow table: it lists
// flows in readable form and removes the ones that ended or went idle. The
// table is an LRU map, so the kernel evicts under pressure; the GC here keeps
// closed and idle connections from occupying it until then.
package flowcache

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/rauta-lb/rauta/xdp"
)

// Timeouts after which an entry that has seen no packet is removed.
type Timeouts struct {
	TCPIdle time.Duration // open TCP flows
	UDPIdle time.Duration
	Closed  time.Duration // TCP flows that saw a FIN or an RST
}

// DefaultTimeouts follow what conntrack users expect of a load balancer: a
// long idle time for TCP, short ones for UDP and closed connections.
var DefaultTimeouts = Timeouts{TCPIdle: 5 * time.Minute, UDPIdle: 30 * time.Second, Closed: 10 * time.Second}

// Entry is one direction of one connection.
type Entry struct {
	Protocol    uint8
	Source      netip.AddrPort
	Destination netip.AddrPort
	// Translated is the backend (ToBackend) or the VIP (ToClient) that the
	// packet's destination or source is rewritten to.
	Translated netip.AddrPort
	Direction  uint8
	State      uint8
	// Splice is the HTTP fast path's state of the connection
	// (xdp.SpliceNone for L4 flows).
	Splice    uint8
	ServiceID uint32
	BackendID uint32
	Idle      time.Duration
}

// Table reads and cleans one flow map.
type Table struct {
	flows *ebpf.Map
	now   func() time.Duration
}

// New wraps the flows map of a loaded program (or one opened from its pin).
func New(flows *ebpf.Map) *Table {
	return &Table{flows: flows, now: monotonicNow}
}

// monotonicNow reads the clock bpf_ktime_get_coarse_ns reads, so ages
// computed here match the data path's timestamps.
func monotonicNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// batchSize is how many entries one batch syscall moves. Walking a table
// of hundreds of thousands of flows one key at a time costs a second of CPU;
// in batches it is a few hundred syscalls.
const batchSize = 4096

// walk calls fn for every entry, reading the table in batches.
func (t *Table) walk(fn func(xdp.FlowKey, xdp.Flow)) error {
	keys := make([]xdp.FlowKey, batchSize)
	values := make([]xdp.Flow, batchSize)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := t.flows.BatchLookup(&cursor, keys, values, nil)
		for i := range n {
			fn(keys[i], values[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read flow table: %w", err)
		}
	}
}

// Dump returns every entry of the table.
func (t *Table) Dump() ([]Entry, error) {
	var entries []Entry
	now := t.now()
	err := t.walk(func(k xdp.FlowKey, v xdp.Flow) {
		entries = append(entries, entry(k, v, now))
	})
	return entries, err
}

// GCStats says what one collection saw and did.
type GCStats struct {
	Live    int
	Removed int
}

// Collect removes entries idle for longer than their timeout allows. If
// live is not nil, it is called with the key of every entry kept, so that
// others (StashGC) learn which connections are alive from this one walk.
func (t *Table) Collect(timeouts Timeouts, live func(xdp.FlowKey)) (GCStats, error) {
	var (
		expired []xdp.FlowKey
		stats   GCStats
	)
	now := t.now()
	err := t.walk(func(k xdp.FlowKey, v xdp.Flow) {
		if idle(v, now) > timeouts.For(k.Proto, v.State) {
			expired = append(expired, k)
			return
		}
		stats.Live++
		if live != nil {
			live(k)
		}
	})
	if err != nil {
		return stats, err
	}
	for len(expired) > 0 {
		chunk := expired[:min(len(expired), batchSize)]
		expired = expired[len(chunk):]
		n, err := t.flows.BatchDelete(chunk, nil)
		stats.Removed += n
		// An entry the LRU evicted meanwhile ends a batch early: delete
		// the rest one by one.
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			for _, k := range chunk[n:] {
				if err := t.flows.Delete(k); err == nil {
					stats.Removed++
				} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
					return stats, fmt.Errorf("delete flow: %w", err)
				}
			}
			continue
		}
		if err != nil {
			return stats, fmt.Errorf("delete flows: %w", err)
		}
	}
	return stats, nil
}

// For returns the timeout that applies to a flow of an IP protocol in a
// state.
func (t Timeouts) For(proto, state uint8) time.Duration {
	switch {
	case state != xdp.FlowOpen:
		return t.Closed
	case proto == unix.IPPROTO_UDP:
		return t.UDPIdle
	default:
		return t.TCPIdle
	}
}

func entry(k xdp.FlowKey, v xdp.Flow, now time.Duration) Entry {
	e := Entry{
		Protocol:    k.Proto,
		Source:      netip.AddrPortFrom(xdp.AddrFrom(k.Saddr), xdp.PortFrom(k.Sport)),
		Destination: netip.AddrPortFrom(xdp.AddrFrom(k.Daddr), xdp.PortFrom(k.Dport)),
		Translated:  netip.AddrPortFrom(xdp.AddrFrom(v.NatAddr), xdp.PortFrom(v.NatPort)),
		Direction:   v.Direction,
		State:       v.State,
		Splice:      v.Splice,
		ServiceID:   v.ServiceId,
		BackendID:   v.BackendId,
		Idle:        idle(v, now),
	}
	return e
}

// idle is how long v has not been seen at now (the GC asks per flow).
func idle(v xdp.Flow, now time.Duration) time.Duration {
	if seen := time.Duration(v.LastSeenNs); now > seen {
		return now - seen
	}
	return 0
}
