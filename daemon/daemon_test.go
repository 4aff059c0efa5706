package daemon

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/rauta-lb/rauta/config"
	"github.com/rauta-lb/rauta/loader"
)

func TestStateFromConfigHTTPS(t *testing.T) {
	vip := netip.MustParseAddr("10.0.0.100")
	routes := []config.Route{{Host: "*.example.com", Path: "/", Pool: "web"}}
	cfg := &config.Config{
		Services: []config.Service{
			{Name: "site", VIP: vip, Port: 80, Protocol: config.ProtocolHTTP, RedirectHTTPS: true, RedirectPort: 443},
			{Name: "site-tls", VIP: vip, Port: 443, Protocol: config.ProtocolHTTPS, Routes: routes,
				TLS: config.TLS{Certificates: []config.Certificate{{Cert: "/a.pem", Key: "/a.key"}}}},
		},
		Pools: []config.Pool{{Name: "web", MaglevSize: 7, Backends: []config.Backend{{Address: netip.MustParseAddrPort("10.0.1.1:80"), Weight: 1}}}},
	}
	s, err := StateFromConfig("rauta.yaml", cfg)
	if err != nil {
		t.Fatalf("stateFromConfig: %v", err)
	}
	want := []loader.Service{
		{Name: "site", VIP: vip, Port: 80, Protocol: loader.ProtoTCP, HTTP: true},
		{Name: "site-tls", VIP: vip, Port: 443, Protocol: loader.ProtoTCP, HTTP: true, SlowpathOnly: true,
			Routes: []loader.Route{{Host: "*.example.com", Path: "/", Pool: "web"}}},
	}
	if !reflect.DeepEqual(s.Services, want) {
		t.Errorf("services =\n%+v\nwant\n%+v", s.Services, want)
	}
}
