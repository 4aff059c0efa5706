package slowpath

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAcceptQueued dials more connections than one call takes and checks
// that the queued ones come out of accept4 as loops need them: non-blocking,
// without Nagle, with the client's address; then that the queue's end and a
// listener without a socket take nothing.
func TestAcceptQueued(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const dialled = maxQueuedAccepts + 3
	clients := map[netip.AddrPort]bool{}
	for range dialled {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[addrPortOf(c.LocalAddr())] = true
	}

	socket := listenerSocket(ln)
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	take := func(fd int, peer netip.AddrPort) {
		fds = append(fds, fd)
		if !clients[peer] {
			t.Errorf("accepted %v, not one of the dialled clients", peer)
		}
		delete(clients, peer)
	}
	acceptQueued(socket, take)
	if len(fds) != maxQueuedAccepts {
		t.Fatalf("first call took %d connections, want %d", len(fds), maxQueuedAccepts)
	}
	acceptQueued(socket, take)
	if len(fds) != dialled || len(clients) != 0 {
		t.Fatalf("took %d of %d connections; not taken: %v", len(fds), dialled, clients)
	}
	for _, fd := range fds {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil || flags&unix.O_NONBLOCK == 0 {
			t.Fatalf("fd %d: flags %#x, %v: want O_NONBLOCK", fd, flags, err)
		}
		if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
			t.Fatalf("fd %d: TCP_NODELAY %d, %v", fd, v, err)
		}
	}

	acceptQueued(socket, take) // the queue is empty: returns at EAGAIN
	if len(fds) != dialled {
		t.Fatalf("took %d connections from an empty queue", len(fds)-dialled)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	clients[addrPortOf(c.LocalAddr())] = true
	acceptQueued(listenerSocket(struct{ net.Listener }{ln}), take) // no SyscallConn
	if len(fds) != dialled {
		t.Fatal("took a connection through a listener without a socket")
	}
	acceptQueued(socket, take)
	if len(fds) != dialled+1 {
		t.Fatal("the connection left by the socketless call was not taken")
	}
}
