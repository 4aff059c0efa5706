package router_test

// TestXDPEquivalence loads the real XDP program, programs it with the
// loader from the same config.Config the router is built from, and sends it
// the first data segment of many generated connections through
// BPF_PROG_TEST_RUN. Whatever XDP decides — a SYN to some backend, the slow
// path for want of a route or for the method, a drop for want of a backend —
// Route and Backends must decide the same.
//
// The program runs in a private network namespace owned by one locked
// thread (as in xdp/env_test.go): bpf_fib_lookup resolves the backends'
// next hops there, so a routed request comes out as a redirected SYN.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"

	"github.com/rauta-lb/rauta/config"
	"github.com/rauta-lb/rauta/daemon"
	"github.com/rauta-lb/rauta/loader"
	"github.com/rauta-lb/rauta/router"
	"github.com/rauta-lb/rauta/syncookie"
	"github.com/rauta-lb/rauta/tools/nsworker"
	"github.com/rauta-lb/rauta/xdp"
)

// XDP verdicts.
const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

var (
	eqClientNet = netip.MustParsePrefix("10.0.2.0/24")
	eqLBClient  = netip.MustParseAddr("10.0.2.1")
	eqLBBackend = netip.MustParseAddr("10.0.1.1")
	eqLBMAC     = net.HardwareAddr{0x02, 0, 0, 0, 1, 1}
	eqClientMAC = net.HardwareAddr{0x02, 0xc1, 0, 0, 2, 2}
	eqKeys      = [2]syncookie.Key{
		{K0: 0x0706050403020100, K1: 0x0f0e0d0c0b0a0908},
		{K0: 0x1716151413121110, K1: 0x1f1e1d1c1b1a1918},
	}
)

// equivalenceConfig is what both data paths are built from: two http
// services on one VIP whose routes overlap (the service id is part of XDP's
// key), weighted and drained backends, and a pool with no weight at all.
// No wildcard hosts: the loader refuses them (XDP sends such services to
// the slow path).
func equivalenceConfig() *config.Config {
	return &config.Config{
		Services: []config.Service{
			{Name: "site", VIP: vip, Port: 80, Protocol: config.ProtocolHTTP, Routes: []config.Route{
				{Host: "api.example.com", Path: "/v1/", Pool: "a"},
				{Host: "api.example.com", Path: "/v1/users", Exact: true, Methods: []string{"GET", "POST"}, Pool: "c"},
				{Host: "api.example.com", Path: "/v", Methods: []string{"DELETE"}, Pool: "b"},
				{Host: "www.example.com", Path: "/", Pool: "c"},
				{Host: "www.example.com", Path: "/admin", Methods: []string{"GET"}, Pool: "a"},
				{Path: "/v1/", Pool: "b"},
				{Path: "/v1/admin/", Pool: "c"},
				{Path: "/healthz", Exact: true, Pool: "c"},
				{Path: "/healthz", Pool: "a"},
				{Path: "/static/", Methods: []string{"GET", "HEAD"}, Pool: "c"},
				{Path: "/static/open/", Pool: "a"},
				{Path: "/a", Pool: "a"},
				{Path: "/b/", Pool: "b"},
				{Path: "/x/y", Pool: "a"},
				{Path: "/x/y", Exact: true, Methods: []string{"PUT", "PATCH", "OPTIONS", "TRACE"}, Pool: "b"},
				{Path: "/off/", Pool: "off"},
			}},
			{Name: "api", VIP: vip, Port: 8080, Protocol: config.ProtocolHTTP, Routes: []config.Route{
				{Path: "/", Pool: "c"},
				{Path: "/v1/", Methods: []string{"POST"}, Pool: "a"},
				{Host: "api.example.com", Path: "/v1/admin/", Pool: "b"},
			}},
		},
		Pools: []config.Pool{
			{Name: "a", MaglevSize: 251, Backends: backends(map[string]uint32{"10.0.1.11:8080": 1, "10.0.1.12:8080": 2, "10.0.1.13:8080": 0})},
			{Name: "b", MaglevSize: 13, Backends: backends(map[string]uint32{"10.0.1.21:80": 1, "10.0.1.22:80": 1})},
			{Name: "c", MaglevSize: 7, Backends: backends(map[string]uint32{"10.0.1.31:80": 1})},
			{Name: "off", MaglevSize: 7, Backends: backends(map[string]uint32{"10.0.1.41:80": 0})},
		},
	}
}

// topology gives the namespace the VIP on lo, a client-side and a
// backend-side veth with permanent neighbours for every backend, and
// forwarding; it returns the two interface indexes.
func topology(w *nsworker.Worker, cfg *config.Config) (clientIf, backendIf int, err error) {
	h, err := netlink.NewHandleAt(w.NS)
	if err != nil {
		return 0, 0, err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return 0, 0, err
	}
	if err := h.LinkSetUp(lo); err != nil {
		return 0, 0, err
	}
	if err := h.AddrAdd(lo, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(vip, 32))}); err != nil {
		return 0, 0, fmt.Errorf("VIP: %w", err)
	}
	veth := func(name string, mac net.HardwareAddr, addr netip.Prefix) (int, error) {
		peer := append(net.HardwareAddr{}, mac...)
		peer[5] = 0xfe
		if err := h.LinkAdd(&netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: mac}, PeerName: name + "p", PeerHardwareAddr: peer,
		}); err != nil {
			return 0, fmt.Errorf("add %s: %w", name, err)
		}
		for _, n := range []string{name, name + "p"} {
			l, err := h.LinkByName(n)
			if err == nil {
				err = h.LinkSetUp(l)
			}
			if err != nil {
				return 0, fmt.Errorf("up %s: %w", n, err)
			}
		}
		l, err := h.LinkByName(name)
		if err != nil {
			return 0, err
		}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
			return 0, fmt.Errorf("address %s: %w", name, err)
		}
		return l.Attrs().Index, nil
	}
	if clientIf, err = veth("eth1", eqLBMAC, netip.PrefixFrom(eqLBClient, 24)); err != nil {
		return 0, 0, err
	}
	if backendIf, err = veth("eth2", net.HardwareAddr{0x02, 0, 0, 0, 2, 1}, netip.PrefixFrom(eqLBBackend, 24)); err != nil {
		return 0, 0, err
	}
	for _, p := range cfg.Pools {
		for _, b := range p.Backends {
			a := b.Address.Addr().As4()
			if err := h.NeighAdd(&netlink.Neigh{
				LinkIndex: backendIf, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
				IP: net.IP(a[:]), HardwareAddr: net.HardwareAddr{0x02, 0xbe, 0, 0, a[2], a[3]},
			}); err != nil {
				return 0, 0, fmt.Errorf("neighbour %s: %w", b.Address, err)
			}
		}
	}
	// bpf_fib_lookup forwards only for an ingress device with forwarding on.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return 0, 0, fmt.Errorf("forwarding: %w", err)
	}
	return clientIf, backendIf, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}

// eqEnv is the loaded, programmed program in its namespace.
type eqEnv struct {
	w        *nsworker.Worker
	objs     *xdp.Objects
	clientIf int
}

func newEqEnv(t *testing.T, cfg *config.Config) *eqEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (BPF, network namespaces)")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Skipf("no BPF: %v", err)
	}
	w, err := nsworker.Start()
	if err != nil {
		t.Skipf("no network namespace: %v", err)
	}
	e := &eqEnv{w: w}
	t.Cleanup(func() {
		if e.objs != nil {
			e.objs.Close()
		}
		w.Stop()
	})
	var backendIf int
	if err := w.Do(func() (err error) { e.clientIf, backendIf, err = topology(w, cfg); return err }); err != nil {
		t.Fatalf("topology: %v", err)
	}
	if e.objs, err = xdp.Load(nil); err != nil {
		t.Skipf("cannot load the XDP program: %v", err)
	}
	prog, err := loader.NewProgrammer(e.objs)
	if err != nil {
		t.Fatal(err)
	}
	state, err := daemon.StateFromConfig("equivalence", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := prog.Apply(state); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if err := w.Do(func() error {
		for _, i := range []int{e.clientIf, backendIf} {
			if err := e.objs.TxPorts.Put(uint32(i), uint32(i)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("tx_ports: %v", err)
	}
	for i, k := range eqKeys {
		if err := e.objs.SyncookieKeys.Put(uint32(i), k); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.objs.SyncookieCurrent.Put(uint32(0), uint32(0)); err != nil {
		t.Fatal(err)
	}
	return e
}

// xdpMd is struct xdp_md as BPF_PROG_TEST_RUN takes it.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

func (e *eqEnv) run(frame []byte) (uint32, []byte, error) {
	ctx := &xdpMd{DataEnd: uint32(len(frame)), IngressIfindex: uint32(e.clientIf)}
	out := make([]byte, len(frame)+256)
	var verdict uint32
	err := e.w.Do(func() error {
		opts := ebpf.RunOptions{Data: frame, DataOut: out, Context: ctx}
		var err error
		verdict, err = e.objs.RautaXdp.Run(&opts)
		out = opts.DataOut
		return err
	})
	return verdict, out, err
}

func (e *eqEnv) flow(client, service netip.AddrPort) (xdp.Flow, bool, error) {
	k := xdp.FlowKey{
		Saddr: xdp.Addr(client.Addr()), Daddr: xdp.Addr(service.Addr()),
		Sport: xdp.Port(client.Port()), Dport: xdp.Port(service.Port()), Proto: loader.ProtoTCP,
	}
	var f xdp.Flow
	err := e.objs.Flows.Lookup(&k, &f)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return f, false, nil
	}
	return f, err == nil, err
}

// firstSegment is the client's first data segment after a handshake the
// program answered: sequence isn+1, acknowledging cookie+1.
func firstSegment(client, service netip.AddrPort, isn, cookie uint32, payload []byte) []byte {
	const ethLen, ipLen, tcpLen = 14, 20, 20
	b := make([]byte, ethLen+ipLen+tcpLen+len(payload))
	copy(b[0:6], eqLBMAC)
	copy(b[6:12], eqClientMAC)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[ethLen : ethLen+ipLen]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(ipLen+tcpLen+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	ip[6] = 0x40 // DF
	ip[8] = 64
	ip[9] = loader.ProtoTCP
	src, dst := client.Addr().As4(), service.Addr().As4()
	copy(ip[12:], src[:])
	copy(ip[16:], dst[:])
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(ip, 0)))
	tcp := b[ethLen+ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], client.Port())
	binary.BigEndian.PutUint16(tcp[2:], service.Port())
	binary.BigEndian.PutUint32(tcp[4:], isn+1)
	binary.BigEndian.PutUint32(tcp[8:], cookie+1)
	tcp[12] = 5 << 4
	tcp[13] = 0x18 // ACK, PSH
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	copy(tcp[tcpLen:], payload)
	pseudo := sum16(ip[12:20], uint32(loader.ProtoTCP)+uint32(len(tcp)))
	binary.BigEndian.PutUint16(tcp[16:], ^fold(sum16(tcp, pseudo)))
	return b
}

func sum16(b []byte, s uint32) uint32 {
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(b[0])<<8 | uint32(b[1])
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

// eqRequest is one generated first request.
type eqRequest struct {
	service      netip.AddrPort
	client       netip.AddrPort
	method, host string
	target       string
}

func (r eqRequest) bytes(rng *rand.Rand) []byte {
	version := "HTTP/1.1"
	if rng.IntN(5) == 0 {
		version = "HTTP/1.0"
	}
	headers := []string{"Host: " + r.host, "User-Agent: rauta-router-test", "Accept: */*"}
	rng.Shuffle(len(headers), func(i, j int) { headers[i], headers[j] = headers[j], headers[i] })
	return []byte(r.method + " " + r.target + " " + version + "\r\n" + strings.Join(headers, "\r\n") + "\r\n\r\n")
}

var (
	eqMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"}
	eqHosts   = []string{
		"api.example.com", "API.Example.Com", "api.example.com.", "api.example.com:8080", "Api.Example.Com.:443",
		"www.example.com", "WWW.EXAMPLE.COM.", "www.example.com:80", "other.org", "x", "api.example.co",
		"a-b.example.com", "example.com", "10.0.0.100", "10.0.0.100:80",
	}
	eqBases = []string{"/", "/v", "/v1", "/v1/", "/v1/users", "/v1/admin/", "/v1/admin", "/healthz", "/healthz/",
		"/static/", "/static/open/", "/a", "/ab", "/b/", "/b", "/x/y", "/x/", "/off/", "/admin", "/nothing"}
	// path bytes XDP routes raw (no '%', '\', space or controls); '.'
	// and '/' only where they make no dot segment or "//".
	eqPathBytes = "abcxyz0189-_~!$&'()*+,;=:@"
)

// genRequest makes a request XDP parses and routes on its raw bytes.
func genRequest(rng *rand.Rand, services []netip.AddrPort, i int) eqRequest {
	path := eqBases[rng.IntN(len(eqBases))]
	for n := rng.IntN(4); n > 0; n-- {
		switch rng.IntN(6) {
		case 0:
			if !strings.HasSuffix(path, "/") {
				path += "/"
			}
		case 1:
			path += "a.b" // a dot inside a segment is no dot segment
		default:
			for k := 1 + rng.IntN(6); k > 0; k-- {
				path += string(eqPathBytes[rng.IntN(len(eqPathBytes))])
			}
		}
	}
	target := path
	if rng.IntN(4) == 0 {
		target += "?q=/v1/admin/../%zz&x"
	}
	return eqRequest{
		service: services[rng.IntN(len(services))],
		client:  netip.AddrPortFrom(eqClientNet.Addr().Next().Next().Next(), uint16(20000+i)),
		method:  eqMethods[rng.IntN(len(eqMethods))],
		host:    eqHosts[rng.IntN(len(eqHosts))],
		target:  target,
	}
}

func TestXDPEquivalence(t *testing.T) {
	cfg := equivalenceConfig()
	tab, err := router.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := newEqEnv(t, cfg)

	// which pool each backend belongs to: XDP's SYN names a backend
	poolOf := map[netip.AddrPort]string{}
	for _, p := range cfg.Pools {
		for _, b := range p.Backends {
			poolOf[b.Address] = p.Name
		}
	}
	var services []netip.AddrPort
	for _, s := range cfg.Services {
		services = append(services, netip.AddrPortFrom(s.VIP, s.Port))
	}

	const requests = 800
	rng := rand.New(rand.NewPCG(1, 2))
	outcomes := map[string]int{}
	for i := range requests {
		req := genRequest(rng, services, i)
		// vary the client address too: it feeds the Maglev hash
		req.client = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 2, byte(2 + rng.IntN(250))}), req.client.Port())
		path, _, _ := strings.Cut(req.target, "?")
		if !xdpRoutesRaw(path) || len(path) >= 127 {
			t.Fatalf("generator made %q, which XDP does not route raw", req.target)
		}
		normalized, err := router.NormalizePath(req.target)
		if err != nil || normalized != req.target {
			t.Fatalf("NormalizePath(%q) = %q, %v: a path XDP routes raw must stay as it is", req.target, normalized, err)
		}

		isn := rng.Uint32()
		cookie := syncookie.Make(syncookie.Tuple{Client: req.client, VIP: req.service}, isn,
			syncookie.Options{MSS: 1460, WScale: 7}, 0, eqKeys[0])
		payload := req.bytes(rng)
		verdict, out, err := e.run(firstSegment(req.client, req.service, isn, cookie, payload))
		if err != nil {
			t.Fatalf("test run: %v", err)
		}
		f, hasFlow, err := e.flow(req.client, req.service)
		if err != nil {
			t.Fatalf("flow lookup: %v", err)
		}

		pool, routeErr := tab.Route(req.service, req.method, req.host, normalized)
		desc := fmt.Sprintf("request %d to %s from %s: %q", i, req.service, req.client, payload)
		switch {
		case verdict == xdpRedirect || verdict == xdpTX:
			if !hasFlow || f.Splice != xdp.SpliceSYNSent {
				t.Fatalf("%s: verdict %d without a SYN_SENT flow (%+v)", desc, verdict, f)
			}
			ip := out[14:34]
			tcp := out[34:]
			if ip[9] != loader.ProtoTCP || tcp[13] != 0x02 {
				t.Fatalf("%s: XDP's output is no SYN: % x", desc, out[:54])
			}
			backend := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(tcp[2:4]))
			if routeErr != nil || pool != poolOf[backend] {
				t.Fatalf("%s: XDP sent it to %s of pool %q; router: pool %q, %v", desc, backend, poolOf[backend], pool, routeErr)
			}
			if got := tab.Backends(nil, pool, req.client, req.service, 3); len(got) == 0 || got[0] != backend {
				t.Fatalf("%s: XDP chose backend %s; router: %v", desc, backend, got)
			}
			outcomes["routed "+pool]++
		case verdict == xdpPass:
			if !hasFlow || f.Splice != xdp.SpliceSlowpath {
				t.Fatalf("%s: XDP_PASS without a slow-path flow (%+v)", desc, f)
			}
			reason := xdp.SlowpathReasonName(xdp.SlowpathReason(f.Reason))
			switch reason {
			case "no_route":
				if !errors.Is(routeErr, router.ErrNoRoute) {
					t.Fatalf("%s: XDP found no route; router: pool %q, %v", desc, pool, routeErr)
				}
			case "method":
				var mna *router.MethodNotAllowedError
				if !errors.As(routeErr, &mna) {
					t.Fatalf("%s: XDP refused the method; router: pool %q, %v", desc, pool, routeErr)
				}
			default:
				t.Fatalf("%s: slow path for %s: the generator must make requests XDP routes raw", desc, reason)
			}
			outcomes["slow path "+reason]++
		case verdict == xdpDrop:
			// The route's pool has no weighted backend (the only drop a
			// valid first segment can meet).
			if hasFlow {
				t.Fatalf("%s: dropped, yet a flow exists (%+v)", desc, f)
			}
			if routeErr != nil {
				t.Fatalf("%s: XDP dropped it (no backend); router: %v", desc, routeErr)
			}
			if got := tab.Backends(nil, pool, req.client, req.service, 3); got != nil {
				t.Fatalf("%s: XDP has no backend in pool %q; router: %v", desc, pool, got)
			}
			outcomes["dropped, no backend in "+pool]++
		default:
			t.Fatalf("%s: verdict %d", desc, verdict)
		}
	}
	t.Logf("%d requests: %v", requests, outcomes)
	for _, want := range []string{"routed a", "routed b", "routed c", "slow path no_route", "slow path method", "dropped, no backend in off"} {
		if outcomes[want] < 5 {
			t.Errorf("only %d requests %s: the generator misses a case", outcomes[want], want)
		}
	}
}
