package backend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strconv"
	"strings"
	"testing"
	"time"
)

const testTimeout = 10 * time.Second

func newTestServer(t *testing.T, name string) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(New(name).Handler())
	t.Cleanup(ts.Close)
	return ts
}

// do sends req and returns the response with its whole body, plus the
// client-side local address of the connection used.
func do(t *testing.T, client *http.Client, req *http.Request) (*http.Response, []byte, string) {
	t.Helper()
	var local string
	ctx, cancel := context.WithTimeout(req.Context(), testTimeout)
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { local = info.Conn.LocalAddr().String() },
	})
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body, local
}

func get(t *testing.T, ts *httptest.Server, method, path string) (*http.Response, []byte, string) {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, ts.Client(), req)
}

func checkIdentity(t *testing.T, resp *http.Response, name, peer string) {
	t.Helper()
	if got := resp.Header.Get("X-Backend"); got != name {
		t.Errorf("X-Backend = %q, want %q", got, name)
	}
	if got := resp.Header.Get("X-Peer"); got != peer {
		t.Errorf("X-Peer = %q, want the client's address %q", got, peer)
	}
}

func TestInfo(t *testing.T) {
	ts := newTestServer(t, "b1")
	for _, path := range []string{"/", "/hello/world", "/bytes"} {
		resp, body, local := get(t, ts, http.MethodGet, path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", path, resp.StatusCode)
		}
		checkIdentity(t, resp, "b1", local)
		if want := fmt.Sprintf("backend=b1 path=%s peer=%s\n", path, local); string(body) != want {
			t.Errorf("GET %s body = %q, want %q", path, body, want)
		}
	}
	resp, _, local := get(t, ts, http.MethodDelete, "/bytes/10")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("DELETE without body: status %d, want the info answer", resp.StatusCode)
	}
	checkIdentity(t, resp, "b1", local)
}

func TestBytesServesPattern(t *testing.T) {
	ts := newTestServer(t, "b2")
	for _, n := range []int64{0, 1, patternPeriod - 1, patternPeriod, patternPeriod + 1, 3<<20 + 7} {
		resp, body, local := get(t, ts, http.MethodGet, "/bytes/"+strconv.FormatInt(n, 10))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /bytes/%d: status %d: %s", n, resp.StatusCode, body)
		}
		checkIdentity(t, resp, "b2", local)
		if resp.ContentLength != n {
			t.Errorf("GET /bytes/%d: Content-Length %d", n, resp.ContentLength)
		}
		want, err := io.ReadAll(Pattern(n))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, want) {
			t.Errorf("GET /bytes/%d: body (%d bytes) differs from Pattern(%d)", n, len(body), n)
		}
	}
}

func TestBytesHead(t *testing.T) {
	ts := newTestServer(t, "b3")
	resp, body, local := get(t, ts, http.MethodHead, "/bytes/"+strconv.Itoa(MaxBytes))
	if resp.StatusCode != http.StatusOK || resp.ContentLength != MaxBytes || len(body) != 0 {
		t.Errorf("HEAD /bytes/MaxBytes: status %d, Content-Length %d, %d body bytes", resp.StatusCode, resp.ContentLength, len(body))
	}
	checkIdentity(t, resp, "b3", local)
}

func TestBytesRejectsJunk(t *testing.T) {
	ts := newTestServer(t, "b4")
	for _, n := range []string{"", "abc", "-1", "+5", "0x10", "1.5", "1e3", "%201", "1/2", "5/",
		strconv.Itoa(MaxBytes + 1), "99999999999999999999999"} {
		resp, body, local := get(t, ts, http.MethodGet, "/bytes/"+n)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET /bytes/%s: status %d, want 400 (body %q)", n, resp.StatusCode, body)
		}
		checkIdentity(t, resp, "b4", local)
	}
}

func TestUploadDigest(t *testing.T) {
	ts := newTestServer(t, "b5")
	const size = 8<<20 + 13
	payload, err := io.ReadAll(io.MultiReader(Pattern(size/2), strings.NewReader(strings.Repeat("rauta", size/10)), Pattern(size-size/2-size/10*5)))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(payload)
	wantDigest := hex.EncodeToString(sum[:]) + "\n"

	cases := []struct {
		name   string
		method string
		body   func() io.Reader
	}{
		// bytes.Reader gives a Content-Length; io.MultiReader hides the
		// length, so the client streams it chunked.
		{"POST with length", http.MethodPost, func() io.Reader { return bytes.NewReader(payload) }},
		{"PUT chunked", http.MethodPut, func() io.Reader { return io.MultiReader(bytes.NewReader(payload)) }},
		{"GET with body", http.MethodGet, func() io.Reader { return bytes.NewReader(payload) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, ts.URL+"/upload", c.body())
			if err != nil {
				t.Fatal(err)
			}
			resp, body, local := do(t, ts.Client(), req)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			checkIdentity(t, resp, "b5", local)
			if string(body) != wantDigest {
				t.Errorf("digest %q, want %q", body, wantDigest)
			}
			if got := resp.Header.Get("X-Body-Length"); got != strconv.Itoa(size) {
				t.Errorf("X-Body-Length = %q, want %d", got, size)
			}
		})
	}

	resp, body, _ := get(t, ts, http.MethodPost, "/upload")
	if empty := sha256.Sum256(nil); string(body) != hex.EncodeToString(empty[:])+"\n" || resp.Header.Get("X-Body-Length") != "0" {
		t.Errorf("empty POST: digest %q, X-Body-Length %q", body, resp.Header.Get("X-Body-Length"))
	}
}

func TestServeKeepAliveAndClose(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New("b6")
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })

	client := &http.Client{Transport: &http.Transport{}, Timeout: testTimeout}
	defer client.CloseIdleConnections()
	var peers []string
	for range 3 {
		req, err := http.NewRequest(http.MethodGet, "http://"+l.Addr().String()+"/bytes/100", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, body, local := do(t, client, req)
		if resp.StatusCode != http.StatusOK || len(body) != 100 {
			t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
		}
		checkIdentity(t, resp, "b6", local)
		peers = append(peers, resp.Header.Get("X-Peer"))
	}
	if peers[0] != peers[1] || peers[1] != peers[2] {
		t.Errorf("requests used connections %v, want one kept-alive connection", peers)
	}

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after Close = %v, want nil", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return after Close")
	}
}

func TestUpgradeEcho(t *testing.T) {
	ts := newTestServer(t, "b7")
	conn, err := net.DialTimeout("tcp", ts.Listener.Addr().String(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(testTimeout))
	g, err := Echo(conn, "x", "/ws", 3<<20)
	if err != nil || g.Backend != "b7" || g.Peer != conn.LocalAddr().String() {
		t.Fatalf("Echo: %+v, %v (client %s)", g, err, conn.LocalAddr())
	}
	// An upgrade without Connection: upgrade is an ordinary request.
	resp, body, _ := do(t, ts.Client(), func() *http.Request {
		r, _ := http.NewRequest(http.MethodGet, ts.URL+"/ws", nil)
		r.Header.Set("Upgrade", "echo")
		return r
	}())
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "backend=b7 path=/ws") {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
}
