package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/rauta-lb/rauta/tools/testbed"
)

// Mode names, as in the report and -modes.
const (
	modeKernel = "kernel"
	modeRauta  = "rauta-l4"
	// The same daemon run serves both; rauta-http is the XDP HTTP fast
	// path (SYN cookie, routing, splicing) on another port of the VIP.
	modeRautaHTTP = "rauta-http"
	modeNginx     = "nginx-proxy"
	modeHAProxy   = "haproxy"
	// Both are served by one run of the real rauta binary (rautaproc.go):
	// a %-escaped path on the HTTP service, which XDP hands to the slow
	// path, and the https service, which is slow path only.
	modeRautaSlow = "rauta-slow"
	modeRautaTLS  = "rauta-tls"
	modeNginxTLS  = "nginx-tls"
	// nginx-proxy again, measured while the rauta process of the slow-path
	// modes has its XDP program on the LB's veths (rautaproc.go): on veth
	// any XDP program, native or generic, costs every packet a copy,
	// which nginx-proxy does not pay and rauta-slow does.
	modeNginxXDP = "nginx-proxy-xdp"
)

// Ports on the testbed.
const (
	originPort    = 80   // nginx origin in backend 1; also the rauta service port
	nginxPort     = 8080 // nginx reverse proxy on the LB's client-side address
	haproxyPort   = 8081 // HAProxy on the LB's client-side address
	rautaHTTPPort = 8080 // rauta's HTTP service on the VIP
	rautaTLSPort  = 443  // rauta's https service on the VIP
	nginxTLSPort  = 8443 // nginx terminating TLS on the LB's client-side address
)

// slowPath is the path of the rauta-slow mode: "%69" is an escaped 'i',
// which XDP does not route, so every request goes through the slow path;
// the proxy forwards the normalised /index.html, which the origin answers
// like any other path.
const slowPath = "/%69ndex.html"

// Client ephemeral ports are split between the modes (clientPorts).
const (
	clientPortLow  = 10000
	clientPortHigh = 60999
)

// mode is one way of getting from the client to the origin.
type mode struct {
	Name string
	Desc string
	// Ports is the client's ephemeral port range while this mode runs.
	Ports [2]int
	// Terminates: the mode's server is a proxy ending the client's TCP
	// connection, so the origin never sees the client's ports. Such modes
	// may share a port slice when their targets differ (clientPorts).
	Terminates bool
	// TLS: wrk speaks https to the target.
	TLS bool
	// Path is the request path; "/" if empty.
	Path string
	// target is where wrk connects to.
	target func(tb *testbed.Testbed) netip.AddrPort
}

func (m mode) url(tb *testbed.Testbed) string {
	scheme, defaultPort := "http", uint16(80)
	if m.TLS {
		scheme, defaultPort = "https", 443
	}
	a := m.target(tb)
	host := a.String()
	if a.Port() == defaultPort {
		host = a.Addr().String()
	}
	path := m.Path
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path
}

// httpURL leaves out the default port, as one would type it.
func httpURL(a netip.AddrPort) string {
	if a.Port() == 80 {
		return fmt.Sprintf("http://%s/", a.Addr())
	}
	return fmt.Sprintf("http://%s/", a)
}

func origin(tb *testbed.Testbed) netip.AddrPort {
	return netip.AddrPortFrom(tb.BackendAddrs[0], originPort)
}

// allModes lists every mode, in the default order.
var allModes = []mode{
	{
		Name:   modeKernel,
		Desc:   "straight to the origin, routed by the kernel in the LB namespace; no XDP attached",
		Ports:  clientPorts(0),
		target: origin,
	},
	{
		Name:  modeRauta,
		Ports: clientPorts(1),
		Desc:  "the VIP, served by rauta's XDP L4 path (daemon attached to eth1 and eth2 of the LB, tcp service → pool of the origin); the daemon is stopped after each round's runs",
		target: func(tb *testbed.Testbed) netip.AddrPort {
			return netip.AddrPortFrom(tb.VIPs[0], originPort)
		},
	},
	{
		Name:  modeRautaHTTP,
		Ports: clientPorts(4),
		Desc:  "the VIP's HTTP service, served by rauta's XDP HTTP fast path (SYN cookies, route / → pool of the origin, connection spliced onto a backend connection by sequence translation); runs with rauta-l4's daemon",
		target: func(tb *testbed.Testbed) netip.AddrPort {
			return netip.AddrPortFrom(tb.VIPs[0], rautaHTTPPort)
		},
	},
	{
		Name:       modeNginx,
		Ports:      clientPorts(2),
		Terminates: true,
		Desc:       "nginx reverse proxy in the LB namespace, 2 workers, 64 keep-alive upstream connections, HTTP/1.1 upstream",
		target: func(tb *testbed.Testbed) netip.AddrPort {
			return netip.AddrPortFrom(tb.LBClientAddr, nginxPort)
		},
	},
	{
		Name:       modeHAProxy,
		Ports:      clientPorts(3),
		Terminates: true,
		Desc:       "HAProxy in the LB namespace, mode http, 2 threads, http-reuse always",
		target: func(tb *testbed.Testbed) netip.AddrPort {
			return netip.AddrPortFrom(tb.LBClientAddr, haproxyPort)
		},
	},
	{
		Name:       modeRautaSlow,
		Ports:      clientPorts(2), // shared with nginx-proxy: another target
		Terminates: true,
		Path:       slowPath,
		Desc:       "the VIP's HTTP service with a %-escaped path, which XDP hands to rauta's slow-path proxy (TC handoff, fasthttp, keep-alive backend connections; normalised path forwarded); the real `rauta run` binary in the LB namespace, run for rauta-slow, nginx-proxy-xdp and rauta-tls and stopped after each round's runs",
		target: func(tb *testbed.Testbed) netip.AddrPort {
			return netip.AddrPortFrom(tb.VIPs[0], rautaHTTPPort)
		},
	},
	{
		Name:       modeNginxXDP,
		Ports:      clientPorts(3), // nginx-proxy's target, so not its slice; shared with haproxy and rauta-tls: other targets
		Terminates: true,
		Desc:       "the same nginx reverse proxy as nginx-proxy, measured while rauta-slow's `rauta run` process has its XDP program attached to the LB's eth1 and eth2: nginx's address is no rauta service, so XDP passes every packet to the kernel (XDP_PASS), but on veth running XDP at all costs a copy of each cloned skb, which nginx-proxy without XDP does not pay; runs with rauta-slow's daemon",
		target: func(tb *testbed.Testbed) netip.AddrPort {
			return netip.AddrPortFrom(tb.LBClientAddr, nginxPort)
		},
	},
	{
		Name:       modeRautaTLS,
		Ports:      clientPorts(3), // shared with haproxy: another target
		Terminates: true,
		TLS:        true,
		Desc:       "the VIP's https service: TLS terminated by rauta's slow path (self-signed ECDSA P-256 certificate, Go crypto/tls), route / → the origin; runs with rauta-slow's daemon",
		target: func(tb *testbed.Testbed) netip.AddrPort {
			return netip.AddrPortFrom(tb.VIPs[0], rautaTLSPort)
		},
	},
	{
		Name:       modeNginxTLS,
		Ports:      clientPorts(2), // shared with nginx-proxy: another target
		Terminates: true,
		TLS:        true,
		Desc:       "nginx terminating TLS in the LB namespace with the same certificate (OpenSSL), otherwise as nginx-proxy: 2 workers, 64 keep-alive upstream connections",
		target: func(tb *testbed.Testbed) netip.AddrPort {
			return netip.AddrPortFrom(tb.LBClientAddr, nginxTLSPort)
		},
	},
}

// clientPorts is the i-th of the four equal slices of the client's
// ephemeral ports, one per mode. The origin keeps TIME_WAIT sockets of
// closed connections for 60s, and kernel and rauta-l4 both reach it from
// the client's address: if one mode reused the other's ports, its SYNs
// would hit those sockets with TCP timestamps from another clock offset
// (Linux derives the offset from the destination the client sees, the
// origin or the VIP), be rejected by PAWS (TcpExtPAWSTimewait on the
// origin) and be retransmitted 1s later, which would penalise whichever
// mode comes second. Proxies end the client's connection, so the origin
// never sees those ports, and a slice can serve two of them as long as
// their targets differ (no 4-tuple is shared).
func clientPorts(i int) [2]int {
	const per = (clientPortHigh - clientPortLow + 1) / 5
	lo := clientPortLow + i*per
	return [2]int{lo, lo + per - 1}
}

func modeNames(modes []mode) []string {
	names := make([]string, len(modes))
	for i, m := range modes {
		names[i] = m.Name
	}
	return names
}

// selectModes parses -modes.
func selectModes(list string) ([]mode, error) {
	var out []mode
	seen := map[string]bool{}
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if seen[name] {
			return nil, fmt.Errorf("-modes: %q given twice", name)
		}
		seen[name] = true
		found := false
		for _, m := range allModes {
			if m.Name == name {
				out = append(out, m)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("-modes: unknown mode %q (known: %s)", name, strings.Join(modeNames(allModes), ", "))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-modes: no mode given")
	}
	return out, nil
}
