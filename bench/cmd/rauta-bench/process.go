package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rauta-lb/rauta/tools/testbed"
)

// stopTimeout is how long a server gets to exit after SIGTERM before its
// whole process group is killed.
const stopTimeout = 5 * time.Second

// process is a long-running server (nginx, HAProxy) started in a namespace
// in its own process group, so stopping it also reaches its workers.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited
	waitErr error         // valid after done
	log     *slog.Logger
	// grace is how long stop waits after SIGTERM; stopTimeout if zero.
	grace time.Duration
}

// startProcess runs argv in ns with stdout and stderr going to
// dir/<name>.log.
func startProcess(ns *testbed.Namespace, dir, name string, log *slog.Logger, argv ...string) (*process, error) {
	// Not tied to a context: stop decides how the process ends.
	cmd := ns.Command(context.Background(), argv[0], argv[1:]...)
	return startCmd(cmd, ns, dir, name, log)
}

// startCmd starts cmd (whose SysProcAttr is set) in its own process group
// with stdout and stderr going to dir/<name>.log.
func startCmd(cmd *exec.Cmd, ns *testbed.Namespace, dir, name string, log *slog.Logger) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer out.Close()
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%v) in %s: %w", name, cmd.Args, ns.Name, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{}), log: log}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	log.Info("started", "process", name, "pid", cmd.Process.Pid, "netns", ns.Name)
	return p, nil
}

// exited reports whether the process has already ended, with its output.
func (p *process) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v): %s", p.name, p.waitErr, p.output())
	default:
		return nil
	}
}

// output is the end of what the process printed.
func (p *process) output() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	return tail(string(b), 1000)
}

// stop sends SIGTERM to the process group, then SIGKILL if it has not
// exited in time. It is safe to call more than once.
func (p *process) stop() error {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
		// Workers may outlive a crashed master.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return nil
	default:
	}
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop %s: %w", p.name, err)
	}
	grace := p.grace
	if grace == 0 {
		grace = stopTimeout
	}
	select {
	case <-p.done:
	case <-time.After(grace):
		p.log.Warn("did not exit after SIGTERM; killing", "process", p.name)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Anything left in the group (a worker that missed the master's exit).
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	p.log.Info("stopped", "process", p.name)
	return nil
}
