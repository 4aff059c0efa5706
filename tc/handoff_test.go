package tc_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/rauta-lb/rauta/loader"
	"github.com/rauta-lb/rauta/percpu"
	"github.com/rauta-lb/rauta/tc"
	"github.com/rauta-lb/rauta/tools/testbed"
	"github.com/rauta-lb/rauta/xdp"
)

// handoffBed is a testbed whose LB runs the real loader (XDP + TC handoff)
// with one HTTP service: /fast routes to the backends in XDP, everything
// else goes to the slow path.
type handoffBed struct {
	tb  *testbed.Testbed
	l   *loader.Loader
	vip netip.AddrPort
}

// skipUnlessHandoffLoads skips the test when the kernel cannot load the
// handoff (no bpf_sk_assign_tcp_reqsk, Linux 6.9+), as tc.Load reports with
// ebpf.ErrNotSupported; it fails on any other error.
func skipUnlessHandoffLoads(t *testing.T) {
	t.Helper()
	objs, err := xdp.Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	h, err := tc.Load(tc.SharedMaps{Flows: objs.Flows, SyncookieKeys: objs.SyncookieKeys, SyncookieCurrent: objs.SyncookieCurrent})
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("this kernel cannot load the handoff: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
}

func newHandoffBed(t *testing.T) *handoffBed {
	t.Helper()
	tb := testbed.NewT(t, testbed.Options{Backends: 1})
	suffix := make([]byte, 4)
	rand.Read(suffix)
	pin := filepath.Join("/sys/fs/bpf", "rauta-tc-test-"+hex.EncodeToString(suffix))
	l, err := loader.Load(loader.Options{PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close loader: %v", err)
		}
	})
	if l.Handoff() == nil {
		skipUnlessHandoffLoads(t)
		t.Fatal("the kernel has bpf_sk_assign_tcp_reqsk, yet the loader did not load the TC handoff (see its warning)")
	}
	vip := netip.AddrPortFrom(tb.VIPs[0], 80)
	state := loader.State{
		Services: []loader.Service{{
			Name: "site", VIP: vip.Addr(), Port: vip.Port(), Protocol: loader.ProtoTCP, HTTP: true,
			Routes: []loader.Route{{Path: "/fast", Pool: "web"}},
		}},
		Pools: []loader.Pool{{Name: "web", MaglevSize: 7, Backends: []loader.Backend{
			{Address: netip.AddrPortFrom(tb.BackendAddrs[0], 80), Weight: 1},
		}}},
	}
	if err := l.Apply(state); err != nil {
		t.Fatal(err)
	}
	if err := tb.LB.Do(func() error { return l.Attach([]string{tb.LBClientIface, tb.LBBackendIface}, "") }); err != nil {
		t.Fatal(err)
	}
	return &handoffBed{tb: tb, l: l, vip: vip}
}

// listenTCP listens on the VIP in the LB namespace with a plain TCP socket.
// Go listens with MPTCP by default where the kernel has it, and the kernel
// refuses to attach a request socket to an MPTCP listener: the proxy
// listens the same way.
func (b *handoffBed) listenTCP(t *testing.T) net.Listener {
	t.Helper()
	var ln net.Listener
	err := b.tb.LB.Do(func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		var err error
		ln, err = lc.Listen(context.Background(), "tcp", b.vip.String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func (b *handoffBed) counters(t *testing.T) map[string]uint64 {
	t.Helper()
	c, err := b.l.Handoff().Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// exchange sends one request from the client and returns the first line of
// the answer.
func (b *handoffBed) exchange(ctx context.Context, request string) (string, error) {
	conn, err := b.tb.Client.DialContext(ctx, "tcp", b.vip.String())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

// TestHandoffGivesTheKernelTheHandshakeXDPAnswered: the LB namespace's
// kernel never sees the SYN (XDP answers it with a cookie), yet a listener
// on the VIP accepts the connection once XDP sends it to the slow path, and
// reads the request that completed the handshake.
func TestHandoffGivesTheKernelTheHandshakeXDPAnswered(t *testing.T) {
	b := newHandoffBed(t)
	ln := b.listenTCP(t)
	const connections = 20
	served := make(chan string, connections)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(conn).ReadString('\n')
				if err != nil {
					return
				}
				served <- strings.TrimSpace(line)
				fmt.Fprintf(conn, "HTTP/1.1 200 slow path saw %s\r\nContent-Length: 0\r\n\r\n", strings.Fields(line)[1])
			}()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range connections {
		path := fmt.Sprintf("/slow/%d", i)
		got, err := b.exchange(ctx, "GET "+path+" HTTP/1.1\r\nHost: example.com\r\n\r\n")
		if err != nil {
			t.Fatalf("connection %d: %v (handoff counters %v)", i, err, b.counters(t))
		}
		if want := "HTTP/1.1 200 slow path saw " + path; got != want {
			t.Fatalf("connection %d: got %q, want %q", i, got, want)
		}
		if line := <-served; line != "GET "+path+" HTTP/1.1" {
			t.Fatalf("listener read %q", line)
		}
	}
	c := b.counters(t)
	if c["assigned"] != connections {
		t.Errorf("assigned = %d, want %d (counters %v)", c["assigned"], connections, c)
	}
	if c["failed"] != 0 || c["bad_cookie"] != 0 {
		t.Errorf("counters %v, want no failures", c)
	}
	// The listener never had a SYN queued: the kernel's SYN path was not
	// involved. Its accept queue got exactly the handed-off connections.
	checkNoKernelSYNs(t, b)
}

// checkNoKernelSYNs asserts the LB namespace's TCP stack answered no SYN
// itself (TcpExtSyncookiesSent / passive opens through the SYN path).
func checkNoKernelSYNs(t *testing.T, b *handoffBed) {
	t.Helper()
	out, err := b.tb.LB.Command(context.Background(), "nstat", "-az", "TcpExtTCPReqQFullDrop", "TcpExtSyncookiesSent", "TcpExtSyncookiesRecv").CombinedOutput()
	if err != nil {
		t.Logf("nstat unavailable (%v): %s", err, out)
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && strings.HasPrefix(f[0], "TcpExtSyncookies") && f[1] != "0" {
			t.Errorf("kernel handled SYN cookies itself: %s", line)
		}
	}
}

// TestHandoffWithoutListenerResets: with nothing listening on the VIP, the
// kernel resets the connection, and the handoff counts it.
func TestHandoffWithoutListenerResets(t *testing.T) {
	b := newHandoffBed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := b.exchange(ctx, "GET /slow HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
		t.Fatalf("got %v, want a reset connection", err)
	}
	if c := b.counters(t); c["no_listener"] == 0 || c["assigned"] != 0 {
		t.Errorf("counters %v, want no_listener > 0 and nothing assigned", c)
	}
}

// TestHandoffLeavesFastPathAlone: a request XDP routes never reaches the
// handoff or a local listener.
func TestHandoffLeavesFastPathAlone(t *testing.T) {
	b := newHandoffBed(t)
	b.listenTCP(t) // a listener the fast path must not reach
	srv, err := b.tb.Backends[0].Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		conn, err := srv.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		bufio.NewReader(conn).ReadString('\n')
		io.WriteString(conn, "HTTP/1.1 200 backend\r\nContent-Length: 0\r\n\r\n")
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := b.exchange(ctx, "GET /fast HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if got != "HTTP/1.1 200 backend" {
		t.Fatalf("got %q, want the backend's answer", got)
	}
	if c := b.counters(t); c["assigned"] != 0 || c["no_listener"] != 0 {
		t.Errorf("counters %v, want the handoff untouched", c)
	}
}

// TestSlowPathConnectionOutlivesItsFlowEntry: when the flow entry of a
// handed-off connection expires or is evicted, XDP finds the kernel's
// socket and keeps passing the connection's segments to it.
func TestSlowPathConnectionOutlivesItsFlowEntry(t *testing.T) {
	b := newHandoffBed(t)
	ln := b.listenTCP(t)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(conn)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(line, "GET ") {
				fmt.Fprintf(conn, "HTTP/1.1 200 %s\r\nContent-Length: 0\r\n\r\n", strings.Fields(line)[1])
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := b.tb.Client.DialContext(ctx, "tcp", b.vip.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	ask := func(path string) {
		t.Helper()
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: example.com\r\n\r\n", path)
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		if want := "HTTP/1.1 200 " + path; strings.TrimSpace(line) != want {
			t.Fatalf("GET %s: %q", path, line)
		}
		r.ReadString('\n') // Content-Length
		r.ReadString('\n') // end of headers
	}
	ask("/slow/1")

	flows := b.l.Objects().Flows
	var key xdp.FlowKey
	var value xdp.Flow
	var deleted int
	iter := flows.Iterate()
	var keys []xdp.FlowKey
	for iter.Next(&key, &value) {
		keys = append(keys, key)
	}
	for _, k := range keys {
		if err := flows.Delete(k); err == nil {
			deleted++
		}
	}
	if deleted == 0 {
		t.Fatal("no flow entry to delete: the connection was not tracked")
	}

	ask("/slow/2")
	ask("/slow/3")
	var svc uint32
	for id, name := range b.l.ServiceNames() {
		if name == "site" {
			svc = id
		}
	}
	passed, err := percpu.Sum(b.l.Objects().Counters, xdp.CounterIndex(svc, xdp.CounterPassLocalSocket))
	if err != nil {
		t.Fatal(err)
	}
	if passed == 0 {
		t.Error("local_socket counter did not move: the segments reached the socket some other way")
	}
}

// TestPortReuseAfterProxyClosedFirst: the proxy closing first leaves its
// socket in TIME_WAIT in the LB's kernel; a client that reuses the port at
// once must get a working connection, not that socket's ACKs.
func TestPortReuseAfterProxyClosedFirst(t *testing.T) {
	b := newHandoffBed(t)
	ln := b.listenTCP(t)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close() // the server closes first: TIME_WAIT here
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(conn).ReadString('\n')
				if err != nil {
					return
				}
				fmt.Fprintf(conn, "HTTP/1.1 200 %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", strings.Fields(line)[1])
			}()
		}
	}()
	local := &net.TCPAddr{IP: b.tb.ClientAddr.AsSlice(), Port: 45678}
	for i := range 3 {
		start := time.Now()
		var conn net.Conn
		err := b.tb.Client.Do(func() error {
			d := net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
			var err error
			conn, err = d.Dial("tcp", b.vip.String())
			return err
		})
		if err != nil {
			t.Fatalf("connection %d from port %d: %v", i, local.Port, err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		path := fmt.Sprintf("/reuse/%d", i)
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: example.com\r\n\r\n", path)
		r := bufio.NewReader(conn)
		line, err := r.ReadString('\n')
		// Read to the server's FIN before closing: the server must be the
		// one to close first, or the client keeps the port in TIME_WAIT.
		io.Copy(io.Discard, r)
		conn.Close()
		if err != nil || strings.TrimSpace(line) != "HTTP/1.1 200 "+path {
			t.Fatalf("connection %d: %q, %v", i, line, err)
		}
		// A retransmission timeout (1s for a SYN, 200ms+ for data) means
		// the first attempt went nowhere.
		if took := time.Since(start); took > 150*time.Millisecond {
			t.Errorf("connection %d took %v: something was retransmitted", i, took)
		}
		time.Sleep(20 * time.Millisecond) // let both sides finish closing
	}
}
