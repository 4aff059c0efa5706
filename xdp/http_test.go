package xdp_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/rauta-lb/rauta/loader"
	"github.com/rauta-lb/rauta/syncookie"
	"github.com/rauta-lb/rauta/xdp"
)

// httpState is one HTTP service on VIP:80 routing everything to web.
func httpState() loader.State {
	web := webPool()
	return loader.State{
		Services: []loader.Service{{Name: "site", VIP: vip, Port: webPort, Protocol: loader.ProtoTCP, HTTP: true,
			Routes: []loader.Route{{Path: "/", Pool: web.Name}}}},
		Pools: []loader.Pool{web},
	}
}

func newHTTPEnv(t *testing.T) (*env, [2]syncookie.Key) {
	e := newEnv(t)
	e.apply(t, httpState())
	var keys [2]syncookie.Key
	for i := range keys {
		k, err := syncookie.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
		if err := e.objs.SyncookieKeys.Put(uint32(i), k); err != nil {
			t.Fatal(err)
		}
	}
	return e, keys
}

func decodeTCP(t *testing.T, frame []byte) (*layers.IPv4, *layers.TCP) {
	t.Helper()
	mustCheckFrame(t, frame)
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if ip == nil || tcp == nil {
		t.Fatalf("not TCP/IPv4:\n%s", hexdump(frame))
	}
	return ip, tcp
}

func tcpOptions(tcp *layers.TCP) map[layers.TCPOptionKind][]byte {
	m := map[layers.TCPOptionKind][]byte{}
	for _, o := range tcp.Options {
		if o.OptionType != layers.TCPOptionKindNop {
			m[o.OptionType] = o.OptionData
		}
	}
	return m
}

func TestHTTPHandshakeAndSplice(t *testing.T) {
	e, keys := newHTTPEnv(t)
	cl := netip.AddrPortFrom(client, 41000)
	vipPort := netip.AddrPortFrom(vip, webPort)
	tuple := syncookie.Tuple{Client: cl, VIP: vipPort}

	// SYN -> SYN-ACK with a cookie, sent back where it came from.
	s := tcpPkt(clientMAC, eth1MAC, cl, vipPort, syn)
	out := e.expect(t, s.frame(), e.eth1, xdpRedirect)
	ip, tcp := decodeTCP(t, out)
	if !tcp.SYN || !tcp.ACK || tcp.Ack != s.seq+1 || ip.SrcIP.String() != vip.String() || ip.DstIP.String() != client.String() {
		t.Fatalf("not a SYN-ACK to the client: %+v %+v", ip, tcp)
	}
	if tcp.Window != 1460 {
		t.Errorf("SYN-ACK window %d, want one MSS (1460)", tcp.Window)
	}
	opts := tcpOptions(tcp)
	if mss := opts[layers.TCPOptionKindMSS]; len(mss) != 2 || binary.BigEndian.Uint16(mss) != 1460 {
		t.Errorf("MSS option %v", mss)
	}
	if ws := opts[layers.TCPOptionKindWindowScale]; len(ws) != 1 || ws[0] != 7 {
		t.Errorf("window scale option %v", ws)
	}
	cookieOpts, ok := syncookie.Check(tuple, s.seq, tcp.Seq, keys)
	if !ok {
		t.Fatalf("SYN-ACK ISN %#x is not a valid cookie", tcp.Seq)
	}
	if cookieOpts.MSS != 1460 || cookieOpts.WScale != 7 {
		t.Errorf("cookie carries %+v, want MSS 1460 and window scale 7", cookieOpts)
	}
	cookie := tcp.Seq

	// The bare ACK completes the handshake and leaves no state.
	a := tcpPkt(clientMAC, eth1MAC, cl, vipPort, ack)
	a.seq, a.ack, a.payload = s.seq+1, cookie+1, nil
	e.expect(t, a.frame(), e.eth1, xdpDrop)
	key := flowKey(loader.ProtoTCP, cl, vipPort)
	if _, ok := e.flow(t, key); ok {
		t.Fatal("a bare ACK created a flow")
	}
	// A forged ACK is dropped too.
	bad := a
	bad.ack++
	bad.payload = []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	e.expect(t, bad.frame(), e.eth1, xdpDrop)
	if _, ok := e.flow(t, key); ok {
		t.Fatal("a forged cookie created a flow")
	}

	// The first request becomes the SYN to the backend: client address,
	// port and ISN, the cookie's options.
	req := []byte("GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: test\r\n\r\n")
	d := tcpPkt(clientMAC, eth1MAC, cl, vipPort, tcpFlags{ACK: true, PSH: true})
	d.seq, d.ack, d.payload = s.seq+1, cookie+1, req
	out = e.expect(t, d.frame(), e.eth1, xdpRedirect)
	ip, tcp = decodeTCP(t, out)
	be, ok := chosen(t, webPool(), key)
	if !ok {
		t.Fatal("no backend")
	}
	if !tcp.SYN || tcp.ACK || tcp.Seq != s.seq || len(tcp.Payload) != 0 {
		t.Fatalf("not the backend SYN: %+v", tcp)
	}
	if ip.SrcIP.String() != client.String() || ip.DstIP.String() != be.Addr().String() || uint16(tcp.DstPort) != be.Port() || uint16(tcp.SrcPort) != cl.Port() {
		t.Fatalf("backend SYN %s:%d -> %s:%d, want %s -> %s", ip.SrcIP, tcp.SrcPort, ip.DstIP, tcp.DstPort, cl, be)
	}
	if ws := tcpOptions(tcp)[layers.TCPOptionKindWindowScale]; len(ws) != 1 || ws[0] != 7 {
		t.Errorf("backend SYN window scale %v, want the client's 7", ws)
	}
	f, ok := e.flow(t, key)
	if !ok || f.Splice != xdp.SpliceSYNSent || f.ClientIsn != s.seq || f.LbIsn != cookie {
		t.Fatalf("flow after first request: %+v", f)
	}

	// The backend's SYN-ACK becomes the ACK carrying the request, back to
	// the backend.
	const backendISN = 0x50000000
	sa := tcpPkt(macOf(be.Addr()), eth2MAC, be, cl, synAck)
	sa.seq, sa.ack = backendISN, s.seq+1
	out = e.expect(t, sa.frame(), e.eth2, xdpRedirect)
	ip, tcp = decodeTCP(t, out)
	if tcp.SYN || !tcp.ACK || tcp.Seq != s.seq+1 || tcp.Ack != backendISN+1 || string(tcp.Payload) != string(req) {
		t.Fatalf("not the ACK with the request: seq %d ack %d payload %q", tcp.Seq, tcp.Ack, tcp.Payload)
	}
	if ip.SrcIP.String() != client.String() || ip.DstIP.String() != be.Addr().String() {
		t.Fatalf("ACK %s -> %s", ip.SrcIP, ip.DstIP)
	}

	// Backend -> client: SNAT to the VIP, sequence numbers in the LB's space.
	resp := tcpPkt(macOf(be.Addr()), eth2MAC, be, cl, tcpFlags{ACK: true, PSH: true})
	resp.seq, resp.ack, resp.payload = backendISN+1, s.seq+1+uint32(len(req)), []byte("HTTP/1.1 200 OK\r\n\r\n")
	out = e.expect(t, resp.frame(), e.eth2, xdpRedirect)
	ip, tcp = decodeTCP(t, out)
	if ip.SrcIP.String() != vip.String() || uint16(tcp.SrcPort) != webPort || tcp.Seq != cookie+1 || tcp.Ack != resp.ack {
		t.Fatalf("response to client: %s:%d seq %#x ack %d, want VIP:80 seq %#x", ip.SrcIP, tcp.SrcPort, tcp.Seq, tcp.Ack, cookie+1)
	}

	// Client -> backend: acknowledgements move into the backend's space.
	ca := tcpPkt(clientMAC, eth1MAC, cl, vipPort, ack)
	ca.seq, ca.ack, ca.payload = s.seq+1+uint32(len(req)), cookie+1+20, nil
	out = e.expect(t, ca.frame(), e.eth1, xdpRedirect)
	ip, tcp = decodeTCP(t, out)
	if ip.DstIP.String() != be.Addr().String() || tcp.Ack != backendISN+1+20 {
		t.Fatalf("client ACK to backend: %s ack %#x, want %s ack %#x", ip.DstIP, tcp.Ack, be.Addr(), backendISN+1+20)
	}
}
