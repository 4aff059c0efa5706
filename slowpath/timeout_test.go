package slowpath

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestIdleTimeoutsNotWholeRequest: without a request timeout, a transfer
// lives as long as bytes move (a slow download and a slow upload, each
// several idle timeouts long, complete), while a peer silent for the idle
// timeout is dropped: a backend slow to answer gets 504, one that stops in
// the middle of its body costs that response.
func TestIdleTimeoutsNotWholeRequest(t *testing.T) {
	const idle = 400 * time.Millisecond
	const chunks, gap = 12, 100 * time.Millisecond // 1.2s in all
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow-down":
			for i := range chunks {
				fmt.Fprintf(w, "%02d;", i)
				w.(http.Flusher).Flush()
				time.Sleep(gap)
			}
		case "/stall-header":
			time.Sleep(3 * idle)
			io.WriteString(w, "late")
		case "/stall-body":
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "first part;")
			w.(http.Flusher).Flush()
			time.Sleep(3 * idle)
			io.WriteString(w, strings.Repeat("x", 89))
		case "/up":
			b, err := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%d %v", len(b), err)
		}
	})
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {be.addr}}}
	// The header timeout is shorter still: it must not cut a body.
	p, addr := startProxy(t, Options{IdleTimeout: idle, ReadHeaderTimeout: idle / 2}, Listener{Service: vip}, rt)
	c := httpClient()

	t.Run("slow download", func(t *testing.T) {
		resp, body := get(t, c, "http://"+addr+"/slow-down", nil)
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "00;") || !strings.HasSuffix(body, fmt.Sprintf("%02d;", chunks-1)) {
			t.Errorf("%d %q", resp.StatusCode, body)
		}
	})
	t.Run("slow upload", func(t *testing.T) {
		// Chunks above fasthttp's 8 KiB read-ahead, so the body streams
		// (a small body is read whole before the handler runs, under the
		// header timeout).
		const chunk = 16 << 10
		pr, pw := io.Pipe()
		defer pr.Close() // ends the writer if the request fails
		go func() {
			for range chunks {
				pw.Write([]byte(strings.Repeat("u", chunk)))
				time.Sleep(gap)
			}
			pw.Close()
		}()
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/up", pr)
		req.ContentLength = chunks * chunk
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != fmt.Sprintf("%d <nil>", chunks*chunk) {
			t.Errorf("%d %q", resp.StatusCode, b)
		}
	})
	t.Run("backend slow to answer", func(t *testing.T) {
		start := time.Now()
		resp, _ := get(t, c, "http://"+addr+"/stall-header", nil)
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Errorf("%d, want 504", resp.StatusCode)
		}
		if waited := time.Since(start); waited > 2*idle+idle/2 {
			t.Errorf("504 after %v (idle %v)", waited, idle)
		}
	})
	t.Run("backend stalls mid-body", func(t *testing.T) {
		aborted := p.errorCount(reasonResponseAborted)
		start := time.Now()
		// The client sees the connection end, before or within the body
		// (a raw connection: net/http would retry the GET).
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, "GET /stall-body HTTP/1.1\r\nHost: x\r\n\r\n")
		got, err := io.ReadAll(conn)
		if err != nil {
			t.Fatalf("reading: %v", err)
		}
		if strings.HasSuffix(string(got), strings.Repeat("x", 89)) {
			t.Errorf("a body the backend never finished arrived whole: %q", got)
		}
		if waited := time.Since(start); waited > 2*idle+idle/2 {
			t.Errorf("dropped after %v (idle %v)", waited, idle)
		}
		if p.errorCount(reasonResponseAborted) != aborted+1 {
			t.Errorf("response_aborted %v, want %v", p.errorCount(reasonResponseAborted), aborted+1)
		}
	})
}
