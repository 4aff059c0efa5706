package slowpath

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
)

// What the event loops serve themselves, and what they hand to fasthttp.
// Most of the proxy's behaviour is tested through both ways by the other
// tests (a plain listener's requests start on a loop); these pin down what
// only the loop does: pipelining, headers split across reads, passing the
// backend's framing through, and which requests leave the loop.

func (p *Proxy) handoffCount() float64 { return testutil.ToFloat64(p.metrics.handoffs) }

// dialProxy opens a client connection with a deadline.
func dialProxy(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(body)
}

func onePool(addrs ...netip.AddrPort) *fakeRouter {
	return &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": addrs}}
}

func TestLoopServesPipelinedRequestsInOrder(t *testing.T) {
	be := startBackend(t, nameHandler("a"))
	p, addr := startProxy(t, Options{}, Listener{Service: vip}, onePool(be.addr))
	c, br := dialProxy(t, addr)
	var reqs strings.Builder
	for i := range 5 {
		fmt.Fprintf(&reqs, "GET /r%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
	}
	// One write: the loop reads all five at once and must answer them one
	// after the other on the same connection.
	if _, err := io.WriteString(c, reqs.String()); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		resp, body := readResponse(t, br, "GET")
		if want := fmt.Sprintf("a GET /r%d", i); resp.StatusCode != 200 || body != want {
			t.Fatalf("response %d: %d %q, want %q", i, resp.StatusCode, body, want)
		}
	}
	if n := p.handoffCount(); n != 0 {
		t.Errorf("%v handoffs, want the loop to serve every request", n)
	}
}

func TestLoopWaitsForTheRestOfAHeader(t *testing.T) {
	be := startBackend(t, nameHandler("a"))
	p, addr := startProxy(t, Options{}, Listener{Service: vip}, onePool(be.addr))
	c, br := dialProxy(t, addr)
	for _, part := range []string{"GE", "T /split HTTP/1.1\r\nHo", "st: x\r\nContent-Length: 4\r\n", "\r\nbo", "dy"} {
		if _, err := io.WriteString(c, part); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // separate segments, separate reads
	}
	resp, body := readResponse(t, br, "GET")
	if resp.StatusCode != 200 || body != "a GET /split" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if got := be.lastRequest().ContentLength; got != 4 {
		t.Errorf("backend got a body of %d bytes, want 4", got)
	}
	if n := p.handoffCount(); n != 0 {
		t.Errorf("%v handoffs, want the loop to serve the request", n)
	}
}

func TestLoopHandsOverWhatItDoesNotServe(t *testing.T) {
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s body=%q", r.Method, r.URL.Path, b)
	})
	rt := onePool(be.addr)
	rt.routes = []fakeRoute{{prefix: "/only-get", pool: "p", methods: []string{"GET"}}, {prefix: "/ok", pool: "p"}}
	p, addr := startProxy(t, Options{MaxBodyBytes: 100}, Listener{Service: vip}, rt)
	for _, tc := range []struct {
		name, req string
		status    int
		body      string
	}{
		{"chunked upload", "POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 200, `POST /ok body="abc"`},
		{"HTTP/1.0", "GET /ok HTTP/1.0\r\nHost: x\r\n\r\n", 200, `GET /ok body=""`},
		{"no route", "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404, "404 no route\n"},
		{"method", "POST /only-get HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "405 method not allowed\n"},
		{"too large", "POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n" + strings.Repeat("b", 101), 413, "413 request body too large\n"},
		{"no host", "GET /ok HTTP/1.1\r\n\r\n", 400, "400 bad request\n"},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "400 bad request\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := p.handoffCount()
			resp, body := rawRequest(t, addr, tc.req)
			if resp.StatusCode != tc.status || string(body) != tc.body {
				t.Errorf("%d %q, want %d %q", resp.StatusCode, body, tc.status, tc.body)
			}
			if n := p.handoffCount() - before; n != 1 {
				t.Errorf("%v handoffs, want 1", n)
			}
		})
	}
	t.Run("expect", func(t *testing.T) {
		before := p.handoffCount()
		c, br := dialProxy(t, addr)
		io.WriteString(c, "PUT /ok HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
		if resp, _ := readResponse(t, br, "PUT"); resp.StatusCode != 100 {
			t.Fatalf("%d, want 100 Continue", resp.StatusCode)
		}
		io.WriteString(c, "hi")
		if resp, body := readResponse(t, br, "PUT"); resp.StatusCode != 200 || body != `PUT /ok body="hi"` {
			t.Errorf("%d %q", resp.StatusCode, body)
		}
		if n := p.handoffCount() - before; n != 1 {
			t.Errorf("%v handoffs, want 1", n)
		}
	})

	// A connection handed over stays with fasthttp: its next request is
	// served there, on the same connection.
	c, br := dialProxy(t, addr)
	io.WriteString(c, "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != 404 {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != `GET /ok body=""` {
		t.Fatalf("second: %d %q", resp.StatusCode, body)
	}
}

// TestLoopPassesTheBackendsFraming: the loop forwards a body as the
// backend framed it (length, chunks, end of connection) and finds where
// it ends, so the next response on either connection is intact.
func TestLoopPassesTheBackendsFraming(t *testing.T) {
	answers := map[string]string{
		"/length":  "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"/chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
		"/interim": "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/head":    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
		"/empty":   "HTTP/1.1 204 No Content\r\n\r\n",
		"/hop":     "HTTP/1.1 200 OK\r\nConnection: X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nContent-Length: 1\r\n\r\nh",
	}
	var conns int
	be := rawBackend(t, func(c net.Conn, req *http.Request) {
		conns++
		br := bufio.NewReader(c)
		for {
			if _, err := io.WriteString(c, answers[req.URL.Path]); err != nil {
				return
			}
			var err error
			if req, err = http.ReadRequest(br); err != nil {
				return
			}
		}
	})
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, onePool(be))
	c, br := dialProxy(t, addr)
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/length", "hello"},
		{"GET", "/chunked", "hello world"},
		{"GET", "/interim", "ok"},
		{"HEAD", "/head", ""},
		{"GET", "/empty", ""},
		{"GET", "/hop", "h"},
		{"GET", "/length", "hello"},
	} {
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\n\r\n", tc.method, tc.path)
		resp, body := readResponse(t, br, tc.method)
		if body != tc.body || resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %d %q, want %q", tc.method, tc.path, resp.StatusCode, body, tc.body)
		}
		if tc.path == "/chunked" && resp.Trailer.Get("X-Trailer") != "t" {
			t.Errorf("chunked: trailer %v", resp.Trailer)
		}
		if _, ok := resp.Header["Content-Type"]; ok {
			t.Errorf("%s: Content-Type %q, which the backend did not send", tc.path, resp.Header.Get("Content-Type"))
		}
		if tc.path == "/head" && resp.ContentLength != 5 {
			t.Errorf("HEAD: Content-Length %d, want the backend's 5", resp.ContentLength)
		}
		if tc.path == "/hop" && (resp.Header.Get("X-Private") != "" || resp.Header.Get("Keep-Alive") != "") {
			t.Errorf("hop-by-hop fields passed on: %v", resp.Header)
		}
		if resp.Close {
			t.Fatalf("%s: the client connection is to be closed", tc.path)
		}
	}
	if conns != 1 {
		t.Errorf("the backend saw %d connections, want the one kept alive throughout", conns)
	}
}

func TestLoopEndsAResponseWithoutLengthWithTheConnection(t *testing.T) {
	be := rawBackend(t, func(c net.Conn, _ *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
	})
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, onePool(be))
	c, br := dialProxy(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := readResponse(t, br, "GET")
	if resp.StatusCode != 200 || body != "until the end" || !resp.Close {
		t.Fatalf("%d %q close=%v, want the body and Connection: close", resp.StatusCode, body, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the body: %v, want the connection closed", err)
	}
}

// TestLoopRetriesAStalePooledConnection: a backend that closes a kept-alive
// connection while it is idle costs nothing but a new connection, for a
// request without a body.
func TestLoopRetriesAStalePooledConnection(t *testing.T) {
	be := rawBackend(t, func(c net.Conn, req *http.Request) {
		// Claims keep-alive, then closes once the answer is out.
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
		time.Sleep(50 * time.Millisecond)
	})
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, onePool(be))
	c, br := dialProxy(t, addr)
	for _, path := range []string{"/one", "/two", "/three"} {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		resp, body := readResponse(t, br, "GET")
		if resp.StatusCode != 200 || body != path {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond) // the backend has closed by now
	}
}

func TestLoopAnswersGatewayErrorsItself(t *testing.T) {
	dead := deadAddr(t)
	stall := rawBackend(t, func(c net.Conn, _ *http.Request) { time.Sleep(2 * time.Second) })
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/dead", pool: "dead"}, {prefix: "/stall", pool: "stall"}},
		pools: map[string][]netip.AddrPort{"dead": {dead}, "stall": {stall}}}
	p, addr := startProxy(t, Options{IdleTimeout: 300 * time.Millisecond}, Listener{Service: vip}, rt)
	c, br := dialProxy(t, addr)
	for _, tc := range []struct {
		path   string
		status int
		r      reason
	}{{"/dead", 502, reasonBackendConnect}, {"/stall", 504, reasonBackendTimeout}, {"/dead", 502, reasonBackendConnect}} {
		before := p.errorCount(tc.r)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", tc.path)
		resp, body := readResponse(t, br, "GET")
		if resp.StatusCode != tc.status || body != string(reasons[tc.r].body) || resp.Close {
			t.Fatalf("%s: %d %q close=%v", tc.path, resp.StatusCode, body, resp.Close)
		}
		if p.errorCount(tc.r) != before+1 {
			t.Errorf("%s: %s not counted", tc.path, reasons[tc.r].label)
		}
	}
	if n := p.handoffCount(); n != 0 {
		t.Errorf("%v handoffs: gateway errors are the loop's", n)
	}
}

// Small socket buffers make the loop's writes partial, so what it does
// with output the client has not taken yet is tested, not assumed.

// startProxySmallBuffers is startProxy with a 4 KiB send buffer on the
// accepted connections.
func startProxySmallBuffers(t *testing.T, opts Options, r Router) (*Proxy, string) {
	t.Helper()
	p := New(opts)
	p.SetRouter(r)
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 4096) })
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln, Listener{Service: vip}) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return p, ln.Addr().String()
}

// dialSmall connects with a 2 KiB receive buffer and reads slowly.
func dialSmall(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 2048) })
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(slowReader{c})
}

type slowReader struct{ r io.Reader }

func (s slowReader) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	return s.r.Read(p[:min(len(p), 4096)])
}

func TestLoopBackpressureBothWays(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 128<<10) // 2 MiB
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			time.Sleep(200 * time.Millisecond) // the upload backs up first
			b, err := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%d %v %v", len(b), err, string(b) == big)
			return
		}
		io.WriteString(w, big)
	})
	_, addr := startProxySmallBuffers(t, Options{}, onePool(be.addr))
	c, br := dialSmall(t, addr)
	fmt.Fprintf(c, "GET /down HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != big {
		t.Fatalf("download: %d, %d bytes, intact %v", resp.StatusCode, len(body), body == big)
	}
	fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(big), big)
	if resp, body := readResponse(t, br, "POST"); resp.StatusCode != 200 || body != fmt.Sprintf("%d <nil> true", len(big)) {
		t.Fatalf("upload: %d %q", resp.StatusCode, body)
	}
}

// TestLoopHandsOverOnlyWhatItHasWritten: a pipelined request fasthttp
// answers waits until the loop's answer before it is out, so the two
// never mix.
func TestLoopHandsOverOnlyWhatItHasWritten(t *testing.T) {
	big := strings.Repeat("x", 300<<10)
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) })
	p, addr := startProxySmallBuffers(t, Options{}, onePool(be.addr))
	c, br := dialSmall(t, addr)
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /nowhere HTTP/1.0\r\nHost: x\r\n\r\n")
	if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != big {
		t.Fatalf("first: %d, %d bytes, intact %v", resp.StatusCode, len(body), body == big)
	}
	if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != 200 {
		t.Fatalf("second: %d", resp.StatusCode)
	}
	if n := p.handoffCount(); n != 1 {
		t.Errorf("%v handoffs, want the HTTP/1.0 request's", n)
	}
}

// TestLoopNeverReadsABodyAsRequests: when the backend answers before the
// body is all there, the rest of the body is dropped with the connection,
// never parsed as requests.
func TestLoopNeverReadsABodyAsRequests(t *testing.T) {
	seen := make(chan string, 10)
	be := rawBackend(t, func(c net.Conn, req *http.Request) {
		seen <- req.Method + " " + req.URL.Path
		io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
		time.Sleep(time.Second)
	})
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, onePool(be))
	c, br := dialProxy(t, addr)
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	resp, body := readResponse(t, br, "POST")
	if resp.StatusCode != 403 || body != "no" || !resp.Close {
		t.Fatalf("%d %q close=%v, want the backend's answer and Connection: close", resp.StatusCode, body, resp.Close)
	}
	// What the client goes on to send is body, whatever it looks like.
	io.WriteString(c, "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the answer: %v, want the connection closed", err)
	}
	if got := <-seen; got != "POST /up" {
		t.Fatalf("backend saw %q", got)
	}
	select {
	case got := <-seen:
		t.Errorf("backend saw %q: body bytes were served as a request", got)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestLoopHeaderTimeout: a client that sends part of a header and stops
// gets one 408 and its connection closed, also when it reads nothing.
func TestLoopHeaderTimeout(t *testing.T) {
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, strings.Repeat("z", 60<<10)) })
	const timeout = 200 * time.Millisecond
	p, addr := startProxySmallBuffers(t, Options{IdleTimeout: timeout, ReadHeaderTimeout: timeout}, onePool(be.addr))
	c, _ := dialSmall(t, addr)
	// A response it does not read fills the buffers; a header it does
	// not finish. Whether the loop took the whole response from the
	// backend before the client stalled decides between a 408 and
	// dropping the stalled response: either way, once, and the
	// connection ends.
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTT")
	time.Sleep(8 * timeout)
	if n := p.errorCount(reasonClientTimeout); n > 1 {
		t.Errorf("408 counted %v times, want once at most", n)
	}
	_ = c.SetReadDeadline(time.Now().Add(8 * timeout))
	if _, err := io.Copy(io.Discard, c); err != nil && os.IsTimeout(err) {
		t.Errorf("the stalled connection is still open: %v", err)
	}
	c2, br := dialProxy(t, addr)
	io.WriteString(c2, "GET /c HTTP/1.1\r\nHo")
	start := time.Now()
	resp, body := readResponse(t, br, "GET")
	if resp.StatusCode != 408 || body != string(reasons[reasonClientTimeout].body) || !resp.Close {
		t.Fatalf("%d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	if d := time.Since(start); d > 4*timeout {
		t.Errorf("408 after %v (header timeout %v)", d, timeout)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the 408: %v, want the connection closed", err)
	}
}

// TestLoopAnswersAHalfClosedClient: a client that shuts its write side
// after its request still gets the answer.
func TestLoopAnswersAHalfClosedClient(t *testing.T) {
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		io.WriteString(w, "ok")
	})
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, onePool(be.addr))
	c, br := dialProxy(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the answer: %v, want the connection closed", err)
	}
}

// TestLoopPassesAnEarlyAnswerToAnUpload: a backend that refuses a body
// and closes (413 before reading it) is answered to the client as it
// said, not as a 502 because sending the rest of the body failed.
func TestLoopPassesAnEarlyAnswerToAnUpload(t *testing.T) {
	be := rawBackend(t, func(c net.Conn, _ *http.Request) {
		io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!")
	})
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, onePool(be))
	body := strings.Repeat("u", 4<<20)
	for i := range 5 {
		c, br := dialProxy(t, addr)
		go func() {
			fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
			io.WriteString(c, body) // fails once the proxy has closed: fine
		}()
		resp, got := readResponse(t, br, "POST")
		// Connection: close follows when the body was still arriving;
		// when it had all been passed on, the connection may stay.
		if resp.StatusCode != 413 || got != "big!" {
			t.Fatalf("upload %d: %d %q, want the backend's 413", i, resp.StatusCode, got)
		}
	}
}

// TestLoopAnswersPipelinedRequestsOfAHalfClosedClient: requests sent whole
// before the client shut its write side are all answered, in order.
func TestLoopAnswersPipelinedRequestsOfAHalfClosedClient(t *testing.T) {
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		io.WriteString(w, r.URL.Path)
	})
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, onePool(be.addr))
	c, br := dialProxy(t, addr)
	io.WriteString(c, "GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/one", "/two"} {
		if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != want {
			t.Fatalf("%d %q, want %q", resp.StatusCode, body, want)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the answers: %v, want the connection closed", err)
	}
}

// TestLoopDoesNotResendAnsweredRequests: a kept-alive backend connection
// that closes after an interim answer got the request: it is not sent
// again (the stale-connection retry is for connections that said nothing).
func TestLoopDoesNotResendAnsweredRequests(t *testing.T) {
	hints := make(chan struct{}, 10)
	be := rawBackend(t, func(c net.Conn, req *http.Request) {
		br := bufio.NewReader(c)
		for {
			if req.URL.Path == "/hint" {
				hints <- struct{}{}
				io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			var err error
			if req, err = http.ReadRequest(br); err != nil {
				return
			}
		}
	})
	_, addr := startProxy(t, Options{}, Listener{Service: vip}, onePool(be))
	c, br := dialProxy(t, addr)
	io.WriteString(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != 200 {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	io.WriteString(c, "GET /hint HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != 502 {
		t.Fatalf("hint: %d, want 502", resp.StatusCode)
	}
	if n := len(hints); n != 1 {
		t.Errorf("the backend got the request %d times, want once", n)
	}
}
