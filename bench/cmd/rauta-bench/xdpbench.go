package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// xdpBenchTimeout bounds building and running the XDP benchmarks.
const xdpBenchTimeout = 15 * time.Minute

// xdpBench is the outcome of `go test -bench BenchmarkXDP ./xdp/`.
type xdpBench struct {
	Command string
	Results []xdpBenchResult
	// Note explains an empty Results (no benchmark yet, build failure).
	Note string
}

type xdpBenchResult struct {
	Path    string // sub-benchmark name
	NsPerPk float64
}

// runXDPBench runs the XDP program benchmarks in the module at dir. It
// never fails the bench: problems end up in Note.
func runXDPBench(ctx context.Context, dir, benchtime string) xdpBench {
	args := []string{"test", "-run", "^$", "-bench", "BenchmarkXDP", "-benchtime", benchtime, "./xdp/"}
	res := xdpBench{Command: commandLine(append([]string{"go"}, args...))}
	goBin, err := exec.LookPath("go")
	if err != nil {
		res.Note = "go not found in PATH: " + err.Error()
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, xdpBenchTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = dir
	cmd.Stdout = &out
	cmd.Stderr = &out
	// The test binary is a child of go: kill the whole group on timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	res.Results = parseXDPBench(out.String())
	switch {
	case runErr != nil:
		res.Note = fmt.Sprintf("`%s` failed (%v):\n\n```\n%s\n```", res.Command, runErr, tail(out.String(), 3000))
	case len(res.Results) == 0:
		res.Note = "no BenchmarkXDP benchmark reporting ns/pkt was found in ./xdp/ (not written yet?); output:\n\n```\n" + tail(out.String(), 1000) + "\n```"
	}
	return res
}

// benchLineRe matches a result line: name, iterations, then metric pairs.
var benchLineRe = regexp.MustCompile(`^(Benchmark\S+)\s+(\d+)\s+(.+)$`)

// parseXDPBench picks the ns/pkt metric of every benchmark line.
func parseXDPBench(out string) []xdpBenchResult {
	var results []xdpBenchResult
	for line := range strings.Lines(out) {
		m := benchLineRe.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		fields := strings.Fields(m[3])
		for i := 0; i+1 < len(fields); i += 2 {
			if fields[i+1] != "ns/pkt" {
				continue
			}
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			results = append(results, xdpBenchResult{Path: benchPath(m[1]), NsPerPk: v})
		}
	}
	return results
}

// procsSuffixRe is the -GOMAXPROCS suffix go test appends to names.
var procsSuffixRe = regexp.MustCompile(`-\d+$`)

// benchPath turns "BenchmarkXDP/l4_new_flow-2" into "l4_new_flow", and the
// sub-benchmarks of other BenchmarkXDP… benchmarks into paths prefixed with
// the rest of that name, lowercased: "BenchmarkXDPHTTP/syn-net-2" into
// "http/syn-net".
func benchPath(name string) string {
	name = procsSuffixRe.ReplaceAllString(name, "")
	rest, ok := strings.CutPrefix(name, "BenchmarkXDP")
	if !ok {
		return name
	}
	group, sub, ok := strings.Cut(rest, "/")
	switch {
	case !ok || sub == "":
		return name
	case group == "":
		return sub
	}
	return strings.ToLower(group) + "/" + sub
}
