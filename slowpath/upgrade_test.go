package slowpath

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// echoUpgradeBackend answers an upgrade with 101, greets first (so the
// greeting may arrive with the 101's header) and then echoes; it hands the
// request it saw to seen.
func echoUpgradeBackend(t *testing.T, seen chan<- *http.Request) netip.AddrPort {
	return rawBackend(t, func(c net.Conn, req *http.Request) {
		seen <- req
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhello;")
		_, _ = io.Copy(c, c)
	})
}

const upgradeRequest = "GET /chat HTTP/1.1\r\nHost: ws.example\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// TestUpgradeTunnel: a WebSocket upgrade becomes a tunnel, over plain HTTP
// and over TLS (wss://, which only the slow path can serve), and Shutdown
// ends it.
func TestUpgradeTunnel(t *testing.T) {
	cert, roots := selfSigned(t)
	for _, tc := range []struct {
		name string
		tls  *tls.Config
	}{
		{"plain", nil},
		{"tls", &tls.Config{Certificates: []tls.Certificate{cert}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := make(chan *http.Request, 1)
			be := echoUpgradeBackend(t, seen)
			rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
				pools: map[string][]netip.AddrPort{"p": {deadAddr(t), be}}}
			p, addr := startProxy(t, Options{}, Listener{Service: vip, TLS: tc.tls}, rt)

			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if tc.tls != nil {
				c = tls.Client(c, &tls.Config{RootCAs: roots, ServerName: "example.test"})
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			checkTunnel(t, c, seen)
			if n := testutil.ToFloat64(p.metrics.requests.WithLabelValues(vip.String(), "p", "101")); n != 1 {
				t.Errorf("101s counted %v, want 1", n)
			}
			if n := tunnelGauge(t, p); n != 1 {
				t.Errorf("rauta_slowpath_tunnels %v with one open, want 1", n)
			}

			// Shutdown ends the tunnel: the client sees the end of its
			// stream, not its deadline.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := p.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			var ne net.Error
			if n, err := c.Read(make([]byte, 1)); err == nil || errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("tunnel still open after Shutdown: %d bytes, %v", n, err)
			}
			// The hijack handler returns once both copies ended.
			deadline := time.Now().Add(5 * time.Second)
			for tunnelGauge(t, p) != 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := tunnelGauge(t, p); n != 0 {
				t.Errorf("rauta_slowpath_tunnels %v after Shutdown, want 0", n)
			}
		})
	}
}

// checkTunnel upgrades c and sends bytes both ways through the tunnel.
func checkTunnel(t *testing.T, c net.Conn, seen <-chan *http.Request) {
	t.Helper()
	if _, err := io.WriteString(c, upgradeRequest); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "websocket" || !strings.EqualFold(resp.Header.Get("Connection"), "upgrade") ||
		resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("answer %d %v", resp.StatusCode, resp.Header)
	}
	req := <-seen
	if req.Header.Get("Upgrade") != "websocket" || !strings.EqualFold(req.Header.Get("Connection"), "upgrade") ||
		req.Header.Get("Sec-WebSocket-Key") != "dGhlIHNhbXBsZSBub25jZQ==" || req.Header.Get("X-Forwarded-For") != "127.0.0.1" ||
		req.Host != "ws.example" || req.URL.Path != "/chat" {
		t.Errorf("backend saw %s %s host %s %v", req.Method, req.URL, req.Host, req.Header)
	}
	// The backend's greeting first (it may have come with the 101).
	greeting := make([]byte, len("hello;"))
	if _, err := io.ReadFull(br, greeting); err != nil || string(greeting) != "hello;" {
		t.Fatalf("greeting %q: %v", greeting, err)
	}
	for _, msg := range []string{"ping 1", strings.Repeat("x", 100_000)} {
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("echo of %d bytes: %d bytes back, %v", len(msg), len(got), err)
		}
	}
}

func TestUpgradeRefused(t *testing.T) {
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" && r.URL.Path == "/refuse" {
			w.Header().Set("Content-Length", "7")
			w.WriteHeader(http.StatusUpgradeRequired)
			_, _ = io.WriteString(w, "no way\n")
			return
		}
		_, _ = io.WriteString(w, r.Header.Get("Upgrade")+"|"+r.Header.Get("Connection"))
	})
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {be.addr}}}
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, rt)

	t.Run("refusal passed on", func(t *testing.T) {
		resp, body := rawRequest(t, addr, strings.Replace(upgradeRequest, "/chat", "/refuse", 1))
		if resp.StatusCode != http.StatusUpgradeRequired || string(body) != "no way\n" {
			t.Errorf("%d %q", resp.StatusCode, body)
		}
	})
	t.Run("h2c offer answered in HTTP/1.1", func(t *testing.T) {
		resp, body := rawRequest(t, addr, "GET /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
		if resp.StatusCode != 200 || string(body) != "|" {
			t.Errorf("%d %q: the backend saw an upgrade", resp.StatusCode, body)
		}
	})
	t.Run("upgrade without Connection: upgrade is a plain request", func(t *testing.T) {
		resp, body := rawRequest(t, addr, "GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
		if resp.StatusCode != 200 || string(body) != "|" {
			t.Errorf("%d %q", resp.StatusCode, body)
		}
	})
	t.Run("no backend accepts", func(t *testing.T) {
		rt.mu.Lock()
		rt.pools["p"] = []netip.AddrPort{deadAddr(t)}
		rt.mu.Unlock()
		resp, _ := rawRequest(t, addr, upgradeRequest)
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%d, want 502", resp.StatusCode)
		}
	})
}

// TestUpgradeIdle: a tunnel lives while either direction carries bytes and
// ends once both have been silent for the idle timeout.
func TestUpgradeIdle(t *testing.T) {
	seen := make(chan *http.Request, 1)
	// The backend only listens after its greeting: backend → client is
	// silent throughout.
	be := rawBackend(t, func(c net.Conn, req *http.Request) {
		seen <- req
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = c.SetDeadline(time.Time{})
		_, _ = io.Copy(io.Discard, c)
	})
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {be}}}
	const idle = 300 * time.Millisecond
	_, addr := startProxy(t, Options{IdleTimeout: idle}, Listener{Service: vip}, rt)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, upgradeRequest); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	<-seen
	// 8 writes 100ms apart: 800ms, more than twice the idle timeout.
	for i := range 8 {
		time.Sleep(idle / 3)
		if _, err := io.WriteString(c, "tick"); err != nil {
			t.Fatalf("write %d: the tunnel closed while the client was talking: %v", i, err)
		}
	}
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * idle))
	n, err := br.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("silent tunnel not closed within %v: %d bytes, %v", 5*idle, n, err)
	}
	if waited := time.Since(start); waited < idle/2 {
		t.Errorf("closed %v after the last byte, before the idle timeout %v", waited, idle)
	}
}

// tunnelGauge reads rauta_slowpath_tunnels from the proxy's collectors.
func tunnelGauge(t *testing.T, p *Proxy) float64 {
	t.Helper()
	for _, c := range p.Collectors() {
		descs := make(chan *prometheus.Desc, 10)
		c.Describe(descs)
		close(descs)
		for d := range descs {
			if strings.Contains(d.String(), `"rauta_slowpath_tunnels"`) {
				return testutil.ToFloat64(c)
			}
		}
	}
	t.Fatal("no tunnel gauge among the proxy's collectors")
	return 0
}

// TestUpgradeStalledReader: a client that stops reading while the backend
// keeps sending does not hold the tunnel, even while it keeps talking
// itself (so the tunnel is not idle): the proxy's write to it waits idle at
// most (nginx's send_timeout), then both connections close.
func TestUpgradeStalledReader(t *testing.T) {
	be := rawBackend(t, func(c net.Conn, _ *http.Request) {
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = c.SetDeadline(time.Time{})
		chunk := make([]byte, 64<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {be}}}
	const idle = 300 * time.Millisecond
	p, addr := startProxy(t, Options{IdleTimeout: idle}, Listener{Service: vip}, rt)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, upgradeRequest); err != nil {
		t.Fatal(err)
	}
	// Read nothing, so buffers fill and the proxy's write to us stalls,
	// but keep sending.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(idle / 3):
				if _, err := io.WriteString(c, "tick"); err != nil {
					return
				}
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for tunnelGauge(t, p) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if tunnelGauge(t, p) != 1 {
		t.Fatal("the tunnel never opened")
	}
	for tunnelGauge(t, p) != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := tunnelGauge(t, p); n != 0 {
		t.Errorf("a tunnel whose client stopped reading still open after 10s (idle %v)", idle)
	}
}
