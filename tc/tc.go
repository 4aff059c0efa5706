// Package tc holds the TC-ingress program that hands connections XDP
// answered with a SYN cookie, but could not route, to the slow-path proxy
// (DESIGN §7): it creates the kernel socket for a handshake the kernel never
// saw, with bpf_sk_assign_tcp_reqsk (Linux 6.9 or later).
//
// The program shares the XDP program's flow table and SYN-cookie keys; Load
// takes them from the loaded XDP objects, so both programs see one state.
package tc

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/rauta-lb/rauta/percpu"
)

// SharedMaps are the XDP program's maps the handoff reads.
type SharedMaps struct {
	Flows            *ebpf.Map
	SyncookieKeys    *ebpf.Map
	SyncookieCurrent *ebpf.Map
}

// Objects is the loaded handoff program and its own counters.
type Objects struct {
	bpfObjects
}

// Load loads the program onto the XDP program's maps, which must all be
// loaded. On a kernel without bpf_sk_assign_tcp_reqsk (before Linux 6.9,
// or without BTF) the error wraps ebpf.ErrNotSupported.
func Load(shared SharedMaps) (*Objects, error) {
	var objs Objects
	err := loadBpfObjects(&objs.bpfObjects, &ebpf.CollectionOptions{
		MapReplacements: map[string]*ebpf.Map{
			bpfMapFlows:            shared.Flows,
			bpfMapSyncookieKeys:    shared.SyncookieKeys,
			bpfMapSyncookieCurrent: shared.SyncookieCurrent,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load TC handoff (needs Linux 6.9+ for bpf_sk_assign_tcp_reqsk): %w", err)
	}
	return &objs, nil
}

// Attach attaches the program at TCX ingress of an interface. It runs after
// XDP, on the segments XDP passes up.
func (o *Objects) Attach(ifindex int) (link.Link, error) {
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   o.RautaHandoff,
		Attach:    ebpf.AttachTCXIngress,
	})
	if err != nil {
		return nil, fmt.Errorf("attach TC handoff to ifindex %d: %w", ifindex, err)
	}
	return l, nil
}

// Counter names, as exported in metrics.
var counterNames = [...]string{
	bpfHandoffCounterHANDOFF_ASSIGNED:    "assigned",
	bpfHandoffCounterHANDOFF_NO_LISTENER: "no_listener",
	bpfHandoffCounterHANDOFF_BAD_COOKIE:  "bad_cookie",
	bpfHandoffCounterHANDOFF_FAILED:      "failed",
}

// Counters returns what the handoff did, summed over CPUs, by outcome:
// assigned, no_listener, bad_cookie, failed.
func (o *Objects) Counters() (map[string]uint64, error) {
	sums, err := percpu.SumFirst(o.HandoffCounters, len(counterNames))
	if err != nil {
		return nil, fmt.Errorf("handoff counters: %w", err)
	}
	if len(sums) < len(counterNames) {
		return nil, fmt.Errorf("handoff counters: read %d of %d", len(sums), len(counterNames))
	}
	out := make(map[string]uint64, len(counterNames))
	for i, name := range counterNames {
		out[name] = sums[i]
	}
	return out, nil
}
