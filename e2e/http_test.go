package e2e

import (
	"strings"
	"testing"

	"github.com/rauta-lb/rauta/tools/testbed"
)

// httpConfig routes by host and path over three single-backend pools, so
// the answering backend names the pool a request reached.
const httpConfig = `interfaces: [eth1, eth2]
bpffs: %PINS%
services:
  - name: site
    vip: 10.0.0.100
    port: 80
    protocol: http
    routes:
      - host: api.example.com
        path: /v1/
        methods: [GET, POST]
        pool: api
      - path: /healthz
        exact: true
        pool: health
      - path: /
        pool: web
pools:
  api:
    backends:
      - address: 10.0.1.11:80
  health:
    backends:
      - address: 10.0.1.12:80
  web:
    backends:
      - address: 10.0.1.13:80
`

func TestHTTPFastPathRoutes(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tb := testbed.NewT(t, testbed.Options{Backends: 3})
	startBackends(t, tb)
	startDaemon(t, tb, httpConfig)

	cases := []struct {
		host, path, backend string
	}{
		{"api.example.com", "/v1/users", "b1"},
		{"API.Example.com:80", "/v1/users?x=1", "b1"},
		{"other.example.com", "/v1/users", "b3"},
		{"api.example.com", "/v2/", "b3"},
		{"any.example.com", "/healthz", "b2"},
		{"any.example.com", "/healthz?full=1", "b2"},
		{"any.example.com", "/healthzx", "b3"},
		{"any.example.com", "/", "b3"},
	}
	for _, tc := range cases {
		out := curl(t, tb, "-H", "Host: "+tc.host, "-D", "-", vipURL[:len(vipURL)-1]+tc.path)
		if !strings.Contains(out, "X-Backend: "+tc.backend) {
			t.Errorf("Host %s path %s: want backend %s, got:\n%s", tc.host, tc.path, tc.backend, out)
		}
		if !strings.Contains(out, "peer="+tb.ClientAddr.String()+":") {
			t.Errorf("backend did not see the client address: %s", out)
		}
	}
}
