package xdp_test

// Helpers for the program tests of the HTTP fast path
// (http_fastpath_test.go): frames built field by field, so that the frames
// the program must emit can be written down completely and compared byte
// for byte; an environment with a routed HTTP service, fixed cookie keys and
// one step function that checks verdict, output frame and counters of every
// packet.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/rauta-lb/rauta/loader"
	"github.com/rauta-lb/rauta/percpu"
	"github.com/rauta-lb/rauta/syncookie"
	"github.com/rauta-lb/rauta/xdp"
)

// spSeg is an Ethernet/IPv4/TCP frame without IP options. Unlike pkt, every
// field is explicit: options as raw bytes, window, IP id and DF, so it also
// describes the frames the program writes from scratch.
type spSeg struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       netip.AddrPort
	tos            uint8
	id             uint16
	df             bool
	ttl            uint8
	seq, ack       uint32
	flags          tcpFlags
	window         uint16
	opts           []byte // TCP options, a multiple of 4 bytes
	ipOpts         []byte // IP options, a multiple of 4 bytes
	payload        []byte
}

func (s spSeg) frame() []byte {
	if len(s.opts)%4 != 0 || len(s.opts) > 40 {
		panic(fmt.Sprintf("TCP options of %d bytes", len(s.opts)))
	}
	if len(s.ipOpts)%4 != 0 || len(s.ipOpts) > 40 {
		panic(fmt.Sprintf("IP options of %d bytes", len(s.ipOpts)))
	}
	ipLen := 20 + len(s.ipOpts)
	tcpLen := 20 + len(s.opts) + len(s.payload)
	b := make([]byte, ethHlen+ipLen+tcpLen)
	copy(b[0:6], s.dstMAC)
	copy(b[6:12], s.srcMAC)
	binary.BigEndian.PutUint16(b[12:14], 0x0800)
	ip := b[ethHlen : ethHlen+ipLen]
	ip[0] = 0x40 | byte(ipLen/4)
	ip[1] = s.tos
	copy(ip[20:], s.ipOpts)
	binary.BigEndian.PutUint16(ip[2:], uint16(ipLen+tcpLen))
	binary.BigEndian.PutUint16(ip[4:], s.id)
	if s.df {
		ip[6] = 0x40
	}
	ip[8] = s.ttl
	ip[9] = loader.ProtoTCP
	src, dst := s.src.Addr().As4(), s.dst.Addr().As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(ip, 0)))
	tcp := b[ethHlen+ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], s.src.Port())
	binary.BigEndian.PutUint16(tcp[2:], s.dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], s.seq)
	binary.BigEndian.PutUint32(tcp[8:], s.ack)
	tcp[12] = byte((20+len(s.opts))/4) << 4
	var fl byte
	for bit, set := range map[byte]bool{0x01: s.flags.FIN, 0x02: s.flags.SYN, 0x04: s.flags.RST, 0x08: s.flags.PSH, 0x10: s.flags.ACK} {
		if set {
			fl |= bit
		}
	}
	tcp[13] = fl
	binary.BigEndian.PutUint16(tcp[14:], s.window)
	copy(tcp[20:], s.opts)
	copy(tcp[20+len(s.opts):], s.payload)
	binary.BigEndian.PutUint16(tcp[16:], ^fold(sum16(tcp, pseudoSum(ip, loader.ProtoTCP, tcpLen))))
	return b
}

// lbOpts is the options block the program writes into the SYN-ACKs and
// SYNs it makes: MSS, NOPs where SACK-permitted would be (never offered),
// and the window scale ws, or NOPs for ws < 0.
func lbOpts(mss uint16, ws int, sack bool) []byte {
	o := []byte{2, 4, byte(mss >> 8), byte(mss), 1, 1, 1, 1, 1, 1, 1, 1}
	if sack {
		o[6], o[7] = 4, 2
	}
	if ws >= 0 {
		o[9], o[10], o[11] = 3, 3, byte(ws)
	}
	return o
}

// boolField is a boolean as a flow field holds it.
func boolField(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// wsOf turns a cookie's window scale into lbOpts' form.
func wsOf(ws uint8) int {
	if ws > 14 {
		return -1
	}
	return int(ws)
}

// Fixed cookie keys: every cookie, sequence delta and checksum of a run is
// the same on the next.
var spKeys = [2]syncookie.Key{
	{K0: 0x0706050403020100, K1: 0x0f0e0d0c0b0a0908},
	{K0: 0x1716151413121110, K1: 0x1f1e1d1c1b1a1918},
}

// spPool is a pool with one backend on webBPort: where a backend SYN goes
// tells the pool.
func spPool(name string, a netip.Addr) loader.Pool {
	return loader.Pool{Name: name, MaglevSize: tableSize, Backends: []loader.Backend{
		{Address: netip.AddrPortFrom(a, webBPort), Weight: 1},
	}}
}

var (
	beA = netip.AddrPortFrom(backend1, webBPort)
	beB = netip.AddrPortFrom(backend2, webBPort)
	beC = netip.AddrPortFrom(backend3, webBPort)
)

// routedState is one HTTP service, "site" on VIP:80, whose routes exercise
// every precedence rule: pools a, b and c have one backend each (backend1,
// backend2, backend3).
func routedState() loader.State {
	return loader.State{
		Services: []loader.Service{{Name: "site", VIP: vip, Port: webPort, Protocol: loader.ProtoTCP, HTTP: true,
			Routes: []loader.Route{
				{Host: "api.example.com", Path: "/v1/", Pool: "a"},
				{Host: "www.example.com", Path: "/", Pool: "c"},
				{Path: "/v1/", Pool: "b"},
				{Path: "/v1/admin/", Pool: "c"},
				{Path: "/healthz", Exact: true, Pool: "c"},
				{Path: "/healthz", Pool: "a"},
				{Path: "/static/", Methods: []string{"GET", "HEAD"}, Pool: "c"},
				{Path: "/a/", Pool: "a"},
				{Path: "/b/", Pool: "b"},
				{Path: "/c/", Pool: "c"},
			}}},
		Pools: []loader.Pool{spPool("a", backend1), spPool("b", backend2), spPool("c", backend3)},
	}
}

// spEnv is an env programmed with routedState and the fixed cookie keys,
// key slot cur current.
type spEnv struct {
	*env
	sid  uint32
	keys [2]syncookie.Key
	cur  int
}

func newSpliceEnv(tb testing.TB) *spEnv {
	tb.Helper()
	e := &spEnv{env: newEnv(tb)}
	e.apply(tb, routedState())
	e.sid = e.serviceID(tb, "site")
	e.setKeys(tb, spKeys, 0)
	return e
}

// setKeys writes both key slots and the current index, as the daemon does.
func (e *spEnv) setKeys(tb testing.TB, keys [2]syncookie.Key, cur int) {
	tb.Helper()
	for i, k := range keys {
		if err := e.objs.SyncookieKeys.Put(uint32(i), k); err != nil {
			tb.Fatal(err)
		}
	}
	if err := e.objs.SyncookieCurrent.Put(uint32(0), uint32(cur)); err != nil {
		tb.Fatal(err)
	}
	e.keys, e.cur = keys, cur
}

// poolID is the id the programmer gave pool a, b or c (found through the
// route /a/, /b/ or /c/).
func (e *spEnv) poolID(tb testing.TB, name string) uint32 {
	tb.Helper()
	k, err := loader.RouteKey(e.sid, "", "/"+name+"/", false)
	if err != nil {
		tb.Fatal(err)
	}
	var r xdp.Route
	if err := e.objs.Routes.Lookup(&k, &r); err != nil {
		tb.Fatalf("route /%s/: %v", name, err)
	}
	return r.PoolId
}

// poolOf names the pool of one of the three single-backend pools.
func poolOf(be netip.AddrPort) string {
	switch be {
	case beA:
		return "a"
	case beB:
		return "b"
	case beC:
		return "c"
	}
	return be.String()
}

// runBig runs the program with room for frames that grow by more than the
// 256 bytes env.run leaves (the ACK carrying a request grows a SYN-ACK by
// up to 1460 bytes).
func (e *spEnv) runBig(tb testing.TB, frame []byte, in iface) (uint32, []byte) {
	tb.Helper()
	ctx := &xdpMd{DataEnd: uint32(len(frame)), IngressIfindex: uint32(in.index)}
	out := make([]byte, 4096)
	var verdict uint32
	err := e.w.Do(func() error {
		opts := ebpf.RunOptions{Data: frame, DataOut: out, Context: ctx}
		var err error
		verdict, err = e.objs.RautaXdp.Run(&opts)
		out = opts.DataOut
		return err
	})
	if err != nil {
		tb.Fatalf("test run: %v", err)
	}
	return verdict, out
}

// slowReason finds a slow-path reason by its metrics name.
func slowReason(tb testing.TB, name string) xdp.SlowpathReason {
	tb.Helper()
	for r := range xdp.NumSlowpathReasons {
		if xdp.SlowpathReasonName(xdp.SlowpathReason(r)) == name {
			return xdp.SlowpathReason(r)
		}
	}
	tb.Fatalf("no slow-path reason %q", name)
	return 0
}

// slowCounters snapshots the service's slow-path counters, summed over CPUs.
func (e *spEnv) slowCounters(tb testing.TB) []uint64 {
	tb.Helper()
	first := int(e.sid) * xdp.NumSlowpathReasons
	sums, err := percpu.SumFirst(e.objs.SlowpathCounters, first+xdp.NumSlowpathReasons)
	if err != nil {
		tb.Fatalf("slowpath counters: %v", err)
	}
	if len(sums) < first+xdp.NumSlowpathReasons {
		tb.Fatalf("slowpath counters: read %d, want %d", len(sums), first+xdp.NumSlowpathReasons)
	}
	return sums[first:]
}

// spStep is one packet through the program and everything it must do.
type spStep struct {
	in      iface
	frame   []byte
	verdict uint32
	// counters of the service that move by one each (a counter listed
	// twice moves by two), besides rx_packets and rx_bytes, which every
	// packet of an HTTP service moves.
	counters []xdp.Counter
	// raw replaces the whole expectation (other services, no rx).
	raw delta
	// slow-path reasons whose counters move by one each
	slow []xdp.SlowpathReason
	// the frame that must come out. Nil: for XDP_PASS the input frame
	// unchanged; for XDP_DROP nothing to check; else required unless
	// verdictOnly (the caller checks the output).
	out         []byte
	verdictOnly bool
}

// step runs s.frame and checks the verdict, the output frame (checksums
// included) and the counters. It returns the output.
func (e *spEnv) step(tb testing.TB, s spStep) []byte {
	tb.Helper()
	before := e.counters(tb, 0, e.sid)
	slowBefore := e.slowCounters(tb)
	v, out := e.runBig(tb, s.frame, s.in)
	if v != s.verdict {
		_, err := checkFrame(out)
		tb.Fatalf("verdict %s, want %s (output problems: %v)\n%s", verdictName(v), verdictName(s.verdict), err, hexdump(out))
	}
	switch {
	case s.out != nil:
		mustCheckFrame(tb, out)
		spEqualFrames(tb, out, s.out)
	case s.verdict == xdpPass:
		equalFrames(tb, out, s.frame)
	case s.verdict != xdpDrop && !s.verdictOnly:
		tb.Fatalf("step with verdict %s needs an expected output frame", verdictName(s.verdict))
	}
	want := s.raw
	if want == nil {
		want = delta{d(e.sid, xdp.CounterRxPackets): 1, d(e.sid, xdp.CounterRxBytes): uint64(len(s.frame))}
		for _, c := range s.counters {
			want[d(e.sid, c)]++
		}
	}
	e.expectCounters(tb, before, want)
	slowNow := e.slowCounters(tb)
	for r := range slowNow {
		w := uint64(0)
		for _, x := range s.slow {
			if int(x) == r {
				w++
			}
		}
		if got := slowNow[r] - slowBefore[r]; got != w {
			tb.Errorf("slow-path counter %s: +%d, want +%d", xdp.SlowpathReasonName(xdp.SlowpathReason(r)), got, w)
		}
	}
	return out
}

// spEqualFrames is equalFrames, except that a TCP checksum of 0x0000 where
// 0xffff is expected (or the reverse) is the same checksum: incremental
// updates may give either zero of one's complement.
func spEqualFrames(tb testing.TB, got, want []byte) {
	tb.Helper()
	const off = ethHlen + 20 + 16
	if len(got) == len(want) && len(got) > off+2 {
		g, w := binary.BigEndian.Uint16(got[off:]), binary.BigEndian.Uint16(want[off:])
		if g != w && g^w == 0xffff && (g == 0 || w == 0) {
			got = slices.Clone(got)
			copy(got[off:], want[off:off+2])
		}
	}
	equalFrames(tb, got, want)
}

// checkFlow compares a flow entry with want field by field. Fields the
// program derives from the clock or the FIB (last_seen_ns, the next-hop
// cache) only have to be set (last_seen_ns); backend_id, when want leaves it
// 0 on a spliced flow, has to be non-zero.
func (e *spEnv) checkFlow(tb testing.TB, k xdp.FlowKey, want xdp.Flow) xdp.Flow {
	tb.Helper()
	got, ok := e.flow(tb, k)
	if !ok {
		tb.Fatalf("no flow entry %s", keyString(k))
	}
	if got.LastSeenNs == 0 {
		tb.Errorf("flow %s: last_seen_ns not set", keyString(k))
	}
	want.LastSeenNs = got.LastSeenNs
	want.NhIfindex, want.NhLen, want.NhDmac, want.NhSmac = got.NhIfindex, got.NhLen, got.NhDmac, got.NhSmac
	if want.BackendId == 0 && (want.Splice == xdp.SpliceSYNSent || want.Splice == xdp.SpliceEstablished) {
		if got.BackendId == 0 {
			tb.Errorf("flow %s: backend id 0", keyString(k))
		}
		want.BackendId = got.BackendId
	}
	if got != want {
		tb.Errorf("flow %s:\n  %s", keyString(k), strings.Join(flowDiff(got, want), "\n  "))
	}
	return got
}

func flowDiff(got, want xdp.Flow) []string {
	var diffs []string
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range g.NumField() {
		name := g.Type().Field(i).Name
		if name == "_" {
			continue
		}
		if !reflect.DeepEqual(g.Field(i).Interface(), w.Field(i).Interface()) {
			diffs = append(diffs, fmt.Sprintf("%s = %v, want %v", name, g.Field(i).Interface(), w.Field(i).Interface()))
		}
	}
	return diffs
}

// noFlow fails unless there is no entry for k.
func (e *spEnv) noFlow(tb testing.TB, k xdp.FlowKey, what string) {
	tb.Helper()
	if f, ok := e.flow(tb, k); ok {
		tb.Errorf("%s: flow entry %s exists: %+v", what, keyString(k), f)
	}
}

// stashValue is struct stash.
type stashValue struct {
	Len  uint16
	Pad  uint16
	Data [1464]uint8
}

// stash returns the stashed request of a client's flow key.
func (e *spEnv) stash(tb testing.TB, k xdp.FlowKey) ([]byte, bool) {
	tb.Helper()
	var v stashValue
	err := e.objs.Stash.Lookup(&k, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, false
	}
	if err != nil {
		tb.Fatalf("stash lookup: %v", err)
	}
	if int(v.Len) > len(v.Data) {
		tb.Fatalf("stash of %d bytes", v.Len)
	}
	return v.Data[:v.Len], true
}

// spConn is one client connection to VIP:80 on the fast path.
type spConn struct {
	e      *spEnv
	cl     netip.AddrPort
	isn    uint32            // the client's ISN
	cookie uint32            // the LB's ISN
	co     syncookie.Options // what the cookie carries
	window uint16            // the window of the client's segments

	be     netip.AddrPort // the backend of the current request
	pool   string
	bisn   uint32 // the backend's ISN
	bws    int    // the backend's window scale, -1 for none
	req    []byte // the stashed request
	reqSeq uint32 // the sequence number of its first byte
	lbSeq  uint32 // the LB's ISN for the current backend connection
	// backends that refused the current request's SYN
	refusals uint8
}

// conn is a connection whose handshake happened (the cookie is made by the
// Go twin with the current key; TestHTTPSYN checks the program makes the
// same), with client window scale ws (syncookie.NoWindowScale: none).
func (e *spEnv) conn(port uint16, isn uint32, ws uint8) *spConn {
	cl := netip.AddrPortFrom(client, port)
	o := syncookie.Options{MSS: 1460, WScale: ws}
	cookie := syncookie.Make(syncookie.Tuple{Client: cl, VIP: vipWeb}, isn, o, e.cur, e.keys[e.cur])
	return &spConn{e: e, cl: cl, isn: isn, cookie: cookie, co: o, window: 64240, bws: -1, lbSeq: cookie}
}

func (c *spConn) fwd() xdp.FlowKey { return flowKey(loader.ProtoTCP, c.cl, vipWeb) }
func (c *spConn) rev(be netip.AddrPort) xdp.FlowKey {
	return flowKey(loader.ProtoTCP, be, c.cl)
}

// fromClient is a segment client → VIP:80 as it arrives on eth1.
func (c *spConn) fromClient(fl tcpFlags, seq, ack uint32, payload []byte) spSeg {
	if !fl.ACK {
		ack = 0
	}
	return spSeg{srcMAC: clientMAC, dstMAC: eth1MAC, src: c.cl, dst: vipWeb, tos: 0x10, id: 0x1234, df: true, ttl: 64,
		seq: seq, ack: ack, flags: fl, window: c.window, payload: payload}
}

// fromBackend is a segment be → client as it arrives on eth2.
func (c *spConn) fromBackend(be netip.AddrPort, fl tcpFlags, seq, ack uint32, window uint16, payload []byte) spSeg {
	if !fl.ACK {
		ack = 0
	}
	return spSeg{srcMAC: macOf(be.Addr()), dstMAC: eth2MAC, src: be, dst: c.cl, tos: 0x08, id: 0x4321, df: true, ttl: 64,
		seq: seq, ack: ack, flags: fl, window: window, payload: payload}
}

// backendSYN is the SYN the program makes of the client segment in for
// backend be: client address, port and ISN isn, the cookie's options, the
// client's window scaled up (a SYN's window is never scaled), forwarded.
func (c *spConn) backendSYN(in spSeg, be netip.AddrPort, isn uint32) spSeg {
	w := uint32(in.window)
	if c.co.WScale <= 14 {
		w <<= c.co.WScale
	}
	return spSeg{srcMAC: eth2MAC, dstMAC: macOf(be.Addr()), src: in.src, dst: be, df: true, ttl: in.ttl - 1,
		seq: isn, flags: syn, window: uint16(min(w, 65535)), opts: lbOpts(c.co.MSS, wsOf(c.co.WScale), c.co.SACK)}
}

// spliceACK is the ACK with the stashed request the program makes of the
// backend's SYN-ACK sa.
func (c *spConn) spliceACK(sa spSeg) spSeg {
	return spSeg{srcMAC: sa.dstMAC, dstMAC: sa.srcMAC, src: sa.dst, dst: sa.src, df: true, ttl: 64,
		seq: c.reqSeq, ack: sa.seq + 1, flags: tcpFlags{ACK: true, PSH: true}, window: c.window, payload: c.req}
}

// rstFrom is an RST the program writes: from src to dst, back out of the
// interface the packet in arrived on.
func rstFrom(in spSeg, src, dst netip.AddrPort, seq uint32) spSeg {
	return spSeg{srcMAC: in.dstMAC, dstMAC: in.srcMAC, src: src, dst: dst, ttl: 64, seq: seq, flags: tcpFlags{RST: true}}
}

// toClientOut is a backend segment in as the client must get it: from
// VIP:80, sequence number seq, window win, forwarded out of eth1.
func toClientOut(in spSeg, seq uint32, win uint16) spSeg {
	o := in
	o.srcMAC, o.dstMAC = eth1MAC, clientMAC
	o.src = vipWeb
	o.ttl--
	o.seq = seq
	o.window = win
	return o
}

// toBackendOut is a client segment in as backend be must get it, with
// acknowledgement number ack.
func toBackendOut(in spSeg, be netip.AddrPort, ack uint32) spSeg {
	o := in
	o.srcMAC, o.dstMAC = eth2MAC, macOf(be.Addr())
	o.dst = be
	o.ttl--
	o.ack = ack
	return o
}

// wantFlows is what both entries of a spliced connection hold.
func (c *spConn) wantFlows(tb testing.TB, splice uint8) (fwd, rev xdp.Flow) {
	tb.Helper()
	fwd = xdp.Flow{
		NatAddr: xdp.Addr(c.be.Addr()), NatPort: xdp.Port(c.be.Port()), Direction: xdp.ToBackend,
		ServiceId: c.e.sid, ClientIsn: c.reqSeq - 1, LbIsn: c.lbSeq, Mss: c.co.MSS, ClientWscale: c.co.WScale,
		Sack: boolField(c.co.SACK), Splice: splice, StashPending: 1, StashLen: uint16(len(c.req)), ClientWindow: c.window,
		PoolId: c.e.poolID(tb, c.pool),
	}
	fwd.ReqNext, fwd.Framing = c.reqSeq+reqLen(c.req), framingOf(c.req)
	fwd.Refusals = c.refusals
	if splice == xdp.SpliceEstablished {
		fwd.SeqDelta = c.lbSeq - c.bisn
		fwd.BackendWscale = syncookie.NoWindowScale
		if c.bws >= 0 {
			fwd.BackendWscale = uint8(min(c.bws, 14))
		}
	}
	rev = fwd
	rev.NatAddr, rev.NatPort, rev.Direction = xdp.Addr(vip), xdp.Port(webPort), xdp.ToClient
	return fwd, rev
}

// request sends req as the first request (sequence isn+1) and checks it
// becomes the SYN to be, both flow entries and the stash.
func (c *spConn) request(tb testing.TB, req []byte, be netip.AddrPort) spSeg {
	tb.Helper()
	in := c.fromClient(tcpFlags{ACK: true, PSH: true}, c.isn+1, c.cookie+1, req)
	c.be, c.pool, c.req, c.reqSeq, c.lbSeq = be, poolOf(be), req, c.isn+1, c.cookie
	c.e.step(tb, spStep{in: c.e.eth1, frame: in.frame(), verdict: xdpRedirect,
		counters: []xdp.Counter{xdp.CounterNewFlows, xdp.CounterBackendSYNs, xdp.CounterForwarded},
		out:      c.backendSYN(in, be, c.isn).frame()})
	fwd, rev := c.wantFlows(tb, xdp.SpliceSYNSent)
	c.e.checkFlow(tb, c.fwd(), fwd)
	c.e.checkFlow(tb, c.rev(be), rev)
	if st, ok := c.e.stash(tb, c.fwd()); !ok || string(st) != string(req) {
		tb.Errorf("stash %q (present %v), want the request", st, ok)
	}
	return in
}

// synAckOpts is a backend SYN-ACK's options: MSS 1460 and window scale ws
// (none for ws < 0).
func synAckOpts(ws int) []byte {
	o := []byte{2, 4, 0x05, 0xb4}
	if ws >= 0 {
		o = append(o, 1, 3, 3, byte(ws))
	}
	return o
}

// synAck is the backend's SYN-ACK to the SYN of the current request.
func (c *spConn) synAck(bisn uint32, bws int) spSeg {
	sa := c.fromBackend(c.be, synAck, bisn, c.reqSeq, 65160, nil)
	sa.opts = synAckOpts(bws)
	return sa
}

// splice sends the backend's SYN-ACK (ISN bisn, window scale bws) and
// checks it becomes the ACK carrying the request, both entries established.
func (c *spConn) splice(tb testing.TB, bisn uint32, bws int) {
	tb.Helper()
	c.bisn, c.bws = bisn, bws
	sa := c.synAck(bisn, bws)
	c.e.step(tb, spStep{in: c.e.eth2, frame: sa.frame(), verdict: xdpRedirect,
		counters: []xdp.Counter{xdp.CounterSpliced}, out: c.spliceACK(sa).frame()})
	fwd, rev := c.wantFlows(tb, xdp.SpliceEstablished)
	c.e.checkFlow(tb, c.fwd(), fwd)
	c.e.checkFlow(tb, c.rev(c.be), rev)
}

// httpGet is a small request.
func httpGet(host, target string) []byte {
	return []byte("GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: rauta-test\r\nAccept: */*\r\n\r\n")
}

// reqLen is the length of the request that begins req: its header and the
// Content-Length body (which may go on past req).
func reqLen(req []byte) uint32 {
	head, _, ok := strings.Cut(string(req), "\r\n\r\n")
	if !ok {
		panic(fmt.Sprintf("request %q without the header's end", req))
	}
	n := uint32(len(head) + 4)
	for _, line := range strings.Split(head, "\r\n")[1:] {
		name, value, _ := strings.Cut(line, ":")
		if strings.EqualFold(name, "content-length") {
			var cl uint32
			if _, err := fmt.Sscan(value, &cl); err != nil {
				panic(err)
			}
			n += cl
		}
	}
	return n
}

// framingOf is the framing a spliced flow has after request req.
func framingOf(req []byte) uint8 {
	head, _, _ := strings.Cut(string(req), "\r\n\r\n")
	for _, line := range strings.Split(head, "\r\n")[1:] {
		if name, _, _ := strings.Cut(line, ":"); strings.EqualFold(name, "upgrade") {
			return xdp.FramingUpgrade
		}
	}
	return xdp.FramingHTTP
}
