// Package nsworker runs functions on one OS thread that lives in a
// private, unnamed network namespace: everything that depends on the
// calling thread's namespace (netlink, sysctls, devmap updates,
// BPF_PROG_TEST_RUN with an ingress interface) goes through Do. Program
// tests use it for a namespace that disappears with them.
package nsworker

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/vishvananda/netns"
)

// Worker is a goroutine locked to its thread inside the namespace.
type Worker struct {
	reqs chan func()
	done chan struct{}
	// NS is the namespace, for netlink.NewHandleAt and the like.
	NS netns.NsHandle
}

// Start creates the namespace and the worker in it.
func Start() (*Worker, error) {
	w := &Worker{reqs: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer close(w.done)
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ready <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer origin.Close()
		ns, err := netns.New()
		if err != nil {
			// If the thread did switch, leaving it locked makes the
			// runtime discard it when this goroutine returns.
			if netns.Set(origin) == nil {
				runtime.UnlockOSThread()
			}
			ready <- fmt.Errorf("create netns: %w", err)
			return
		}
		w.NS = ns
		ready <- nil
		for fn := range w.reqs {
			fn()
		}
		// Leave and drop the last references: the namespace and every
		// interface in it go away.
		ns.Close()
		if netns.Set(origin) == nil {
			runtime.UnlockOSThread()
		}
	}()
	if err := <-ready; err != nil {
		<-w.done
		return nil, err
	}
	return w, nil
}

// Do runs fn on the worker's thread and waits for it. fn must report
// failure by returning an error (never t.FailNow: that would end the
// worker's goroutine); a panic in fn is returned as an error.
func (w *Worker) Do(fn func() error) error {
	errc := make(chan error, 1)
	w.reqs <- func() {
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("panic in netns worker: %v\n%s", r, debug.Stack())
			}
		}()
		errc <- fn()
	}
	return <-errc
}

// Stop ends the worker; the namespace goes with it.
func (w *Worker) Stop() {
	close(w.reqs)
	<-w.done
}
