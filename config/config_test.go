package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rauta-lb/rauta/maglev"
)

// doc drops the newline after the opening backquote, so that the first line
// of a test document is line 1.
func doc(s string) []byte { return []byte(strings.TrimPrefix(s, "\n")) }

// configErrors unpacks Parse's joined error, failing unless every part is
// an *Error.
func configErrors(t *testing.T, err error) []*Error {
	t.Helper()
	parts := []error{err}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		parts = joined.Unwrap()
	}
	out := make([]*Error, len(parts))
	for i, part := range parts {
		if !errors.As(part, &out[i]) {
			t.Fatalf("error %q is %T, not *config.Error", part, part)
		}
	}
	return out
}

var (
	eth             = []string{"eth1", "eth2"}
	defaultFlows    = Flows{TCPIdleTimeout: 5 * time.Minute, UDPIdleTimeout: 30 * time.Second, ClosedTimeout: 10 * time.Second}
	defaultSlowpath = Slowpath{ConnectTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 8192, AccessLog: true}
)

func TestParseAcceptsExamples(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		opts Options
		want *Config
	}{
		{
			name: "tcp service",
			yaml: `
interfaces: [eth1, eth2]
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    protocol: tcp
    pool: app
pools:
  app:
    maglev_size: 65537
    backends:
      - address: 10.0.1.11:80
        weight: 2
      - address: 10.0.1.12:80
metrics:
  listen: 127.0.0.1:9100
`,
			want: &Config{
				Interfaces: eth,
				XDPMode:    XDPModeAuto,
				BPFFS:      "/sys/fs/bpf/rauta",
				Services: []Service{{
					Name: "web", VIP: netip.MustParseAddr("10.0.0.100"), Port: 80, Protocol: ProtocolTCP, Pool: "app",
				}},
				Pools: []Pool{{Name: "app", MaglevSize: 65537, Backends: []Backend{
					{Address: netip.MustParseAddrPort("10.0.1.11:80"), Weight: 2},
					{Address: netip.MustParseAddrPort("10.0.1.12:80"), Weight: 1},
				}}},
				Metrics:  Metrics{Listen: "127.0.0.1:9100"},
				Flows:    defaultFlows,
				Slowpath: defaultSlowpath,
			},
		},
		{
			// The services block is the brief's http example verbatim.
			name: "http service with routes",
			yaml: `
interfaces: [eth1]
services:
  - name: site
    vip: 10.0.0.100
    port: 80
    protocol: http
    routes:
      - host: api.example.com   # optional; absent = any host
        path: /v1/              # prefix
        methods: [GET, POST]    # optional; absent = any method
        pool: api
      - path: /healthz
        exact: true
        pool: web
      - path: /
        pool: web
pools:
  web:
    backends: [{address: 10.0.2.1:8080}]
  api:
    backends: [{address: 10.0.3.1:8080}]
`,
			want: &Config{
				Interfaces: []string{"eth1"},
				XDPMode:    XDPModeAuto,
				BPFFS:      "/sys/fs/bpf/rauta",
				Services: []Service{{
					Name: "site", VIP: netip.MustParseAddr("10.0.0.100"), Port: 80, Protocol: ProtocolHTTP,
					Routes: []Route{
						{Host: "api.example.com", Path: "/v1/", Methods: []string{"GET", "POST"}, Pool: "api"},
						{Path: "/healthz", Exact: true, Pool: "web"},
						{Path: "/", Pool: "web"},
					},
				}},
				Pools: []Pool{ // sorted by name, not file order
					{Name: "api", MaglevSize: maglev.DefaultSize, Backends: []Backend{{Address: netip.MustParseAddrPort("10.0.3.1:8080"), Weight: 1}}},
					{Name: "web", MaglevSize: maglev.DefaultSize, Backends: []Backend{{Address: netip.MustParseAddrPort("10.0.2.1:8080"), Weight: 1}}},
				},
				Flows:    defaultFlows,
				Slowpath: defaultSlowpath,
			},
		},
		{
			name: "every setting, mixed protocols, shared VIP",
			yaml: `
interfaces: [eth1]
xdp_mode: generic
bpffs: /sys/fs/bpf/other/
services:
  - name: dns
    vip: 10.0.0.1
    port: 53
    protocol: udp
    pool: resolvers
  - name: dns-tcp
    vip: 10.0.0.1
    port: 53
    protocol: tcp
    pool: resolvers
  - name: www
    vip: 10.0.0.1
    port: 80
    protocol: http
    routes:
      - host: "*.Example.COM."
        path: /
        methods: [get, Head]
        pool: resolvers
pools:
  resolvers:
    maglev_size: 7
    health_check: {interval: 500ms, fall: 1, rise: 5, http_path: "/healthz?deep=1"} # timeout: the interval
    backends:
      - address: 10.0.1.1:53
        weight: 0
      - address: 10.0.1.2:53
        weight: 1000
  spare: # used by no service: fine
    health_check: {}
    backends: [{address: 10.0.9.9:53}]
flows:
  tcp_idle_timeout: 1h
  udp_idle_timeout: 1m30s
  closed_timeout: 2s
`,
			want: &Config{
				Interfaces: []string{"eth1"},
				XDPMode:    XDPModeGeneric,
				BPFFS:      "/sys/fs/bpf/other",
				Services: []Service{
					{Name: "dns", VIP: netip.MustParseAddr("10.0.0.1"), Port: 53, Protocol: ProtocolUDP, Pool: "resolvers"},
					{Name: "dns-tcp", VIP: netip.MustParseAddr("10.0.0.1"), Port: 53, Protocol: ProtocolTCP, Pool: "resolvers"},
					{Name: "www", VIP: netip.MustParseAddr("10.0.0.1"), Port: 80, Protocol: ProtocolHTTP, Routes: []Route{
						{Host: "*.example.com", Path: "/", Methods: []string{"GET", "HEAD"}, Pool: "resolvers"},
					}},
				},
				Pools: []Pool{{Name: "resolvers", MaglevSize: 7, Backends: []Backend{
					{Address: netip.MustParseAddrPort("10.0.1.1:53"), Weight: 0},
					{Address: netip.MustParseAddrPort("10.0.1.2:53"), Weight: 1000},
				}, HealthCheck: &HealthCheck{Interval: 500 * time.Millisecond, Timeout: 500 * time.Millisecond, Fall: 1, Rise: 5, HTTPPath: "/healthz?deep=1"},
				}, {Name: "spare", MaglevSize: maglev.DefaultSize, Backends: []Backend{
					{Address: netip.MustParseAddrPort("10.0.9.9:53"), Weight: 1},
				}, HealthCheck: &HealthCheck{Interval: 2 * time.Second, Timeout: time.Second, Fall: 3, Rise: 2},
				}},
				Flows:    Flows{TCPIdleTimeout: time.Hour, UDPIdleTimeout: 90 * time.Second, ClosedTimeout: 2 * time.Second},
				Slowpath: defaultSlowpath,
			},
		},
		{
			// The https service is the example verbatim; file
			// checks are skipped because the paths do not exist here
			// (TestParseLoadsCertificates reads real files).
			name: "https service, redirect from http, slowpath",
			opts: Options{SkipFileChecks: true},
			yaml: `
interfaces: [eth1]
services:
  - name: site-tls
    vip: 10.0.0.100
    port: 443
    protocol: https
    tls:
      certificates:
        - {cert: /etc/rauta/a.pem, key: /etc/rauta/a.key}
        - {cert: /etc/rauta/b.pem, key: /etc/rauta/b.key}
    routes:
      - path: /
        pool: web
  - name: site
    vip: 10.0.0.100
    port: 80
    protocol: http
    redirect_https: true
  - name: acme
    vip: 10.0.0.101
    port: 80
    protocol: http
    redirect_https: true
    routes:
      - {host: "*.example.com", path: /.well-known/acme-challenge/, pool: web}
  - name: alt-tls
    vip: 10.0.0.101
    port: 8443
    protocol: https
    tls:
      certificates: [{cert: /etc/rauta/a.pem, key: /etc/rauta/a.key}]
    routes: [{path: /, pool: web}]
pools:
  web:
    backends: [{address: 10.0.2.1:8080}]
slowpath:
  connect_timeout: 2s
  idle_timeout: 90s
  request_timeout: 5m
  max_header_bytes: 16384
  max_body_bytes: 0        # 0 = unlimited
  access_log: false
`,
			want: &Config{
				Interfaces: []string{"eth1"},
				XDPMode:    XDPModeAuto,
				BPFFS:      "/sys/fs/bpf/rauta",
				Services: []Service{
					{
						Name: "site-tls", VIP: netip.MustParseAddr("10.0.0.100"), Port: 443, Protocol: ProtocolHTTPS,
						Routes: []Route{{Path: "/", Pool: "web"}},
						TLS: TLS{Certificates: []Certificate{
							{Cert: "/etc/rauta/a.pem", Key: "/etc/rauta/a.key"},
							{Cert: "/etc/rauta/b.pem", Key: "/etc/rauta/b.key"},
						}},
					},
					{
						Name: "site", VIP: netip.MustParseAddr("10.0.0.100"), Port: 80, Protocol: ProtocolHTTP,
						RedirectHTTPS: true, RedirectPort: 443,
					},
					{
						Name: "acme", VIP: netip.MustParseAddr("10.0.0.101"), Port: 80, Protocol: ProtocolHTTP,
						Routes:        []Route{{Host: "*.example.com", Path: "/.well-known/acme-challenge/", Pool: "web"}},
						RedirectHTTPS: true, RedirectPort: 8443,
					},
					{
						Name: "alt-tls", VIP: netip.MustParseAddr("10.0.0.101"), Port: 8443, Protocol: ProtocolHTTPS,
						Routes: []Route{{Path: "/", Pool: "web"}},
						TLS:    TLS{Certificates: []Certificate{{Cert: "/etc/rauta/a.pem", Key: "/etc/rauta/a.key"}}},
					},
				},
				Pools: []Pool{{Name: "web", MaglevSize: maglev.DefaultSize, Backends: []Backend{{Address: netip.MustParseAddrPort("10.0.2.1:8080"), Weight: 1}}}},
				Flows: defaultFlows,
				Slowpath: Slowpath{
					ConnectTimeout: 2 * time.Second, IdleTimeout: 90 * time.Second, RequestTimeout: 5 * time.Minute,
					MaxHeaderBytes: 16384, MaxBodyBytes: 0, AccessLog: false,
				},
			},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("rauta.yaml", doc(tt.yaml), tt.opts)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	// Cases that need a valid pool append this, so each shows only what it
	// breaks.
	const pools = `pools:
  app:
    backends: [{address: 10.0.1.11:80}]
`
	// Certificate paths in these cases do not exist; the file checks have
	// their own test.
	skipFiles := Options{SkipFileChecks: true}
	tests := []struct {
		name  string
		yaml  string
		opts  Options
		line  int
		field string
		msg   string
	}{
		{
			name: "unknown interface",
			yaml: "interfaces: [eth1, eth2]\n",
			opts: Options{InterfaceExists: func(name string) bool { return name == "eth1" }},
			line: 1, field: "interfaces[1]", msg: `unknown interface "eth2"`,
		},
		{
			name: "duplicate interface",
			yaml: "interfaces:\n  - eth1\n  - eth1\n",
			line: 3, field: "interfaces[1]", msg: `duplicate interface "eth1" (first at line 2)`,
		},
		{
			name: "invalid interface name",
			yaml: "interfaces: [averyveryverylongname]\n",
			line: 1, field: "interfaces[0]", msg: "longer than 15 bytes",
		},
		{
			name: "no interfaces",
			yaml: "interfaces: []\n",
			line: 1, field: "interfaces", msg: "at least one interface",
		},
		{
			name: "missing interfaces",
			yaml: "xdp_mode: native\n",
			line: 1, field: "interfaces", msg: "required field is missing",
		},
		{
			name: "health check timeout past its interval",
			yaml: "interfaces: [eth1]\npools:\n  app:\n    health_check: {interval: 1s, timeout: 2s}\n    backends: [{address: 10.0.1.11:80}]\n",
			line: 4, field: "pools.app.health_check.timeout", msg: "2s is longer than the interval (1s): a probe must end before the next one is due",
		},
		{
			name: "health check timeout past the default interval",
			yaml: "interfaces: [eth1]\npools:\n  app:\n    health_check:\n      timeout: 3s\n    backends: [{address: 10.0.1.11:80}]\n",
			line: 5, field: "pools.app.health_check.timeout", msg: "3s is longer than the interval (2s): a probe must end before the next one is due",
		},
		{
			name: "health check interval too short",
			yaml: "interfaces: [eth1]\npools:\n  app:\n    health_check: {interval: 50ms, timeout: 20ms}\n    backends: [{address: 10.0.1.11:80}]\n",
			line: 4, field: "pools.app.health_check.interval", msg: "50ms is shorter than 100ms: every backend would be probed in a tight loop",
		},
		{
			name: "health check path with a control character",
			yaml: "interfaces: [eth1]\npools:\n  app:\n    health_check: {http_path: \"/a\\x01b\"}\n    backends: [{address: 10.0.1.11:80}]\n",
			line: 4, field: "pools.app.health_check.http_path", msg: `"/a\x01b" is not an origin-form path: it must start with / and contain no spaces or control characters`,
		},
		{
			name: "health check fall 0",
			yaml: "interfaces: [eth1]\npools:\n  app:\n    health_check: {fall: 0}\n    backends: [{address: 10.0.1.11:80}]\n",
			line: 4, field: "pools.app.health_check.fall", msg: "0 is out of range 1..100",
		},
		{
			name: "health check path not origin-form",
			yaml: "interfaces: [eth1]\npools:\n  app:\n    health_check: {http_path: healthz}\n    backends: [{address: 10.0.1.11:80}]\n",
			line: 4, field: "pools.app.health_check.http_path", msg: `"healthz" is not an origin-form path: it must start with / and contain no spaces or control characters`,
		},
		{
			name: "health check unknown field",
			yaml: "interfaces: [eth1]\npools:\n  app:\n    health_check: {port: 81}\n    backends: [{address: 10.0.1.11:80}]\n",
			line: 4, field: "pools.app.health_check.port", msg: `unknown field "port" (valid: interval, timeout, fall, rise, http_path)`,
		},
		{
			name: "bad xdp_mode",
			yaml: "interfaces: [eth1]\nxdp_mode: offload\n",
			line: 2, field: "xdp_mode", msg: `invalid mode "offload" (valid: auto, native, generic)`,
		},
		{
			name: "relative bpffs",
			yaml: "interfaces: [eth1]\nbpffs: sys/fs/bpf\n",
			line: 2, field: "bpffs", msg: "must be an absolute path",
		},
		{
			name: "bad vip",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.300
    port: 80
    protocol: tcp
    pool: app
` + pools,
			line: 4, field: "services[0].vip", msg: `invalid IP address "10.0.0.300"`,
		},
		{
			name: "vip with port",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1:80
    port: 80
    protocol: tcp
    pool: app
` + pools,
			line: 4, field: "services[0].vip", msg: "includes a port",
		},
		{
			name: "IPv6 vip",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: "2001:db8::1"
    port: 80
    protocol: tcp
    pool: app
` + pools,
			line: 4, field: "services[0].vip", msg: "IPv6 is not supported yet",
		},
		{
			name: "backend address without port",
			yaml: `
interfaces: [eth1]
pools:
  app:
    backends:
      - address: 10.0.1.11
`,
			line: 5, field: "pools.app.backends[0].address", msg: `address "10.0.1.11" has no port`,
		},
		{
			name: "backend address malformed",
			yaml: `
interfaces: [eth1]
pools:
  app:
    backends:
      - address: backend-1:80
`,
			line: 5, field: "pools.app.backends[0].address", msg: `invalid address "backend-1:80"`,
		},
		{
			name: "IPv6 backend",
			yaml: `
interfaces: [eth1]
pools:
  app:
    backends:
      - address: "[2001:db8::1]:80"
`,
			line: 5, field: "pools.app.backends[0].address", msg: "IPv6 is not supported yet",
		},
		{
			name: "unknown pool",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 80
    protocol: tcp
    pool: foo
` + pools,
			line: 7, field: "services[0].pool", msg: `unknown pool "foo"`,
		},
		{
			name: "unknown pool in route",
			yaml: `
interfaces: [eth1]
services:
  - name: site
    vip: 10.0.0.1
    port: 80
    protocol: http
    routes:
      - path: /
        pool: foo
` + pools,
			line: 9, field: "services[0].routes[0].pool", msg: `unknown pool "foo"`,
		},
		{
			name: "duplicate VIP:port, tcp and http share the port space",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 80
    protocol: tcp
    pool: app
  - name: site
    vip: 10.0.0.1
    port: 80
    protocol: http
    routes: [{path: /, pool: app}]
` + pools,
			line: 8, field: "services[1]",
			msg: `service "site" and service "web" (services[0], line 3) both listen on 10.0.0.1:80/tcp`,
		},
		{
			name: "duplicate service name",
			yaml: `
interfaces: [eth1]
services:
  - {name: web, vip: 10.0.0.1, port: 80, protocol: tcp, pool: app}
  - {name: web, vip: 10.0.0.2, port: 80, protocol: tcp, pool: app}
` + pools,
			line: 4, field: "services[1].name", msg: `duplicate service name "web" (also services[0], line 3)`,
		},
		{
			name: "invalid service name",
			yaml: `
interfaces: [eth1]
services:
  - {name: Web.1, vip: 10.0.0.1, port: 80, protocol: tcp, pool: app}
` + pools,
			line: 3, field: "services[0].name", msg: "use only lowercase letters",
		},
		{
			name: "port out of range",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 65536
    protocol: tcp
    pool: app
` + pools,
			line: 5, field: "services[0].port", msg: "65536 is out of range 1..65535",
		},
		{
			name: "port as quoted string",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: "80"
    protocol: tcp
    pool: app
` + pools,
			line: 5, field: "services[0].port", msg: `expected an integer, got "80"`,
		},
		{
			name: "bad protocol",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 80
    protocol: sctp
    pool: app
` + pools,
			line: 6, field: "services[0].protocol", msg: `invalid protocol "sctp" (valid: tcp, udp, http, https)`,
		},
		{
			name: "https service with pool",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 443
    protocol: https
    pool: app
    routes: [{path: /, pool: app}]
    tls: {certificates: [{cert: /a.pem, key: /a.key}]}
` + pools,
			opts: skipFiles,
			line: 7, field: "services[0].pool", msg: "not allowed for https services",
		},
		{
			name: "https service without routes",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 443
    protocol: https
    tls: {certificates: [{cert: /a.pem, key: /a.key}]}
`,
			opts: skipFiles,
			line: 3, field: "services[0].routes", msg: "required field is missing (https services route",
		},
		{
			name: "https service without tls",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 443
    protocol: https
    routes: [{path: /, pool: app}]
` + pools,
			line: 3, field: "services[0].tls", msg: "required field is missing (https services need certificates)",
		},
		{
			name: "tls on an http service",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 80
    protocol: http
    routes: [{path: /, pool: app}]
    tls: {certificates: [{cert: /a.pem, key: /a.key}]}
` + pools,
			opts: skipFiles,
			line: 8, field: "services[0].tls", msg: "not allowed for http services; tls is for https",
		},
		{
			name: "tls without certificates",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 443
    protocol: https
    routes: [{path: /, pool: app}]
    tls: {}
` + pools,
			line: 8, field: "services[0].tls.certificates", msg: "required field is missing",
		},
		{
			name: "empty certificate list",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 443
    protocol: https
    routes: [{path: /, pool: app}]
    tls:
      certificates: []
` + pools,
			line: 9, field: "services[0].tls.certificates", msg: "at least one certificate is required",
		},
		{
			name: "unknown tls field",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 443
    protocol: https
    routes: [{path: /, pool: app}]
    tls:
      certificates: [{cert: /a.pem, key: /a.key}]
      min_version: "1.3"
` + pools,
			opts: skipFiles,
			line: 10, field: "services[0].tls.min_version", msg: `unknown field "min_version" (valid: certificates)`,
		},
		{
			name: "certificate without key",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 443
    protocol: https
    routes: [{path: /, pool: app}]
    tls:
      certificates:
        - cert: /a.pem
` + pools,
			opts: skipFiles,
			line: 10, field: "services[0].tls.certificates[0].key", msg: "required field is missing",
		},
		{
			name: "empty certificate path",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 443
    protocol: https
    routes: [{path: /, pool: app}]
    tls:
      certificates:
        - cert: ""
          key: /a.key
` + pools,
			opts: skipFiles,
			line: 10, field: "services[0].tls.certificates[0].cert", msg: `must be an absolute path, got ""`,
		},
		{
			name: "relative key path",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 443
    protocol: https
    routes: [{path: /, pool: app}]
    tls:
      certificates:
        - cert: /a.pem
          key: certs/a.key
` + pools,
			opts: skipFiles,
			line: 11, field: "services[0].tls.certificates[0].key", msg: `must be an absolute path, got "certs/a.key"`,
		},
		{
			name: "duplicate certificate",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 443
    protocol: https
    routes: [{path: /, pool: app}]
    tls:
      certificates:
        - {cert: /a.pem, key: /a.key}
        - {cert: /a.pem, key: /b.key}
` + pools,
			opts: skipFiles,
			line: 11, field: "services[0].tls.certificates[1].cert", msg: `duplicate certificate "/a.pem" (first at line 10)`,
		},
		{
			name: "redirect_https without an https service on the VIP",
			yaml: `
interfaces: [eth1]
services:
  - name: site
    vip: 10.0.0.1
    port: 80
    protocol: http
    redirect_https: true
  - name: other-tls
    vip: 10.0.0.2
    port: 443
    protocol: https
    routes: [{path: /, pool: app}]
    tls: {certificates: [{cert: /a.pem, key: /a.key}]}
` + pools,
			opts: skipFiles,
			line: 7, field: "services[0].redirect_https", msg: "no https service on 10.0.0.1 to redirect to",
		},
		{
			name: "redirect_https with several https ports, none 443",
			yaml: `
interfaces: [eth1]
services:
  - {name: site, vip: 10.0.0.1, port: 80, protocol: http, redirect_https: true}
  - name: tls-a
    vip: 10.0.0.1
    port: 9443
    protocol: https
    routes: [{path: /, pool: app}]
    tls: {certificates: [{cert: /a.pem, key: /a.key}]}
  - name: tls-b
    vip: 10.0.0.1
    port: 8443
    protocol: https
    routes: [{path: /, pool: app}]
    tls: {certificates: [{cert: /a.pem, key: /a.key}]}
` + pools,
			opts: skipFiles,
			line: 3, field: "services[0].redirect_https", msg: "ports [8443 9443] and none on 443; the redirect target is ambiguous",
		},
		{
			name: "redirect_https on an https service",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 443
    protocol: https
    redirect_https: true
    routes: [{path: /, pool: app}]
    tls: {certificates: [{cert: /a.pem, key: /a.key}]}
` + pools,
			opts: skipFiles,
			line: 7, field: "services[0].redirect_https", msg: "not allowed for https services; redirect_https is for http",
		},
		{
			name: "redirect_https on a tcp service",
			yaml: `
interfaces: [eth1]
services:
  - {name: web, vip: 10.0.0.1, port: 80, protocol: tcp, pool: app, redirect_https: false}
` + pools,
			line: 3, field: "services[0].redirect_https", msg: "not allowed for tcp services",
		},
		{
			name: "redirect_https not a bool",
			yaml: `
interfaces: [eth1]
services:
  - name: site
    vip: 10.0.0.1
    port: 80
    protocol: http
    redirect_https: "yes"
    routes: [{path: /, pool: app}]
` + pools,
			line: 7, field: "services[0].redirect_https", msg: "expected true or false",
		},
		{
			// A broken https service is reported once; the redirect that
			// points at it is not blamed too.
			name: "redirect_https to an invalid https service",
			yaml: `
interfaces: [eth1]
services:
  - {name: site, vip: 10.0.0.1, port: 80, protocol: http, redirect_https: true}
  - name: site-tls
    vip: 10.0.0.1
    port: 443
    protocol: https
    routes: [{path: /, pool: nope}]
    tls: {certificates: [{cert: /a.pem, key: /a.key}]}
` + pools,
			opts: skipFiles,
			line: 8, field: "services[1].routes[0].pool", msg: `unknown pool "nope"`,
		},
		{
			name: "slowpath max_header_bytes too small",
			yaml: "interfaces: [eth1]\nslowpath:\n  max_header_bytes: 512\n",
			line: 3, field: "slowpath.max_header_bytes", msg: "512 is out of range 1024..1048576",
		},
		{
			name: "slowpath max_header_bytes too large",
			yaml: "interfaces: [eth1]\nslowpath:\n  max_header_bytes: 2097152\n",
			line: 3, field: "slowpath.max_header_bytes", msg: "2097152 is out of range 1024..1048576",
		},
		{
			name: "slowpath negative max_body_bytes",
			yaml: "interfaces: [eth1]\nslowpath:\n  max_body_bytes: -1\n",
			line: 3, field: "slowpath.max_body_bytes", msg: "-1 is out of range 0..",
		},
		{
			name: "slowpath zero timeout",
			yaml: "interfaces: [eth1]\nslowpath:\n  connect_timeout: 0s\n",
			line: 3, field: "slowpath.connect_timeout", msg: "must be positive",
		},
		{
			name: "slowpath timeout without unit",
			yaml: "interfaces: [eth1]\nslowpath:\n  request_timeout: 60\n",
			line: 3, field: "slowpath.request_timeout", msg: `invalid duration "60"`,
		},
		{
			name: "slowpath access_log not a bool",
			yaml: "interfaces: [eth1]\nslowpath:\n  access_log: verbose\n",
			line: 3, field: "slowpath.access_log", msg: "expected true or false",
		},
		{
			name: "slowpath unknown key",
			yaml: "interfaces: [eth1]\nslowpath:\n  read_timeout: 5s\n",
			line: 3, field: "slowpath.read_timeout", msg: `unknown field "read_timeout" (valid: connect_timeout,`,
		},
		{
			name: "missing vip",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    port: 80
    protocol: tcp
    pool: app
` + pools,
			line: 3, field: "services[0].vip", msg: "required field is missing",
		},
		{
			name: "tcp service without pool",
			yaml: `
interfaces: [eth1]
services:
  - name: web
    vip: 10.0.0.1
    port: 80
    protocol: tcp
`,
			line: 3, field: "services[0].pool", msg: "required field is missing",
		},
		{
			name: "http service without routes",
			yaml: `
interfaces: [eth1]
services:
  - name: site
    vip: 10.0.0.1
    port: 80
    protocol: http
`,
			line: 3, field: "services[0].routes", msg: "required field is missing",
		},
		{
			name: "http service with pool",
			yaml: `
interfaces: [eth1]
services:
  - name: site
    vip: 10.0.0.1
    port: 80
    protocol: http
    pool: app
    routes: [{path: /, pool: app}]
` + pools,
			line: 7, field: "services[0].pool", msg: "not allowed for http services",
		},
		{
			name: "udp service with routes",
			yaml: `
interfaces: [eth1]
services:
  - name: dns
    vip: 10.0.0.1
    port: 53
    protocol: udp
    pool: app
    routes: [{path: /, pool: app}]
` + pools,
			line: 8, field: "services[0].routes", msg: "not allowed for udp services",
		},
		{
			name: "route without path",
			yaml: `
interfaces: [eth1]
services:
  - name: site
    vip: 10.0.0.1
    port: 80
    protocol: http
    routes:
      - host: example.com
        pool: app
` + pools,
			line: 8, field: "services[0].routes[0].path", msg: "required field is missing",
		},
		{
			name: "route path with dot segment",
			yaml: `
interfaces: [eth1]
services:
  - name: site
    vip: 10.0.0.1
    port: 80
    protocol: http
    routes: [{path: /a/../b, pool: app}]
` + pools,
			line: 7, field: "services[0].routes[0].path", msg: "'..' segments",
		},
		{
			name: "route host with port",
			yaml: `
interfaces: [eth1]
services:
  - name: site
    vip: 10.0.0.1
    port: 80
    protocol: http
    routes:
      - host: example.com:8080
        path: /
        pool: app
` + pools,
			line: 8, field: "services[0].routes[0].host", msg: "must not include a port",
		},
		{
			name: "duplicate route after host normalisation",
			yaml: `
interfaces: [eth1]
services:
  - name: site
    vip: 10.0.0.1
    port: 80
    protocol: http
    routes:
      - {host: Example.com, path: /a, pool: app}
      - {host: example.com., path: /a, exact: false, pool: app}
` + pools,
			line: 9, field: "services[0].routes[1]", msg: "same host, path and exact as services[0].routes[0]",
		},
		{
			name: "CONNECT method",
			yaml: `
interfaces: [eth1]
services:
  - name: site
    vip: 10.0.0.1
    port: 80
    protocol: http
    routes:
      - path: /
        methods: [GET, connect]
        pool: app
` + pools,
			line: 9, field: "services[0].routes[0].methods[1]", msg: "CONNECT cannot be routed",
		},
		{
			name: "unknown method",
			yaml: `
interfaces: [eth1]
services:
  - name: site
    vip: 10.0.0.1
    port: 80
    protocol: http
    routes:
      - path: /
        methods: [FETCH]
        pool: app
` + pools,
			line: 9, field: "services[0].routes[0].methods[0]", msg: `unknown method "FETCH" (valid: GET, HEAD,`,
		},
		{
			name: "exact not a bool",
			yaml: `
interfaces: [eth1]
services:
  - name: site
    vip: 10.0.0.1
    port: 80
    protocol: http
    routes:
      - path: /
        exact: "yes"
        pool: app
` + pools,
			line: 9, field: "services[0].routes[0].exact", msg: "expected true or false",
		},
		{
			name: "weight above range",
			yaml: `
interfaces: [eth1]
pools:
  app:
    backends:
      - address: 10.0.1.11:80
        weight: 1001
`,
			line: 6, field: "pools.app.backends[0].weight", msg: "1001 is out of range 0..1000",
		},
		{
			name: "negative weight",
			yaml: `
interfaces: [eth1]
pools:
  app:
    backends:
      - address: 10.0.1.11:80
        weight: -1
`,
			line: 6, field: "pools.app.backends[0].weight", msg: "-1 is out of range 0..1000",
		},
		{
			name: "every backend drained",
			yaml: `
interfaces: [eth1]
pools:
  app:
    backends:
      - {address: 10.0.1.11:80, weight: 0}
      - {address: 10.0.1.12:80, weight: 0}
`,
			line: 5, field: "pools.app.backends", msg: "every backend has weight 0",
		},
		{
			name: "no backends",
			yaml: `
interfaces: [eth1]
pools:
  app:
    backends: []
`,
			line: 4, field: "pools.app.backends", msg: "at least one backend is required",
		},
		{
			name: "pool without backends",
			yaml: `
interfaces: [eth1]
pools:
  app:
    maglev_size: 7
`,
			line: 4, field: "pools.app.backends", msg: "required field is missing",
		},
		{
			name: "duplicate backend",
			yaml: `
interfaces: [eth1]
pools:
  app:
    backends:
      - address: 10.0.1.11:80
      - address: 10.0.1.11:80
        weight: 3
`,
			line: 6, field: "pools.app.backends[1].address", msg: "duplicate backend 10.0.1.11:80 (first at line 5)",
		},
		{
			name: "non-prime maglev size",
			yaml: `
interfaces: [eth1]
pools:
  app:
    maglev_size: 65536
    backends: [{address: 10.0.1.11:80}]
`,
			line: 4, field: "pools.app.maglev_size", msg: "65536 is not prime",
		},
		{
			name: "maglev size above range",
			yaml: `
interfaces: [eth1]
pools:
  app:
    maglev_size: 1048583
    backends: [{address: 10.0.1.11:80}]
`,
			line: 4, field: "pools.app.maglev_size", msg: "out of range 7..1048573",
		},
		{
			name: "maglev size below backend count",
			yaml: `
interfaces: [eth1]
pools:
  app:
    maglev_size: 7
    backends:
      - {address: 10.0.1.1:80}
      - {address: 10.0.1.2:80}
      - {address: 10.0.1.3:80}
      - {address: 10.0.1.4:80}
      - {address: 10.0.1.5:80}
      - {address: 10.0.1.6:80}
      - {address: 10.0.1.7:80}
      - {address: 10.0.1.8:80}
`,
			line: 4, field: "pools.app.maglev_size", msg: "smaller than the number of weighted backends (8)",
		},
		{
			name: "invalid pool name",
			yaml: `
interfaces: [eth1]
pools:
  App:
    backends: [{address: 10.0.1.11:80}]
`,
			line: 3, field: "pools.App", msg: "invalid pool name",
		},
		{
			name: "unknown top-level key",
			yaml: "interfaces: [eth1]\nlog_level: debug\n",
			line: 2, field: "log_level", msg: `unknown field "log_level" (valid: interfaces, xdp_mode,`,
		},
		{
			name: "unknown nested key",
			yaml: `
interfaces: [eth1]
pools:
  app:
    backends:
      - address: 10.0.1.11:80
        wieght: 2
`,
			line: 6, field: "pools.app.backends[0].wieght", msg: `unknown field "wieght" (valid: address, weight)`,
		},
		{
			name: "duplicate key",
			yaml: "interfaces: [eth1]\nxdp_mode: native\nxdp_mode: generic\n",
			line: 3, field: "xdp_mode", msg: "duplicate key (first at line 2)",
		},
		{
			name: "wrong shape",
			yaml: "interfaces: [eth1]\nservices:\n  name: web\n",
			line: 3, field: "services", msg: "expected a list, got a mapping",
		},
		{
			name: "metrics listen without port",
			yaml: "interfaces: [eth1]\nmetrics:\n  listen: 127.0.0.1\n",
			line: 3, field: "metrics.listen", msg: "want host:port",
		},
		{
			name: "duration without unit",
			yaml: "interfaces: [eth1]\nflows:\n  udp_idle_timeout: 30\n",
			line: 3, field: "flows.udp_idle_timeout", msg: `invalid duration "30"`,
		},
		{
			name: "zero duration",
			yaml: "interfaces: [eth1]\nflows:\n  closed_timeout: 0s\n",
			line: 3, field: "flows.closed_timeout", msg: "must be positive",
		},
		{
			name: "YAML syntax error",
			yaml: "interfaces: [eth1]\nxdp_mode: native\n  bpffs: /x\n",
			line: 3, field: "", msg: "invalid YAML: mapping values are not allowed",
		},
		{
			name: "empty file",
			yaml: "",
			line: 1, field: "", msg: "configuration is empty",
		},
		{
			name: "only comments",
			yaml: "# nothing configured yet\n",
			line: 1, field: "", msg: "configuration is empty",
		},
		{
			name: "two documents",
			yaml: "interfaces: [eth1]\n---\ninterfaces: [eth2]\n",
			line: 2, field: "", msg: "more than one YAML document",
		},
		{
			name: "not a mapping",
			yaml: "- eth1\n",
			line: 1, field: "", msg: "expected a mapping, got a list",
		},
		{
			name: "recursive alias",
			yaml: "interfaces: &loop [eth1, *loop]\n",
			line: 1, field: "", msg: "recursive or too large",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("rauta.yaml", doc(tt.yaml), tt.opts)
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg)
			}
			if cfg != nil {
				t.Errorf("Parse returned a config along with an error")
			}
			errs := configErrors(t, err)
			// One problem, one error: a cascade of follow-on errors would
			// bury the real one.
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1:\n%v", len(errs), err)
			}
			got := errs[0]
			if got.File != "rauta.yaml" || got.Line != tt.line || got.Field != tt.field || !strings.Contains(got.Msg, tt.msg) {
				t.Errorf("got  %s\nwant rauta.yaml:%d: %s: …%s…", got, tt.line, tt.field, tt.msg)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{File: "rauta.yaml", Line: 12, Field: "services[1].pool", Msg: `unknown pool "foo"`}, `rauta.yaml:12: services[1].pool: unknown pool "foo"`},
		{Error{File: "rauta.yaml", Line: 3, Msg: "invalid YAML: x"}, "rauta.yaml:3: invalid YAML: x"},
		{Error{File: "rauta.yaml", Msg: "invalid YAML: x"}, "rauta.yaml: invalid YAML: x"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestParseReportsEveryProblemInLineOrder(t *testing.T) {
	_, err := Parse("rauta.yaml", doc(`
interfaces: [eth1]
pools:
  app:
    maglev_size: 10
    backends:
      - address: 10.0.1.11:80
        weight: 5000
services:
  - name: web
    vip: 10.0.0.1
    port: 80
    protocol: tcp
    pool: nope
colour: blue
`), Options{})
	var got []string
	for _, e := range configErrors(t, err) {
		got = append(got, e.Error())
	}
	want := []string{
		"rauta.yaml:4: pools.app.maglev_size: 10 is not prime (Maglev needs a prime table size; the default is 65537)",
		"rauta.yaml:7: pools.app.backends[0].weight: 5000 is out of range 0..1000",
		"rauta.yaml:13: services[0].pool: unknown pool \"nope\"",
		"rauta.yaml:14: colour: unknown field \"colour\" (valid: interfaces, xdp_mode, bpffs, services, pools, metrics, flows, slowpath)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRouteHost(t *testing.T) {
	tests := []struct {
		host    string
		want    string
		wantErr string
	}{
		{host: "api.example.com", want: "api.example.com"},
		{host: "API.Example.COM.", want: "api.example.com"},
		{host: "*.example.com", want: "*.example.com"},
		{host: "_svc.example.com", want: "_svc.example.com"},
		{host: "10.0.0.100", want: "10.0.0.100"},
		{host: "example.com:80", wantErr: "must not include a port"},
		{host: "[::1]", wantErr: "must not include a port"},
		{host: "exa mple.com", wantErr: "only letters, digits"},
		{host: "foo.*.com", wantErr: "wildcard must be the whole first label"},
		{host: "*example.com", wantErr: "wildcard must be the whole first label"},
		{host: "*", wantErr: "wildcard must be the whole first label"},
		{host: "a..b", wantErr: "empty label"},
		{host: "-a.com", wantErr: "must not start or end with '-'"},
		{host: strings.Repeat("a", 64) + ".com", wantErr: "label longer than 63"},
		{host: "", wantErr: "must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			cfg, err := Parse("rauta.yaml", doc(`
interfaces: [eth1]
services:
  - name: site
    vip: 10.0.0.1
    port: 80
    protocol: http
    routes:
      - host: "`+tt.host+`"
        path: /
        pool: app
pools:
  app:
    backends: [{address: 10.0.1.11:80}]
`), Options{})
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
				}
			case err != nil:
				t.Errorf("Parse: %v", err)
			case cfg.Services[0].Routes[0].Host != tt.want:
				t.Errorf("host = %q, want %q", cfg.Services[0].Routes[0].Host, tt.want)
			}
		})
	}
}

func TestParseAliases(t *testing.T) {
	cfg, err := Parse("rauta.yaml", doc(`
interfaces: [eth1]
pools:
  a:
    backends: &shared
      - address: 10.0.1.11:80
  b:
    backends: *shared
`), Options{})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if a, b := cfg.Pools[0].Backends, cfg.Pools[1].Backends; !reflect.DeepEqual(a, b) || len(a) != 1 {
		t.Errorf("aliased backends differ: %v vs %v", a, b)
	}

	// Each level multiplies by 10: 10^7 nodes from a few hundred bytes.
	var bomb strings.Builder
	bomb.WriteString("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 7; i++ {
		prev := "*l" + string(rune('0'+i-1))
		bomb.WriteString("l" + string(rune('0'+i)) + ": &l" + string(rune('0'+i)) + " [" + strings.Repeat(prev+", ", 9) + prev + "]\n")
	}
	bomb.WriteString("interfaces: *l7\n")
	_, err = Parse("rauta.yaml", []byte(bomb.String()), Options{})
	if err == nil || !strings.Contains(err.Error(), "recursive or too large") {
		t.Errorf("alias bomb: err = %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rauta.yaml")
	if err := os.WriteFile(path, doc(`
interfaces: [eth1]
pools:
  app:
    backends: [{address: 10.0.1.11:80, weight: 1001}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, Options{})
	if errs := configErrors(t, err); len(errs) != 1 || errs[0].File != path || errs[0].Line != 4 {
		t.Errorf("Load(%s) = %v, want one error at %s:4", path, err, path)
	}

	_, err = Load(filepath.Join(dir, "missing.yaml"), Options{})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want fs.ErrNotExist", err)
	}
}

func TestConfigPool(t *testing.T) {
	cfg := &Config{Pools: []Pool{{Name: "api"}, {Name: "web"}}}
	for _, name := range []string{"api", "web"} {
		if p, ok := cfg.Pool(name); !ok || p.Name != name {
			t.Errorf("Pool(%q) = %v, %v", name, p, ok)
		}
	}
	if _, ok := cfg.Pool("db"); ok {
		t.Error(`Pool("db") found a pool`)
	}
}

func TestMaglevBackends(t *testing.T) {
	pool := Pool{Name: "app", MaglevSize: 7, Backends: []Backend{
		{Address: netip.MustParseAddrPort("10.0.1.11:80"), Weight: 2},
		{Address: netip.MustParseAddrPort("10.0.1.12:8080"), Weight: 0},
	}}
	want := []maglev.Backend{{Name: "10.0.1.11:80", Weight: 2}, {Name: "10.0.1.12:8080", Weight: 0}}
	if got := pool.MaglevBackends(); !slices.Equal(got, want) {
		t.Errorf("MaglevBackends = %v, want %v", got, want)
	}
}

// FuzzParse checks that no input panics, that every failure is reported as
// *Error against the right file, and that what is accepted is consistent.
func FuzzParse(f *testing.F) {
	f.Add([]byte("interfaces: [eth1]\nservices:\n  - {name: web, vip: 10.0.0.1, port: 80, protocol: tcp, pool: app}\npools:\n  app:\n    backends: [{address: 10.0.1.11:80, weight: 2}]\n"))
	f.Add([]byte("interfaces: [eth1]\nservices:\n  - name: s\n    vip: 10.0.0.1\n    port: 80\n    protocol: http\n    routes: [{host: '*.a.b', path: /x, exact: true, methods: [get], pool: p}]\npools: {p: {backends: [{address: 1.2.3.4:5}]}}\n"))
	f.Add([]byte("interfaces: [eth1]\nservices:\n  - {name: s, vip: 10.0.0.1, port: 80, protocol: http, redirect_https: true}\n  - name: t\n    vip: 10.0.0.1\n    port: 443\n    protocol: https\n    tls: {certificates: [{cert: /a.pem, key: /a.key}]}\n    routes: [{path: /, pool: p}]\npools: {p: {backends: [{address: 1.2.3.4:5}]}}\nslowpath: {max_header_bytes: 4096, access_log: false}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("interfaces: [\n"))
	f.Add([]byte("? [a]\n: b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Fuzzed paths must not read this machine's files.
		cfg, err := Parse("fuzz.yaml", data, Options{SkipFileChecks: true})
		if err != nil {
			for _, e := range configErrors(t, err) {
				if e.File != "fuzz.yaml" || e.Line < 0 || e.Msg == "" {
					t.Fatalf("malformed error %#v", e)
				}
			}
			return
		}
		for _, svc := range cfg.Services {
			refs := []string{svc.Pool}
			for _, r := range svc.Routes {
				refs = append(refs, r.Pool)
			}
			for _, ref := range refs {
				if _, ok := cfg.Pool(ref); ref != "" && !ok {
					t.Fatalf("service %q refers to missing pool %q", svc.Name, ref)
				}
			}
		}
		for _, svc := range cfg.Services {
			if (svc.Protocol == ProtocolHTTPS) != (len(svc.TLS.Certificates) > 0) {
				t.Fatalf("service %q: protocol %s with %d certificates", svc.Name, svc.Protocol, len(svc.TLS.Certificates))
			}
			if svc.RedirectHTTPS && (svc.Protocol != ProtocolHTTP || svc.RedirectPort == 0) {
				t.Fatalf("service %q: bad redirect %+v", svc.Name, svc)
			}
		}
		for _, pool := range cfg.Pools {
			if !maglev.IsPrime(pool.MaglevSize) || len(pool.Backends) == 0 {
				t.Fatalf("invalid pool accepted: %+v", pool)
			}
		}
	})
}
