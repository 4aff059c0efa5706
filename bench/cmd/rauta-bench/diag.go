package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rauta-lb/rauta/tools/testbed"
)

// Diagnostics: counters of the testbed's interfaces and TCP/IP stacks,
// snapshotted around each mode's runs so the report can show where packets
// went (kernel forwarding or not) and where they were lost.

// diagTimeout bounds one snapshot (a few ip/ethtool runs).
const diagTimeout = 10 * time.Second

// snapshot maps "namespace role/interface counter" or "role proto counter"
// to a value.
type snapshot map[string]uint64

// nsIfaces are the interfaces on the packets' path, by namespace role.
// The switch port names are the testbed's ("lb" faces the LB's eth2, "b1"
// backend 1).
func nsIfaces(tb *testbed.Testbed) []struct {
	role   string
	ns     *testbed.Namespace
	ifaces []string
} {
	return []struct {
		role   string
		ns     *testbed.Namespace
		ifaces []string
	}{
		{"client", tb.Client, []string{"eth0"}},
		{"lb", tb.LB, []string{tb.LBClientIface, tb.LBBackendIface}},
		{"switch", tb.Switch, []string{"lb", "b1"}},
		{"backend", tb.Backends[0], []string{"eth0"}},
	}
}

// stackCounters are the /proc/net/{snmp,netstat} counters worth watching:
// kernel forwarding, and the signs of loss (retransmits, resets, overflows).
var stackCounters = map[string][]string{
	"Ip":     {"ForwDatagrams", "InDiscards", "OutDiscards"},
	"Tcp":    {"RetransSegs", "AttemptFails", "EstabResets", "InErrs", "OutRsts"},
	"TcpExt": {"TCPSynRetrans", "TCPTimeouts", "ListenOverflows", "ListenDrops", "TCPBacklogDrop", "TW", "TCPTimeWaitOverflow", "PAWSTimewait", "PAWSEstab"},
}

// takeSnapshot reads the counters of every namespace on the path.
func takeSnapshot(ctx context.Context, tb *testbed.Testbed) (snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, diagTimeout)
	defer cancel()
	s := snapshot{}
	if err := s.readCPU(); err != nil {
		return nil, err
	}
	roles, err := processRoles(tb)
	if err != nil {
		return nil, err
	}
	s.readProcessCPU(roles)
	for _, n := range nsIfaces(tb) {
		if err := s.readLinks(ctx, n.role, n.ns, n.ifaces); err != nil {
			return nil, err
		}
		for _, iface := range n.ifaces {
			if err := s.readEthtool(ctx, n.role, n.ns, iface); err != nil {
				return nil, err
			}
		}
		if n.role == "switch" {
			continue // a bridge: no IP traffic of its own
		}
		if err := s.readStack(n.role, n.ns); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// readLinks takes rx/tx errors and drops from `ip -s -j link`.
func (s snapshot) readLinks(ctx context.Context, role string, ns *testbed.Namespace, ifaces []string) error {
	out, err := ns.Command(ctx, "ip", "-s", "-j", "link", "show").Output()
	if err != nil {
		return fmt.Errorf("ip -s link in %s: %w", ns.Name, err)
	}
	var links []struct {
		Name    string `json:"ifname"`
		Stats64 struct {
			RX map[string]uint64 `json:"rx"`
			TX map[string]uint64 `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return fmt.Errorf("ip -s -j link in %s: %w", ns.Name, err)
	}
	want := map[string]bool{}
	for _, i := range ifaces {
		want[i] = true
	}
	for _, l := range links {
		if !want[l.Name] {
			continue
		}
		prefix := role + "/" + l.Name + " "
		s[prefix+"rx_packets"] = l.Stats64.RX["packets"]
		s[prefix+"tx_packets"] = l.Stats64.TX["packets"]
		for _, k := range []string{"errors", "dropped"} {
			s[prefix+"rx_"+k] = l.Stats64.RX[k]
			s[prefix+"tx_"+k] = l.Stats64.TX[k]
		}
	}
	return nil
}

// readEthtool takes the veth driver's XDP counters (`ethtool -S`): what XDP
// redirected or transmitted, and its drops and errors.
func (s snapshot) readEthtool(ctx context.Context, role string, ns *testbed.Namespace, iface string) error {
	out, err := ns.Command(ctx, "ethtool", "-S", iface).Output()
	if err != nil {
		return fmt.Errorf("ethtool -S %s in %s: %w", iface, ns.Name, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok || !strings.Contains(name, "xdp") {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(value), 10, 64)
		if err != nil {
			continue
		}
		s[role+"/"+iface+" "+name] = v
	}
	return nil
}

// readStack reads the namespace's TCP/IP counters. /proc/thread-self/net
// is the calling thread's namespace, which Do switches.
func (s snapshot) readStack(role string, ns *testbed.Namespace) error {
	return ns.Do(func() error {
		for _, file := range []string{"/proc/thread-self/net/snmp", "/proc/thread-self/net/netstat"} {
			b, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			for proto, counters := range parseProcNet(string(b)) {
				for _, name := range stackCounters[proto] {
					if v, ok := counters[name]; ok {
						s[role+" "+proto+" "+name] = v
					}
				}
			}
		}
		return nil
	})
}

// CPU time keys: jiffies summed over all CPUs, from /proc/stat.
const (
	cpuBusy    = "cpu busy"
	cpuSoftirq = "cpu softirq"
	cpuTotal   = "cpu total"
)

// Process CPU keys: clock ticks (USER_HZ) of user and system time. The
// LB's and the origin's are those of the processes in their namespaces;
// the client's, wrk's own (it exits before the snapshot after its run).
// Without CONFIG_IRQ_TIME_ACCOUNTING (this machine's kernel) a tick taken
// in softirq is also charged to the thread it interrupted: on veth, the
// receive path of a packet, XDP included, runs in its sender's softirq.
const (
	cpuLB     = "cpu processes lb"
	cpuOrigin = "cpu processes origin"
	cpuClient = "cpu processes client"
)

// processRoles maps a network namespace, as /proc/[pid]/ns/net names it,
// to the process CPU key of the processes in it.
func processRoles(tb *testbed.Testbed) (map[string]string, error) {
	roles := map[string]string{}
	add := func(ns *testbed.Namespace, key string) error {
		return ns.Do(func() error {
			id, err := os.Readlink("/proc/thread-self/ns/net")
			if err != nil {
				return fmt.Errorf("network namespace %s: %w", ns.Name, err)
			}
			roles[id] = key
			return nil
		})
	}
	if err := add(tb.LB, cpuLB); err != nil {
		return nil, err
	}
	for _, b := range tb.Backends {
		if err := add(b, cpuOrigin); err != nil {
			return nil, err
		}
	}
	return roles, nil
}

// readProcessCPU adds up the CPU time of the processes in each role's
// namespace. Processes that vanish while it reads are skipped.
func (s snapshot) readProcessCPU(roles map[string]string) {
	links, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	for _, link := range links {
		id, err := os.Readlink(link)
		key, ok := roles[id]
		if err != nil || !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(link)), "stat"))
		if err != nil {
			continue
		}
		if pt, ok := parseProcStat(string(b)); ok {
			s[key] += pt.ticks
		}
	}
}

// durationTicks converts a CPU time to clock ticks (USER_HZ).
func durationTicks(d time.Duration) uint64 {
	return uint64(d / (time.Second / userHZ))
}

// readCPU takes the machine's CPU time: the whole machine, since client,
// LB and origin share it (and so does anything else running).
func (s snapshot) readCPU() error {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 8 || fields[0] != "cpu" {
		return fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	// user nice system idle iowait irq softirq steal ...
	var total, idle uint64
	for i, f := range fields[1:] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return fmt.Errorf("/proc/stat: %w", err)
		}
		if i >= 8 { // guest time is already in user
			break
		}
		total += v
		switch i {
		case 3, 4:
			idle += v
		case 6:
			s[cpuSoftirq] = v
		}
	}
	s[cpuTotal] = total
	s[cpuBusy] = total - idle
	return nil
}

// parseProcNet reads the "Proto: names" / "Proto: values" line pairs of
// /proc/net/snmp and /proc/net/netstat.
func parseProcNet(text string) map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		proto, names, ok1 := strings.Cut(lines[i], ":")
		proto2, values, ok2 := strings.Cut(lines[i+1], ":")
		if !ok1 || !ok2 || proto != proto2 {
			continue
		}
		n, v := strings.Fields(names), strings.Fields(values)
		m := map[string]uint64{}
		for j := range min(len(n), len(v)) {
			if x, err := strconv.ParseUint(v[j], 10, 64); err == nil {
				m[n[j]] = x
			}
		}
		out[proto] = m
	}
	return out
}

// delta returns after-before for the counters that changed.
func (s snapshot) delta(after snapshot) snapshot {
	out := snapshot{}
	for k, v := range after {
		if v > s[k] {
			out[k] = v - s[k]
		}
	}
	return out
}

// add adds every counter of d to s.
func (s snapshot) add(d snapshot) {
	for k, v := range d {
		s[k] += v
	}
}
