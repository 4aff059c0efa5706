package slowpath

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pattern is a deterministic, incompressible-enough byte stream of n bytes
// that costs no memory.
type pattern struct {
	n, off int64
	x      uint64
}

func newPattern(n int64) *pattern { return &pattern{n: n, x: 0x9E3779B97F4A7C15} }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if rem := p.n - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	for i := range b {
		p.x ^= p.x << 13
		p.x ^= p.x >> 7
		p.x ^= p.x << 17
		b[i] = byte(p.x)
	}
	p.off += int64(len(b))
	return len(b), nil
}

func patternSum(n int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, newPattern(n))
	return hex.EncodeToString(h.Sum(nil))
}

// streamBackend answers /up with the sha256 and length of the body it got,
// and /down/N with N pattern bytes (Content-Length unless ?chunked).
func streamBackend(t *testing.T) *backend {
	return startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/up":
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
		case strings.HasPrefix(r.URL.Path, "/down/"):
			n, _ := strconv.ParseInt(strings.TrimPrefix(r.URL.Path, "/down/"), 10, 64)
			if r.URL.Query().Get("chunked") == "" {
				w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			}
			_, _ = io.Copy(w, newPattern(n))
		}
	})
}

func streamProxy(t *testing.T, opts Options) string {
	be := streamBackend(t)
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {be.addr}}}
	_, addr := startProxy(t, opts, Listener{Service: vip}, rt)
	return addr
}

func upload(t *testing.T, c *http.Client, url string, n int64, chunked bool) string {
	t.Helper()
	var body io.Reader = newPattern(n)
	if chunked {
		body = struct{ io.Reader }{body} // hide the length: net/http chunks
	}
	req, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if !chunked {
		req.ContentLength = n
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("upload: %d %q", resp.StatusCode, b)
	}
	return string(b)
}

func TestUploadDownloadExact(t *testing.T) {
	addr := streamProxy(t, Options{})
	c := httpClient()
	const up = 10 << 20
	want := fmt.Sprintf("%d %s", up, patternSum(up))
	for _, chunked := range []bool{false, true} {
		if got := upload(t, c, "http://"+addr+"/up", up, chunked); got != want {
			t.Errorf("upload (chunked=%v): backend got %q, want %q", chunked, got, want)
		}
	}
	const down = 50 << 20
	wantSum := patternSum(down)
	for _, q := range []string{"", "?chunked=1"} {
		resp, err := c.Get("http://" + addr + "/down/" + strconv.Itoa(down) + q)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || n != down || hex.EncodeToString(h.Sum(nil)) != wantSum {
			t.Errorf("download%s: %d bytes, err %v, sum match %v", q, n, err, hex.EncodeToString(h.Sum(nil)) == wantSum)
		}
		if q == "" && resp.ContentLength != down {
			t.Errorf("Content-Length %d", resp.ContentLength)
		}
	}
}

// TestStreamingMemory moves 512 MB each way through the proxy and checks
// the heap never holds more than a small part of it. Client, proxy and
// backend share the process, so all three must stream.
func TestStreamingMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 1 GB")
	}
	addr := streamProxy(t, Options{})
	c := httpClient()
	const n = 512 << 20
	const limit = 64 << 20

	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	got := upload(t, c, "http://"+addr+"/up", n, true)
	if !strings.HasPrefix(got, strconv.Itoa(n)+" ") {
		t.Fatalf("upload: %q", got)
	}
	resp, err := c.Get("http://" + addr + "/down/" + strconv.Itoa(n))
	if err != nil {
		t.Fatal(err)
	}
	m, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || m != n {
		t.Fatalf("download: %d, %v", m, err)
	}
	if p := peak.Load(); p > limit {
		t.Errorf("HeapInuse peaked at %d MB while streaming 512 MB each way", p>>20)
	} else {
		t.Logf("HeapInuse peak %d MB", p>>20)
	}
}

func TestAccessLog(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	be := startBackend(t, nameHandler("a"))
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "pa"}},
		pools: map[string][]netip.AddrPort{"pa": {be.addr}}}
	_, addr := startProxy(t, Options{Logger: log, AccessLog: true}, Listener{Service: vip, Name: "web"}, rt)
	resp, body := rawRequest(t, addr, "GET /x//y?z=1 HTTP/1.1\r\nHost: h.example\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(buf.String(), `"msg":"request"`) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	line := buf.String()
	for _, want := range []string{`"service":"web"`, `"client":"127.0.0.1:`, `"method":"GET"`, `"host":"h.example"`,
		`"path":"/x/y?z=1"`, `"pool":"pa"`, `"backend":"` + be.addr.String() + `"`, `"status":200`, `"bytes":14`, `"duration":`} {
		if !strings.Contains(line, want) {
			t.Errorf("access log lacks %s: %s", want, line)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestShutdownWaitsForRequest(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		_, _ = io.WriteString(w, "done")
	})
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {be.addr}}}
	p := New(Options{NormalizePath: fakeNormalize})
	p.SetRouter(rt)
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln, Listener{Service: vip}) }()

	got := make(chan string, 1)
	go func() {
		resp, err := httpClient().Get("http://" + ln.Addr().String() + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	select {
	case <-arrived: // the request is at the backend
	case <-time.After(5 * time.Second):
		t.Fatal("the request never reached the backend")
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- p.Shutdown(ctx)
	}()
	// Serve returns once Shutdown has closed the listener; the request
	// is still waiting at the backend.
	select {
	case err := <-served:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
	close(release)
	select {
	case b := <-got:
		if b != "done" {
			t.Errorf("request in flight during shutdown got %q", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("request did not finish")
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown did not finish")
	}
	if err := p.Serve(ln, Listener{Service: vip}); err != ErrShutdown {
		t.Errorf("Serve after Shutdown: %v", err)
	}
}
