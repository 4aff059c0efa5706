// Package metrics exports the data path's counters to Prometheus. One
// collector reads the per-CPU counter map on every scrape, so nothing is
// copied on a timer and a scrape always sees the kernel's current totals.
package metrics

import (
	"log/slog"
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rauta-lb/rauta/percpu"
	"github.com/rauta-lb/rauta/xdp"
)

// Source is what the collector needs from the daemon: the live service
// names by counter index, and the flow table size from the last GC.
type Source interface {
	ServiceNames() map[uint32]string
	LiveFlows() int
}

// Collector implements prometheus.Collector over the counters map.
type Collector struct {
	counters *ebpf.Map
	source   Source
	log      *slog.Logger

	buildInfo *prometheus.Desc
	flows     *prometheus.Desc
	plain     map[xdp.Counter]*prometheus.Desc
	passed    *prometheus.Desc
	dropped   *prometheus.Desc
	reasons   map[xdp.Counter]counterReason

	slowpath     *ebpf.Map // nil: not exported
	slowpathDesc *prometheus.Desc
}

type counterReason struct {
	desc   *prometheus.Desc
	reason string
}

// NoService labels traffic that matched no service (passed or dropped
// before a service was known).
const NoService = ""

// New returns a collector for the counters map of a loaded program.
func New(counters *ebpf.Map, source Source, version string, log *slog.Logger) *Collector {
	svc := []string{"service"}
	withReason := []string{"service", "reason"}
	c := &Collector{
		counters: counters,
		source:   source,
		log:      log,
		buildInfo: prometheus.NewDesc("rauta_build_info", "Build information; the value is always 1.",
			nil, prometheus.Labels{"version": version, "goversion": runtime.Version()}),
		flows: prometheus.NewDesc("rauta_flows", "Entries in the flow table at the last garbage collection (one per direction of a connection).", nil, nil),
		plain: map[xdp.Counter]*prometheus.Desc{
			xdp.CounterRxPackets:           prometheus.NewDesc("rauta_xdp_rx_packets_total", "Packets of a service seen by XDP, both directions.", svc, nil),
			xdp.CounterRxBytes:             prometheus.NewDesc("rauta_xdp_rx_bytes_total", "Bytes of a service seen by XDP, both directions, Ethernet header included.", svc, nil),
			xdp.CounterForwarded:           prometheus.NewDesc("rauta_xdp_forwarded_packets_total", "Packets translated and transmitted by XDP.", svc, nil),
			xdp.CounterNewFlows:            prometheus.NewDesc("rauta_xdp_new_flows_total", "Flows given a backend by Maglev.", svc, nil),
			xdp.CounterICMPForwarded:       prometheus.NewDesc("rauta_xdp_icmp_translated_total", "ICMP errors about a service's flows, translated and forwarded.", svc, nil),
			xdp.CounterSYNCookiesSent:      prometheus.NewDesc("rauta_xdp_syn_cookies_sent_total", "SYN-ACKs with a SYN cookie sent for HTTP services.", svc, nil),
			xdp.CounterHandshakesCompleted: prometheus.NewDesc("rauta_xdp_handshakes_completed_total", "Bare ACKs with a valid cookie (handshakes XDP completed).", svc, nil),
			xdp.CounterBackendSYNs:         prometheus.NewDesc("rauta_xdp_backend_syns_total", "SYNs sent to backends for routed requests, retransmissions included.", svc, nil),
			xdp.CounterSpliced:             prometheus.NewDesc("rauta_xdp_spliced_total", "Backend SYN-ACKs answered with the stashed request (connections spliced).", svc, nil),
			xdp.CounterSplicedNoRoom:       prometheus.NewDesc("rauta_xdp_spliced_without_request_total", "Backend SYN-ACKs answered with a bare ACK: the frame had no room for the request, which the client's retransmission then carries.", svc, nil),
			xdp.CounterRebinds:             prometheus.NewDesc("rauta_xdp_rebinds_total", "Keep-alive requests that moved their connection to another pool's backend.", svc, nil),
			xdp.CounterResetUnroutable:     prometheus.NewDesc("rauta_xdp_reset_unroutable_total", "Connections reset because a later request could not be routed in XDP.", svc, nil),
			xdp.CounterBackendRetries:      prometheus.NewDesc("rauta_xdp_backend_retries_total", "Backends that refused a spliced connection's SYN (RST), the SYN then sent to the pool's next Maglev choice.", svc, nil),
			xdp.CounterSlowpath:            prometheus.NewDesc("rauta_xdp_slowpath_connections_total", "HTTP connections handed to the slow path (by reason: rauta_xdp_slowpath_reason_total).", svc, nil),
		},
		passed:  prometheus.NewDesc("rauta_xdp_passed_packets_total", "Packets handed to the kernel, by reason.", withReason, nil),
		dropped: prometheus.NewDesc("rauta_xdp_dropped_packets_total", "Packets dropped by XDP, by reason.", withReason, nil),
	}
	c.reasons = map[xdp.Counter]counterReason{
		xdp.CounterPassNotIPv4:         {c.passed, "not_ipv4"},
		xdp.CounterPassNotService:      {c.passed, "not_service"},
		xdp.CounterPassNoNeighbour:     {c.passed, "no_neighbour"},
		xdp.CounterPassNoRoute:         {c.passed, "no_route"},
		xdp.CounterPassNotInDevmap:     {c.passed, "egress_not_attached"},
		xdp.CounterPassFragNeeded:      {c.passed, "frag_needed"},
		xdp.CounterDropMalformed:       {c.dropped, "malformed"},
		xdp.CounterDropFragment:        {c.dropped, "fragment"},
		xdp.CounterDropNoBackend:       {c.dropped, "no_backend"},
		xdp.CounterDropICMPUnknownFlow: {c.dropped, "icmp_unknown_flow"},
		xdp.CounterDropTTLExceeded:     {c.dropped, "ttl_exceeded"},
		xdp.CounterDropSpoofedVIP:      {c.dropped, "spoofed_vip"},
		xdp.CounterDropBadCookie:       {c.dropped, "bad_cookie"},
		xdp.CounterDropHTTPState:       {c.dropped, "http_state"},
		xdp.CounterPassNoCookieKey:     {c.passed, "no_cookie_key"},
		xdp.CounterPassLocalSocket:     {c.passed, "local_socket"},
	}
	return c
}

// WithSlowpath also exports the per-reason counters of HTTP connections
// handed to the slow path, from the slowpath_counters map.
func (c *Collector) WithSlowpath(m *ebpf.Map) *Collector {
	c.slowpath = m
	c.slowpathDesc = prometheus.NewDesc("rauta_xdp_slowpath_reason_total",
		"HTTP connections handed to the slow path (or reset, for later requests), by reason.",
		[]string{"service", "reason"}, nil)
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.buildInfo
	ch <- c.flows
	ch <- c.passed
	ch <- c.dropped
	for _, d := range c.plain {
		ch <- d
	}
	if c.slowpathDesc != nil {
		ch <- c.slowpathDesc
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.buildInfo, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.flows, prometheus.GaugeValue, float64(c.source.LiveFlows()))

	names := map[uint32]string{0: NoService}
	maxID := uint32(0)
	for id, name := range c.source.ServiceNames() {
		names[id] = name
		maxID = max(maxID, id)
	}
	// One batched read per map and scrape, not one lookup per counter.
	counters, err := percpu.SumFirst(c.counters, int(maxID+1)*int(xdp.NumCounters))
	if err != nil {
		c.log.Warn("read counters", "error", err)
		return
	}
	var slowpath []uint64
	if c.slowpath != nil {
		if slowpath, err = percpu.SumFirst(c.slowpath, int(maxID+1)*xdp.NumSlowpathReasons); err != nil {
			c.log.Warn("read slow-path counters", "error", err)
		}
	}
	for id, name := range names {
		if slowpath != nil && id != 0 {
			c.collectSlowpath(ch, slowpath, id, name)
		}
		for counter := range xdp.NumCounters {
			i := int(xdp.CounterIndex(id, xdp.Counter(counter)))
			if i >= len(counters) {
				break // an id beyond the map: the loader refuses those
			}
			value := counters[i]
			if d, ok := c.plain[xdp.Counter(counter)]; ok {
				ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(value), name)
				continue
			}
			if r, ok := c.reasons[xdp.Counter(counter)]; ok {
				ch <- prometheus.MustNewConstMetric(r.desc, prometheus.CounterValue, float64(value), name, r.reason)
			}
		}
	}
}

// collectSlowpath emits every slow-path reason of one service, zeros
// included, so a rate() has its series from the first scrape on. values
// are the slow_path counters map's first keys, summed over CPUs.
func (c *Collector) collectSlowpath(ch chan<- prometheus.Metric, values []uint64, id uint32, name string) {
	for r := 1; r < xdp.NumSlowpathReasons; r++ {
		i := int(xdp.SlowpathIndex(id, xdp.SlowpathReason(r)))
		if i >= len(values) {
			return
		}
		ch <- prometheus.MustNewConstMetric(c.slowpathDesc, prometheus.CounterValue, float64(values[i]),
			name, xdp.SlowpathReasonName(xdp.SlowpathReason(r)))
	}
}
