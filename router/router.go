// Package router decides, in Go, what the XDP program decides in BPF: which
// pool an HTTP request's route names and which backend Maglev picks for a
// connection. The slow-path proxy uses it; both are built from the same
// config.Config snapshot, so both paths agree (a test in this package proves
// it against the loaded XDP program).
package router

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/rauta-lb/rauta/config"
	"github.com/rauta-lb/rauta/maglev"
)

// Sentinel errors of Route.
var (
	// ErrNoService: no http or https service listens on that VIP:port.
	ErrNoService = errors.New("no such service")
	// ErrNoRoute: no route of the service matches the host and path.
	ErrNoRoute = errors.New("no route")
	// ErrMethodNotAllowed is wrapped by *MethodNotAllowedError.
	ErrMethodNotAllowed = errors.New("method not allowed")
)

// MethodNotAllowedError is returned when the best route for a path does not
// allow the method. Allow lists the methods it does allow, uppercase and
// sorted, for a 405's Allow header.
type MethodNotAllowedError struct {
	Allow []string
}

func (e *MethodNotAllowedError) Error() string {
	return "method not allowed; allowed: " + strings.Join(e.Allow, ", ")
}

func (e *MethodNotAllowedError) Unwrap() error { return ErrMethodNotAllowed }

// Table is an immutable routing snapshot of one configuration. It is safe
// for concurrent use; a reload builds a new Table.
type Table struct {
	services map[netip.AddrPort]*service
	pools    map[string]*pool
}

// service holds one http or https service's routes, grouped the way XDP
// looks them up: per exact host, then (slow path only) per wildcard suffix,
// then host-less.
type service struct {
	hosts map[string]routes
	// wildcards are ordered longest suffix first, so the most specific
	// wildcard is tried first.
	wildcards []wildcard
	anyHost   routes
}

type wildcard struct {
	suffix string // ".example.com" for "*.example.com"
	routes routes
}

// routes of one host, most specific first: longer paths before shorter,
// and an exact route before a prefix route of the same path. That is the
// order of the prefix lengths XDP's LPM trie compares (an exact route's key
// covers one more byte, the NUL after the path), so the first match is the
// one the trie returns.
type routes []route

type route struct {
	path  string
	exact bool
	// methods are sorted; nil allows every method.
	methods []string
	pool    string
}

// pool is a pool's Maglev table as the loader writes it.
type pool struct {
	backends []config.Backend
	// table maps slot → index into backends; nil when no backend has
	// weight (XDP then drops new flows).
	table []uint32
	// weighted counts the backends that own slots: Backends stops looking
	// once it has found them all instead of walking the whole table.
	weighted int
}

// New builds the table for cfg's http and https services and pools.
func New(cfg *config.Config) (*Table, error) {
	if cfg == nil {
		return nil, errors.New("router: no configuration")
	}
	t := &Table{services: map[netip.AddrPort]*service{}, pools: map[string]*pool{}}
	for _, p := range cfg.Pools {
		built, err := newPool(p)
		if err != nil {
			return nil, fmt.Errorf("router: pool %s: %w", p.Name, err)
		}
		t.pools[p.Name] = built
	}
	for _, svc := range cfg.Services {
		if !svc.IsHTTP() {
			continue
		}
		key := netip.AddrPortFrom(svc.VIP.Unmap(), svc.Port)
		if _, dup := t.services[key]; dup {
			return nil, fmt.Errorf("router: service %s: a second http(s) service on %s", svc.Name, key)
		}
		built, err := newService(svc, t.pools)
		if err != nil {
			return nil, fmt.Errorf("router: service %s: %w", svc.Name, err)
		}
		t.services[key] = built
	}
	return t, nil
}

func newPool(p config.Pool) (*pool, error) {
	table, err := maglev.Table(p.MaglevBackends(), p.MaglevSize)
	if errors.Is(err, maglev.ErrNoBackends) {
		// Every backend drained: the loader installs an empty table.
		return &pool{backends: p.Backends}, nil
	}
	if err != nil {
		return nil, err
	}
	weighted := 0
	for _, b := range p.Backends {
		if b.Weight > 0 {
			weighted++
		}
	}
	return &pool{backends: p.Backends, table: table, weighted: weighted}, nil
}

func newService(svc config.Service, pools map[string]*pool) (*service, error) {
	// Keyed by (host, path, exact) so that a duplicate replaces the earlier
	// route, as the loader's later map update would. config rejects
	// duplicates, so this only matters for hand-built configs.
	type key struct {
		host, path string
		exact      bool
	}
	byKey := map[key]route{}
	var order []key
	for _, r := range svc.Routes {
		if _, ok := pools[r.Pool]; !ok {
			return nil, fmt.Errorf("route %s%s: unknown pool %q", r.Host, r.Path, r.Pool)
		}
		if !strings.HasPrefix(r.Path, "/") {
			return nil, fmt.Errorf("route %s%s: path must start with '/'", r.Host, r.Path)
		}
		k := key{hostKey(r.Host), r.Path, r.Exact}
		if _, seen := byKey[k]; !seen {
			order = append(order, k)
		}
		var methods []string
		if len(r.Methods) > 0 {
			methods = slices.Clone(r.Methods)
			slices.Sort(methods)
			methods = slices.Compact(methods)
		}
		byKey[k] = route{path: r.Path, exact: r.Exact, methods: methods, pool: r.Pool}
	}

	s := &service{hosts: map[string]routes{}}
	wild := map[string]routes{}
	for _, k := range order {
		r := byKey[k]
		switch {
		case k.host == "":
			s.anyHost = append(s.anyHost, r)
		case strings.HasPrefix(k.host, "*."):
			suffix := k.host[1:]
			wild[suffix] = append(wild[suffix], r)
		default:
			s.hosts[k.host] = append(s.hosts[k.host], r)
		}
	}
	for suffix, rs := range wild {
		s.wildcards = append(s.wildcards, wildcard{suffix: suffix, routes: rs})
	}
	slices.SortFunc(s.wildcards, func(a, b wildcard) int {
		if c := len(b.suffix) - len(a.suffix); c != 0 {
			return c
		}
		return strings.Compare(a.suffix, b.suffix)
	})
	for h, rs := range s.hosts {
		s.hosts[h] = sortRoutes(rs)
	}
	for i := range s.wildcards {
		s.wildcards[i].routes = sortRoutes(s.wildcards[i].routes)
	}
	s.anyHost = sortRoutes(s.anyHost)
	return s, nil
}

// sortRoutes orders routes most specific first (see routes).
func sortRoutes(rs routes) routes {
	slices.SortStableFunc(rs, func(a, b route) int {
		return b.keyLen() - a.keyLen()
	})
	return rs
}

// keyLen is the number of path bytes the route's LPM key covers.
func (r route) keyLen() int {
	if r.exact {
		return len(r.path) + 1
	}
	return len(r.path)
}

func (r route) matches(path string) bool {
	if r.exact {
		return path == r.path
	}
	return strings.HasPrefix(path, r.path)
}

// best returns the most specific route matching path.
func (rs routes) best(path string) (route, bool) {
	for _, r := range rs {
		if r.matches(path) {
			return r, true
		}
	}
	return route{}, false
}

// Route returns the pool that the request's route names. service is the
// VIP:port the connection arrived on; host is the Host header as received
// (any case, maybe with a port); path is the request target's path, already
// normalised with NormalizePath (the query, if any, is cut off by Route).
//
// The route is chosen as XDP chooses it: the routes of the request's exact
// host first, then those of matching wildcard hosts (longest suffix first;
// XDP has none, it sends such services to the slow path), then host-less
// routes; within one host the longest path prefix wins, an exact route
// before a prefix route of the same path. A host whose routes match nothing
// falls through to the next group, as XDP's second, host-less lookup does.
// Methods are checked only on the chosen route: if it does not allow the
// method, the result is a *MethodNotAllowedError even when a less specific
// route would allow it, because XDP does the same.
func (t *Table) Route(service netip.AddrPort, method, host, path string) (pool string, err error) {
	svc, ok := t.services[netip.AddrPortFrom(service.Addr().Unmap(), service.Port())]
	if !ok {
		return "", ErrNoService
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	r, ok := svc.find(hostKey(host), path)
	if !ok {
		return "", ErrNoRoute
	}
	if r.methods != nil && !slices.Contains(r.methods, method) {
		return "", &MethodNotAllowedError{Allow: slices.Clone(r.methods)}
	}
	return r.pool, nil
}

func (s *service) find(host, path string) (route, bool) {
	if host != "" {
		if r, ok := s.hosts[host].best(path); ok {
			return r, true
		}
		for _, w := range s.wildcards {
			// "*.example.com" needs at least one label before the suffix.
			if len(host) > len(w.suffix) && strings.HasSuffix(host, w.suffix) {
				if r, ok := w.routes.best(path); ok {
					return r, true
				}
			}
		}
	}
	return s.anyHost.best(path)
}

// hostKey turns a Host header into the name routes are matched on, as XDP
// builds its key: ASCII-lowercased (not Unicode: "\u212a" must not become
// "k"), the port cut off, then one trailing dot dropped. A bracketed IPv6
// literal keeps its brackets. XDP itself sends any host with bytes outside
// [A-Za-z0-9.-] to the slow path.
func hostKey(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i >= 0 {
			host = host[:i+1]
		}
	} else if i := strings.IndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	return asciiLower(host)
}

func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// Backends appends to dst up to n distinct usable backends of pool in Maglev
// preference order for the connection client→service: the first is the one
// XDP's Maglev table gives that 4-tuple, the rest are the next choices to try
// when a backend refuses.
//
// The next choices are the owners of the slots after XDP's (wrapping), each
// backend once: a fixed order per connection, and since slots are spread
// over backends by weight, roughly weighted too.
func (t *Table) Backends(dst []netip.AddrPort, pool string, client, service netip.AddrPort, n int) []netip.AddrPort {
	p, ok := t.pools[pool]
	if !ok || p.table == nil || n <= 0 {
		return dst
	}
	n = min(n, p.weighted)
	size := uint32(len(p.table))
	start := FlowHash(client, service) % size
	// n is small (the proxy asks for 3): a linear check of what was taken
	// beats a set, and up to 4 of them fit on the stack.
	var takenBuf [4]uint32
	taken := takenBuf[:0]
	for i := uint32(0); i < size && len(taken) < n; i++ {
		b := p.table[(start+i)%size]
		// Only weighted backends own slots; the weight check keeps that
		// promise even if maglev's contract changes.
		if slices.Contains(taken, b) || p.backends[b].Weight == 0 {
			continue
		}
		taken = append(taken, b)
		dst = append(dst, p.backends[b].Address)
	}
	return dst
}
