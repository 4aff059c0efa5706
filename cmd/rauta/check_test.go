package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const checkConfig = `interfaces: [%IFACE%]
services:
  - name: site
    vip: 10.0.0.100
    port: 80
    protocol: http
    routes:
      - path: /
        pool: %POOL%
pools:
  web:
    backends:
      - address: 10.0.1.11:80
`

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name, iface, pool string
		args              []string
		code              int
		out               string // in stdout (code 0) or stderr
	}{
		{name: "valid", iface: "lo", pool: "web", code: 0, out: ": ok (1 services, 1 pools)"},
		{name: "unknown pool", iface: "lo", pool: "nosuch", code: 1, out: ":9: "},
		{name: "missing interface", iface: "nosuch0", pool: "web", code: 1, out: `unknown interface "nosuch0"`},
		{name: "missing interface, portable", iface: "nosuch0", pool: "web", args: []string{"--portable"}, code: 0, out: ": ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rauta.yaml")
			text := strings.NewReplacer("%IFACE%", tc.iface, "%POOL%", tc.pool).Replace(checkConfig)
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := runMain(append([]string{"check", "--config", path}, tc.args...), &stdout, &stderr)
			got := stdout.String()
			if tc.code != 0 {
				got = stderr.String()
			}
			if code != tc.code || !strings.Contains(got, tc.out) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, stdout.String(), stderr.String(), tc.code, tc.out)
			}
		})
	}
}
