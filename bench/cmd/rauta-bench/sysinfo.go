package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// hostInfo describes the machine a report was measured on.
type hostInfo struct {
	Kernel string // uname -sr
	CPU    string // /proc/cpuinfo "model name"
	Cores  int    // CPUs this process may run on
	Go     string
	Tools  []toolVersion
	// IdleBefore is the share of CPU time idle in the second before the
	// run; anything else running on the machine skews every mode.
	IdleBefore float64 // 0..1, negative if unknown
}

type toolVersion struct{ Name, Version string }

func readHostInfo(ctx context.Context) hostInfo {
	h := hostInfo{CPU: "unknown", Cores: runtime.NumCPU(), Go: runtime.Version(), IdleBefore: cpuIdle(ctx, time.Second)}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		h.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	if model := cpuModel(); model != "" {
		h.CPU = model
	}
	for _, t := range []struct {
		name string
		argv []string
	}{
		{"wrk", []string{"wrk", "--version"}},
		{"nginx", []string{nginxBin, "-v"}},
		{"haproxy", []string{haproxyBin, "-v"}},
	} {
		h.Tools = append(h.Tools, toolVersion{t.name, commandFirstLine(ctx, t.argv...)})
	}
	return h
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		key, value, ok := strings.Cut(s.Text(), ":")
		if ok && strings.TrimSpace(key) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return ""
}

// commandFirstLine is the first line a version command prints (wrk exits 1
// after printing its version, so the exit status is ignored).
func commandFirstLine(ctx context.Context, argv ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if line == "" {
		return "unknown"
	}
	return strings.TrimSpace(line)
}

// cpuIdle measures the idle share of all CPUs over window from /proc/stat,
// or returns -1.
func cpuIdle(ctx context.Context, window time.Duration) float64 {
	before := snapshot{}
	if err := before.readCPU(); err != nil {
		return -1
	}
	select {
	case <-ctx.Done():
		return -1
	case <-time.After(window):
	}
	after := snapshot{}
	if err := after.readCPU(); err != nil {
		return -1
	}
	d := before.delta(after)
	if d[cpuTotal] == 0 {
		return -1
	}
	return 1 - float64(d[cpuBusy])/float64(d[cpuTotal])
}
