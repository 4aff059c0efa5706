package xdp_test

// The program tests run rauta_xdp through BPF_PROG_TEST_RUN inside a private
// network namespace that looks like a two-armed load balancer:
//
//	client 10.0.2.2 ── eth1 10.0.2.1/24 ┐
//	                                     LB (VIP 10.0.0.100/32 on lo)
//	backends 10.0.1.11-.13, 10.0.1.50 ── eth2 10.0.1.1/24 ┘
//	10.0.3.11 ── eth3 10.0.3.1/24 (not in tx_ports)
//
// bpf_fib_lookup resolves next hops against the namespace's routes and
// permanent neighbour entries, so the MACs a forwarded frame carries are
// known in advance. The namespace is unnamed and owned by one goroutine
// locked to its OS thread (tools/nsworker): every netlink call, devmap update and
// test run happens on that thread, and the namespace disappears when the
// worker closes its handle and leaves.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netlink"

	"github.com/rauta-lb/rauta/loader"
	"github.com/rauta-lb/rauta/maglev"
	"github.com/rauta-lb/rauta/percpu"
	"github.com/rauta-lb/rauta/tools/nsworker"
	"github.com/rauta-lb/rauta/xdp"
)

// XDP verdicts.
const (
	xdpAborted  = 0
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

func verdictName(v uint32) string {
	switch v {
	case xdpAborted:
		return "XDP_ABORTED"
	case xdpDrop:
		return "XDP_DROP"
	case xdpPass:
		return "XDP_PASS"
	case xdpTX:
		return "XDP_TX"
	case xdpRedirect:
		return "XDP_REDIRECT"
	}
	return fmt.Sprintf("verdict(%d)", v)
}

// Addresses and MACs of the test topology.
var (
	vip        = netip.MustParseAddr("10.0.0.100")
	client     = netip.MustParseAddr("10.0.2.2")
	clientGW   = netip.MustParseAddr("10.0.2.254") // a router on the client side, no neighbour entry needed
	backend1   = netip.MustParseAddr("10.0.1.11")
	backend2   = netip.MustParseAddr("10.0.1.12")
	backend3   = netip.MustParseAddr("10.0.1.13")
	backend4   = netip.MustParseAddr("10.0.1.14") // on eth2's subnet but without a neighbour entry
	localHost  = netip.MustParseAddr("10.0.1.50") // a client on the backend side (hairpin, XDP_TX)
	eth3Host   = netip.MustParseAddr("10.0.3.11") // behind eth3, which is not in tx_ports
	unroutable = netip.MustParseAddr("192.0.2.1") // TEST-NET-1: no route in the namespace
	otherHost  = netip.MustParseAddr("10.0.1.99") // some non-VIP destination

	eth1MAC = mustMAC("02:00:00:00:01:01")
	eth2MAC = mustMAC("02:00:00:00:02:01")
	eth3MAC = mustMAC("02:00:00:00:03:01")

	neighbours = map[netip.Addr]net.HardwareAddr{
		client:    mustMAC("02:c1:00:00:02:02"),
		backend1:  mustMAC("02:be:00:00:01:11"),
		backend2:  mustMAC("02:be:00:00:01:12"),
		backend3:  mustMAC("02:be:00:00:01:13"),
		localHost: mustMAC("02:c1:00:00:01:50"),
		eth3Host:  mustMAC("02:be:00:00:03:11"),
	}
	clientMAC  = neighbours[client]
	gatewayMAC = mustMAC("02:9a:00:00:02:fe") // clientGW's MAC, as a source only
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func macOf(a netip.Addr) net.HardwareAddr {
	m, ok := neighbours[a]
	if !ok {
		panic("no neighbour MAC for " + a.String())
	}
	return m
}

// The configuration every test starts from.
const (
	webPort  = 80
	dnsPort  = 53
	webBPort = 8080
	dnsBPort = 5353
	// Small prime tables keep Apply fast; the program only cares about the
	// size the service entry names.
	tableSize = 251
)

func webPool(weights ...uint32) loader.Pool {
	if len(weights) == 0 {
		weights = []uint32{1, 1, 1}
	}
	p := loader.Pool{Name: "web", MaglevSize: tableSize}
	for i, a := range []netip.Addr{backend1, backend2, backend3}[:len(weights)] {
		p.Backends = append(p.Backends, loader.Backend{Address: netip.AddrPortFrom(a, webBPort), Weight: weights[i]})
	}
	return p
}

func dnsPool() loader.Pool {
	return loader.Pool{Name: "dns", MaglevSize: tableSize, Backends: []loader.Backend{
		{Address: netip.AddrPortFrom(backend1, dnsBPort), Weight: 1},
		{Address: netip.AddrPortFrom(backend2, dnsBPort), Weight: 1},
	}}
}

func state(web, dns loader.Pool) loader.State {
	return loader.State{
		Services: []loader.Service{
			{Name: "web", VIP: vip, Port: webPort, Protocol: loader.ProtoTCP, Pool: web.Name},
			{Name: "dns", VIP: vip, Port: dnsPort, Protocol: loader.ProtoUDP, Pool: dns.Name},
		},
		Pools: []loader.Pool{web, dns},
	}
}

func defaultState() loader.State { return state(webPool(), dnsPool()) }

// iface is one interface of the test namespace.
type iface struct {
	name  string
	index int
	mac   net.HardwareAddr
}

// env is a loaded program with its maps programmed, in its namespace.
type env struct {
	w          *nsworker.Worker
	objs       *xdp.Objects
	prog       *loader.Programmer
	eth1, eth2 iface // client side, backend side; both in tx_ports
	eth3       iface // not in tx_ports
}

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (BPF, network namespaces)")
	}
}

// newEnv builds the namespace, loads the program and applies defaultState.
// Everything is released by tb.Cleanup.
func newEnv(tb testing.TB) *env {
	tb.Helper()
	requireRoot(tb)
	if err := rlimit.RemoveMemlock(); err != nil {
		tb.Fatalf("remove memlock: %v", err)
	}
	w, err := nsworker.Start()
	if err != nil {
		tb.Fatal(err)
	}
	e := &env{w: w}
	tb.Cleanup(func() {
		if e.objs != nil {
			e.objs.Close()
		}
		w.Stop()
	})
	if err := w.Do(e.buildTopology); err != nil {
		tb.Fatalf("build test topology: %v", err)
	}
	e.objs, err = xdp.Load(nil)
	if err != nil {
		tb.Fatalf("load: %+v", err)
	}
	e.prog, err = loader.NewProgrammer(e.objs)
	if err != nil {
		tb.Fatalf("programmer: %v", err)
	}
	e.apply(tb, defaultState())
	// As loader.Attach does: the interfaces XDP runs on are the redirect
	// targets. The devmap resolves ifindexes in the caller's namespace.
	if err := w.Do(func() error {
		for _, i := range []iface{e.eth1, e.eth2} {
			if err := e.objs.TxPorts.Put(uint32(i.index), uint32(i.index)); err != nil {
				return fmt.Errorf("tx_ports %s: %w", i.name, err)
			}
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return e
}

func (e *env) buildTopology() error {
	h, err := netlink.NewHandleAt(e.w.NS)
	if err != nil {
		return err
	}
	defer h.Close()

	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := h.LinkSetUp(lo); err != nil {
		return err
	}
	if err := h.AddrAdd(lo, &netlink.Addr{IPNet: prefix(vip, 32)}); err != nil {
		return fmt.Errorf("VIP on lo: %w", err)
	}

	mk := func(name string, mac net.HardwareAddr, addr netip.Addr, bits int) (iface, error) {
		veth := &netlink.Veth{
			LinkAttrs:        netlink.LinkAttrs{Name: name, HardwareAddr: mac},
			PeerName:         name + "p",
			PeerHardwareAddr: peerMAC(mac),
		}
		if err := h.LinkAdd(veth); err != nil {
			return iface{}, fmt.Errorf("add %s: %w", name, err)
		}
		for _, n := range []string{name, name + "p"} {
			l, err := h.LinkByName(n)
			if err != nil {
				return iface{}, err
			}
			if err := h.LinkSetUp(l); err != nil {
				return iface{}, fmt.Errorf("up %s: %w", n, err)
			}
		}
		l, err := h.LinkByName(name)
		if err != nil {
			return iface{}, err
		}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: prefix(addr, bits)}); err != nil {
			return iface{}, fmt.Errorf("address on %s: %w", name, err)
		}
		return iface{name: name, index: l.Attrs().Index, mac: l.Attrs().HardwareAddr}, nil
	}
	if e.eth1, err = mk("eth1", eth1MAC, netip.MustParseAddr("10.0.2.1"), 24); err != nil {
		return err
	}
	if e.eth2, err = mk("eth2", eth2MAC, netip.MustParseAddr("10.0.1.1"), 24); err != nil {
		return err
	}
	if e.eth3, err = mk("eth3", eth3MAC, netip.MustParseAddr("10.0.3.1"), 24); err != nil {
		return err
	}
	for addr, mac := range neighbours {
		link := e.eth2.index
		switch {
		case addr == client:
			link = e.eth1.index
		case addr == eth3Host:
			link = e.eth3.index
		}
		if err := h.NeighAdd(&netlink.Neigh{
			LinkIndex:    link,
			Family:       netlink.FAMILY_V4,
			State:        netlink.NUD_PERMANENT,
			IP:           net.IP(addr.AsSlice()),
			HardwareAddr: mac,
		}); err != nil {
			return fmt.Errorf("neighbour %s: %w", addr, err)
		}
	}
	// bpf_fib_lookup refuses to forward for an ingress device without
	// forwarding. /proc/sys/net resolves to the calling thread's namespace.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable forwarding: %w", err)
	}
	return nil
}

// peerMAC is the MAC of the far end of a test veth: the near end's with
// the last byte 0x02.
func peerMAC(m net.HardwareAddr) net.HardwareAddr {
	p := slices.Clone(m)
	p[len(p)-1] = 0x02
	return p
}

func prefix(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, 32)}
}

// setMTU changes the MTU of one of the namespace's interfaces.
func (e *env) setMTU(tb testing.TB, i iface, mtu int) {
	tb.Helper()
	if err := e.w.Do(func() error {
		h, err := netlink.NewHandleAt(e.w.NS)
		if err != nil {
			return err
		}
		defer h.Close()
		l, err := h.LinkByIndex(i.index)
		if err != nil {
			return err
		}
		return h.LinkSetMTU(l, mtu)
	}); err != nil {
		tb.Fatalf("set MTU of %s: %v", i.name, err)
	}
}

func (e *env) apply(tb testing.TB, s loader.State) {
	tb.Helper()
	if err := e.prog.Apply(s); err != nil {
		tb.Fatalf("apply: %v", err)
	}
}

// serviceID returns the id (counter index) the programmer gave a service.
func (e *env) serviceID(tb testing.TB, name string) uint32 {
	tb.Helper()
	for id, n := range e.prog.ServiceNames() {
		if n == name {
			return id
		}
	}
	tb.Fatalf("no service %q in %v", name, e.prog.ServiceNames())
	return 0
}

// xdpMd is struct xdp_md as BPF_PROG_TEST_RUN takes it for the context:
// data and data_end are offsets into the input (data_meta must be 0; data
// above 0 turns the first data bytes into metadata), the ingress ifindex
// must be a device of the caller's namespace and egress_ifindex must be 0.
type xdpMd struct {
	Data           uint32
	DataEnd        uint32
	DataMeta       uint32
	IngressIfindex uint32
	RxQueueIndex   uint32
	EgressIfindex  uint32
}

// ethHlen is the shortest input BPF_PROG_TEST_RUN accepts: shorter data is
// refused with EINVAL, also when metadata (xdp_md.data > 0) would leave
// fewer bytes for the packet, so the program can never be shown a frame
// shorter than an Ethernet header this way (nor does a driver deliver one).
const ethHlen = 14

// runErr runs the program once on frame, received on the interface with
// index ingress, and returns the verdict and the frame as the program left
// it.
func (e *env) runErr(frame []byte, ingress int) (uint32, []byte, error) {
	ctx := &xdpMd{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ingress)}
	out := make([]byte, len(frame)+256)
	var verdict uint32
	err := e.w.Do(func() error {
		opts := ebpf.RunOptions{Data: frame, DataOut: out, Context: ctx}
		var err error
		verdict, err = e.objs.RautaXdp.Run(&opts)
		out = opts.DataOut
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	return verdict, out, nil
}

func (e *env) run(tb testing.TB, frame []byte, in iface) (uint32, []byte) {
	tb.Helper()
	v, out, err := e.runErr(frame, in.index)
	if err != nil {
		tb.Fatalf("test run: %v", err)
	}
	return v, out
}

// expect runs frame and fails unless the verdict is want; it returns the
// output frame.
func (e *env) expect(tb testing.TB, frame []byte, in iface, want uint32) []byte {
	tb.Helper()
	v, out := e.run(tb, frame, in)
	if v != want {
		tb.Fatalf("verdict %s, want %s", verdictName(v), verdictName(want))
	}
	return out
}

// counter sums one counter over all CPUs.
func (e *env) counter(tb testing.TB, id uint32, c xdp.Counter) uint64 {
	tb.Helper()
	sum, err := percpu.Sum(e.objs.Counters, xdp.CounterIndex(id, c))
	if err != nil {
		tb.Fatalf("counter %d/%d: %v", id, c, err)
	}
	return sum
}

// counters snapshots all counters of the given ids.
func (e *env) counters(tb testing.TB, ids ...uint32) map[[2]uint32]uint64 {
	tb.Helper()
	m := map[[2]uint32]uint64{}
	for _, id := range ids {
		for c := range xdp.NumCounters {
			m[[2]uint32{id, uint32(c)}] = e.counter(tb, id, xdp.Counter(c))
		}
	}
	return m
}

// counterNames names every counter in failure messages; TestCounterNames
// keeps it complete when counters are added.
var counterNames = map[xdp.Counter]string{
	xdp.CounterRxPackets: "rx_packets", xdp.CounterRxBytes: "rx_bytes", xdp.CounterForwarded: "forwarded",
	xdp.CounterNewFlows: "new_flows", xdp.CounterICMPForwarded: "icmp_forwarded",
	xdp.CounterPassNotIPv4: "pass_not_ipv4", xdp.CounterPassNotService: "pass_not_service",
	xdp.CounterPassNoNeighbour: "pass_no_neighbour", xdp.CounterPassNoRoute: "pass_no_route",
	xdp.CounterPassNotInDevmap: "pass_not_in_devmap", xdp.CounterPassFragNeeded: "pass_frag_needed",
	xdp.CounterDropMalformed: "drop_malformed", xdp.CounterDropFragment: "drop_fragment",
	xdp.CounterDropNoBackend: "drop_no_backend", xdp.CounterDropICMPUnknownFlow: "drop_icmp_unknown_flow",
	xdp.CounterDropTTLExceeded: "drop_ttl_exceeded", xdp.CounterDropSpoofedVIP: "drop_spoofed_vip",
	xdp.CounterSYNCookiesSent: "syn_cookies_sent", xdp.CounterHandshakesCompleted: "handshakes_completed",
	xdp.CounterDropBadCookie: "drop_bad_cookie", xdp.CounterPassNoCookieKey: "pass_no_cookie_key", xdp.CounterPassLocalSocket: "pass_local_socket",
	xdp.CounterBackendSYNs: "backend_syns", xdp.CounterSpliced: "spliced", xdp.CounterSplicedNoRoom: "spliced_no_room",
	xdp.CounterSlowpath: "slowpath", xdp.CounterDropHTTPState: "drop_http_state",
	xdp.CounterRebinds: "rebinds", xdp.CounterResetUnroutable: "reset_unroutable",
	xdp.CounterBackendRetries: "backend_retries",
}

// delta is a set of expected counter increments: {service id, counter} → n.
type delta map[[2]uint32]uint64

func d(id uint32, c xdp.Counter) [2]uint32 { return [2]uint32{id, uint32(c)} }

// expectCounters checks that between before and now exactly the counters in
// want moved, by the amounts given.
func (e *env) expectCounters(tb testing.TB, before map[[2]uint32]uint64, want delta) {
	tb.Helper()
	var ids []uint32
	for k := range before {
		if !slices.Contains(ids, k[0]) {
			ids = append(ids, k[0])
		}
	}
	now := e.counters(tb, ids...)
	var errs []string
	for k, v := range now {
		if got := v - before[k]; got != want[k] {
			errs = append(errs, fmt.Sprintf("service %d %s: +%d, want +%d", k[0], counterNames[xdp.Counter(k[1])], got, want[k]))
		}
	}
	for k := range want {
		if _, ok := now[k]; !ok {
			errs = append(errs, fmt.Sprintf("service %d counter %d not snapshotted", k[0], k[1]))
		}
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		tb.Errorf("counters:\n  %s", strings.Join(errs, "\n  "))
	}
}

// flowKey is the key of the packet src → dst.
func flowKey(proto uint8, src, dst netip.AddrPort) xdp.FlowKey {
	return xdp.FlowKey{
		Saddr: xdp.Addr(src.Addr()), Daddr: xdp.Addr(dst.Addr()),
		Sport: xdp.Port(src.Port()), Dport: xdp.Port(dst.Port()),
		Proto: proto,
	}
}

func (e *env) flow(tb testing.TB, k xdp.FlowKey) (xdp.Flow, bool) {
	tb.Helper()
	var f xdp.Flow
	err := e.objs.Flows.Lookup(&k, &f)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return f, false
	}
	if err != nil {
		tb.Fatalf("flow lookup: %v", err)
	}
	return f, true
}

// flowHash mirrors flow_hash in bpf/include/hash.h.
func flowHash(k xdp.FlowKey) uint32 {
	h := uint64(k.Saddr)<<32 | uint64(k.Daddr)
	h ^= (uint64(k.Sport)<<32 | uint64(k.Dport)<<16 | uint64(k.Proto)) * 0x9e3779b97f4a7c15
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return uint32(h)
}

// chosen predicts the backend Maglev gives a new flow with key k, from the
// pool as the programmer builds its table. ok is false for a pool without
// weight.
func chosen(tb testing.TB, pool loader.Pool, k xdp.FlowKey) (netip.AddrPort, bool) {
	tb.Helper()
	weighted := make([]maglev.Backend, len(pool.Backends))
	for i, b := range pool.Backends {
		weighted[i] = maglev.Backend{Name: b.Address.String(), Weight: b.Weight}
	}
	owners, err := maglev.Table(weighted, pool.MaglevSize)
	if errors.Is(err, maglev.ErrNoBackends) {
		return netip.AddrPort{}, false
	}
	if err != nil {
		tb.Fatalf("maglev: %v", err)
	}
	return pool.Backends[owners[flowHash(k)%pool.MaglevSize]].Address, true
}

// ---- frames ----

type tcpFlags struct{ SYN, ACK, FIN, RST, PSH bool }

var (
	syn    = tcpFlags{SYN: true}
	synAck = tcpFlags{SYN: true, ACK: true}
	ack    = tcpFlags{ACK: true}
	rst    = tcpFlags{RST: true, ACK: true}
	fin    = tcpFlags{FIN: true, ACK: true}
)

// pkt describes an Ethernet/IPv4/TCP or UDP frame. Every field that the
// program must leave alone has a fixed, non-trivial value, so comparing a
// whole output frame with the expected one shows any stray write.
type pkt struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       netip.AddrPort
	proto          uint8
	ttl            uint8
	tos            uint8
	id             uint16
	fragFlags      layers.IPv4Flag
	fragOffset     uint16
	ipOptions      []layers.IPv4Option
	flags          tcpFlags // TCP
	seq, ack       uint32   // TCP
	payload        []byte
	udpNoChecksum  bool // send UDP with checksum 0
}

func tcpPkt(srcMAC, dstMAC net.HardwareAddr, src, dst netip.AddrPort, flags tcpFlags) pkt {
	p := pkt{
		srcMAC: srcMAC, dstMAC: dstMAC, src: src, dst: dst, proto: loader.ProtoTCP,
		ttl: 64, tos: 0x10, id: 0x1234, fragFlags: layers.IPv4DontFragment,
		flags: flags, seq: 0x01020304,
	}
	if flags.ACK {
		p.ack = 0xa0b0c0d0
	}
	if !flags.SYN && !flags.RST {
		p.payload = []byte("GET / HTTP/1.1\r\nHost: rauta\r\n\r\n")
	}
	return p
}

func udpPkt(srcMAC, dstMAC net.HardwareAddr, src, dst netip.AddrPort, payload []byte) pkt {
	return pkt{
		srcMAC: srcMAC, dstMAC: dstMAC, src: src, dst: dst, proto: loader.ProtoUDP,
		ttl: 64, id: 0x4321, payload: payload,
	}
}

var serializeOpts = gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}

func (p pkt) ipLayer() *layers.IPv4 {
	return &layers.IPv4{
		Version: 4, IHL: 5, TOS: p.tos, Id: p.id, Flags: p.fragFlags, FragOffset: p.fragOffset,
		TTL: p.ttl, Protocol: layers.IPProtocol(p.proto), Options: p.ipOptions,
		SrcIP: net.IP(p.src.Addr().AsSlice()), DstIP: net.IP(p.dst.Addr().AsSlice()),
	}
}

// l4 returns the transport layer of p, with its checksum tied to ip.
func (p pkt) l4(ip *layers.IPv4) gopacket.SerializableLayer {
	switch p.proto {
	case loader.ProtoTCP:
		tcp := &layers.TCP{
			SrcPort: layers.TCPPort(p.src.Port()), DstPort: layers.TCPPort(p.dst.Port()),
			Seq: p.seq, Ack: p.ack, SYN: p.flags.SYN, ACK: p.flags.ACK, FIN: p.flags.FIN,
			RST: p.flags.RST, PSH: p.flags.PSH, Window: 64240,
		}
		if p.flags.SYN {
			tcp.Options = []layers.TCPOption{
				{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
				{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
				{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
			}
		}
		tcp.SetNetworkLayerForChecksum(ip)
		return tcp
	case loader.ProtoUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.src.Port()), DstPort: layers.UDPPort(p.dst.Port())}
		udp.SetNetworkLayerForChecksum(ip)
		return udp
	}
	panic("unsupported protocol")
}

// ipPacket serializes the IP packet of p (no Ethernet header).
func (p pkt) ipPacket() []byte {
	ip := p.ipLayer()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, serializeOpts, ip, p.l4(ip), gopacket.Payload(p.payload)); err != nil {
		panic(err)
	}
	b := slices.Clone(buf.Bytes())
	if p.proto == loader.ProtoUDP && p.udpNoChecksum {
		b[int(b[0]&0xf)*4+6], b[int(b[0]&0xf)*4+7] = 0, 0
	}
	return b
}

func (p pkt) frame() []byte {
	return ethFrame(p.srcMAC, p.dstMAC, layers.EthernetTypeIPv4, p.ipPacket())
}

func ethFrame(src, dst net.HardwareAddr, typ layers.EthernetType, payload []byte) []byte {
	b := make([]byte, ethHlen, ethHlen+len(payload))
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], uint16(typ))
	return append(b, payload...)
}

// icmpErr describes an ICMP error whose payload quotes the first 28 bytes
// of quoted's IP packet.
type icmpErr struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       netip.Addr
	ttl            uint8
	typ, code      uint8
	mtu            uint16 // next-hop MTU of a frag-needed
	quote          []byte
}

func quoteOf(p pkt) []byte {
	b := p.ipPacket()
	return b[:int(b[0]&0xf)*4+8]
}

func (m icmpErr) frame() []byte {
	ip := &layers.IPv4{
		Version: 4, IHL: 5, TOS: 0xc0, Id: 0x5555, TTL: m.ttl, Protocol: layers.IPProtocolICMPv4,
		SrcIP: net.IP(m.src.AsSlice()), DstIP: net.IP(m.dst.AsSlice()),
	}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(m.typ, m.code), Seq: m.mtu}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, serializeOpts, ip, icmp, gopacket.Payload(m.quote)); err != nil {
		panic(err)
	}
	return ethFrame(m.srcMAC, m.dstMAC, layers.EthernetTypeIPv4, buf.Bytes())
}

// rewriteQuote returns a copy of an IP quote with new addresses and ports
// and its IP header checksum recomputed, the quoted L4 checksum untouched:
// what the program must turn a quote into.
func rewriteQuote(q []byte, src, dst netip.AddrPort) []byte {
	q = slices.Clone(q)
	ihl := int(q[0]&0xf) * 4
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(q[12:16], s[:])
	copy(q[16:20], d[:])
	binary.BigEndian.PutUint16(q[ihl:], src.Port())
	binary.BigEndian.PutUint16(q[ihl+2:], dst.Port())
	q[10], q[11] = 0, 0
	binary.BigEndian.PutUint16(q[10:], ^fold(sum16(q[:ihl], 0)))
	return q
}

// ---- checksums and frame checks ----

func sum16(b []byte, s uint32) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// sumOK reports whether data (including its checksum field) sums to
// 0xffff, the one's complement zero that every valid checksum produces.
func sumOK(data []byte, init uint32) bool { return fold(sum16(data, init)) == 0xffff }

// recompute returns the checksum data should carry in its 16-bit field at
// off, computed from scratch over data (with the field taken as 0) and the
// initial sum init (a pseudo header).
func recompute(data []byte, off int, init uint32) uint16 {
	c := slices.Clone(data)
	c[off], c[off+1] = 0, 0
	return ^fold(sum16(c, init))
}

func pseudoSum(ip []byte, proto uint8, l4len int) uint32 {
	return sum16(ip[12:20], uint32(proto)+uint32(l4len))
}

// frameInfo is what checkFrame learnt about a frame.
type frameInfo struct {
	ihl, totLen int
	proto       uint8
	l4          []byte // the IP payload, cut at tot_len
	udpNoCsum   bool
}

// problem is one thing wrong with a frame.
type problem struct {
	kind problemKind
	msg  string
}

type problemKind int

const (
	// structural: not Ethernet/IPv4, bad IHL or total length, unknown
	// protocol. Never acceptable in a forwarded frame.
	structural problemKind = iota
	// l4Outside: the TCP/UDP/ICMP header (or the UDP length) does not fit
	// inside the IP packet, though it may fit the frame.
	l4Outside
	badIPChecksum
	// badIPOptions: IPv4 options that do not parse (RFC 791 lengths).
	badIPOptions
	badL4Checksum
	badQuotedIPChecksum
)

func (p problem) Error() string { return p.msg }

// frameProblems lists what is wrong with frame as a forwarded packet: it
// must be Ethernet/IPv4 with an IP total length that fits the frame, a TCP,
// UDP or ICMP header inside the IP packet, and valid checksums: IP header,
// TCP, UDP (unless 0), and for ICMP errors the ICMP checksum and the quoted
// IP header's. Fragments are checked up to the IP header.
func frameProblems(frame []byte) (frameInfo, []problem) {
	var fi frameInfo
	var ps []problem
	add := func(k problemKind, format string, args ...any) {
		ps = append(ps, problem{k, fmt.Sprintf(format, args...)})
	}
	if len(frame) < ethHlen+20 {
		add(structural, "frame of %d bytes has no IPv4 header", len(frame))
		return fi, ps
	}
	if et := binary.BigEndian.Uint16(frame[12:14]); et != uint16(layers.EthernetTypeIPv4) {
		add(structural, "ethertype %#04x", et)
		return fi, ps
	}
	ip := frame[ethHlen:]
	fi.ihl = int(ip[0]&0xf) * 4
	fi.totLen = int(binary.BigEndian.Uint16(ip[2:4]))
	fi.proto = ip[9]
	switch {
	case ip[0]>>4 != 4:
		add(structural, "IP version %d", ip[0]>>4)
	case fi.ihl < 20:
		add(structural, "IHL %d bytes", fi.ihl)
	case fi.totLen < fi.ihl:
		add(structural, "total length %d shorter than the header (%d)", fi.totLen, fi.ihl)
	case fi.totLen > len(ip):
		add(structural, "total length %d beyond the frame's %d IP bytes", fi.totLen, len(ip))
	}
	if len(ps) > 0 {
		return fi, ps
	}
	if !sumOK(ip[:fi.ihl], 0) {
		add(badIPChecksum, "bad IP header checksum %#04x, recomputed %#04x", binary.BigEndian.Uint16(ip[10:12]), recompute(ip[:fi.ihl], 10, 0))
	}
	if err := checkIPOptions(ip[20:fi.ihl]); err != nil {
		add(badIPOptions, "%v", err)
	}
	if off := binary.BigEndian.Uint16(ip[6:8]); off&0x3fff != 0 {
		return fi, ps // a fragment: no L4 header to check
	}
	fi.l4 = ip[fi.ihl:fi.totLen]
	l4 := fi.l4
	switch fi.proto {
	case loader.ProtoTCP:
		if len(l4) < 20 {
			add(l4Outside, "TCP header cut: %d bytes in the IP packet", len(l4))
			break
		}
		if doff := int(l4[12]>>4) * 4; doff < 20 || doff > len(l4) {
			add(l4Outside, "TCP data offset %d with %d bytes in the IP packet", doff, len(l4))
			break
		}
		if !sumOK(l4, pseudoSum(ip, fi.proto, len(l4))) {
			add(badL4Checksum, "bad TCP checksum %#04x, recomputed %#04x", binary.BigEndian.Uint16(l4[16:18]), recompute(l4, 16, pseudoSum(ip, fi.proto, len(l4))))
		}
	case loader.ProtoUDP:
		if len(l4) < 8 {
			add(l4Outside, "UDP header cut: %d bytes in the IP packet", len(l4))
			break
		}
		ulen := int(binary.BigEndian.Uint16(l4[4:6]))
		if ulen < 8 || ulen > len(l4) {
			add(l4Outside, "UDP length %d with %d bytes in the IP packet", ulen, len(l4))
			break
		}
		if binary.BigEndian.Uint16(l4[6:8]) == 0 {
			fi.udpNoCsum = true
		} else if !sumOK(l4[:ulen], pseudoSum(ip, fi.proto, ulen)) {
			add(badL4Checksum, "bad UDP checksum %#04x, recomputed %#04x", binary.BigEndian.Uint16(l4[6:8]), recompute(l4[:ulen], 6, pseudoSum(ip, fi.proto, ulen)))
		}
	case 1: // ICMP
		if len(l4) < 8 {
			add(l4Outside, "ICMP header cut: %d bytes in the IP packet", len(l4))
			break
		}
		if !sumOK(l4, 0) {
			add(badL4Checksum, "bad ICMP checksum %#04x, recomputed %#04x", binary.BigEndian.Uint16(l4[2:4]), recompute(l4, 2, 0))
		}
		if t := l4[0]; (t == 3 || t == 11) && len(l4) >= 8+20 {
			inner := l4[8:]
			if ihl := int(inner[0]&0xf) * 4; ihl >= 20 && ihl <= len(inner) && !sumOK(inner[:ihl], 0) {
				add(badQuotedIPChecksum, "bad quoted IP header checksum %#04x, recomputed %#04x", binary.BigEndian.Uint16(inner[10:12]), recompute(inner[:ihl], 10, 0))
			}
		}
	default:
		add(structural, "IP protocol %d", fi.proto)
	}
	return fi, ps
}

// checkIPOptions walks IPv4 options: EOL ends them, NOP is one byte, every
// other option has a length byte of at least 3 (gopacket's rule; Linux
// accepts 2) that must fit the header.
func checkIPOptions(opts []byte) error {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return nil
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) {
			return fmt.Errorf("IP option %d without a length", opts[i])
		}
		if l := int(opts[i+1]); l <= 2 || i+l > len(opts) {
			return fmt.Errorf("IP option %d of length %d with %d option bytes left", opts[i], l, len(opts)-i)
		}
		i += int(opts[i+1])
	}
	return nil
}

// checkFrame is frameProblems as one error.
func checkFrame(frame []byte) (frameInfo, error) {
	fi, ps := frameProblems(frame)
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p
	}
	return fi, errors.Join(errs...)
}

// mustCheckFrame fails the test unless checkFrame accepts frame, and also
// makes gopacket decode it without error.
func mustCheckFrame(tb testing.TB, frame []byte) frameInfo {
	tb.Helper()
	fi, err := checkFrame(frame)
	if err != nil {
		tb.Fatalf("output frame: %v\n%s", err, hexdump(frame))
	}
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	// Failures past the transport header are gopacket guessing at the
	// application protocol from the port (DNS on 53 ...): not ours.
	for _, l := range p.Layers() {
		switch l.LayerType() {
		case layers.LayerTypeTCP, layers.LayerTypeUDP, layers.LayerTypeICMPv4:
			return fi
		case gopacket.LayerTypeDecodeFailure:
			tb.Fatalf("gopacket cannot decode the output: %v\n%s", p.ErrorLayer().Error(), p.Dump())
		}
	}
	tb.Fatalf("gopacket finds no TCP, UDP or ICMP layer:\n%s", p.Dump())
	return fi
}

// equalFrames fails the test unless got is exactly want, listing the bytes
// that differ (offsets into the frame).
func equalFrames(tb testing.TB, got, want []byte) {
	tb.Helper()
	if bytes.Equal(got, want) {
		return
	}
	var diffs []string
	for i := range max(len(got), len(want)) {
		var g, w = -1, -1
		if i < len(got) {
			g = int(got[i])
		}
		if i < len(want) {
			w = int(want[i])
		}
		if g != w {
			diffs = append(diffs, fmt.Sprintf("[%d] %s: got %#02x want %#02x", i, fieldAt(i), g, w))
		}
	}
	if len(diffs) > 20 {
		diffs = append(diffs[:20], "...")
	}
	tb.Fatalf("frame differs from the expected one (len %d, want %d):\n  %s\ngot:\n%swant:\n%s",
		len(got), len(want), strings.Join(diffs, "\n  "), hexdump(got), hexdump(want))
}

// fieldAt names the header field at a frame offset (IPv4 without options).
func fieldAt(i int) string {
	switch {
	case i < 6:
		return "eth dst"
	case i < 12:
		return "eth src"
	case i < 14:
		return "ethertype"
	case i == 22:
		return "ip ttl"
	case i == 24 || i == 25:
		return "ip checksum"
	case i >= 26 && i < 30:
		return "ip src"
	case i >= 30 && i < 34:
		return "ip dst"
	case i < 34:
		return "ip"
	case i < 36:
		return "l4 sport/type"
	case i < 38:
		return "l4 dport/checksum"
	}
	return "l4"
}

func hexdump(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b); i += 16 {
		fmt.Fprintf(&sb, "  %04x ", i)
		for j := i; j < min(i+16, len(b)); j++ {
			fmt.Fprintf(&sb, " %02x", b[j])
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

// showKnownBugs reports whether RAUTA_XDP_KNOWN_BUGS=1 asks the tests to
// fail on reported, not yet fixed bugs instead of skipping (or, in the fuzz
// test, tolerating) them.
func showKnownBugs() bool { return os.Getenv("RAUTA_XDP_KNOWN_BUGS") == "1" }

// knownBug skips a test that demonstrates a reported, not yet fixed bug (or
// documented limitation) of the program or the loader, unless
// RAUTA_XDP_KNOWN_BUGS=1 asks to see it fail. Whoever fixes the bug removes
// the call, and the matching tolerance in the fuzz test if there is one.
func knownBug(tb testing.TB, what string) {
	tb.Helper()
	if !showKnownBugs() {
		tb.Skipf("reported, not fixed (set RAUTA_XDP_KNOWN_BUGS=1 to run): %s", what)
	}
}
