package main

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNginxListenLine checks the listen directive of the origin (a socket
// per worker) and of a TLS proxy (one shared socket), and, where nginx is
// installed, that nginx accepts both configurations.
func TestNginxListenLine(t *testing.T) {
	// nginx -t binds a reuseport socket: a free loopback port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		name string
		cfg  nginxConfig
		want string
	}{
		{"origin", nginxConfig{Workers: 2, Listen: origin, ReusePort: true}, "listen " + origin + " reuseport;"},
		{"tls-proxy", nginxConfig{Workers: 2, Listen: "127.0.0.1:8443", Upstream: "10.0.1.11:80", CertFile: "c.pem", KeyFile: "k.pem"}, "listen 127.0.0.1:8443 ssl;"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Dir = t.TempDir()
			path, err := renderFile(tc.cfg.Dir, "nginx.conf", nginxTemplate, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			conf, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var listens []string
			for line := range strings.Lines(string(conf)) {
				if f := strings.TrimSpace(line); strings.HasPrefix(f, "listen ") {
					listens = append(listens, f)
				}
			}
			if len(listens) != 1 || listens[0] != tc.want {
				t.Fatalf("listen directives %q, want [%q]", listens, tc.want)
			}
			if tc.cfg.CertFile != "" {
				return // nginx -t would need the certificate files
			}
			if _, err := exec.LookPath(nginxBin); err != nil {
				t.Skipf("no %s to check the configuration with", nginxBin)
			}
			out, err := exec.Command(nginxBin, "-t", "-c", path, "-p", tc.cfg.Dir+"/", "-e", tc.cfg.Dir+"/error.log").CombinedOutput()
			if err != nil {
				t.Fatalf("nginx -t: %v\n%s", err, out)
			}
		})
	}
}
