package slowpath

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Shutdown drains the handoff listeners between the loops and the fasthttp
// servers; drain must wait for what was pushed, and no longer.
func TestHandoffDrainWaitsForPushedConnections(t *testing.T) {
	p := New(Options{Logger: testLogger(t)})
	svc := newService(p, Listener{Name: "site", Service: netip.MustParseAddrPort("10.0.0.1:80")})
	h := newHandoffListener(svc, &net.TCPAddr{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.drain(ctx); err != nil {
		t.Fatalf("drain with nothing pushed: %v", err)
	}

	client, server := net.Pipe()
	defer client.Close()
	h.push(server)
	drained := make(chan error, 1)
	go func() { drained <- h.drain(ctx) }()
	select {
	case err := <-drained:
		t.Fatalf("drain returned (%v) before the pushed connection was accepted", err)
	case <-time.After(50 * time.Millisecond):
	}
	c, err := h.Accept()
	if err != nil || c != server {
		t.Fatalf("Accept = %v, %v; want the pushed connection", c, err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain after Accept: %v", err)
	}
	server.Close()

	// Pushed after Close (a removed service's connection): its request is
	// answered 503 and counted, the connection closed, and drain is over.
	client2, server2 := tcpPair(t)
	h.Close()
	h.push(server2)
	answer := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(client2) // up to the proxy's FIN
		answer <- b
		client2.Close()
	}()
	if err := h.drain(ctx); err != nil {
		t.Fatalf("drain after Close: %v", err)
	}
	if got := string(<-answer); !strings.HasPrefix(got, "HTTP/1.1 503 ") || !strings.HasSuffix(got, "\r\n\r\n503 not configured\n") {
		t.Errorf("a connection handed over after Close got %q, want the 503 not configured answer", got)
	}
	if got := p.errorCount(reasonNotConfigured); got != 1 {
		t.Errorf("not_configured count = %v, want 1", got)
	}
	if _, err := server2.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write to a refused handed-over connection: %v, want closed", err)
	}

	// A connection nobody accepts holds drain until its context ends.
	h2 := newHandoffListener(svc, &net.TCPAddr{})
	_, server3 := net.Pipe()
	defer server3.Close()
	h2.push(server3)
	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	if err := h2.drain(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("drain with a connection nobody accepts = %v, want the context's deadline", err)
	}
	h2.Close()
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if server, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}
