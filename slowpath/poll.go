package slowpath

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// poller is one event loop's epoll instance and the eventfd other
// goroutines write to when they leave work in the loop's inbox.
//
// The loop never blocks in epoll_wait: a goroutine blocked in a system
// call keeps its P until sysmon takes it, and sysmon sleeps up to 10 ms
// when the process looks idle, so the goroutines the loop's writes wake
// (in tests, the client and the backend) waited that long. The epoll
// descriptor is itself pollable, so the loop parks in the Go runtime's
// poller until it is readable and then collects its events without
// waiting.
//
// Interest is level-triggered: a read that did not drain a socket is
// reported again, so the loop never reads until EAGAIN (the goroutine
// model's extra read per wake-up), and what the loop cannot consume yet it
// leaves unread and drops from the interest set.
type poller struct {
	epfd int
	file *os.File // epfd, in the Go runtime's poller
	raw  syscall.RawConn
	wake int

	// collect is the RawConn.Read callback, made once: a closure made per
	// wait escaped to the heap, the loop's only allocation per request.
	// It fills events and sets n or err.
	collect func(uintptr) bool
	events  []unix.EpollEvent
	n       int
	err     error
}

// maxEvents bounds the events one wait collects.
const maxEvents = 256

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	p := &poller{epfd: epfd, file: os.NewFile(uintptr(epfd), "epoll"), wake: wake,
		events: make([]unix.EpollEvent, maxEvents)}
	p.collect = p.collectEvents
	raw, err := p.file.SyscallConn()
	if err == nil {
		p.raw = raw
		err = p.add(wake, unix.EPOLLIN)
	}
	if err != nil {
		p.close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	return p, nil
}

func (p *poller) add(fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

func (p *poller) mod(fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl mod: %w", err)
	}
	return nil
}

func (p *poller) del(fd int) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// wait returns the ready events (valid until the next wait), parking the
// goroutine until there is at least one. The epoll_wait that collects
// them never blocks, so it is made without telling the scheduler (as
// rawRead): a system call the scheduler knows of, if the kernel preempts
// the thread inside it, leaves the P in a syscall state that sysmon polls
// every 20 µs to take back, and those wake-ups cost 2.5% of the proxy's
// CPU.
func (p *poller) wait() ([]unix.EpollEvent, error) {
	p.n, p.err = 0, nil
	err := p.raw.Read(p.collect)
	if err == nil {
		err = p.err
	}
	if err != nil {
		return nil, fmt.Errorf("epoll_wait: %w", err)
	}
	return p.events[:p.n], nil
}

// collectEvents reports whether the wait is over: events were collected
// or the epoll_wait failed. None: park until the epoll descriptor is
// readable.
func (p *poller) collectEvents(uintptr) bool {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(p.epfd),
			uintptr(unsafe.Pointer(&p.events[0])), uintptr(len(p.events)), 0, 0, 0)
		switch e {
		case 0:
			p.n = int(r)
			return p.n > 0
		case unix.EINTR:
			continue
		default:
			p.err = e
			return true
		}
	}
}

// wakeup makes the loop's wait return.
func (p *poller) wakeup() {
	one := [8]byte{1}
	_, _ = unix.Write(p.wake, one[:])
}

// woken resets the eventfd once the loop has seen it.
func (p *poller) woken() {
	var b [8]byte
	_, _ = unix.Read(p.wake, b[:])
}

func (p *poller) close() {
	unix.Close(p.wake)
	p.file.Close()
}
