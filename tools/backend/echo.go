package backend

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Echo is the client side of the upgrade a Server answers with an echo:
// it asks conn for the "echo" protocol at host and path, checks the 101,
// sends n bytes of Pattern (in one goroutine while reading them back in
// another, so a large n cannot deadlock on full buffers) and compares what
// comes back. It returns the backend's greeting.
func Echo(conn io.ReadWriter, host, path string, n int64) (Greeting, error) {
	var g Greeting
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", path, host); err != nil {
		return g, fmt.Errorf("send upgrade: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return g, fmt.Errorf("read the answer to the upgrade: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "echo" {
		return g, fmt.Errorf("answer to the upgrade: %s, Upgrade %q", resp.Status, resp.Header.Get("Upgrade"))
	}
	line, err := br.ReadString('\n')
	if _, scanErr := fmt.Sscanf(line, "backend=%s peer=%s\n", &g.Backend, &g.Peer); err != nil || scanErr != nil {
		return g, fmt.Errorf("greeting %q: %v", line, errors.Join(err, scanErr))
	}
	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, Pattern(n))
		sent <- err
	}()
	got, want := make([]byte, 32<<10), make([]byte, 32<<10)
	pattern := Pattern(n)
	for off := int64(0); off < n; {
		chunk := min(int64(len(got)), n-off)
		if _, err := io.ReadFull(br, got[:chunk]); err != nil {
			return g, fmt.Errorf("echo: %d of %d bytes back: %w", off, n, err)
		}
		if _, err := io.ReadFull(pattern, want[:chunk]); err != nil {
			return g, err
		}
		if !bytes.Equal(got[:chunk], want[:chunk]) {
			return g, fmt.Errorf("echo: bytes %d..%d differ from what was sent", off, off+chunk)
		}
		off += chunk
	}
	if err := <-sent; err != nil {
		return g, fmt.Errorf("echo: send: %w", err)
	}
	return g, nil
}

// Greeting is what a Server says after switching protocols: its name and
// the client address it saw.
type Greeting struct {
	Backend, Peer string
}
