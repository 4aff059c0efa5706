package slowpath

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestIdleConnTimesOutOnSilenceOnly: the idle bound counts from the last
// operation, not from when the deadline was last moved. Bytes 150 ms and
// then 300 ms apart (never idle = 400 ms of silence) are all read; a
// silence of idle then ends the read.
func TestIdleConnTimesOutOnSilenceOnly(t *testing.T) {
	const idle = 400 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for _, gap := range []time.Duration{0, 150 * time.Millisecond, 300 * time.Millisecond} {
			time.Sleep(gap)
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
		time.Sleep(3 * idle) // then silence
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newIdleConn(raw, idle)
	defer c.Close()
	buf := make([]byte, 1)
	for i := range 3 {
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("byte %d: %v", i, err)
		}
	}
	start := time.Now()
	_, err = c.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read after the last byte: %v, want a timeout", err)
	}
	if waited := time.Since(start); waited < idle-idle/idleSlack-50*time.Millisecond || waited > 2*idle {
		t.Errorf("timed out after %v of silence, want about %v", waited, idle)
	}
}
