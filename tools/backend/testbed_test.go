package backend_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/rauta-lb/rauta/tools/backend"
	"github.com/rauta-lb/rauta/tools/testbed"
)

// TestThroughTestbed runs backends in testbed namespaces and talks to them
// from the client namespace through the LB namespace's kernel forwarding:
// the way e2e tests and benchmarks combine the two packages.
func TestThroughTestbed(t *testing.T) {
	tb := testbed.NewT(t, testbed.Options{Backends: 2})
	for i, ns := range tb.Backends {
		l, err := ns.Listen("tcp", netip.AddrPortFrom(tb.BackendAddrs[i], 80).String())
		if err != nil {
			t.Fatal(err)
		}
		srv := backend.New(fmt.Sprintf("b%d", i+1))
		served := make(chan error, 1)
		go func() { served <- srv.Serve(l) }()
		t.Cleanup(func() {
			srv.Close()
			if err := <-served; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}

	transport := &http.Transport{DialContext: tb.Client.DialContext}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}

	const size = 32 << 20
	for i, addr := range tb.BackendAddrs {
		base := "http://" + netip.AddrPortFrom(addr, 80).String()

		resp, err := client.Get(base + "/bytes/" + strconv.Itoa(size))
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.New()
		n, err := io.Copy(got, resp.Body)
		resp.Body.Close()
		if err != nil || n != size {
			t.Fatalf("download from backend %d: %d bytes, %v", i+1, n, err)
		}
		want := sha256.New()
		io.Copy(want, backend.Pattern(size))
		if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			t.Errorf("download from backend %d corrupted", i+1)
		}
		if name := resp.Header.Get("X-Backend"); name != fmt.Sprintf("b%d", i+1) {
			t.Errorf("X-Backend = %q", name)
		}
		// Plain routing, no NAT: the backend sees the client's address.
		if peer, err := netip.ParseAddrPort(resp.Header.Get("X-Peer")); err != nil || peer.Addr() != tb.ClientAddr {
			t.Errorf("X-Peer = %q, want %v:port", resp.Header.Get("X-Peer"), tb.ClientAddr)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/upload", backend.Pattern(size))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		resp, err = client.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		digest, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if wantHex := hex.EncodeToString(want.Sum(nil)) + "\n"; string(digest) != wantHex {
			t.Errorf("upload to backend %d: digest %q, want %q", i+1, digest, wantHex)
		}
	}
}
