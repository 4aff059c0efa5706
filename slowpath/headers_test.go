package slowpath

import (
	"bufio"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestHopByHopFields(t *testing.T) {
	for raw, want := range map[string]bool{
		"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n":     false,
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nCookie: c=1\r\n\r\n": false,
		"GET /connection: HTTP/1.1\r\nHost: a\r\n\r\n":                          false, // the request line is no field
		"GET / HTTP/1.1\r\nHost: a\r\nconnection: x-secret\r\n\r\n":             true,
		"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: timeout=5\r\n\r\n":            true,
		"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n":                     true,
		"GET / HTTP/1.1\r\nHost: a\r\nPROXY-CONNECTION: keep-alive\r\n\r\n":     true,
		"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n":               true,
		"GET / HTTP/1.1\r\nHost: a\r\nProxy-Authorization: Basic x\r\n\r\n":     true,
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n":                 true,
		"HTTP/1.1 200 OK\r\nTrailer: Expires\r\n\r\n":                           true,
		"HTTP/1.1 200 OK\r\nTrailers-Are-Not-Trailer: x\r\nTEx: 1\r\n\r\n":      false,
		"HTTP/1.1 200 OK\nConnection: close\n\n":                                true, // bare LF
		"HTTP/1.1 200 OK\r\nConnection : close\r\n\r\n":                         true, // what a lenient parser might take
	} {
		if got := hopByHopFields([]byte(raw)) != 0; got != want {
			t.Errorf("%q: %v, want %v", raw, got, want)
		}
	}
}

// TestStripOnlyWhatIsThere: stripping the fields hopByHopFields found
// leaves a header as stripping every hop-by-hop name does.
func TestStripOnlyWhatIsThere(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 2\r\nContent-Length: 0\r\n\r\n"
	set := hopByHopFields([]byte(raw))
	if want := hopByHopSet(1<<0 | 1<<1); set != want { // Connection, Keep-Alive
		t.Fatalf("found %b, want %b", set, want)
	}
	var some, all fasthttp.ResponseHeader
	for _, h := range []*fasthttp.ResponseHeader{&some, &all} {
		if err := h.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			t.Fatal(err)
		}
	}
	stripHopByHopFields(&some, set)
	stripHopByHop(&all)
	if a, b := some.String(), all.String(); a != b || strings.Contains(a, "X-Private") || !strings.Contains(a, "X-Kept") {
		t.Errorf("stripped what was found:\n%s\nstripped everything:\n%s", a, b)
	}
}
