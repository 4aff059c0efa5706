package xdp_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/rauta-lb/rauta/loader"
	"github.com/rauta-lb/rauta/syncookie"
	"github.com/rauta-lb/rauta/xdp"
)

// BenchmarkXDPHTTP reports the HTTP fast path's cost per packet ("ns/pkt"),
// with the machinery of BenchmarkXDP (e.bench: kernel-measured
// BPF_PROG_TEST_RUN time, programs attached to the dispatcher, counters
// checked after every sub-benchmark, each syscall's output checked). Read
// BenchmarkXDP's comment first: repeat R, repeat 1, -net and the baselines
// mean the same here, and baseline/noop, baseline/noop-repeat1 there are the
// baselines of these figures too.
//
// The environment is newSpliceEnv's (service "site" on VIP:80, routed, fixed
// cookie keys) plus bench-self-http, an HTTP service on 10.0.1.11:8080 whose
// one route sends everything to a pool of just 10.0.1.11:8080, to build a
// self-mapped spliced connection as BenchmarkXDP builds bench-self:
//
//   - its handshake is driven once, untimed, through the program: first
//     request (a POST whose Content-Length of 10^6 leaves the rest of the
//     run inside its body), the backend's SYN-ACK. The "backend" picks the
//     cookie as its ISN and window scale 7 (LB_WSCALE), so the sequence
//     delta is 0 and the backend's windows need no rescaling; DNAT to the
//     backend and SNAT to the VIP rewrite addresses and ports to the values
//     they already have. A spliced segment then comes out as it went in,
//     TTL aside (frames start at 255), and goes through the same path R
//     times: lookups, request framing (body bytes, rel < 0), seq/ack
//     translation (by 0: the same instructions, the same checksum updates),
//     NAT, next-hop cache, redirect.
//   - what differs from a real connection: an untimed to-client segment
//     before the measurements deletes the stash (its ACK covers the
//     request) and records snd_nxt, so the measured runs skip both, as
//     most segments of a real connection do; the
//     window rescaling of backends whose scale differs from 7 (a shift and
//     a checksum update) is not measured; SACK blocks are not translated
//     (no options on the segments).
//
// The handshake paths cannot repeat (each run's output is another packet
// of the connection, and the first segment and the SYN-ACK change state):
// one packet per test run, each interleaved with a no-op run on the same
// input whose time is subtracted (-net). Every run of first-segment and
// backend-synack is a connection never seen before: a fresh client address
// and port, the cookie made by the Go twin (syncookie.Make), built in the
// untimed frame function; the flows and stashes they leave are deleted
// (untimed) every benchHTTPForget connections, so the stash (MAX_STASHED, 4096 entries)
// never fills and the flow table stays small. Like new-flow/to-backend-net,
// these figures start from colder caches than the repeated ones.
//
// Paths (the report prefixes them with http/):
//
//	syn-net                 client SYN (Linux options: MSS, SACK-permitted, timestamps,
//	                        window scale) to VIP:80: flow miss, service hit, local-socket
//	                        lookup, options parsed, cookie (SipHash), SYN-ACK written and sent
//	                        back; stateless, the same frame every run; repeat 1 minus no-op
//	first-segment-net       first request (GET, host route) acknowledging a valid cookie from
//	                        a new client: cookie check, HTTP parse, route lookup (host, path
//	                        prefix), Maglev pick, stash insert, two flow inserts, the segment
//	                        rewritten into the backend SYN, FIB, redirect; repeat 1 minus no-op
//	backend-synack-net      the backend's SYN-ACK to that SYN (the first segment ran untimed
//	                        just before, for a new client each run): reverse-flow hit, stash
//	                        lookup, both entries made established, the ACK carrying the
//	                        request written (request checksummed from the stash) and sent back;
//	                        repeat 1 minus no-op
//	established/to-backend  100-byte body segment client → 10.0.1.11:8080 on the self-mapped
//	                        spliced connection: flow hit, framing check, ack translation,
//	                        DNAT, next-hop cache, redirect; repeat R
//	established/to-client   100-byte response segment 10.0.1.11:8080 → client on it:
//	                        reverse-flow hit, stash check, seq translation, snd_nxt, SNAT,
//	                        next-hop cache, redirect; repeat R
func BenchmarkXDPHTTP(b *testing.B) {
	e := newSpliceEnv(b)

	self := netip.AddrPortFrom(backend1, webBPort)
	st := routedState()
	st.Pools = append(st.Pools, loader.Pool{Name: "self", MaglevSize: tableSize,
		Backends: []loader.Backend{{Address: self, Weight: 1}}})
	st.Services = append(st.Services, loader.Service{Name: "bench-self-http", VIP: self.Addr(), Port: self.Port(),
		Protocol: loader.ProtoTCP, HTTP: true, Routes: []loader.Route{{Path: "/", Pool: "self"}}})
	e.apply(b, st)
	e.sid = e.serviceID(b, "site")
	e.setKeys(b, spKeys, 0)
	site, selfID := e.sid, e.serviceID(b, "bench-self-http")
	ids := []uint32{0, site, selfID}
	prog := e.objs.RautaXdp

	// Linux's SYN: MSS 1460, SACK-permitted, timestamps, window scale 7.
	linuxOpts := []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}
	linuxCookie := syncookie.Options{MSS: 1460, WScale: 7, SACK: true}

	// The SYN.
	sc := benchConn(e, netip.AddrPortFrom(client, 40000), vipWeb, 0x01020304, linuxCookie)
	synIn := sc.fromClient(syn, sc.isn, 0, nil)
	synIn.opts = linuxOpts
	synFrame := synIn.frame()
	synAckOut := spSeg{srcMAC: eth1MAC, dstMAC: clientMAC, src: vipWeb, dst: sc.cl, df: true, ttl: 64,
		seq: sc.cookie, ack: sc.isn + 1, flags: synAck, window: 1460, opts: lbOpts(1460, 7, true)}.frame()

	// New connections to VIP:80, each from its own client (172.16.0.0/16,
	// ports 1024-65023), all requesting the same thing.
	req := httpGet("api.example.com", "/v1/users/42")
	var nextConn uint32
	var doomed []xdp.FlowKey // flows and stashes the runs left
	newConn := func() *spConn {
		n := nextConn
		nextConn++
		a := 0xac100000 | (n/64000)&0xffff
		cl := netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), uint16(1024+n%64000))
		c := benchConn(e, cl, vipWeb, 0x10000000+n*7919, linuxCookie)
		c.be, c.pool, c.req, c.reqSeq, c.lbSeq = beA, poolOf(beA), req, c.isn+1, c.cookie
		doomed = append(doomed, c.fwd(), c.rev(beA))
		return c
	}
	forget := func(tb testing.TB) {
		e.forgetSplices(tb, doomed)
		doomed = doomed[:0]
	}
	forgetSometimes := func() error {
		if len(doomed) < 2*benchHTTPForget {
			return nil
		}
		err := e.deleteSplices(doomed)
		doomed = doomed[:0]
		return err
	}

	// want is the output the current run must leave, set by the frame
	// functions; setupErr what went wrong in a frame function's untimed part.
	var want []byte
	var setupErr error
	checkWant := func(_, out []byte, _ uint32) error {
		if setupErr != nil {
			return setupErr
		}
		return sameFrame(out, want)
	}
	const reqSegLen = ethHlen + 20 + 20
	firstSegment := func() []byte {
		setupErr = forgetSometimes()
		c := newConn()
		in := c.fromClient(tcpFlags{ACK: true, PSH: true}, c.isn+1, c.cookie+1, req)
		want = c.backendSYN(in, beA, c.isn).frame()
		return in.frame()
	}
	firstSegmentCtx := &xdpMd{IngressIfindex: uint32(e.eth1.index)}
	firstSegmentOut := make([]byte, 2048)
	backendSynAck := func() []byte {
		setupErr = forgetSometimes()
		c := newConn()
		in := c.fromClient(tcpFlags{ACK: true, PSH: true}, c.isn+1, c.cookie+1, req)
		// Untimed: the first segment, so that the SYN-ACK has a
		// connection waiting for it. frame runs on the namespace's thread.
		data := in.frame()
		firstSegmentCtx.DataEnd = uint32(len(data))
		v, _, out, err := timedRun(prog.FD(), data, firstSegmentOut, firstSegmentCtx, 1)
		switch {
		case err != nil:
			setupErr = fmt.Errorf("first segment: %w", err)
		case v != xdpRedirect:
			setupErr = fmt.Errorf("first segment: verdict %s", verdictName(v))
		default:
			if err := sameFrame(out, c.backendSYN(in, beA, c.isn).frame()); err != nil && setupErr == nil {
				setupErr = fmt.Errorf("first segment: %w", err)
			}
		}
		c.bisn, c.bws = 0x50000000+nextConn*104729, 7
		sa := c.synAck(c.bisn, c.bws)
		want = c.spliceACK(sa).frame()
		return sa.frame()
	}
	firstLen, saLen := uint64(reqSegLen+len(req)), uint64(ethHlen+20+20+8)

	// The self-mapped spliced connection.
	selfCl := netip.AddrPortFrom(client, 41000)
	slf := benchConn(e, selfCl, self, 0x20000000, linuxCookie)
	const bodyLen = 1_000_000
	post := []byte(fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: bench.test\r\nContent-Length: %d\r\n\r\n", bodyLen))
	{
		in := spSeg{srcMAC: clientMAC, dstMAC: eth1MAC, src: selfCl, dst: self, tos: 0x10, id: 0x1234, df: true, ttl: 64,
			seq: slf.isn + 1, ack: slf.cookie + 1, flags: tcpFlags{ACK: true, PSH: true}, window: 502, payload: post}
		slf.window = in.window
		if v, out := e.runBig(b, in.frame(), e.eth1); v != xdpRedirect || sameFrame(out, slf.backendSYN(in, self, slf.isn).frame()) != nil {
			b.Fatalf("self-mapped first request: verdict %s, output %v", verdictName(v), sameFrame(out, slf.backendSYN(in, self, slf.isn).frame()))
		}
		// The backend answers with the cookie as its ISN: delta 0.
		sa := spSeg{srcMAC: macOf(backend1), dstMAC: eth2MAC, src: self, dst: selfCl, tos: 0x08, df: true, ttl: 64,
			seq: slf.cookie, ack: slf.isn + 1, flags: synAck, window: 65160, opts: synAckOpts(7)}
		slf.req, slf.reqSeq = post, slf.isn+1
		if v, out := e.runBig(b, sa.frame(), e.eth2); v != xdpRedirect || sameFrame(out, slf.spliceACK(sa).frame()) != nil {
			b.Fatalf("self-mapped SYN-ACK: verdict %s, output %v", verdictName(v), sameFrame(out, slf.spliceACK(sa).frame()))
		}
		for _, k := range []xdp.FlowKey{flowKey(loader.ProtoTCP, selfCl, self), flowKey(loader.ProtoTCP, self, selfCl)} {
			f, ok := e.flow(b, k)
			if !ok || f.Splice != xdp.SpliceEstablished || f.SeqDelta != 0 || f.BackendWscale != 7 ||
				xdp.AddrFrom(f.NatAddr) != self.Addr() || xdp.PortFrom(f.NatPort) != self.Port() || f.ServiceId != selfID {
				b.Fatalf("self-mapped spliced flow %s: %+v (present %v), want established, delta 0, backend scale 7, NAT to %s, service %d",
					keyString(k), f, ok, self, selfID)
			}
		}
	}
	const ttl = 255
	hdrLen := uint32(len(post))
	toBackend := spSeg{srcMAC: clientMAC, dstMAC: eth1MAC, src: selfCl, dst: self, tos: 0x10, id: 0x1234, df: true, ttl: ttl,
		seq: slf.isn + 1 + hdrLen, ack: slf.cookie + 1 + 100, flags: tcpFlags{ACK: true, PSH: true}, window: 502,
		payload: bytes.Repeat([]byte("b"), 100)}.frame()
	toClient := spSeg{srcMAC: macOf(backend1), dstMAC: eth2MAC, src: self, dst: selfCl, tos: 0x08, id: 0x4321, df: true, ttl: ttl,
		seq: slf.cookie + 1, ack: slf.isn + 1 + hdrLen + 100, flags: tcpFlags{ACK: true, PSH: true}, window: 509,
		payload: bytes.Repeat([]byte("c"), 100)}.frame()
	// One of each, untimed: the backend's ACK of the request ends the
	// stash, the first to-client segment records snd_nxt.
	e.expect(b, toBackend, e.eth1, xdpRedirect)
	e.expect(b, toClient, e.eth2, xdpRedirect)
	if _, ok := e.stash(b, flowKey(loader.ProtoTCP, selfCl, self)); ok {
		b.Fatal("self-mapped connection: the stash outlived the backend's acknowledgement")
	}

	noop := loadNoop(b)
	e.dispatch(b, prog, noop)

	rx := func(id uint32, packets, bytes uint64) delta {
		return delta{d(id, xdp.CounterRxPackets): packets, d(id, xdp.CounterRxBytes): bytes}
	}
	forwardedTo := func(id uint32, frameLen int) func(n uint64) delta {
		return func(n uint64) delta {
			m := rx(id, n, n*uint64(frameLen))
			m[d(id, xdp.CounterForwarded)] = n
			return m
		}
	}
	same := func(f []byte) func() []byte { return func() []byte { return f } }

	for _, p := range []benchPath{
		{name: "syn-net", prog: prog, in: e.eth1, want: xdpRedirect, repeat: 1, minus: noop,
			frame: same(synFrame), check: func(_, out []byte, _ uint32) error { return sameFrame(out, synAckOut) },
			counts: func(n uint64) delta {
				m := rx(site, n, n*uint64(len(synFrame)))
				m[d(site, xdp.CounterSYNCookiesSent)] = n
				return m
			}},
		{name: "first-segment-net", prog: prog, in: e.eth1, want: xdpRedirect, repeat: 1, minus: noop,
			frame: firstSegment, check: checkWant, setup: forget,
			counts: func(n uint64) delta {
				m := rx(site, n, n*firstLen)
				m[d(site, xdp.CounterNewFlows)] = n
				m[d(site, xdp.CounterBackendSYNs)] = n
				m[d(site, xdp.CounterForwarded)] = n
				return m
			}},
		{name: "backend-synack-net", prog: prog, in: e.eth2, want: xdpRedirect, repeat: 1, minus: noop,
			frame: backendSynAck, check: checkWant, setup: forget,
			counts: func(n uint64) delta {
				// each run's first segment included
				m := rx(site, 2*n, n*(firstLen+saLen))
				m[d(site, xdp.CounterNewFlows)] = n
				m[d(site, xdp.CounterBackendSYNs)] = n
				m[d(site, xdp.CounterForwarded)] = n
				m[d(site, xdp.CounterSpliced)] = n
				return m
			}},
		{name: "established/to-backend", prog: prog, in: e.eth1, want: xdpRedirect, repeat: benchRepeat,
			frame: same(toBackend), check: forwardedAs(eth2MAC, macOf(backend1)), counts: forwardedTo(selfID, len(toBackend))},
		{name: "established/to-client", prog: prog, in: e.eth2, want: xdpRedirect, repeat: benchRepeat,
			frame: same(toClient), check: forwardedAs(eth1MAC, clientMAC), counts: forwardedTo(selfID, len(toClient))},
	} {
		b.Run(p.name, func(b *testing.B) { e.bench(b, p, ids) })
	}
	forget(b)
}

// benchHTTPForget is how many new connections BenchmarkXDPHTTP leaves
// before it deletes their flows and stashes (the stash holds 4096).
const benchHTTPForget = 1024

// benchConn is a connection from cl to vip whose handshake happened: the
// cookie made by the Go twin for options o with the current key.
func benchConn(e *spEnv, cl, vip netip.AddrPort, isn uint32, o syncookie.Options) *spConn {
	cookie := syncookie.Make(syncookie.Tuple{Client: cl, VIP: vip}, isn, o, e.cur, e.keys[e.cur])
	return &spConn{e: e, cl: cl, isn: isn, cookie: cookie, co: o, window: 64240, bws: -1, lbSeq: cookie}
}

// deleteSplices deletes the flow entries keys and the stashes of those of
// them that are client keys, in batches; entries already gone are fine.
func (e *spEnv) deleteSplices(keys []xdp.FlowKey) error {
	del := func(m *ebpf.Map, keys []xdp.FlowKey) error {
		if len(keys) == 0 {
			return nil
		}
		if n, err := m.BatchDelete(keys, nil); err == nil && n == len(keys) {
			return nil
		}
		// A batch stops at the first missing key: one by one.
		for _, k := range keys {
			if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("delete %s: %w", keyString(k), err)
			}
		}
		return nil
	}
	var clients []xdp.FlowKey
	for _, k := range keys {
		if xdp.PortFrom(k.Dport) == webPort && xdp.AddrFrom(k.Daddr) == vip {
			clients = append(clients, k)
		}
	}
	if err := del(e.objs.Flows, keys); err != nil {
		return err
	}
	return del(e.objs.Stash, clients)
}

func (e *spEnv) forgetSplices(tb testing.TB, keys []xdp.FlowKey) {
	tb.Helper()
	if err := e.deleteSplices(keys); err != nil {
		tb.Fatal(err)
	}
}

// sameFrame reports how got differs from want, spEqualFrames' way (a TCP
// checksum of 0x0000 equals one of 0xffff) and with valid checksums.
func sameFrame(got, want []byte) error {
	if len(got) != len(want) {
		return fmt.Errorf("output of %d bytes, want %d", len(got), len(want))
	}
	if _, err := checkFrame(got); err != nil {
		return err
	}
	if bytes.Equal(got, want) {
		return nil
	}
	const off = ethHlen + 20 + 16
	if len(got) > off+2 {
		g, w := binary.BigEndian.Uint16(got[off:]), binary.BigEndian.Uint16(want[off:])
		if g^w == 0xffff && (g == 0 || w == 0) &&
			bytes.Equal(got[:off], want[:off]) && bytes.Equal(got[off+2:], want[off+2:]) {
			return nil
		}
	}
	var diffs []string
	for i := range got {
		if got[i] != want[i] && len(diffs) < 8 {
			diffs = append(diffs, fmt.Sprintf("@%d %#02x want %#02x", i, got[i], want[i]))
		}
	}
	return errors.New("output differs: " + strings.Join(diffs, ", "))
}
