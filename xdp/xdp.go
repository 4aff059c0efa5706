// Package xdp holds RAUTA's XDP program and the Go view of its maps. The C
// source sits beside this file; the structs below are generated from it by
// bpf2go (`make generate`), so C and Go cannot drift apart.
package xdp

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
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

// Slow-path reasons: why a connection left the fast path. The
// slowpath_counters map is indexed by serviceID*NumSlowpathReasons + reason.
type SlowpathReason = bpfSlowpathReason

// NumSlowpathReasons bounds SlowpathReason.
const NumSlowpathReasons = int(bpfSlowpathReasonSLOW_MAX)

// slowpathReasonNames names each reason for metrics and logs.
var slowpathReasonNames = [...]string{
	bpfSlowpathReasonSLOW_NONE:        "none",
	bpfSlowpathReasonSLOW_NOT_HTTP:    "not_http",
	bpfSlowpathReasonSLOW_TLS:         "tls",
	bpfSlowpathReasonSLOW_H2C:         "h2c_preface",
	bpfSlowpathReasonSLOW_CONNECT:     "connect",
	bpfSlowpathReasonSLOW_TARGET_FORM: "target_form",
	bpfSlowpathReasonSLOW_UNSAFE_PATH: "unsafe_path",
	bpfSlowpathReasonSLOW_LONG_PATH:   "long_path",
	bpfSlowpathReasonSLOW_NO_HOST:     "no_host",
	bpfSlowpathReasonSLOW_BAD_HOST:    "bad_host",
	bpfSlowpathReasonSLOW_INCOMPLETE:  "incomplete",
	bpfSlowpathReasonSLOW_NO_ROUTE:    "no_route",
	bpfSlowpathReasonSLOW_METHOD:      "method",
	bpfSlowpathReasonSLOW_STASH_FULL:  "stash_full",
	bpfSlowpathReasonSLOW_SERVICE:     "service",
	bpfSlowpathReasonSLOW_BAD_LENGTH:  "bad_content_length",
	bpfSlowpathReasonSLOW_CHUNKED:     "chunked",
	bpfSlowpathReasonSLOW_PIPELINED:   "pipelined",
}

// SlowpathReasonName names a reason for metrics and logs; reason_N for one
// without a name.
func SlowpathReasonName(r SlowpathReason) string {
	if int(r) < len(slowpathReasonNames) && slowpathReasonNames[r] != "" {
		return slowpathReasonNames[r]
	}
	return fmt.Sprintf("reason_%d", r)
}

// Shared route and pool types of the HTTP fast path.
type (
	RouteKey = bpfRouteKey
	Route    = bpfRoute
	Pool     = bpfPool
)

// Service.Flags bits. ServiceHTTP flags an HTTP service; ServiceSlowpath,
// with it, sends every connection of the service to the slow path after the
// SYN-cookie handshake (no request is routed in XDP).
const (
	ServiceHTTP     = uint32(bpfServiceFlagsSERVICE_HTTP)
	ServiceSlowpath = uint32(bpfServiceFlagsSERVICE_SLOWPATH)
)

// Splice states of HTTP flows (Flow.Splice).
const (
	SpliceNone        = uint8(bpfSpliceStateSPLICE_NONE)
	SpliceSYNSent     = uint8(bpfSpliceStateSPLICE_SYN_SENT)
	SpliceEstablished = uint8(bpfSpliceStateSPLICE_ESTABLISHED)
	SpliceSlowpath    = uint8(bpfSpliceStateSPLICE_SLOWPATH)
	SpliceOrphan      = uint8(bpfSpliceStateSPLICE_ORPHAN)
)

// SpliceNames names the splice states, as `rauta flows` prints them ("-"
// for the L4 flows, which have none); see Name.
var SpliceNames = [...]string{
	SpliceNone:        "-",
	SpliceSYNSent:     "backend-syn-sent",
	SpliceEstablished: "spliced",
	SpliceSlowpath:    "slow-path",
	SpliceOrphan:      "orphan",
}

// How a spliced flow reads the client's bytes after the current request
// (Flow.Framing): the next request at Flow.ReqNext; after a request that
// asked for an upgrade, whatever is not a request there switches the flow
// to opaque, where nothing is parsed any more.
const (
	FramingHTTP    = uint8(bpfHttpFramingFRAMING_HTTP)
	FramingUpgrade = uint8(bpfHttpFramingFRAMING_UPGRADE)
	FramingOpaque  = uint8(bpfHttpFramingFRAMING_OPAQUE)
)

// Method bits of Route.Methods.
var methodBits = map[string]uint32{
	"GET": uint32(bpfHttpMethodHTTP_GET), "HEAD": uint32(bpfHttpMethodHTTP_HEAD),
	"POST": uint32(bpfHttpMethodHTTP_POST), "PUT": uint32(bpfHttpMethodHTTP_PUT),
	"DELETE": uint32(bpfHttpMethodHTTP_DELETE), "PATCH": uint32(bpfHttpMethodHTTP_PATCH),
	"OPTIONS": uint32(bpfHttpMethodHTTP_OPTIONS), "TRACE": uint32(bpfHttpMethodHTTP_TRACE),
}

// MethodBit returns the bit of an (uppercase) method, or 0 for one XDP does
// not route.
func MethodBit(method string) uint32 { return methodBits[method] }

// Flow directions and states, as the program writes them.
const (
	ToBackend = uint8(bpfFlowDirectionFLOW_TO_BACKEND)
	ToClient  = uint8(bpfFlowDirectionFLOW_TO_CLIENT)

	FlowOpen    = uint8(bpfFlowStateFLOW_OPEN)
	FlowClosing = uint8(bpfFlowStateFLOW_CLOSING)
	FlowClosed  = uint8(bpfFlowStateFLOW_CLOSED)
)

// Names of flow protocols, directions and states; see Name.
var (
	ProtoNames     = [...]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp"}
	DirectionNames = [...]string{ToBackend: "to-backend", ToClient: "to-client"}
	FlowStateNames = [...]string{FlowOpen: "open", FlowClosing: "closing", FlowClosed: "closed"}
)

// Name returns names[v], or v as a number when names has none for it:
// Name(ProtoNames[:], 6) is "tcp", Name(ProtoNames[:], 47) "47".
func Name(names []string, v uint8) string {
	if int(v) < len(names) && names[v] != "" {
		return names[v]
	}
	return strconv.Itoa(int(v))
}

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
	CounterSYNCookiesSent      = bpfCounterCOUNTER_SYN_COOKIES_SENT
	CounterHandshakesCompleted = bpfCounterCOUNTER_HANDSHAKES_COMPLETED
	CounterDropBadCookie       = bpfCounterCOUNTER_DROP_BAD_COOKIE
	CounterPassNoCookieKey     = bpfCounterCOUNTER_PASS_NO_COOKIE_KEY
	CounterPassLocalSocket     = bpfCounterCOUNTER_PASS_LOCAL_SOCKET
	CounterBackendSYNs         = bpfCounterCOUNTER_BACKEND_SYNS
	CounterSpliced             = bpfCounterCOUNTER_SPLICED
	CounterSplicedNoRoom       = bpfCounterCOUNTER_SPLICED_NO_ROOM
	CounterSlowpath            = bpfCounterCOUNTER_SLOWPATH
	CounterDropHTTPState       = bpfCounterCOUNTER_DROP_HTTP_STATE
	CounterRebinds             = bpfCounterCOUNTER_REBINDS
	CounterResetUnroutable     = bpfCounterCOUNTER_RESET_UNROUTABLE
	CounterBackendRetries      = bpfCounterCOUNTER_BACKEND_RETRIES
	NumCounters                = int(bpfCounterCOUNTER_MAX)
)

// CounterIndex is the key of one service's counter in the counters map.
func CounterIndex(serviceID uint32, c Counter) uint32 {
	return serviceID*uint32(NumCounters) + uint32(c)
}

// SlowpathIndex is the key of one service's reason in slowpath_counters.
func SlowpathIndex(serviceID uint32, r SlowpathReason) uint32 {
	return serviceID*uint32(NumSlowpathReasons) + uint32(r)
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

// MapsByName lists the maps other processes read (bpftool, the slow path)
// with the name they have in the C source, which is also their pin name.
// Per-CPU scratch buffers are left out: they hold nothing between packets.
func (o *Objects) MapsByName() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		bpfMapBackends:         o.Backends,
		bpfMapCounters:         o.Counters,
		bpfMapFlows:            o.Flows,
		bpfMapMaglevTables:     o.MaglevTables,
		bpfMapServices:         o.Services,
		bpfMapTxPorts:          o.TxPorts,
		bpfMapVips:             o.Vips,
		bpfMapRoutes:           o.Routes,
		bpfMapPools:            o.Pools,
		bpfMapStash:            o.Stash,
		bpfMapSyncookieKeys:    o.SyncookieKeys,
		bpfMapSyncookieCurrent: o.SyncookieCurrent,
		bpfMapSlowpathCounters: o.SlowpathCounters,
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
