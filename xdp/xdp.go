// Package xdp holds RAUTA's XDP program and the Go view of its maps. The C
// source sits beside this file; the structs below are generated from it by
// bpf2go (`make generate`), so C and Go cannot drift apart.
package xdp

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Types shared with the BPF program. See bpf/include/types.h for what each
// field means; addresses and ports are in network byte order, as in packets.
type (
	FlowKey    = bpfFlowKey
	Flow       = bpfFlow
	ServiceKey = bpfServiceKey
	Service    = bpfService
	Backend    = bpfBackend
	Counter    = bpfCounter
)

// Flow directions and states, as the program writes them.
const (
	ToBackend = uint8(bpfFlowDirectionFLOW_TO_BACKEND)
	ToClient  = uint8(bpfFlowDirectionFLOW_TO_CLIENT)

	FlowOpen    = uint8(bpfFlowStateFLOW_OPEN)
	FlowClosing = uint8(bpfFlowStateFLOW_CLOSING)
	FlowClosed  = uint8(bpfFlowStateFLOW_CLOSED)
)

// Per-service counters. The counters map is indexed by
// serviceID*NumCounters + counter.
const (
	CounterRxPackets           = bpfCounterCOUNTER_RX_PACKETS
	CounterRxBytes             = bpfCounterCOUNTER_RX_BYTES
	CounterForwarded           = bpfCounterCOUNTER_FORWARDED
	CounterNewFlows            = bpfCounterCOUNTER_NEW_FLOWS
	CounterICMPForwarded       = bpfCounterCOUNTER_ICMP_FORWARDED
	CounterPassNotIPv4         = bpfCounterCOUNTER_PASS_NOT_IPV4
	CounterPassNotService      = bpfCounterCOUNTER_PASS_NOT_SERVICE
	CounterPassNoNeighbour     = bpfCounterCOUNTER_PASS_NO_NEIGHBOUR
	CounterPassNoRoute         = bpfCounterCOUNTER_PASS_NO_ROUTE
	CounterPassNotInDevmap     = bpfCounterCOUNTER_PASS_NOT_IN_DEVMAP
	CounterPassFragNeeded      = bpfCounterCOUNTER_PASS_FRAG_NEEDED
	CounterDropMalformed       = bpfCounterCOUNTER_DROP_MALFORMED
	CounterDropFragment        = bpfCounterCOUNTER_DROP_FRAGMENT
	CounterDropNoBackend       = bpfCounterCOUNTER_DROP_NO_BACKEND
	CounterDropICMPUnknownFlow = bpfCounterCOUNTER_DROP_ICMP_UNKNOWN_FLOW
	CounterDropTTLExceeded     = bpfCounterCOUNTER_DROP_TTL_EXCEEDED
	CounterDropSpoofedVIP      = bpfCounterCOUNTER_DROP_SPOOFED_VIP
	NumCounters                = int(bpfCounterCOUNTER_MAX)
)

// CounterIndex is the key of one service's counter in the counters map.
func CounterIndex(serviceID uint32, c Counter) uint32 {
	return serviceID*uint32(NumCounters) + uint32(c)
}

// Objects are the loaded program and maps.
type Objects struct {
	bpfObjects
}

// Spec returns the program's collection spec, for callers that need map
// sizes or want to load with options.
func Spec() (*ebpf.CollectionSpec, error) {
	return loadBpf()
}

// Load loads the program and creates its maps.
func Load(opts *ebpf.CollectionOptions) (*Objects, error) {
	var objs Objects
	if err := loadBpfObjects(&objs.bpfObjects, opts); err != nil {
		return nil, fmt.Errorf("load XDP program: %w", err)
	}
	return &objs, nil
}

// MapsByName lists every map with the name it has in the C source, which is
// also its pin name.
func (o *Objects) MapsByName() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		bpfMapBackends:     o.Backends,
		bpfMapCounters:     o.Counters,
		bpfMapFlows:        o.Flows,
		bpfMapMaglevTables: o.MaglevTables,
		bpfMapServices:     o.Services,
		bpfMapTxPorts:      o.TxPorts,
		bpfMapVips:         o.Vips,
	}
}

// Addr converts an IPv4 address to the form the maps hold: its four bytes
// in network order, read as a host-endian integer.
func Addr(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

// AddrFrom is the inverse of Addr.
func AddrFrom(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// Port converts a port to network byte order as the maps hold it.
func Port(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// PortFrom is the inverse of Port.
func PortFrom(v uint16) uint16 { return Port(v) }
