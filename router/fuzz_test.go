package router_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/rauta-lb/rauta/config"
	"github.com/rauta-lb/rauta/router"
)

// xdpRoutesRaw reports whether XDP's parser (xdp/http_parse.h) routes a
// request path on its raw bytes: '/' first, then bytes 0x21..0x7e except
// '%' and '\', no "//" and no "." or ".." segment.
func xdpRoutesRaw(path string) bool {
	if !strings.HasPrefix(path, "/") || strings.Contains(path, "//") {
		return false
	}
	for _, c := range []byte(path) {
		if c <= ' ' || c >= 0x7f || c == '%' || c == '\\' {
			return false
		}
	}
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{
		"/", "/a/b/", "/api/%2e%2e/secret/x", "/api/../secret/x", "/%252e%252e/", "//a//b",
		"/a/./b/../c?x=/../y", "/%41%7e%2F%c3%a9", "/caf\xc3\xa9", "/..", "/a%zz", "/a%",
		"*", "http://h/p", "/a\\b", "/a?\\", "/a/.../b", "/.%2E/", "/a{b}#c", "/?",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		out, err := router.NormalizePath(raw)
		if err != nil {
			if out != "" {
				t.Fatalf("%q: error %v with output %q", raw, err, out)
			}
			if xdpRoutesRaw(cutQuery(raw)) && !strings.ContainsAny(raw, "\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f \x7f") {
				t.Fatalf("%q: XDP routes it, NormalizePath refuses it: %v", raw, err)
			}
			return
		}
		again, err := router.NormalizePath(out)
		if err != nil || again != out {
			t.Fatalf("not idempotent: %q → %q → %q, %v", raw, out, again, err)
		}
		path, query, hasQuery := strings.Cut(out, "?")
		_, rawQuery, rawHasQuery := strings.Cut(raw, "?")
		if hasQuery != rawHasQuery || query != rawQuery {
			t.Fatalf("%q → %q: query changed", raw, out)
		}
		if !strings.HasPrefix(path, "/") || strings.Contains(path, "//") {
			t.Fatalf("%q → %q: not a clean absolute path", raw, out)
		}
		for seg := range strings.SplitSeq(path, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("%q → %q: dot segment left", raw, out)
			}
		}
		for i := 0; i < len(path); i++ {
			c := path[i]
			if c <= ' ' || c >= 0x7f || c == '\\' {
				t.Fatalf("%q → %q: byte %#x left", raw, out, c)
			}
			if c != '%' {
				continue
			}
			if i+2 >= len(path) || !isUpperHex(path[i+1]) || !isUpperHex(path[i+2]) {
				t.Fatalf("%q → %q: bad escape at %d", raw, out, i)
			}
			if v := hexVal(path[i+1])<<4 | hexVal(path[i+2]); isUnreservedRef(v) {
				t.Fatalf("%q → %q: escaped unreserved %q", raw, out, v)
			}
		}
		// What XDP routes raw must route the same on the slow path.
		if xdpRoutesRaw(cutQuery(raw)) && out != raw {
			t.Fatalf("XDP routes %q raw, NormalizePath changes it to %q", raw, out)
		}
	})
}

func cutQuery(s string) string {
	p, _, _ := strings.Cut(s, "?")
	return p
}

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }

func hexVal(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'A' + 10
}

func isUnreservedRef(c byte) bool {
	return strings.IndexByte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~", c) >= 0
}

// refRoute is a brute-force reading of the routing rules: over all routes of
// the service, the one with the best (host tier, wildcard suffix length,
// LPM key length) wins, where the host tier is 3 for the request's exact
// host, 2 for a matching wildcard and 1 for host-less routes.
func refRoute(svc config.Service, method, host, path string) (string, error) {
	b := []byte(host)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	h := string(b)
	if strings.HasPrefix(h, "[") {
		if i := strings.Index(h, "]"); i >= 0 {
			h = h[:i+1]
		}
	} else if i := strings.Index(h, ":"); i >= 0 {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	path = cutQuery(path)

	var best *config.Route
	var bestScore [3]int
	for i := range svc.Routes {
		r := &svc.Routes[i]
		var score [3]int
		switch {
		case r.Host == "":
			score[0] = 1
		case h == "":
			continue
		case strings.HasPrefix(r.Host, "*."):
			if !strings.HasSuffix(h, r.Host[1:]) || len(h) <= len(r.Host)-1 {
				continue
			}
			score[0], score[1] = 2, len(r.Host)
		case r.Host == h:
			score[0] = 3
		default:
			continue
		}
		if r.Exact {
			if path != r.Path {
				continue
			}
			score[2] = 2*len(r.Path) + 1
		} else {
			if !strings.HasPrefix(path, r.Path) {
				continue
			}
			score[2] = 2 * len(r.Path)
		}
		if best == nil || greater(score, bestScore) {
			best, bestScore = r, score
		}
	}
	if best == nil {
		return "", router.ErrNoRoute
	}
	if len(best.Methods) > 0 {
		for _, m := range best.Methods {
			if m == method {
				return best.Pool, nil
			}
		}
		return "", router.ErrMethodNotAllowed
	}
	return best.Pool, nil
}

func greater(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] > b[i]
		}
	}
	return false
}

func FuzzRoute(f *testing.F) {
	cfg := unitConfig()
	svc := cfg.Services[0]
	tab, err := router.New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("GET", "api.example.com", "/v1/admin/x", uint8(0))
	f.Add("POST", "", "/static/x", uint8(0))
	f.Add("GET", "Shop.EU.example.com.:8", "/", uint8(0))
	f.Add("DELETE", "api.example.com:1", "", uint8(0x81))
	f.Add("GET", "x.only.example.com", "x", uint8(5))
	f.Add("HEAD", "", "?q", uint8(8))
	f.Fuzz(func(t *testing.T, method, host, path string, pick uint8) {
		// pick steers the fuzzer onto the configured routes: its low bits
		// choose a route whose path prefixes the fuzzed path, its top bit
		// whether that route's host (a wildcard's with a label) is used.
		if n := len(svc.Routes); int(pick&0x7f) < n {
			r := svc.Routes[pick&0x7f]
			path = r.Path + path
			if pick&0x80 != 0 {
				host = strings.Replace(r.Host, "*", "x", 1) + host
			}
		}
		pool, err := tab.Route(site, method, host, path)
		wantPool, wantErr := refRoute(svc, method, host, path)
		if pool != wantPool || !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
			t.Fatalf("Route(%q, %q, %q) = %q, %v; reference %q, %v", method, host, path, pool, err, wantPool, wantErr)
		}
		if _, err := tab.Route(netip.AddrPortFrom(vip, 9), method, host, path); !errors.Is(err, router.ErrNoService) {
			t.Fatalf("no service: %v", err)
		}
	})
}
