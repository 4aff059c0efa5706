// Package backend is the HTTP server that stands behind the load balancer in
// e2e tests, demos and benchmarks. Every answer tells which backend served
// it and which client address that backend saw, so tests can check both
// the balancing and the address handling of the load balancer:
//
//	GET /bytes/N   N bytes (0 <= N <= 2^31) of Pattern, with Content-Length
//	POST, PUT, or any request with a body
//	               lowercase hex SHA-256 of the body and "\n";
//	               header X-Body-Length: body size
//	GET with Upgrade: P and Connection: upgrade
//	               101 Switching Protocols (Upgrade: P), then
//	               "backend=<name> peer=<ip:port>\n" and every byte received echoed back
//	               (a stand-in for WebSocket)
//	anything else  "backend=<name> path=<path> peer=<ip:port>\n"
//
// All responses carry X-Backend: <name> and X-Peer: <ip:port seen>.
package backend

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	// MaxBytes is the largest N accepted by GET /bytes/N.
	MaxBytes = 1 << 31

	bytesPrefix = "/bytes/"

	// No read or write timeouts beyond the header: multi-GB bodies over a
	// slow path are legitimate here.
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute

	uploadBufferSize = 256 << 10
)

// Server is a backend HTTP server. Its zero value is not usable; call New.
type Server struct {
	name string
	http *http.Server
}

// New returns a server that reports itself as name.
func New(name string) *Server {
	s := &Server{name: name}
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	return s
}

// Handler returns the request handler, e.g. for httptest.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Serve serves HTTP (keep-alive enabled) on l until Close; it returns nil
// after Close.
func (s *Server) Serve(l net.Listener) error {
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("backend %s: serve: %w", s.name, err)
}

// Close closes the listeners and all connections immediately.
func (s *Server) Close() error {
	if err := s.http.Close(); err != nil {
		return fmt.Errorf("backend %s: close: %w", s.name, err)
	}
	return nil
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Backend", s.name)
	w.Header().Set("X-Peer", r.RemoteAddr)
	switch {
	case isUpgrade(r):
		s.serveEcho(w, r)
	case hasBody(r):
		serveDigest(w, r)
	case (r.Method == http.MethodGet || r.Method == http.MethodHead) && strings.HasPrefix(r.URL.Path, bytesPrefix):
		serveBytes(w, r)
	default:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "backend=%s path=%s peer=%s\n", s.name, r.URL.Path, r.RemoteAddr)
	}
}

func isUpgrade(r *http.Request) bool {
	if r.Method != http.MethodGet || r.Header.Get("Upgrade") == "" {
		return false
	}
	for _, v := range r.Header.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// serveEcho switches to the requested protocol, which here means: greet,
// then echo until the client closes.
func (s *Server) serveEcho(w http.ResponseWriter, r *http.Request) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "cannot switch protocols: "+err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Time{})
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\nX-Backend: %s\r\n\r\nbackend=%s peer=%s\n",
		r.Header.Get("Upgrade"), s.name, s.name, r.RemoteAddr)
	if rw.Flush() != nil {
		return
	}
	// Bytes the client sent early sit in rw's reader, which hands them on
	// before reading conn further.
	_, _ = io.Copy(conn, rw.Reader)
}

// hasBody treats POST and PUT as uploads even when empty, so an empty
// upload still answers with a digest.
func hasBody(r *http.Request) bool {
	return r.Method == http.MethodPost || r.Method == http.MethodPut || r.ContentLength != 0
}

func serveBytes(w http.ResponseWriter, r *http.Request) {
	n, err := parseByteCount(strings.TrimPrefix(r.URL.Path, bytesPrefix))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	// A copy error means the client went away; there is no one to tell.
	io.Copy(w, Pattern(n))
}

// parseByteCount accepts only plain decimal digits, so that "+1", "0x10",
// " 1" or "1/2" are rejected rather than silently reinterpreted.
func parseByteCount(s string) (int64, error) {
	if s == "" || len(s) > len(strconv.Itoa(MaxBytes)) || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("byte count %q: want a decimal number 0..%d", s, int64(MaxBytes))
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > MaxBytes {
		return 0, fmt.Errorf("byte count %q: want a decimal number 0..%d", s, int64(MaxBytes))
	}
	return n, nil
}

func serveDigest(w http.ResponseWriter, r *http.Request) {
	digest := sha256.New()
	bufSize := uploadBufferSize
	if r.ContentLength > 0 && r.ContentLength < uploadBufferSize {
		// Small uploads are common in benchmarks; don't allocate for big ones.
		bufSize = int(r.ContentLength)
	}
	n, err := io.CopyBuffer(digest, r.Body, make([]byte, bufSize))
	if err != nil {
		http.Error(w, fmt.Sprintf("read body after %d bytes: %v", n, err), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Body-Length", strconv.FormatInt(n, 10))
	fmt.Fprintf(w, "%x\n", digest.Sum(nil))
}
