package main

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Report sections on what happened around the runs: XDP counters, CPU,
// interface and TCP/IP counters.

func (r *report) writeRautaCounters(b *strings.Builder) {
	var rows []string
	for _, st := range styles {
		t := r.Tallies[runKey{modeRauta, st}]
		if t == nil {
			continue
		}
		for _, k := range slices.Sorted(maps.Keys(t.XDP)) {
			rows = append(rows, fmt.Sprintf("| %s | %d | `%s` | %d | %s |", st, t.Requests, k, t.XDP[k], perRequest(t.XDP[k], t.Requests)))
		}
		if runs := t.XDP[progRunCount]; runs > 0 {
			rows = append(rows, fmt.Sprintf("| %s | %d | **mean program run time** | %.0f ns | |", st, t.Requests, float64(t.XDP[progRunTimeNs])/float64(runs)))
		}
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("## XDP counters during the rauta-l4 runs\n\n")
	b.WriteString("Summed over rounds, warm-up runs included (the check request before them is not). Packets passed to the kernel or dropped did not take the fast path.\n\n")
	b.WriteString("| style | requests | counter | value | per request |\n|---|---:|---|---:|---:|\n")
	b.WriteString(strings.Join(rows, "\n") + "\n\n")
}

// writeProcCounters shows what the rauta process counted during the
// slow-path modes' runs: XDP handing the connections off, TC, the proxy.
func (r *report) writeProcCounters(b *strings.Builder) {
	var rows []string
	for _, m := range r.Modes {
		if !isProcMode(m.Name) {
			continue
		}
		for _, st := range styles {
			t := r.Tallies[runKey{m.Name, st}]
			if t == nil {
				continue
			}
			for _, k := range slices.Sorted(maps.Keys(t.XDP)) {
				rows = append(rows, fmt.Sprintf("| %s | %s | %d | `%s` | %d | %s |", m.Name, st, t.Requests, k, t.XDP[k], perRequest(t.XDP[k], t.Requests)))
			}
		}
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("## rauta counters during the slow-path runs\n\n")
	b.WriteString("From the rauta process's metrics, summed over rounds, warm-up runs included (the check request before them is not). `xdp_slowpath_connections` are the connections XDP handed to the slow path, `slowpath_requests` what the proxy answered. nginx-proxy-xdp is not rauta's traffic: its packets show as `xdp_passed_packets` (reason not_service).\n\n")
	b.WriteString("| mode | style | requests | counter | value | per request |\n|---|---|---:|---|---:|---:|\n")
	b.WriteString(strings.Join(rows, "\n") + "\n\n")
}

// writeSystem shows the interface and TCP/IP counters of each mode, per
// request, so paths and losses can be compared across modes.
func (r *report) writeSystem(b *strings.Builder) {
	var cols []runKey
	keys := map[string]bool{}
	for _, m := range r.Modes {
		for _, st := range styles {
			k := runKey{m.Name, st}
			t := r.Tallies[k]
			if t == nil || t.Requests == 0 {
				continue
			}
			cols = append(cols, k)
			for c := range t.System {
				if !strings.HasPrefix(c, "cpu ") {
					keys[c] = true
				}
			}
		}
	}
	if len(cols) == 0 {
		return
	}
	b.WriteString("## CPU\n\n")
	b.WriteString("The whole machine's CPU time while each mode ran (warm-up included): client, LB and origin share the CPUs, so this is the cost of the entire request path, plus anything else that was running. ")
	b.WriteString("It is then split by who was charged for it: the processes in the LB's namespace (the proxy of nginx-proxy, haproxy and the slow-path modes; rauta-l4 and rauta-http have none, their daemon runs in the bench), the origin's, wrk, and the rest (kernel threads, the bench). ")
	b.WriteString("A process's time includes the softirq work that ran on its threads: on veth a packet's receive path, XDP and TC included, runs in the softirq of the thread that sent it, so the LB's receive cost shows up in the client's and the origin's columns.\n\n")
	b.WriteString("| mode | style | CPU busy | softirq share of busy | CPU µs per request | LB processes | origin | client (wrk) | rest |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range cols {
		t := r.Tallies[c]
		busy, total, softirq := t.System[cpuBusy], t.System[cpuTotal], t.System[cpuSoftirq]
		if total == 0 || busy == 0 {
			continue
		}
		perReq := func(ticks uint64) float64 {
			return float64(ticks) * float64(time.Second/userHZ) / float64(time.Microsecond) / float64(t.Requests)
		}
		lb, origin, client := t.System[cpuLB], t.System[cpuOrigin], t.System[cpuClient]
		rest := busy - min(busy, lb+origin+client)
		fmt.Fprintf(b, "| %s | %s | %.0f%% | %.0f%% | %.1f | %.1f | %.1f | %.1f | %.1f |\n", c.Mode, c.Style,
			100*float64(busy)/float64(total), 100*float64(softirq)/float64(busy),
			perReq(busy), perReq(lb), perReq(origin), perReq(client), perReq(rest))
	}
	b.WriteString("\n## Packet path and loss counters, per request\n\n")
	b.WriteString("Deltas over each mode's runs (warm-up included) divided by its requests: `ip -s link` errors/drops and `ethtool -S` XDP counters of the interfaces on the path (client eth0, LB eth1/eth2, switch ports lb/b1, backend eth0), and TCP/IP counters of the client, LB and backend namespaces. Counters that stayed zero everywhere are left out.\n\n")
	b.WriteString("| counter |")
	for _, c := range cols {
		fmt.Fprintf(b, " %s %s |", c.Mode, c.Style)
	}
	b.WriteString("\n|---|" + strings.Repeat("---:|", len(cols)) + "\n| requests |")
	for _, c := range cols {
		fmt.Fprintf(b, " %d |", r.Tallies[c].Requests)
	}
	b.WriteString("\n")
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		fmt.Fprintf(b, "| %s |", k)
		for _, c := range cols {
			t := r.Tallies[c]
			fmt.Fprintf(b, " %s |", perRequest(t.System[k], t.Requests))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
}

// perRequest prints v/requests with three significant digits.
func perRequest(v uint64, requests int64) string {
	switch {
	case requests <= 0:
		return "–"
	case v == 0:
		return "0"
	}
	return strconv.FormatFloat(float64(v)/float64(requests), 'g', 3, 64)
}
