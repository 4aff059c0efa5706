package slowpath

import (
	"errors"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Accepting plain-HTTP connections for the event loops. Each connection
// leaves the Go runtime for a loop's epoll, so what net.Listener.Accept
// does for it — register it in the runtime's poller, look up its local
// address, then (detachFD) duplicate the socket and close the original,
// unregistering it — is undone at once. The accepting goroutine still
// waits in Accept, which parks it in the runtime's poller and sees the
// listener's Close; the connections queued behind the one that woke it are
// taken with accept4 on the listening socket itself. Under the bench's
// new-connection load that took 83% of the connections, and the proxy's
// system calls per connection fell from 13.6 to 12.5 (11.6 once sockets
// were closed without EPOLL_CTL_DEL first; `perf stat` on the process).

// acceptFD accepts a connection from ln and takes its socket for a loop;
// fd is -1 when the connection was lost on the way (err nil).
func acceptFD(ln net.Listener, log func(err error)) (fd int, peer netip.AddrPort, err error) {
	c, err := ln.Accept()
	if err != nil {
		return -1, peer, err
	}
	peer = addrPortOf(c.RemoteAddr())
	if fd, err = detachFD(c); err != nil {
		log(err) // that connection's problem, not the listener's
		return -1, peer, nil
	}
	return fd, peer, nil
}

// maxQueuedAccepts bounds one acceptQueued call, so that a flood of new
// connections still lets Accept see the listener's Close now and then.
const maxQueuedAccepts = 64

// listenerSocket is ln's socket for acceptQueued; nil for a listener
// without one (tests wrap theirs), whose connections are left to Accept.
func listenerSocket(ln net.Listener) syscall.RawConn {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// acceptQueued takes the connections already queued on a listener's
// socket with accept4, without waiting, and gives each to take. It stops at
// an empty queue or any error, which the next Accept meets and handles.
func acceptQueued(socket syscall.RawConn, take func(fd int, peer netip.AddrPort)) {
	if socket == nil {
		return
	}
	// Control holds the listener open while it runs: a concurrent Close
	// waits, and the socket's number cannot be reused under accept4.
	_ = socket.Control(func(s uintptr) {
		for range maxQueuedAccepts {
			fd, sa, err := unix.Accept4(int(s), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
				continue
			}
			if err != nil {
				return
			}
			// As net's Accept: responses leave without Nagle's delay.
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
				unix.Close(fd)
				continue
			}
			take(fd, sockaddrAddrPort(sa))
		}
	})
}

// sockaddrAddrPort is sa as an address (IPv4-mapped IPv6 unmapped, as
// addrPortOf does); zero for other families.
func sockaddrAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}
