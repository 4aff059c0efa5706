package testbed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ioTimeout bounds every network exchange in these tests; on a healthy
// testbed each one takes well under a millisecond.
const ioTimeout = 5 * time.Second

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
}

func TestTopologyForwardsClientToBackends(t *testing.T) {
	t.Parallel()
	tb := NewT(t, Options{})

	if len(tb.Backends) != 3 || len(tb.BackendAddrs) != 3 {
		t.Fatalf("got %d backends / %d addrs, want 3 by default", len(tb.Backends), len(tb.BackendAddrs))
	}
	wantAddrs := map[string]netip.Addr{
		"client":  netip.MustParseAddr("10.0.2.2"),
		"lb eth1": netip.MustParseAddr("10.0.2.1"),
		"lb eth2": netip.MustParseAddr("10.0.1.1"),
		"b1":      netip.MustParseAddr("10.0.1.11"),
		"b3":      netip.MustParseAddr("10.0.1.13"),
	}
	gotAddrs := map[string]netip.Addr{
		"client":  tb.ClientAddr,
		"lb eth1": tb.LBClientAddr,
		"lb eth2": tb.LBBackendAddr,
		"b1":      tb.BackendAddrs[0],
		"b3":      tb.BackendAddrs[2],
	}
	for k, want := range wantAddrs {
		if gotAddrs[k] != want {
			t.Errorf("%s address = %v, want %v", k, gotAddrs[k], want)
		}
	}
	if !slices.Equal(tb.VIPs, []netip.Addr{defaultVIP}) {
		t.Errorf("VIPs = %v, want [%v]", tb.VIPs, defaultVIP)
	}

	for i, backend := range tb.Backends {
		if err := ping(tb.Client, tb.BackendAddrs[i], ioTimeout); err != nil {
			t.Errorf("ping backend %d: %v", i+1, err)
		}
		// The backend must see the client's own address: the LB namespace
		// routes, it does not NAT.
		checkTCP(t, backend, tb.BackendAddrs[i], tb.Client, tb.ClientAddr)
	}
	for _, vip := range tb.VIPs {
		if err := ping(tb.Client, vip, ioTimeout); err != nil {
			t.Errorf("ping VIP: %v", err)
		}
		checkTCP(t, tb.LB, vip, tb.Client, tb.ClientAddr)
	}

	eth1, err := tb.LB.InterfaceIndex(tb.LBClientIface)
	if err != nil {
		t.Fatal(err)
	}
	eth2, err := tb.LB.InterfaceIndex(tb.LBBackendIface)
	if err != nil {
		t.Fatal(err)
	}
	if eth1 <= 0 || eth2 <= 0 || eth1 == eth2 {
		t.Errorf("LB ifindexes eth1=%d eth2=%d, want distinct positive", eth1, eth2)
	}
	if _, err := tb.LB.InterfaceIndex("nope0"); err == nil {
		t.Error("InterfaceIndex of a missing interface succeeded")
	}

	if got := readSysctl(t, tb.LB, "net/ipv4/ip_forward"); got != "1" {
		t.Errorf("LB ip_forward = %s, want 1", got)
	}

	checkOffloads(t, tb)
}

func checkOffloads(t *testing.T, tb *Testbed) {
	t.Helper()
	cases := []struct {
		ns          *Namespace
		iface       string
		txChecksum  string
		gro         string
		description string
	}{
		{tb.Client, clientIface, "off", "on", "client eth0"},
		{tb.Switch, switchLBPort, "off", "on", "switch lb"},
		{tb.Switch, switchBackendPort(1), "off", "off", "switch b1"},
		{tb.Backends[0], backendIface, "off", "off", "backend 1 eth0"},
		{tb.LB, lbClientIface, "on", "off", "LB eth1 (untouched)"},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		out, err := c.ns.Command(ctx, "ethtool", "-k", c.iface).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("ethtool -k %s: %v: %s", c.description, err, out)
		}
		features := string(out)
		if want := "tx-checksumming: " + c.txChecksum; !strings.Contains(features, want) {
			t.Errorf("%s: want %q", c.description, want)
		}
		if want := "generic-receive-offload: " + c.gro; !strings.Contains(features, want) {
			t.Errorf("%s: want %q", c.description, want)
		}
	}
}

// A testbed must be usable the moment New returns. The kernel applies
// carrier changes asynchronously and, when a veth's ifindex equals its
// peer's, up to a second late; until then packets are dropped. A lost echo
// request or ARP request would only be retried after a second, so the short
// timeout catches a topology that is not ready yet.
func TestFirstPacketsGetThrough(t *testing.T) {
	t.Parallel()
	const firstPacketTimeout = 900 * time.Millisecond
	tb := NewT(t, Options{Backends: 2})
	for i, addr := range tb.BackendAddrs {
		if err := ping(tb.Client, addr, firstPacketTimeout); err != nil {
			t.Errorf("client -> backend %d: %v", i+1, err)
		}
	}
	if err := ping(tb.Backends[1], tb.ClientAddr, firstPacketTimeout); err != nil {
		t.Errorf("backend 2 -> client: %v", err)
	}
}

func TestCloseRemovesEveryNamespace(t *testing.T) {
	requireRoot(t)
	tb, err := New(Options{Backends: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })

	names := namespaceNames(tb)
	if len(names) != 5 {
		t.Fatalf("got namespaces %v, want client, lb, sw, b1, b2", names)
	}
	listed := ipNetnsList(t)
	for _, name := range names {
		if !slices.Contains(listed, name) {
			t.Errorf("%s missing from `ip netns list` before Close", name)
		}
	}

	if err := tb.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tb.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	listed = ipNetnsList(t)
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still under %s (stat err %v)", name, netnsDir, err)
		}
		if slices.Contains(listed, name) {
			t.Errorf("%s still in `ip netns list`", name)
		}
		if bytes.Contains(mounts, []byte(name)) {
			t.Errorf("%s still mounted", name)
		}
	}
}

func TestParallelTestbedsDoNotClash(t *testing.T) {
	t.Parallel()
	requireRoot(t)

	var (
		wg   sync.WaitGroup
		tbs  [2]*Testbed
		errs [2]error
	)
	for i := range tbs {
		wg.Go(func() { tbs[i], errs[i] = New(Options{Backends: 2}) })
	}
	wg.Wait()
	for i, tb := range tbs {
		if tb != nil {
			t.Cleanup(func() {
				if err := tb.Close(); err != nil {
					t.Errorf("close testbed %d: %v", i, err)
				}
			})
		}
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("testbed %d: %v", i, err)
		}
	}

	seen := map[string]bool{}
	for _, tb := range tbs {
		for _, name := range namespaceNames(tb) {
			if seen[name] {
				t.Fatalf("namespace %s used by both testbeds", name)
			}
			seen[name] = true
		}
	}
	// Same addresses and interface names in both: each must reach only its
	// own backends.
	for i, tb := range tbs {
		for j, backend := range tb.Backends {
			t.Run(fmt.Sprintf("testbed%d/backend%d", i, j+1), func(t *testing.T) {
				checkTCP(t, backend, tb.BackendAddrs[j], tb.Client, tb.ClientAddr)
			})
		}
	}
}

func TestFailedNewLeavesNothingBehind(t *testing.T) {
	requireRoot(t)
	steps := []string{
		"create namespace client",
		"create namespace lb",
		"create namespace b2",
		"create namespaces",
		"create links",
		"configure addresses",
		"set offloads",
		"enable forwarding",
		"wait for links",
	}
	hostLinksBefore := hostLinkNames(t)
	injected := errors.New("injected failure")
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			before := ownNamespaces(t)
			var atFailure []string
			opts := Options{Backends: 2, checkpoint: func(s string) error {
				if s != step {
					return nil
				}
				atFailure = newNames(ownNamespaces(t), before)
				return injected
			}}
			tb, err := New(opts)
			if err == nil {
				tb.Close()
				t.Fatal("New succeeded despite the injected failure")
			}
			if !errors.Is(err, injected) {
				t.Fatalf("New error = %v, want the injected one", err)
			}
			if len(atFailure) == 0 {
				t.Fatal("no namespace existed at the failure point; the test injects too early")
			}
			if left := newNames(ownNamespaces(t), before); len(left) > 0 {
				t.Errorf("left behind %v (existed at failure: %v)", left, atFailure)
			}
			listed := ipNetnsList(t)
			for _, name := range atFailure {
				if slices.Contains(listed, name) {
					t.Errorf("%s still in `ip netns list`", name)
				}
			}
		})
	}
	if after := hostLinkNames(t); !slices.Equal(after, hostLinksBefore) {
		t.Errorf("host namespace links changed: before %v, after %v", hostLinksBefore, after)
	}
}

func TestInvalidOptionsCreateNothing(t *testing.T) {
	requireRoot(t)
	cases := map[string]Options{
		"negative backends":     {Backends: -1},
		"too many backends":     {Backends: maxBackends + 1},
		"IPv6 VIP":              {VIPs: []netip.Addr{netip.MustParseAddr("fd00::1")}},
		"VIP in backend subnet": {VIPs: []netip.Addr{netip.MustParseAddr("10.0.1.50")}},
		"VIP in client subnet":  {VIPs: []netip.Addr{netip.MustParseAddr("10.0.2.1")}},
		"duplicate VIP":         {VIPs: []netip.Addr{defaultVIP, defaultVIP}},
		"loopback VIP":          {VIPs: []netip.Addr{netip.MustParseAddr("127.0.0.2")}},
		"invalid VIP":           {VIPs: []netip.Addr{{}}},
	}
	for name, opts := range cases {
		t.Run(name, func(t *testing.T) {
			before := ownNamespaces(t)
			tb, err := New(opts)
			if err == nil {
				tb.Close()
				t.Fatal("New accepted invalid options")
			}
			if left := newNames(ownNamespaces(t), before); len(left) > 0 {
				t.Errorf("left behind %v", left)
			}
		})
	}
}

func TestMultipleVIPs(t *testing.T) {
	t.Parallel()
	vips := []netip.Addr{netip.MustParseAddr("10.0.0.100"), netip.MustParseAddr("192.0.2.7")}
	tb := NewT(t, Options{Backends: 1, VIPs: vips})
	for _, vip := range vips {
		checkTCP(t, tb.LB, vip, tb.Client, tb.ClientAddr)
	}
}

func TestStaleNamespacesAreRemoved(t *testing.T) {
	requireRoot(t)
	deadPID := exitedPID(t)

	// Leftovers of a crashed run: a mounted namespace and a bare mount point
	// (crash between creating the file and mounting).
	deadMounted := fmt.Sprintf("rauta-%d-abc123-client", deadPID)
	deadBare := fmt.Sprintf("rauta-%d-abc123-b1", deadPID)
	// Our PID but not held by us: what a reused PID looks like.
	reusedPID := fmt.Sprintf("rauta-%d-fedcba-lb", os.Getpid())
	// Not ours by name: must survive.
	foreign := fmt.Sprintf("rautatest-%d-foreign", os.Getpid())

	for _, name := range []string{deadMounted, reusedPID, foreign} {
		ipNetnsAdd(t, name)
	}
	if err := os.WriteFile(filepath.Join(netnsDir, deadBare), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeMountPoint(filepath.Join(netnsDir, deadBare)) })

	live := NewT(t, Options{Backends: 1})
	// The second New runs the stale scan while `live` exists.
	NewT(t, Options{Backends: 1})

	listed := ipNetnsList(t)
	for _, gone := range []string{deadMounted, deadBare, reusedPID} {
		if slices.Contains(listed, gone) {
			t.Errorf("stale namespace %s survived", gone)
		}
	}
	for _, kept := range append(namespaceNames(live), foreign) {
		if !slices.Contains(listed, kept) {
			t.Errorf("namespace %s was removed but is not stale", kept)
		}
	}
	if err := ping(live.Client, live.BackendAddrs[0], ioTimeout); err != nil {
		t.Errorf("live testbed broken after stale cleanup: %v", err)
	}
}

func TestCreatorPID(t *testing.T) {
	cases := map[string]int{
		"rauta-123-abcdef-client": 123,
		"rauta-7-000000-b12":      7,
		"rauta-123-abcdef-":       0,
		"rauta-123-abcde-lb":      0,
		"rauta-123-abcdeg-lb":     0,
		"rauta-0123-abcdef-lb":    0,
		"rauta-x-abcdef-lb":       0,
		"rauta-abcdef-lb":         0,
		"other-123-abcdef-lb":     0,
		"rauta--1-abcdef-lb":      0,
	}
	for name, want := range cases {
		got, ok := creatorPID(name)
		if ok != (want != 0) || got != want {
			t.Errorf("creatorPID(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
}

func TestDoRunsInsideNamespace(t *testing.T) {
	t.Parallel()
	tb := NewT(t, Options{Backends: 1})
	want := nsInode(t, filepath.Join(netnsDir, tb.Backends[0].Name))

	var inside uint64
	err := tb.Backends[0].Do(func() error {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		inside = st.Ino
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside != want {
		t.Errorf("Do ran in netns inode %d, want %d", inside, want)
	}

	sentinel := errors.New("sentinel")
	if err := tb.Backends[0].Do(func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do error = %v, want fn's error", err)
	}
	// t.FailNow inside fn would call runtime.Goexit; Do must report it
	// rather than hang.
	if err := tb.Backends[0].Do(func() error { runtime.Goexit(); return nil }); err == nil {
		t.Error("Do hid a runtime.Goexit")
	}

	own, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	var ownSt unix.Stat_t
	if err := unix.Fstat(int(own), &ownSt); err != nil {
		t.Fatal(err)
	}
	if ownSt.Ino == want {
		t.Error("calling goroutine's thread ended up in the backend namespace")
	}
}

func TestCommandAndHostNameRules(t *testing.T) {
	t.Parallel()
	tb := NewT(t, Options{Backends: 1})
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	out, err := tb.Backends[0].Command(ctx, "ip", "-o", "-4", "addr", "show", "dev", backendIface).CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr in backend: %v: %s", err, out)
	}
	if !strings.Contains(string(out), tb.BackendAddrs[0].String()+"/24") {
		t.Errorf("backend eth0 addresses: %s", out)
	}

	if _, err := tb.Client.DialContext(ctx, "tcp", "localhost:80"); err == nil {
		t.Error("DialContext accepted a host name")
	}
	if _, err := tb.Client.Listen("tcp", "localhost:0"); err == nil {
		t.Error("Listen accepted a host name")
	}
}

// checkTCP listens on addr in server, connects from client and checks the
// server saw the connection coming from wantPeer.
func checkTCP(t *testing.T, server *Namespace, addr netip.Addr, client *Namespace, wantPeer netip.Addr) {
	t.Helper()
	l, err := server.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	accepted := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			accepted <- err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(ioTimeout))
		_, err = fmt.Fprintf(conn, "%s\n", conn.RemoteAddr())
		accepted <- err
	}()

	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	conn, err := client.DialContext(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("%s -> %s: %v", client.Name, l.Addr(), err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(ioTimeout))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s: %v", l.Addr(), err)
	}
	peer, err := netip.ParseAddrPort(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("server reported peer %q: %v", line, err)
	}
	if peer.Addr() != wantPeer {
		t.Errorf("server %s saw peer %v, want %v", l.Addr(), peer, wantPeer)
	}
	if err := <-accepted; err != nil {
		t.Errorf("server side: %v", err)
	}
}

// ping sends one ICMP echo request from a raw socket inside ns (no ping
// binary needed) and waits up to timeout for the matching reply.
func ping(ns *Namespace, dst netip.Addr, timeout time.Duration) error {
	conn, err := ns.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return err
	}
	defer conn.Close()

	const id, seq = 0x5241, 1
	payload := []byte("rauta-testbed")
	if _, err := conn.WriteTo(echoRequest(id, seq, payload), &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("send echo to %v: %w", dst, err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no echo reply from %v: %w", dst, err)
		}
		// Go strips the IPv4 header on ip4 raw sockets; skip unrelated ICMP.
		reply := buf[:n]
		if from.(*net.IPAddr).IP.Equal(dst.AsSlice()) && n >= 8 && reply[0] == 0 &&
			int(reply[4])<<8|int(reply[5]) == id && bytes.Equal(reply[8:], payload) {
			return nil
		}
	}
}

func echoRequest(id, seq int, payload []byte) []byte {
	msg := append([]byte{8, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq)}, payload...)
	var sum uint32
	for i := 0; i+1 < len(msg); i += 2 {
		sum += uint32(msg[i])<<8 | uint32(msg[i+1])
	}
	if len(msg)%2 == 1 {
		sum += uint32(msg[len(msg)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	cs := ^uint16(sum)
	msg[2], msg[3] = byte(cs>>8), byte(cs)
	return msg
}

func readSysctl(t *testing.T, ns *Namespace, key string) string {
	t.Helper()
	var value []byte
	err := ns.Do(func() error {
		var err error
		value, err = os.ReadFile(filepath.Join("/proc/sys", key))
		return err
	})
	if err != nil {
		t.Fatalf("read %s in %s: %v", key, ns.Name, err)
	}
	return strings.TrimSpace(string(value))
}

func namespaceNames(tb *Testbed) []string {
	var names []string
	for _, ns := range tb.created {
		names = append(names, ns.Name)
	}
	return names
}

func ipNetnsList(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		// Lines look like "NAME" or "NAME (id: 3)".
		if fields := strings.Fields(line); len(fields) > 0 {
			names = append(names, fields[0])
		}
	}
	return names
}

func ipNetnsAdd(t *testing.T, name string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { removeMountPoint(filepath.Join(netnsDir, name)) })
}

// ownNamespaces lists mount points under /var/run/netns named with this
// process's PID.
func ownNamespaces(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	prefix := namePrefix + strconv.Itoa(os.Getpid()) + "-"
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

func newNames(now, before []string) []string {
	var added []string
	for _, name := range now {
		if !slices.Contains(before, name) {
			added = append(added, name)
		}
	}
	return added
}

func hostLinkNames(t *testing.T) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	return names
}

// exitedPID returns the PID of a child that has exited and been reaped.
func exitedPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Skipf("PID %d was reused immediately", pid)
	}
	return pid
}

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
