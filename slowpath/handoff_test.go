package slowpath

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// Shutdown drains the handoff listeners between the loops and the fasthttp
// servers; drain must wait for what was pushed, and no longer.
func TestHandoffDrainWaitsForPushedConnections(t *testing.T) {
	h := newHandoffListener(&net.TCPAddr{})
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

	// Pushed and never accepted: Close drops it, and drain is over.
	client2, server2 := net.Pipe()
	h.push(server2)
	h.Close()
	if err := h.drain(ctx); err != nil {
		t.Fatalf("drain after Close: %v", err)
	}
	if _, err := client2.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("write to a dropped handed-over connection: %v, want closed", err)
	}

	// A connection nobody accepts holds drain until its context ends.
	h2 := newHandoffListener(&net.TCPAddr{})
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
