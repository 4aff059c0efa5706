package xdp_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/rauta-lb/rauta/loader"
	"github.com/rauta-lb/rauta/xdp"
)

// BenchmarkXDP reports the program's cost per packet ("ns/pkt") on each
// path, as the kernel measures it in BPF_PROG_TEST_RUN.
//
// A test run with repeat 1 includes the harness's fixed cost (ktime reads,
// run-context setup, BH disable/enable: tens of ns, see
// baseline/noop-repeat1), which drowns the cost of a fast path. With repeat
// R the kernel runs the program R times back to back on the same buffer and
// reports the mean run time, the fixed cost divided by R. But the buffer is
// not restored between runs: from the second run on, the program sees its
// own output. So the maps are set up so that a path's output is again a
// packet that takes exactly the same path ("self-mapped" flows):
//
//   - a service bench-self whose VIP:port is a backend's address,
//     10.0.1.11:8080, with a pool of just that backend. Its first packet
//     makes the program itself create both flow entries: client →
//     10.0.1.11:8080 (to backend, DNAT to 10.0.1.11:8080) and
//     10.0.1.11:8080 → client (to client, SNAT to 10.0.1.11:8080).
//     Translating then rewrites every address and port to the value it
//     already has (the same instructions, the same checksum updates), the
//     FIB sends the packet to the same neighbour, and only the TTL changes.
//     Frames start with TTL 255, so up to 253 runs stay on the path (TTL 1
//     is dropped).
//   - 10.0.1.11 thereby becomes a VIP too (in vips, as Apply writes it). On
//     the measured paths that changes nothing but the answer to is_vip,
//     which the established paths never ask; it makes the ICMP trick work
//     (an error to 10.0.1.11 is "to a VIP"). Elsewhere it would matter: a
//     new flow from 10.0.1.11 would be dropped as spoofed-VIP, fragments
//     and malformed packets to it dropped instead of passed.
//   - pass and drop paths leave the packet alone: already idempotent.
//
// Every repeated run is verified to have stayed on its path: after the
// sub-benchmark, the counters of services 0, web, dns and bench-self must
// have moved by exactly the path's counters times the number of runs, and
// nothing else (a run that fell off the path counts a pass or drop, or
// nothing at all); each syscall's output must also show the TTL lowered by
// exactly R, with valid checksums.
//
// A new flow cannot be repeated (the second run would find the flow), so
// new-flow/to-backend stays one packet per test run, harness included;
// new-flow/to-backend-net interleaves each such run with one of the no-op
// program and subtracts it. Both start with the flows of earlier new-flow
// runs deleted, but a long run (each CPU's LRU holds 2^20/ncpu entries,
// two per new flow) ends up timing evictions too. The -net figure is still not directly
// comparable with the repeated ones: a single run starts with colder
// caches and branch predictors than the R-th run in a row.
//
// Repeated figures still contain the test-run loop's per-run cost (BH
// disable and enable, the redirect context, a need_resched check), which
// baseline/noop (repeat R) shows: subtract it for the program alone. They
// are also rounded down by up to 1 ns, as the kernel reports the mean in
// whole nanoseconds. Both programs are attached to an idle interface for
// the whole benchmark (see dispatch), so every run, repeated or not, is a
// direct call through the XDP dispatcher as in production.
//
// Program.Benchmark is not used: it cannot pass an xdp_md, so
// bpf_fib_lookup would see the namespace's loopback as the ingress device.
// Each b.N iteration is one packet (one program run); runs are issued in
// whole syscalls of R, so up to R-1 more than b.N may run, and Go's ns/op
// is wall time per packet (syscall and copies amortised over R).
//
// Paths:
//
//	established/to-backend  ACK+payload client → 10.0.1.11:8080 (bench-self), service hit,
//	                        flow hit, DNAT, FIB, devmap check, redirect; repeat R
//	established/to-client   reply 10.0.1.11:8080 → client, service miss, reverse-flow hit,
//	                        SNAT, FIB, devmap check, redirect; repeat R
//	icmp/frag-needed        frag-needed to 10.0.1.11 about the open flow, quote and
//	                        destination translated, forwarded; repeat R
//	new-flow/to-backend     SYN from a tuple never seen before, Maglev pick, two
//	                        flow-table inserts, DNAT, FIB, redirect; repeat 1, harness included
//	new-flow/to-backend-net the same minus an interleaved no-op run
//	pass/non-vip            TCP to a non-VIP address, handed to the kernel untouched; repeat R
//	drop/fragment-to-vip    fragment addressed to the VIP; repeat R
//	baseline/noop           return XDP_PASS, nothing else; repeat R
//	baseline/noop-repeat1   the same, repeat 1: the harness's fixed cost
func BenchmarkXDP(b *testing.B) {
	e := newEnv(b)

	// bench-self: 10.0.1.11:8080 is a service whose only backend is itself.
	self := netip.AddrPortFrom(backend1, webBPort)
	st := defaultState()
	st.Pools = append(st.Pools, loader.Pool{Name: "self", MaglevSize: tableSize,
		Backends: []loader.Backend{{Address: self, Weight: 1}}})
	st.Services = append(st.Services, loader.Service{Name: "bench-self", VIP: self.Addr(),
		Port: self.Port(), Protocol: loader.ProtoTCP, Pool: "self"})
	e.apply(b, st)
	web, dns, selfID := e.serviceID(b, "web"), e.serviceID(b, "dns"), e.serviceID(b, "bench-self")
	ids := []uint32{0, web, dns, selfID}

	const ttl = 255
	toBackend := tcpPkt(clientMAC, eth1MAC, clientPort(40000), self, tcpFlags{ACK: true, PSH: true})
	toBackend.ttl = ttl
	established := toBackend.frame()
	toClient := tcpPkt(macOf(backend1), eth2MAC, self, clientPort(40000), tcpFlags{ACK: true, PSH: true})
	toClient.ttl = ttl
	reply := toClient.frame()
	// The quote is a packet the LB sent the client: self → client.
	quoted := tcpPkt(eth1MAC, clientMAC, self, clientPort(40000), ack)
	quoted.ttl = 63
	fragNeeded := icmpErr{srcMAC: gatewayMAC, dstMAC: eth1MAC, src: clientGW, dst: backend1, ttl: ttl,
		typ: 3, code: 4, mtu: 1400, quote: quoteOf(quoted)}.frame()
	frag := tcpPkt(clientMAC, eth1MAC, clientPort(40001), vipWeb, ack)
	frag.fragFlags = layers.IPv4MoreFragments
	fragment := frag.frame()
	nonVIP := tcpPkt(clientMAC, eth1MAC, clientPort(40000), netip.AddrPortFrom(otherHost, 80), ack).frame()

	// The first packet of the self-mapped connection: the program creates
	// both entries, DNAT to what the packet already says.
	out := e.expect(b, established, e.eth1, xdpRedirect)
	expectHeaders(b, out, hdr{srcMAC: eth2MAC, dstMAC: macOf(backend1), src: clientPort(40000), dst: self, ttl: ttl - 1})
	for _, k := range []xdp.FlowKey{
		flowKey(loader.ProtoTCP, clientPort(40000), self),
		flowKey(loader.ProtoTCP, self, clientPort(40000)),
	} {
		f, ok := e.flow(b, k)
		if !ok || xdp.AddrFrom(f.NatAddr) != self.Addr() || xdp.PortFrom(f.NatPort) != self.Port() || f.ServiceId != selfID {
			b.Fatalf("self-mapped flow %+v: %+v (present %v), want NAT to %s, service %d", k, f, ok, self, selfID)
		}
	}

	// Unique tuples for new flows, across every run the framework makes
	// (b.N=1 first) and both new-flow sub-benchmarks: 172.16.x.y, any port.
	var nextTuple uint32
	syn := synFrom(40000).frame()
	newFlow := func() []byte {
		n := nextTuple
		nextTuple++
		ip := syn[ethHlen:]
		binary.BigEndian.PutUint32(ip[12:16], 0xac100000|n>>16) // 172.16.0.0 + n/65536
		binary.BigEndian.PutUint16(ip[20:22], uint16(n))
		fixIPChecksum(ip)
		fixTCPChecksum(ip)
		return syn
	}
	forgetNewFlows := func(tb testing.TB) { e.forgetFlows(tb, netip.MustParsePrefix("172.16.0.0/16")) }
	same := func(f []byte) func() []byte { return func() []byte { return f } }

	noop := loadNoop(b)
	e.dispatch(b, e.objs.RautaXdp, noop)

	// Expected counter movements for n runs of a path.
	forwardedTo := func(id uint32, frameLen int) func(n uint64) delta {
		return func(n uint64) delta {
			return delta{d(id, xdp.CounterRxPackets): n, d(id, xdp.CounterRxBytes): n * uint64(frameLen),
				d(id, xdp.CounterForwarded): n}
		}
	}
	newFlows := func(n uint64) delta {
		return delta{d(web, xdp.CounterRxPackets): n, d(web, xdp.CounterRxBytes): n * uint64(len(syn)),
			d(web, xdp.CounterNewFlows): n, d(web, xdp.CounterForwarded): n}
	}
	only := func(id uint32, c xdp.Counter) func(n uint64) delta {
		return func(n uint64) delta { return delta{d(id, c): n} }
	}
	nothing := func(uint64) delta { return nil }

	prog := e.objs.RautaXdp
	for _, p := range []benchPath{
		{name: "established/to-backend", prog: prog, in: e.eth1, want: xdpRedirect, repeat: benchRepeat,
			frame: same(established), check: forwardedAs(eth2MAC, macOf(backend1)), counts: forwardedTo(selfID, len(established))},
		{name: "established/to-client", prog: prog, in: e.eth2, want: xdpRedirect, repeat: benchRepeat,
			frame: same(reply), check: forwardedAs(eth1MAC, clientMAC), counts: forwardedTo(selfID, len(reply))},
		{name: "icmp/frag-needed", prog: prog, in: e.eth1, want: xdpRedirect, repeat: benchRepeat,
			frame: same(fragNeeded), check: forwardedAs(eth2MAC, macOf(backend1)), counts: func(n uint64) delta {
				return delta{d(selfID, xdp.CounterICMPForwarded): n, d(selfID, xdp.CounterForwarded): n}
			}},
		{name: "new-flow/to-backend", prog: prog, in: e.eth1, want: xdpRedirect, repeat: 1,
			frame: newFlow, check: forwardedAs(eth2MAC, nil), counts: newFlows, setup: forgetNewFlows},
		{name: "new-flow/to-backend-net", prog: prog, in: e.eth1, want: xdpRedirect, repeat: 1,
			frame: newFlow, check: forwardedAs(eth2MAC, nil), counts: newFlows, setup: forgetNewFlows, minus: noop},
		{name: "pass/non-vip", prog: prog, in: e.eth1, want: xdpPass, repeat: benchRepeat,
			frame: same(nonVIP), check: untouched, counts: only(0, xdp.CounterPassNotService)},
		{name: "drop/fragment-to-vip", prog: prog, in: e.eth1, want: xdpDrop, repeat: benchRepeat,
			frame: same(fragment), check: untouched, counts: only(0, xdp.CounterDropFragment)},
		{name: "baseline/noop", prog: noop, in: e.eth1, want: xdpPass, repeat: benchRepeat,
			frame: same(nonVIP), check: untouched, counts: nothing},
		{name: "baseline/noop-repeat1", prog: noop, in: e.eth1, want: xdpPass, repeat: 1,
			frame: same(nonVIP), check: untouched, counts: nothing},
	} {
		b.Run(p.name, func(b *testing.B) { e.bench(b, p, ids) })
	}
}

func fixTCPChecksum(ip []byte) {
	ihl := int(ip[0]&0xf) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:4]))
	l4 := ip[ihl:tot]
	l4[16], l4[17] = 0, 0
	binary.BigEndian.PutUint16(l4[16:], ^fold(sum16(l4, pseudoSum(ip, loader.ProtoTCP, len(l4)))))
}
