package router_test

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/rauta-lb/rauta/config"
	"github.com/rauta-lb/rauta/maglev"
	"github.com/rauta-lb/rauta/router"
)

var (
	vip     = netip.MustParseAddr("10.0.0.100")
	site    = netip.AddrPortFrom(vip, 80)
	secure  = netip.AddrPortFrom(vip, 443)
	l4      = netip.AddrPortFrom(vip, 22)
	nowhere = netip.AddrPortFrom(vip, 8080)
)

func backends(weights map[string]uint32) []config.Backend {
	var out []config.Backend
	for addr, w := range weights {
		out = append(out, config.Backend{Address: netip.MustParseAddrPort(addr), Weight: w})
	}
	slices.SortFunc(out, func(a, b config.Backend) int { return a.Address.Compare(b.Address) })
	return out
}

// unitConfig has one http service exercising every precedence rule, an
// https service, and a tcp service the router must ignore.
func unitConfig() *config.Config {
	return &config.Config{
		Services: []config.Service{
			{Name: "site", VIP: vip, Port: 80, Protocol: config.ProtocolHTTP, Routes: []config.Route{
				{Host: "api.example.com", Path: "/v1/", Pool: "a"},
				{Host: "api.example.com", Path: "/v1/users", Exact: true, Methods: []string{"POST", "GET"}, Pool: "c"},
				{Host: "www.example.com", Path: "/", Pool: "c"},
				{Host: "*.example.com", Path: "/", Pool: "b"},
				{Host: "*.eu.example.com", Path: "/", Pool: "a"},
				{Host: "*.only.example.com", Path: "/deep/", Pool: "c"},
				{Host: "solo.test", Path: "/only/", Pool: "c"},
				{Path: "/v1/", Pool: "b"},
				{Path: "/v1/admin/", Pool: "c"},
				{Path: "/healthz", Exact: true, Pool: "c"},
				{Path: "/healthz", Pool: "a"},
				{Path: "/ping", Pool: "a"},
				{Path: "/ping", Exact: true, Pool: "b"},
				{Path: "/static/", Methods: []string{"HEAD", "GET"}, Pool: "c"},
				{Path: "/static/open/", Pool: "a"},
			}},
			{Name: "tls", VIP: vip, Port: 443, Protocol: config.Protocol("https"), Routes: []config.Route{
				{Path: "/", Pool: "a"},
			}},
			{Name: "ssh", VIP: vip, Port: 22, Protocol: config.ProtocolTCP, Pool: "a"},
		},
		Pools: []config.Pool{
			{Name: "a", MaglevSize: 251, Backends: backends(map[string]uint32{"10.0.1.11:80": 1, "10.0.1.12:80": 2, "10.0.1.13:80": 0})},
			{Name: "b", MaglevSize: 13, Backends: backends(map[string]uint32{"10.0.1.21:80": 1})},
			{Name: "c", MaglevSize: 7, Backends: backends(map[string]uint32{"10.0.1.31:80": 1, "10.0.1.32:80": 1})},
			{Name: "drained", MaglevSize: 7, Backends: backends(map[string]uint32{"10.0.1.41:80": 0})},
		},
	}
}

func newTable(t *testing.T, cfg *config.Config) *router.Table {
	t.Helper()
	tab, err := router.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return tab
}

func TestRoute(t *testing.T) {
	tab := newTable(t, unitConfig())
	type want struct {
		pool  string
		err   error
		allow []string
	}
	ok := func(p string) want { return want{pool: p} }
	noRoute := want{err: router.ErrNoRoute}
	for _, tc := range []struct {
		name               string
		svc                netip.AddrPort
		method, host, path string
		want               want
	}{
		{"host route beats longer host-less", site, "GET", "api.example.com", "/v1/admin/x", ok("a")},
		{"host-less when host has no match", site, "GET", "solo.test", "/healthz/x", ok("a")},
		{"host route", site, "GET", "solo.test", "/only/x", ok("c")},
		{"wildcard when host has no match", site, "GET", "api.example.com", "/healthz", ok("b")},
		{"unknown host falls to host-less", site, "GET", "other.org", "/v1/admin/x", ok("c")},
		{"longest prefix", site, "GET", "other.org", "/v1/x", ok("b")},
		{"prefix is bytewise", site, "GET", "other.org", "/v1/adminx", ok("b")},
		{"exact beats same prefix", site, "GET", "", "/healthz", ok("c")},
		{"exact beats same prefix listed first", site, "GET", "", "/ping", ok("b")},
		{"exact needs the whole path", site, "GET", "", "/healthz/x", ok("a")},
		{"exact ignores the query", site, "GET", "", "/healthz?full=1", ok("c")},
		{"query is not path", site, "GET", "", "/x?/v1/", noRoute},
		{"no route", site, "GET", "", "/nothing", noRoute},
		{"host exact route", site, "POST", "api.example.com", "/v1/users", ok("c")},
		{"host exact route, method", site, "DELETE", "api.example.com", "/v1/users", want{err: router.ErrMethodNotAllowed, allow: []string{"GET", "POST"}}},
		{"methods checked on the best route only", site, "POST", "", "/static/x", want{err: router.ErrMethodNotAllowed, allow: []string{"GET", "HEAD"}}},
		{"method allowed", site, "HEAD", "", "/static/x", ok("c")},
		{"more specific route without methods", site, "POST", "", "/static/open/x", ok("a")},
		{"methods are case-sensitive", site, "get", "", "/static/x", want{err: router.ErrMethodNotAllowed, allow: []string{"GET", "HEAD"}}},
		{"host case", site, "GET", "API.Example.COM", "/v1/", ok("a")},
		{"host port", site, "GET", "api.example.com:8080", "/v1/", ok("a")},
		{"host trailing dot", site, "GET", "api.example.com.", "/v1/", ok("a")},
		{"host trailing dot and port", site, "GET", "API.example.com.:80", "/v1/", ok("a")},
		{"only one trailing dot", site, "GET", "api.example.com..", "/v1/x", ok("b")},
		{"unicode is not lowercased", site, "GET", "api.exampl\u212a.com", "/v1/x", ok("b")},
		{"empty host: host-less only", site, "GET", "", "/v1/x", ok("b")},
		{"empty host: no host route", site, "GET", "", "/", noRoute},
		{"dot host is empty", site, "GET", ".", "/", noRoute},
		{"exact host beats wildcard", site, "GET", "www.example.com", "/x", ok("c")},
		{"wildcard", site, "GET", "shop.example.com", "/x", ok("b")},
		{"wildcard any depth", site, "GET", "a.b.example.com", "/x", ok("b")},
		{"longest wildcard", site, "GET", "shop.eu.example.com", "/x", ok("a")},
		{"wildcard not the bare domain", site, "GET", "example.com", "/v1/x", ok("b")},
		{"wildcard not the bare domain, no host-less", site, "GET", "example.com", "/x", noRoute},
		{"wildcard without match falls through", site, "GET", "x.only.example.com", "/x", ok("b")},
		{"wildcard match", site, "GET", "x.only.example.com", "/deep/x", ok("c")},
		{"wildcard case and port", site, "GET", "Shop.EU.example.com:443", "/", ok("a")},
		{"wildcard beats longer host-less", site, "GET", "shop.example.com", "/v1/admin/", ok("b")},
		{"https service", secure, "GET", "x", "/", ok("a")},
		{"tcp service is no http service", l4, "GET", "x", "/", want{err: router.ErrNoService}},
		{"no service", nowhere, "GET", "x", "/", want{err: router.ErrNoService}},
		{"mapped VIP", netip.AddrPortFrom(netip.AddrFrom16(vip.As16()), 80), "GET", "", "/healthz", ok("c")},
		{"IPv6 host literal", site, "GET", "[::1]:80", "/v1/", ok("b")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool, err := tab.Route(tc.svc, tc.method, tc.host, tc.path)
			if !errors.Is(err, tc.want.err) || (err == nil) != (tc.want.err == nil) {
				t.Fatalf("Route = %q, %v; want error %v", pool, err, tc.want.err)
			}
			if pool != tc.want.pool {
				t.Errorf("pool %q, want %q", pool, tc.want.pool)
			}
			var mna *router.MethodNotAllowedError
			if errors.As(err, &mna) && !slices.Equal(mna.Allow, tc.want.allow) {
				t.Errorf("Allow %v, want %v", mna.Allow, tc.want.allow)
			}
		})
	}
}

func TestMethodNotAllowedAllowIsACopy(t *testing.T) {
	tab := newTable(t, unitConfig())
	_, err := tab.Route(site, "POST", "", "/static/")
	var mna *router.MethodNotAllowedError
	if !errors.As(err, &mna) {
		t.Fatalf("err %v", err)
	}
	mna.Allow[0] = "TRACE"
	_, err = tab.Route(site, "POST", "", "/static/")
	if errors.As(err, &mna); mna.Allow[0] != "GET" {
		t.Errorf("a caller changed the table: Allow %v", mna.Allow)
	}
}

func TestNewErrors(t *testing.T) {
	cfg := unitConfig()
	cfg.Services[0].Routes = append(cfg.Services[0].Routes, config.Route{Path: "/x", Pool: "missing"})
	if _, err := router.New(cfg); err == nil {
		t.Error("unknown pool accepted")
	}
	cfg = unitConfig()
	cfg.Pools[1].MaglevSize = 12
	if _, err := router.New(cfg); !errors.Is(err, maglev.ErrSizeNotPrime) {
		t.Errorf("size 12: %v", err)
	}
	cfg = unitConfig()
	cfg.Services = append(cfg.Services, config.Service{Name: "again", VIP: vip, Port: 80, Protocol: config.ProtocolHTTP})
	if _, err := router.New(cfg); err == nil {
		t.Error("two services on one VIP:port accepted")
	}
}

func TestBackends(t *testing.T) {
	cfg := unitConfig()
	tab := newTable(t, cfg)
	poolA, _ := cfg.Pool("a")
	table, err := maglev.Table(poolA.MaglevBackends(), poolA.MaglevSize)
	if err != nil {
		t.Fatal(err)
	}
	weighted := map[netip.AddrPort]bool{}
	for _, b := range poolA.Backends {
		if b.Weight > 0 {
			weighted[b.Address] = true
		}
	}
	firsts := map[netip.AddrPort]int{}
	for port := uint16(1000); port < 3000; port++ {
		cl := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.7"), port)
		got := tab.Backends(nil, "a", cl, site, 5)
		want := poolA.Backends[table[router.FlowHash(cl, site)%poolA.MaglevSize]].Address
		if len(got) != len(weighted) || got[0] != want {
			t.Fatalf("client %s: %v, want %s first and %d in all", cl, got, want, len(weighted))
		}
		if !weighted[got[1]] || got[0] == got[1] {
			t.Fatalf("client %s: %v: second choice must be the other weighted backend", cl, got)
		}
		firsts[got[0]]++
		if one := tab.Backends(nil, "a", cl, site, 1); len(one) != 1 || one[0] != want {
			t.Fatalf("n=1: %v", one)
		}
	}
	// weights 1:2
	if a, b := firsts[netip.MustParseAddrPort("10.0.1.11:80")], firsts[netip.MustParseAddrPort("10.0.1.12:80")]; a < 400 || b < 2*a-400 {
		t.Errorf("first choices %v do not follow the weights", firsts)
	}
	cl := netip.MustParseAddrPort("192.0.2.7:1234")
	for _, tc := range []struct {
		pool string
		n    int
	}{{"drained", 3}, {"missing", 3}, {"a", 0}, {"a", -1}} {
		if got := tab.Backends(nil, tc.pool, cl, site, tc.n); got != nil {
			t.Errorf("Backends(%s, n=%d) = %v, want nil", tc.pool, tc.n, got)
		}
	}
}

func TestFlowHash(t *testing.T) {
	// Values of bpf/include/hash.h's flow_hash, as computed by xdp's Go
	// twin (flowHash in xdp/env_test.go) for the same keys; the equivalence
	// test checks it against the program itself.
	for _, tc := range []struct {
		client, service string
		want            uint32
	}{
		{"10.0.2.2:40000", "10.0.0.100:80", flowHashRef("10.0.2.2:40000", "10.0.0.100:80")},
	} {
		if got := router.FlowHash(netip.MustParseAddrPort(tc.client), netip.MustParseAddrPort(tc.service)); got != tc.want {
			t.Errorf("FlowHash(%s, %s) = %#x, want %#x", tc.client, tc.service, got, tc.want)
		}
	}
	// mapped addresses hash as IPv4; IPv6 does not panic
	a := netip.MustParseAddrPort("10.0.2.2:40000")
	m := netip.AddrPortFrom(netip.AddrFrom16(a.Addr().As16()), a.Port())
	if router.FlowHash(a, site) != router.FlowHash(m, site) {
		t.Error("IPv4-mapped client hashes differently")
	}
	router.FlowHash(netip.MustParseAddrPort("[2001:db8::1]:5"), site)
	router.FlowHash(netip.AddrPort{}, netip.AddrPort{})
}

// BenchmarkBackends is the proxy's per-request choice: three choices asked
// of a one-backend pool with the default table size must not walk the
// whole table.
func BenchmarkBackends(b *testing.B) {
	for _, n := range []int{1, 3, 10} {
		weights := map[string]uint32{}
		for i := range n {
			weights[netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 1, byte(11 + i)}), 80).String()] = 1
		}
		cfg := &config.Config{
			Services: []config.Service{{Name: "site", VIP: vip, Port: 80, Protocol: config.ProtocolHTTP,
				Routes: []config.Route{{Path: "/", Pool: "p"}}}},
			Pools: []config.Pool{{Name: "p", MaglevSize: 65537, Backends: backends(weights)}},
		}
		table, err := router.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		client := netip.MustParseAddrPort("10.0.2.2:40000")
		b.Run(fmt.Sprintf("backends=%d", n), func(b *testing.B) {
			for b.Loop() {
				if got := table.Backends(nil, "p", client, site, 3); len(got) != min(n, 3) {
					b.Fatalf("%d choices", len(got))
				}
			}
		})
	}
}
