package config

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rauta-lb/rauta/maglev"
)

func (p *parser) config(root *yaml.Node) *Config {
	cfg := &Config{
		XDPMode: XDPModeAuto,
		BPFFS:   DefaultBPFFS,
		Flows: Flows{
			TCPIdleTimeout: DefaultTCPIdleTimeout,
			UDPIdleTimeout: DefaultUDPIdleTimeout,
			ClosedTimeout:  DefaultClosedTimeout,
		},
		Slowpath: Slowpath{
			ConnectTimeout: DefaultConnectTimeout,
			IdleTimeout:    DefaultIdleTimeout,
			RequestTimeout: DefaultRequestTimeout,
			MaxHeaderBytes: DefaultMaxHeaderBytes,
			AccessLog:      true,
		},
	}
	top, ok := p.object(root, "", "interfaces", "xdp_mode", "bpffs", "services", "pools", "metrics", "flows", "slowpath")
	if !ok {
		return cfg
	}
	if n, ok := p.required(top, "interfaces"); ok {
		cfg.Interfaces = p.interfaces(n)
	}
	if n, ok := top.values["xdp_mode"]; ok {
		cfg.XDPMode = p.xdpMode(n)
	}
	if n, ok := top.values["bpffs"]; ok {
		cfg.BPFFS = p.bpffs(n)
	}
	// A pools section that is not a mapping at all leaves pool names
	// unknown; checking references against it would only add noise.
	pools := poolSet{checkable: true}
	if n, ok := top.values["pools"]; ok {
		cfg.Pools, pools = p.pools(n)
	}
	if n, ok := top.values["services"]; ok {
		cfg.Services = p.services(n, pools)
	}
	if n, ok := top.values["metrics"]; ok {
		cfg.Metrics = p.metrics(n)
	}
	if n, ok := top.values["flows"]; ok {
		cfg.Flows = p.flows(n, cfg.Flows)
	}
	if n, ok := top.values["slowpath"]; ok {
		cfg.Slowpath = p.slowpath(n, cfg.Slowpath)
	}
	return cfg
}

func (p *parser) interfaces(n *yaml.Node) []string {
	const at = "interfaces"
	items, ok := p.list(n, at)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.errorf(n, at, "at least one interface is required")
		return nil
	}
	names := make([]string, 0, len(items))
	firstLine := make(map[string]int, len(items))
	for i, item := range items {
		itemAt := index(at, i)
		name, ok := p.str(item, itemAt)
		if !ok {
			continue
		}
		if msg := checkInterfaceName(name); msg != "" {
			p.errorf(item, itemAt, "invalid interface name %q: %s", name, msg)
			continue
		}
		if line, dup := firstLine[name]; dup {
			p.errorf(item, itemAt, "duplicate interface %q (first at line %d)", name, line)
			continue
		}
		firstLine[name] = item.Line
		if p.opts.InterfaceExists != nil && !p.opts.InterfaceExists(name) {
			p.errorf(item, itemAt, "unknown interface %q", name)
			continue
		}
		names = append(names, name)
	}
	return names
}

func (p *parser) xdpMode(n *yaml.Node) XDPMode {
	s, ok := p.str(n, "xdp_mode")
	if !ok {
		return XDPModeAuto
	}
	switch mode := XDPMode(s); mode {
	case XDPModeAuto, XDPModeNative, XDPModeGeneric:
		return mode
	}
	p.errorf(n, "xdp_mode", "invalid mode %q (valid: auto, native, generic)", s)
	return XDPModeAuto
}

func (p *parser) bpffs(n *yaml.Node) string {
	s, ok := p.str(n, "bpffs")
	if !ok {
		return DefaultBPFFS
	}
	if !path.IsAbs(s) {
		p.errorf(n, "bpffs", "must be an absolute path, got %q", s)
		return DefaultBPFFS
	}
	return path.Clean(s)
}

// poolSet is what service validation needs to know about pools.
type poolSet struct {
	names     map[string]bool // every pool key in the file, valid or not
	checkable bool
}

func (s poolSet) unknown(name string) bool { return s.checkable && !s.names[name] }

func (p *parser) pools(n *yaml.Node) ([]Pool, poolSet) {
	entries, ok := p.entries(n, "pools")
	if !ok {
		return nil, poolSet{}
	}
	set := poolSet{names: make(map[string]bool, len(entries)), checkable: true}
	pools := make([]Pool, 0, len(entries))
	for _, e := range entries {
		// Known even if invalid, so services using it are not also
		// blamed for naming an unknown pool.
		set.names[e.key] = true
		at := field("pools", e.key)
		if msg := checkName(e.key); msg != "" {
			p.errorf(e.keyAt, at, "invalid pool name %q: %s", e.key, msg)
			continue
		}
		if pool, ok := p.pool(e.value, at, e.key); ok {
			pools = append(pools, pool)
		}
	}
	slices.SortFunc(pools, func(a, b Pool) int { return cmp.Compare(a.Name, b.Name) })
	return pools, set
}

func (p *parser) pool(n *yaml.Node, at, name string) (Pool, bool) {
	obj, ok := p.object(n, at, "maglev_size", "health_check", "backends")
	if !ok {
		return Pool{}, false
	}
	errs := len(p.errs)
	pool := Pool{Name: name, MaglevSize: maglev.DefaultSize}
	if n, ok := obj.values["maglev_size"]; ok {
		size, ok := p.integer(n, field(at, "maglev_size"), MinMaglevSize, MaxMaglevSize)
		if ok && !maglev.IsPrime(uint32(size)) {
			p.errorf(n, field(at, "maglev_size"), "%d is not prime (Maglev needs a prime table size; the default is %d)", size, maglev.DefaultSize)
		}
		pool.MaglevSize = uint32(size)
	}
	if n, ok := p.required(obj, "backends"); ok {
		pool.Backends = p.backends(n, field(at, "backends"))
	}
	if n, ok := obj.values["health_check"]; ok {
		pool.HealthCheck = p.healthCheck(n, field(at, "health_check"))
	}
	if len(p.errs) != errs {
		return Pool{}, false
	}

	weighted := 0
	for _, b := range pool.Backends {
		if b.Weight > 0 {
			weighted++
		}
	}
	if weighted == 0 {
		p.errorf(obj.values["backends"], field(at, "backends"), "every backend has weight 0 (drained); at least one needs a weight above 0")
		return Pool{}, false
	}
	if uint32(weighted) > pool.MaglevSize {
		sizeAt := obj.at
		if n, ok := obj.values["maglev_size"]; ok {
			sizeAt = n
		}
		p.errorf(sizeAt, field(at, "maglev_size"), "%d is smaller than the number of weighted backends (%d)", pool.MaglevSize, weighted)
		return Pool{}, false
	}
	return pool, true
}

func (p *parser) healthCheck(n *yaml.Node, at string) *HealthCheck {
	obj, ok := p.object(n, at, "interval", "timeout", "fall", "rise", "http_path")
	if !ok {
		return nil
	}
	hc := &HealthCheck{Interval: DefaultHealthInterval, Fall: DefaultHealthFall, Rise: DefaultHealthRise}
	if n, ok := obj.values["interval"]; ok {
		hc.Interval, _ = p.duration(n, field(at, "interval"))
		if hc.Interval > 0 && hc.Interval < MinHealthInterval {
			p.errorf(n, field(at, "interval"), "%v is shorter than %v: every backend would be probed in a tight loop", hc.Interval, MinHealthInterval)
		}
	}
	// An unset timeout is the default or the interval, whichever is
	// shorter (HAProxy's check timeout defaults to the interval).
	hc.Timeout = min(DefaultHealthTimeout, hc.Interval)
	if n, ok := obj.values["timeout"]; ok {
		hc.Timeout, _ = p.duration(n, field(at, "timeout"))
		if hc.Timeout > 0 && hc.Timeout < MinHealthTimeout {
			p.errorf(n, field(at, "timeout"), "%v is shorter than %v: no backend could answer in time", hc.Timeout, MinHealthTimeout)
		}
	}
	if n, ok := obj.values["fall"]; ok {
		v, _ := p.integer(n, field(at, "fall"), 1, MaxHealthCount)
		hc.Fall = int(v)
	}
	if n, ok := obj.values["rise"]; ok {
		v, _ := p.integer(n, field(at, "rise"), 1, MaxHealthCount)
		hc.Rise = int(v)
	}
	if n, ok := obj.values["http_path"]; ok {
		path, ok := p.str(n, field(at, "http_path"))
		if ok && (!strings.HasPrefix(path, "/") || strings.ContainsFunc(path, func(r rune) bool { return r <= ' ' || r == 0x7f })) {
			p.errorf(n, field(at, "http_path"), "%q is not an origin-form path: it must start with / and contain no spaces or control characters", path)
		}
		hc.HTTPPath = path
	}
	if hc.Timeout > hc.Interval && hc.Interval > 0 {
		tAt := obj.at
		if n, ok := obj.values["timeout"]; ok {
			tAt = n
		}
		p.errorf(tAt, field(at, "timeout"), "%v is longer than the interval (%v): a probe must end before the next one is due", hc.Timeout, hc.Interval)
	}
	return hc
}

func (p *parser) backends(n *yaml.Node, at string) []Backend {
	items, ok := p.list(n, at)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.errorf(n, at, "at least one backend is required")
		return nil
	}
	backends := make([]Backend, 0, len(items))
	firstLine := make(map[netip.AddrPort]int, len(items))
	for i, item := range items {
		b, ok := p.backend(item, index(at, i))
		if !ok {
			continue
		}
		if line, dup := firstLine[b.Address]; dup {
			p.errorf(item, field(index(at, i), "address"), "duplicate backend %s (first at line %d)", b.Address, line)
			continue
		}
		firstLine[b.Address] = item.Line
		backends = append(backends, b)
	}
	return backends
}

func (p *parser) backend(n *yaml.Node, at string) (Backend, bool) {
	obj, ok := p.object(n, at, "address", "weight")
	if !ok {
		return Backend{}, false
	}
	errs := len(p.errs)
	b := Backend{Weight: 1}
	if n, ok := p.required(obj, "address"); ok {
		b.Address, _ = p.addrPort(n, field(at, "address"))
	}
	if n, ok := obj.values["weight"]; ok {
		w, _ := p.integer(n, field(at, "weight"), 0, MaxWeight)
		b.Weight = uint32(w)
	}
	return b, len(p.errs) == errs
}

func (p *parser) addrPort(n *yaml.Node, at string) (netip.AddrPort, bool) {
	s, ok := p.str(n, at)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		if _, err := netip.ParseAddr(s); err == nil {
			p.errorf(n, at, "address %q has no port; want IPv4:port, e.g. 10.0.1.11:80", s)
		} else {
			p.errorf(n, at, "invalid address %q; want IPv4:port, e.g. 10.0.1.11:80", s)
		}
		return netip.AddrPort{}, false
	}
	if msg := checkUnicastIPv4(ap.Addr()); msg != "" {
		p.errorf(n, at, "address %q: %s", s, msg)
		return netip.AddrPort{}, false
	}
	if ap.Port() == 0 {
		p.errorf(n, at, "address %q: port must be 1..65535", s)
		return netip.AddrPort{}, false
	}
	return ap, true
}

// listener is a service's claim on a VIP:port. TCP and HTTP share the TCP
// port space; UDP has its own.
type listener struct {
	addr netip.AddrPort
	udp  bool
}

type serviceRef struct {
	name  string
	index int
	line  int
}

func (p *parser) services(n *yaml.Node, pools poolSet) []Service {
	items, ok := p.list(n, "services")
	if !ok {
		return nil
	}
	type redirect struct {
		at   string
		node *yaml.Node
	}
	services := make([]Service, 0, len(items))
	redirects := make([]redirect, 0, len(items)) // parallel to services
	// httpsPorts holds every https service's port by VIP, valid or not, so
	// a broken https service is reported once, not again by each redirect
	// that points at it.
	httpsPorts := make(map[netip.Addr][]uint16)
	names := make(map[string]serviceRef, len(items))
	listeners := make(map[listener]serviceRef, len(items))
	for i, item := range items {
		at := index("services", i)
		svc, redirectNode, ok := p.service(item, at, pools)
		if svc.Protocol == ProtocolHTTPS && svc.VIP.IsValid() && svc.Port != 0 {
			httpsPorts[svc.VIP] = append(httpsPorts[svc.VIP], svc.Port)
		}
		if !ok {
			continue
		}
		self := serviceRef{name: svc.Name, index: i, line: item.Line}
		if other, dup := names[svc.Name]; dup {
			p.errorf(item, field(at, "name"), "duplicate service name %q (also services[%d], line %d)", svc.Name, other.index, other.line)
			continue
		}
		names[svc.Name] = self
		l := listener{addr: netip.AddrPortFrom(svc.VIP, svc.Port), udp: svc.Protocol == ProtocolUDP}
		if other, dup := listeners[l]; dup {
			space := "tcp"
			if l.udp {
				space = "udp"
			}
			p.errorf(item, at, "service %q and service %q (services[%d], line %d) both listen on %s/%s", svc.Name, other.name, other.index, other.line, l.addr, space)
			continue
		}
		listeners[l] = self
		services = append(services, svc)
		redirects = append(redirects, redirect{field(at, "redirect_https"), redirectNode})
	}

	// Redirect targets are known only once every service is read.
	valid := services[:0]
	for i, svc := range services {
		if svc.RedirectHTTPS {
			port, ok := p.redirectPort(redirects[i].node, redirects[i].at, svc.VIP, httpsPorts[svc.VIP])
			if !ok {
				continue
			}
			svc.RedirectPort = port
		}
		valid = append(valid, svc)
	}
	return valid
}

// redirectPort picks the port an http service on vip redirects to: 443 if
// an https service listens there, else the only https port on vip.
func (p *parser) redirectPort(n *yaml.Node, at string, vip netip.Addr, ports []uint16) (uint16, bool) {
	const standard = 443
	switch {
	case slices.Contains(ports, standard):
		return standard, true
	case len(ports) == 1:
		return ports[0], true
	case len(ports) == 0:
		p.errorf(n, at, "no https service on %s to redirect to", vip)
	default:
		slices.Sort(ports)
		p.errorf(n, at, "https services on %s listen on ports %v and none on %d; the redirect target is ambiguous", vip, ports, standard)
	}
	return 0, false
}

// service parses one service. Even when it reports a problem, the returned
// Service holds what did parse, for checks across services. redirect is the
// redirect_https node, if any, for errors found later.
func (p *parser) service(n *yaml.Node, at string, pools poolSet) (svc Service, redirect *yaml.Node, ok bool) {
	obj, ok := p.object(n, at, "name", "vip", "port", "protocol", "pool", "routes", "tls", "redirect_https")
	if !ok {
		return Service{}, nil, false
	}
	errs := len(p.errs)
	if n, ok := p.required(obj, "name"); ok {
		svc.Name = p.name(n, field(at, "name"), "service")
	}
	if n, ok := p.required(obj, "vip"); ok {
		svc.VIP, _ = p.vip(n, field(at, "vip"))
	}
	if n, ok := p.required(obj, "port"); ok {
		port, _ := p.integer(n, field(at, "port"), 1, 65535)
		svc.Port = uint16(port)
	}
	protoKnown := false
	if n, ok := p.required(obj, "protocol"); ok {
		svc.Protocol, protoKnown = p.protocol(n, field(at, "protocol"))
	}
	redirect, hasRedirect := obj.values["redirect_https"]
	if hasRedirect {
		svc.RedirectHTTPS, _ = p.boolean(redirect, field(at, "redirect_https"))
	}

	poolNode, hasPool := obj.values["pool"]
	routesNode, hasRoutes := obj.values["routes"]
	tlsNode, hasTLS := obj.values["tls"]
	if protoKnown {
		routed := svc.IsHTTP()
		switch {
		case routed && hasPool:
			p.errorf(poolNode, field(at, "pool"), "not allowed for %s services; name pools in routes", svc.Protocol)
		case routed && !hasRoutes && !svc.RedirectHTTPS:
			p.errorf(obj.at, field(at, "routes"), "required field is missing (%s services route requests to pools)", svc.Protocol)
		case !routed && hasRoutes:
			p.errorf(routesNode, field(at, "routes"), "not allowed for %s services; routes are for http and https", svc.Protocol)
		case !routed && !hasPool:
			p.errorf(obj.at, field(at, "pool"), "required field is missing")
		}
		switch isHTTPS := svc.Protocol == ProtocolHTTPS; {
		case isHTTPS && !hasTLS:
			p.errorf(obj.at, field(at, "tls"), "required field is missing (https services need certificates)")
		case !isHTTPS && hasTLS:
			p.errorf(tlsNode, field(at, "tls"), "not allowed for %s services; tls is for https", svc.Protocol)
		}
		if hasRedirect && svc.Protocol != ProtocolHTTP {
			p.errorf(redirect, field(at, "redirect_https"), "not allowed for %s services; redirect_https is for http", svc.Protocol)
		}
	}
	// Check whatever is present even when it is misplaced, so one run
	// reports those problems too.
	if hasPool {
		svc.Pool, _ = p.poolRef(poolNode, field(at, "pool"), pools)
	}
	if hasRoutes {
		svc.Routes = p.routes(routesNode, field(at, "routes"), pools)
	}
	if hasTLS {
		svc.TLS = p.tls(tlsNode, field(at, "tls"))
	}
	return svc, redirect, len(p.errs) == errs
}

func (p *parser) tls(n *yaml.Node, at string) TLS {
	obj, ok := p.object(n, at, "certificates")
	if !ok {
		return TLS{}
	}
	n, ok = p.required(obj, "certificates")
	if !ok {
		return TLS{}
	}
	at = field(at, "certificates")
	items, ok := p.list(n, at)
	if !ok {
		return TLS{}
	}
	if len(items) == 0 {
		p.errorf(n, at, "at least one certificate is required")
		return TLS{}
	}
	certs := make([]Certificate, 0, len(items))
	firstLine := make(map[string]int, len(items))
	for i, item := range items {
		c, ok := p.certificate(item, index(at, i))
		if !ok {
			continue
		}
		if line, dup := firstLine[c.Cert]; dup {
			p.errorf(item, field(index(at, i), "cert"), "duplicate certificate %q (first at line %d)", c.Cert, line)
			continue
		}
		firstLine[c.Cert] = item.Line
		certs = append(certs, c)
	}
	return TLS{Certificates: certs}
}

func (p *parser) certificate(n *yaml.Node, at string) (Certificate, bool) {
	obj, ok := p.object(n, at, "cert", "key")
	if !ok {
		return Certificate{}, false
	}
	errs := len(p.errs)
	var c Certificate
	var certPEM, keyPEM []byte
	if n, ok := p.required(obj, "cert"); ok {
		c.Cert, certPEM = p.pemFile(n, field(at, "cert"))
	}
	if n, ok := p.required(obj, "key"); ok {
		c.Key, keyPEM = p.pemFile(n, field(at, "key"))
	}
	if len(p.errs) != errs {
		return Certificate{}, false
	}
	if !p.opts.SkipFileChecks {
		// The check tls.LoadX509KeyPair makes when the slow path loads
		// the pair, so a file accepted here loads there.
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			p.errorf(obj.at, at, "cert and key do not load as a pair: %v", err)
			return Certificate{}, false
		}
	}
	return c, true
}

// pemFile checks a certificate or key path and, unless file checks are
// skipped, reads the file.
func (p *parser) pemFile(n *yaml.Node, at string) (string, []byte) {
	s, ok := p.str(n, at)
	if !ok {
		return "", nil
	}
	// A relative path would resolve against the daemon's working
	// directory, which has nothing to do with where the file is.
	if !filepath.IsAbs(s) {
		p.errorf(n, at, "must be an absolute path, got %q", s)
		return "", nil
	}
	if p.opts.SkipFileChecks {
		return s, nil
	}
	data, err := ReadPEM(s)
	if err != nil {
		p.errorf(n, at, "cannot read: %v", err)
		return "", nil
	}
	return s, data
}

// maxPEMBytes bounds a certificate or key file. A chain of a few
// certificates is a few KiB; the bound keeps a path like /dev/zero, or a
// file replaced by something huge, from hanging validation or a reload.
const maxPEMBytes = 1 << 20

// ReadPEM reads a certificate or key file the way validation does: a
// regular file of at most 1 MiB. The certificate store reloads with it, so
// a file that validated also loads.
func ReadPEM(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPEMBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxPEMBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxPEMBytes)
	}
	return data, nil
}

// name checks a service or pool name.
func (p *parser) name(n *yaml.Node, at, kind string) string {
	s, ok := p.str(n, at)
	if !ok {
		return ""
	}
	if msg := checkName(s); msg != "" {
		p.errorf(n, at, "invalid %s name %q: %s", kind, s, msg)
		return ""
	}
	return s
}

func (p *parser) vip(n *yaml.Node, at string) (netip.Addr, bool) {
	s, ok := p.str(n, at)
	if !ok {
		return netip.Addr{}, false
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		if _, err := netip.ParseAddrPort(s); err == nil {
			p.errorf(n, at, "%q includes a port; set it with port", s)
		} else {
			p.errorf(n, at, "invalid IP address %q", s)
		}
		return netip.Addr{}, false
	}
	if msg := checkUnicastIPv4(addr); msg != "" {
		p.errorf(n, at, "VIP %q: %s", s, msg)
		return netip.Addr{}, false
	}
	return addr, true
}

func (p *parser) protocol(n *yaml.Node, at string) (Protocol, bool) {
	s, ok := p.str(n, at)
	if !ok {
		return "", false
	}
	switch proto := Protocol(s); proto {
	case ProtocolTCP, ProtocolUDP, ProtocolHTTP, ProtocolHTTPS:
		return proto, true
	}
	p.errorf(n, at, "invalid protocol %q (valid: tcp, udp, http, https)", s)
	return "", false
}

func (p *parser) poolRef(n *yaml.Node, at string, pools poolSet) (string, bool) {
	name, ok := p.str(n, at)
	if !ok {
		return "", false
	}
	if pools.unknown(name) {
		p.errorf(n, at, "unknown pool %q", name)
		return "", false
	}
	return name, true
}

// routeKey identifies a route within a service: two routes with the same
// key would compete for the same requests.
type routeKey struct {
	host, path string
	exact      bool
}

func (p *parser) routes(n *yaml.Node, at string, pools poolSet) []Route {
	items, ok := p.list(n, at)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.errorf(n, at, "at least one route is required")
		return nil
	}
	routes := make([]Route, 0, len(items))
	seen := make(map[routeKey]int, len(items))
	for i, item := range items {
		r, ok := p.route(item, index(at, i), pools)
		if !ok {
			continue
		}
		key := routeKey{r.Host, r.Path, r.Exact}
		if first, dup := seen[key]; dup {
			p.errorf(item, index(at, i), "duplicate route: same host, path and exact as %s", index(at, first))
			continue
		}
		seen[key] = i
		routes = append(routes, r)
	}
	return routes
}

func (p *parser) route(n *yaml.Node, at string, pools poolSet) (Route, bool) {
	obj, ok := p.object(n, at, "host", "path", "exact", "methods", "pool")
	if !ok {
		return Route{}, false
	}
	errs := len(p.errs)
	var r Route
	if n, ok := obj.values["host"]; ok {
		if s, ok := p.str(n, field(at, "host")); ok {
			var msg string
			if r.Host, msg = normalizeHost(s); msg != "" {
				p.errorf(n, field(at, "host"), "invalid host %q: %s", s, msg)
			}
		}
	}
	if n, ok := p.required(obj, "path"); ok {
		if s, ok := p.str(n, field(at, "path")); ok {
			if msg := checkRoutePath(s); msg != "" {
				p.errorf(n, field(at, "path"), "invalid path %q: %s", s, msg)
			}
			r.Path = s
		}
	}
	if n, ok := obj.values["exact"]; ok {
		r.Exact, _ = p.boolean(n, field(at, "exact"))
	}
	if n, ok := obj.values["methods"]; ok {
		r.Methods = p.methods(n, field(at, "methods"))
	}
	if n, ok := p.required(obj, "pool"); ok {
		r.Pool, _ = p.poolRef(n, field(at, "pool"), pools)
	}
	return r, len(p.errs) == errs
}

// routableMethods are the methods a route may name. CONNECT is missing on
// purpose: its target is an authority, not a path, so path routes cannot
// apply to it.
var routableMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"}

func (p *parser) methods(n *yaml.Node, at string) []string {
	items, ok := p.list(n, at)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.errorf(n, at, "empty list; omit methods to allow every method")
		return nil
	}
	methods := make([]string, 0, len(items))
	for i, item := range items {
		s, ok := p.str(item, index(at, i))
		if !ok {
			continue
		}
		m := strings.ToUpper(s)
		switch {
		case m == "CONNECT":
			p.errorf(item, index(at, i), "CONNECT cannot be routed by path")
		case !slices.Contains(routableMethods, m):
			p.errorf(item, index(at, i), "unknown method %q (valid: %s)", s, strings.Join(routableMethods, ", "))
		case slices.Contains(methods, m):
			p.errorf(item, index(at, i), "duplicate method %s", m)
		default:
			methods = append(methods, m)
		}
	}
	return methods
}

func (p *parser) metrics(n *yaml.Node) Metrics {
	obj, ok := p.object(n, "metrics", "listen")
	if !ok {
		return Metrics{}
	}
	n, ok = obj.values["listen"]
	if !ok {
		return Metrics{}
	}
	s, ok := p.str(n, "metrics.listen")
	if !ok {
		return Metrics{}
	}
	if msg := checkListen(s); msg != "" {
		p.errorf(n, "metrics.listen", "invalid listen address %q: %s", s, msg)
		return Metrics{}
	}
	return Metrics{Listen: s}
}

// checkListen validates a host:port for net.Listen, where the host may be
// empty (all addresses), an IP address or a host name.
func checkListen(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "want host:port, e.g. 127.0.0.1:9100"
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "port must be a number in 1..65535"
	}
	if host == "" {
		return ""
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	if _, msg := normalizeHost(host); msg != "" || strings.HasPrefix(host, "*") {
		return "host must be an IP address or a host name"
	}
	return ""
}

func (p *parser) flows(n *yaml.Node, flows Flows) Flows {
	obj, ok := p.object(n, "flows", "tcp_idle_timeout", "udp_idle_timeout", "closed_timeout")
	if !ok {
		return flows
	}
	for _, timeout := range []struct {
		key string
		dst *time.Duration
	}{
		{"tcp_idle_timeout", &flows.TCPIdleTimeout},
		{"udp_idle_timeout", &flows.UDPIdleTimeout},
		{"closed_timeout", &flows.ClosedTimeout},
	} {
		if n, ok := obj.values[timeout.key]; ok {
			if d, ok := p.duration(n, field("flows", timeout.key)); ok {
				*timeout.dst = d
			}
		}
	}
	return flows
}

func (p *parser) slowpath(n *yaml.Node, sp Slowpath) Slowpath {
	const at = "slowpath"
	obj, ok := p.object(n, at, "connect_timeout", "idle_timeout", "request_timeout", "max_header_bytes", "max_body_bytes", "access_log")
	if !ok {
		return sp
	}
	for _, timeout := range []struct {
		key string
		dst *time.Duration
	}{
		{"connect_timeout", &sp.ConnectTimeout},
		{"idle_timeout", &sp.IdleTimeout},
		{"request_timeout", &sp.RequestTimeout},
	} {
		if n, ok := obj.values[timeout.key]; ok {
			if d, ok := p.duration(n, field(at, timeout.key)); ok {
				*timeout.dst = d
			}
		}
	}
	if n, ok := obj.values["max_header_bytes"]; ok {
		if v, ok := p.integer(n, field(at, "max_header_bytes"), MinMaxHeaderBytes, MaxMaxHeaderBytes); ok {
			sp.MaxHeaderBytes = int(v)
		}
	}
	if n, ok := obj.values["max_body_bytes"]; ok {
		if v, ok := p.integer(n, field(at, "max_body_bytes"), 0, math.MaxInt64); ok {
			sp.MaxBodyBytes = v
		}
	}
	if n, ok := obj.values["access_log"]; ok {
		if v, ok := p.boolean(n, field(at, "access_log")); ok {
			sp.AccessLog = v
		}
	}
	return sp
}
