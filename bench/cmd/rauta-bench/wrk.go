package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/rauta-lb/rauta/tools/testbed"
)

// wrkGrace is how long a wrk run may overrun its -d before it is killed:
// wrk waits up to its socket timeout (2s) for the last responses, and
// starting the threads takes a moment.
const wrkGrace = 30 * time.Second

// wrkSpec is one wrk invocation.
type wrkSpec struct {
	Threads  int
	Conns    int
	Duration time.Duration // whole seconds
	URL      string
	// Close sends "Connection: close", so every request is a new TCP
	// connection.
	Close bool
}

// args is wrk's command line after the program name.
func (s wrkSpec) args() []string {
	args := []string{
		"-t" + strconv.Itoa(s.Threads),
		"-c" + strconv.Itoa(s.Conns),
		"-d" + strconv.Itoa(int(s.Duration/time.Second)) + "s",
		"--latency",
	}
	if s.Close {
		args = append(args, "-H", "Connection: close")
	}
	return append(args, s.URL)
}

// wrkResult is what one wrk run reported.
type wrkResult struct {
	Requests  int64   // completed requests
	ReqPerSec float64 // "Requests/sec"
	P50, P99  time.Duration
	Errors    wrkErrors
	CPU       time.Duration // wrk's user and system time
}

// wrkErrors are wrk's "Socket errors" and "Non-2xx or 3xx responses"
// lines; wrk prints them only when they are not zero.
type wrkErrors struct {
	Connect, Read, Write, Timeout int64
	Non2xx                        int64
}

func (e wrkErrors) add(o wrkErrors) wrkErrors {
	return wrkErrors{
		Connect: e.Connect + o.Connect,
		Read:    e.Read + o.Read,
		Write:   e.Write + o.Write,
		Timeout: e.Timeout + o.Timeout,
		Non2xx:  e.Non2xx + o.Non2xx,
	}
}

func (e wrkErrors) total() int64 {
	return e.Connect + e.Read + e.Write + e.Timeout + e.Non2xx
}

// String lists the non-zero error counts, or "0".
func (e wrkErrors) String() string {
	var parts []string
	for _, c := range []struct {
		name string
		n    int64
	}{
		{"connect", e.Connect}, {"read", e.Read}, {"write", e.Write},
		{"timeout", e.Timeout}, {"non-2xx", e.Non2xx},
	} {
		if c.n != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", c.name, c.n))
		}
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, ", ")
}

// runWrk runs wrk in ns and parses its report. The run is killed if it
// takes much longer than asked for.
func runWrk(ctx context.Context, ns *testbed.Namespace, spec wrkSpec) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, spec.Duration+wrkGrace)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := ns.Command(ctx, "wrk", spec.args()...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		return wrkResult{}, fmt.Errorf("%s: %w: %s", commandLine(append([]string{"wrk"}, spec.args()...)), err, tail(stderr.String()+stdout.String(), 500))
	}
	res, err := parseWrk(stdout.String())
	if err != nil {
		return wrkResult{}, fmt.Errorf("%s: %w\n%s", commandLine(append([]string{"wrk"}, spec.args()...)), err, tail(stdout.String(), 2000))
	}
	// ip netns exec execs wrk, so the process is wrk's.
	res.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return res, nil
}

var (
	wrkRequestsRe   = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkReqPerSecRe  = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)\s*$`)
	wrkPercentileRe = regexp.MustCompile(`(?m)^\s+(\d+(?:\.\d+)?)%\s+([0-9.]+)([a-z]+)\s*$`)
	wrkSocketErrRe  = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$`)
	wrkNon2xxRe     = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: (\d+)\s*$`)
)

// parseWrk reads wrk's text report (run with --latency).
func parseWrk(out string) (wrkResult, error) {
	var res wrkResult
	m := wrkReqPerSecRe.FindStringSubmatch(out)
	if m == nil {
		return res, errors.New(`no "Requests/sec:" line in wrk output`)
	}
	var err error
	if res.ReqPerSec, err = strconv.ParseFloat(m[1], 64); err != nil {
		return res, fmt.Errorf("Requests/sec %q: %w", m[1], err)
	}
	if m := wrkRequestsRe.FindStringSubmatch(out); m != nil {
		if res.Requests, err = strconv.ParseInt(m[1], 10, 64); err != nil {
			return res, fmt.Errorf("request count %q: %w", m[1], err)
		}
	}

	percentiles := map[string]*time.Duration{"50": &res.P50, "99": &res.P99}
	for _, m := range wrkPercentileRe.FindAllStringSubmatch(out, -1) {
		dst, ok := percentiles[m[1]]
		if !ok {
			continue
		}
		d, err := parseWrkDuration(m[2], m[3])
		if err != nil {
			return res, fmt.Errorf("%s%% latency: %w", m[1], err)
		}
		*dst = d
		delete(percentiles, m[1])
	}
	if len(percentiles) != 0 {
		return res, errors.New("no 50%/99% lines in wrk's latency distribution (was --latency given?)")
	}

	if m := wrkSocketErrRe.FindStringSubmatch(out); m != nil {
		for i, dst := range []*int64{&res.Errors.Connect, &res.Errors.Read, &res.Errors.Write, &res.Errors.Timeout} {
			if *dst, err = strconv.ParseInt(m[i+1], 10, 64); err != nil {
				return res, fmt.Errorf("socket errors: %w", err)
			}
		}
	}
	if m := wrkNon2xxRe.FindStringSubmatch(out); m != nil {
		if res.Errors.Non2xx, err = strconv.ParseInt(m[1], 10, 64); err != nil {
			return res, fmt.Errorf("non-2xx responses: %w", err)
		}
	}
	return res, nil
}

// wrkTimeUnits are the units wrk prints latencies in (units.c: time units
// start at microseconds).
var wrkTimeUnits = map[string]time.Duration{
	"us": time.Microsecond,
	"ms": time.Millisecond,
	"s":  time.Second,
	"m":  time.Minute,
	"h":  time.Hour,
}

func parseWrkDuration(value, unit string) (time.Duration, error) {
	scale, ok := wrkTimeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("unknown time unit %q in %q", unit, value+unit)
	}
	v, err := strconv.ParseFloat(value, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", value+unit, err)
	}
	return time.Duration(v * float64(scale)), nil
}

// tail returns at most the last n bytes of s, trimmed.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
