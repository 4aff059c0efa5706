package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 looks for named namespaces (its
// NETNS_RUN_DIR); bind-mounting ours there makes `ip netns exec NAME ...`
// work on them.
const netnsDir = "/var/run/netns"

// Namespace is a named network namespace owned by a Testbed.
type Namespace struct {
	// Name is the iproute2 name, usable with `ip netns exec Name ...`.
	Name string

	// handle is kept open for the namespace's whole life: it is what lets
	// stale cleanup tell a live owner from a reused PID (see stale.go).
	handle netns.NsHandle
}

func (n *Namespace) path() string { return filepath.Join(netnsDir, n.Name) }

// createNamespace creates a network namespace bind-mounted at
// /var/run/netns/name. The unshare happens on a dedicated, locked OS thread
// that is switched back afterwards, so no other goroutine ever runs inside
// the new namespace by accident.
func createNamespace(name string) (*Namespace, error) {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", netnsDir, err)
	}
	path := filepath.Join(netnsDir, name)
	// O_EXCL: a name clash must fail rather than hijack someone's namespace.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, fmt.Errorf("create netns mount point: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, errors.Join(fmt.Errorf("create netns mount point: %w", err), removeMountPoint(path))
	}

	type result struct {
		handle netns.NsHandle
		err    error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{netns.None(), fmt.Errorf("get current netns: %w", err)}
			return
		}
		defer origin.Close()

		handle, err := unshareAndMount(path)
		if restoreErr := netns.Set(origin); restoreErr != nil {
			// The thread is stuck in the new namespace. Leaving it locked
			// makes the runtime destroy it when this goroutine returns.
			err = errors.Join(err, fmt.Errorf("restore thread netns: %w", restoreErr))
		} else {
			runtime.UnlockOSThread()
		}
		done <- result{handle, err}
	}()
	res := <-done
	if res.err != nil {
		if res.handle.IsOpen() {
			res.handle.Close()
		}
		return nil, errors.Join(fmt.Errorf("create netns %s: %w", name, res.err), removeMountPoint(path))
	}
	return &Namespace{Name: name, handle: res.handle}, nil
}

// unshareAndMount moves the calling (locked) thread into a fresh network
// namespace and bind-mounts it at path. The handle is opened before the
// mount so that the namespace is never visible under /var/run/netns without
// its owner holding it (stale cleanup relies on that).
func unshareAndMount(path string) (netns.NsHandle, error) {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return netns.None(), fmt.Errorf("unshare: %w", err)
	}
	handle, err := netns.Get()
	if err != nil {
		return netns.None(), fmt.Errorf("open new netns: %w", err)
	}
	if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
		handle.Close()
		return netns.None(), fmt.Errorf("bind mount %s: %w", path, err)
	}
	return handle, nil
}

// remove unmounts and deletes the namespace's mount point and releases the
// handle. The kernel destroys the namespace, and with it every interface
// inside it, once nothing else (sockets, processes) references it.
func (n *Namespace) remove() error {
	// Unmount before closing the handle: see unshareAndMount.
	err := removeMountPoint(n.path())
	if n.handle.IsOpen() {
		if closeErr := n.handle.Close(); closeErr != nil {
			err = errors.Join(err, fmt.Errorf("close netns %s: %w", n.Name, closeErr))
		}
	}
	return err
}

// removeMountPoint tolerates a path that is not (or no longer) mounted or
// present, so it can clean up after partial creation and races with other
// cleaners.
func removeMountPoint(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// Do runs fn on a locked OS thread switched into the namespace and waits for
// it. Sockets created by fn stay in the namespace after Do returns.
//
// fn runs on its own goroutine, so it must report failure by returning an
// error, not with t.FailNow; goroutines that fn starts run outside the
// namespace. If the thread cannot be switched back, it is discarded rather
// than returned to the scheduler.
func (n *Namespace) Do(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer origin.Close()
		if err := netns.Set(n.handle); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter netns %s: %w", n.Name, err)
			return
		}

		var fnErr error
		returned := false
		// Deferred so the thread is restored (or discarded) even if fn
		// panics or calls runtime.Goexit.
		defer func() {
			err := fnErr
			if !returned {
				err = fmt.Errorf("function run in netns %s did not return (panic or runtime.Goexit)", n.Name)
			}
			if restoreErr := netns.Set(origin); restoreErr != nil {
				err = errors.Join(err, fmt.Errorf("leave netns %s: %w", n.Name, restoreErr))
			} else {
				runtime.UnlockOSThread()
			}
			done <- err
		}()
		fnErr = fn()
		returned = true
	}()
	return <-done
}

// NetCommand returns a command that runs name in the namespace's network
// only (nsenter --net): unlike Command it keeps the caller's mount
// namespace, so a daemon's bpffs pins are visible outside, as in a real
// deployment. Its process is the program itself (nsenter execs it). Like
// Command's, it gets SIGKILL when its parent thread dies.
func (n *Namespace) NetCommand(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.path(), "--", name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Command returns a command that runs `ip netns exec n.Name name args...`.
// The child gets SIGKILL when its parent thread dies, so a crashed test does
// not leave servers running in orphaned namespaces.
func (n *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Listen is net.Listen with the socket created inside the namespace. The
// host part of address must be empty or an IP literal.
func (n *Namespace) Listen(network, address string) (net.Listener, error) {
	if err := requireLiteralHost(network, address); err != nil {
		return nil, err
	}
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		if l != nil {
			l.Close()
		}
		return nil, fmt.Errorf("listen %s %s in netns %s: %w", network, address, n.Name, err)
	}
	return l, nil
}

// ListenPacket is net.ListenPacket with the socket created inside the
// namespace. The host part of address must be empty or an IP literal.
func (n *Namespace) ListenPacket(network, address string) (net.PacketConn, error) {
	if err := requireLiteralHost(network, address); err != nil {
		return nil, err
	}
	var pc net.PacketConn
	err := n.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, address)
		return err
	})
	if err != nil {
		if pc != nil {
			pc.Close()
		}
		return nil, fmt.Errorf("listen %s %s in netns %s: %w", network, address, n.Name, err)
	}
	return pc, nil
}

// DialContext dials from inside the namespace; it fits
// http.Transport.DialContext. The host part of address must be an IP
// literal.
func (n *Namespace) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if err := requireLiteralHost(network, address); err != nil {
		return nil, err
	}
	var conn net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, address)
		return err
	})
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("dial %s %s from netns %s: %w", network, address, n.Name, err)
	}
	return conn, nil
}

// requireLiteralHost rejects host names for IP networks: the net package
// resolves names on helper goroutines, whose threads are not in the
// namespace, and with several addresses it may even dial on them.
func requireLiteralHost(network, address string) error {
	if !strings.HasPrefix(network, "tcp") && !strings.HasPrefix(network, "udp") {
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("address %q: %w", address, err)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("address %q: host must be an IP literal inside a namespace", address)
	}
	return nil
}

// InterfaceIndex returns the index of the named interface inside the
// namespace. Indexes are per namespace: anything that takes one (XDP attach,
// bpf_redirect) must run in the same namespace, e.g. via Do.
func (n *Namespace) InterfaceIndex(name string) (int, error) {
	h, err := n.netlinkHandle()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("look up %s in netns %s: %w", name, n.Name, err)
	}
	return link.Attrs().Index, nil
}

func (n *Namespace) netlinkHandle() (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(n.handle, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle for netns %s: %w", n.Name, err)
	}
	return h, nil
}

// XDPAttachMode says how an XDP program is attached to the named interface
// inside the namespace: "none", "native", "generic" or "offload".
func (n *Namespace) XDPAttachMode(name string) (string, error) {
	h, err := n.netlinkHandle()
	if err != nil {
		return "", err
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if err != nil {
		return "", fmt.Errorf("look up %s in netns %s: %w", name, n.Name, err)
	}
	x := link.Attrs().Xdp
	if x == nil {
		return "none", nil
	}
	switch x.AttachMode {
	case nl.XDP_ATTACHED_DRV:
		return "native", nil
	case nl.XDP_ATTACHED_SKB:
		return "generic", nil
	case nl.XDP_ATTACHED_HW:
		return "offload", nil
	}
	return "none", nil
}
