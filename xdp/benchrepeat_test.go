package xdp_test

// The machinery of BenchmarkXDP: timed test runs with repeat, and the checks
// that every repeated run stayed on the path being measured.

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rauta-lb/rauta/xdp"
)

// dispatch attaches each program (generic mode) to an interface of its own
// in the test namespace, down, so that no packet ever reaches it.
// Attaching puts a program into the kernel's XDP dispatcher, where it stays
// while attached, as a driver-attached program is in production: its runs
// are direct calls rather than retpolined indirect ones. It also makes
// repeated test runs affordable: a test run with repeat > 1 adds the
// program to the dispatcher and removes it afterwards, each change costing
// a synchronize_rcu (~30 ms per syscall here), unless the program is
// already in it.
func (e *env) dispatch(b testing.TB, progs ...*ebpf.Program) {
	var links []link.Link
	b.Cleanup(func() {
		for _, l := range links {
			l.Close()
		}
	})
	if err := e.w.Do(func() error {
		h, err := netlink.NewHandleAt(e.w.NS)
		if err != nil {
			return err
		}
		defer h.Close()
		for i, p := range progs {
			// No dummy driver in every kernel: half a veth pair will do.
			name := fmt.Sprintf("xdpdisp%d", i)
			if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				return fmt.Errorf("add %s: %w", name, err)
			}
			l, err := h.LinkByName(name)
			if err != nil {
				return err
			}
			xl, err := link.AttachXDP(link.XDPOptions{Program: p, Interface: l.Attrs().Index, Flags: link.XDPGenericMode})
			if err != nil {
				return fmt.Errorf("attach to %s: %w", name, err)
			}
			links = append(links, xl)
		}
		return nil
	}); err != nil {
		b.Fatalf("dispatcher: %v", err)
	}
}

// benchRepeat is R, the runs per test-run syscall on repeatable paths. The
// self-mapped paths start at TTL 255 and drop at TTL 1: R must stay below 254.
const benchRepeat = 200

// benchPath is one sub-benchmark of BenchmarkXDP.
type benchPath struct {
	name   string
	prog   *ebpf.Program
	in     iface // ingress interface
	want   uint32
	repeat uint32 // program runs per test-run syscall
	frame  func() []byte
	// check verifies the output of one syscall (repeat runs) for its input.
	check func(in, out []byte, repeat uint32) error
	// counts is the counter movement n runs must cause, exactly.
	counts func(n uint64) delta
	// minus, when set, runs (repeat 1) after every syscall on the same
	// input and its time is subtracted.
	minus *ebpf.Program
	// setup, when set, runs before each measurement (untimed).
	setup func(testing.TB)
}

// bench runs p until at least b.N packets went through it, in syscalls of
// p.repeat runs on the namespace's thread, reports the mean kernel-measured
// time per run as ns/pkt and verifies that every run stayed on the path.
func (e *env) bench(b *testing.B, p benchPath, ids []uint32) {
	if p.setup != nil {
		p.setup(b)
	}
	ctx := &xdpMd{IngressIfindex: uint32(p.in.index)}
	buf := make([]byte, 2048)
	// One untimed syscall first, so that a short benchmark (-benchtime
	// 200x is a single syscall) does not time cold caches only.
	if err := e.w.Do(func() error {
		data := p.frame()
		ctx.DataEnd = uint32(len(data))
		v, _, _, err := timedRun(p.prog.FD(), data, nil, ctx, p.repeat)
		if err == nil && v != p.want {
			err = fmt.Errorf("verdict %s, want %s: not the path under test", verdictName(v), verdictName(p.want))
		}
		return err
	}); err != nil && !errors.Is(err, unix.EINTR) {
		b.Fatalf("warm-up: %v", err)
	}
	before := e.counters(b, ids...)
	var runs, total, minus, interrupted uint64
	err := e.w.Do(func() error {
		for runs < uint64(b.N) {
			data := p.frame()
			ctx.DataEnd = uint32(len(data))
			v, dur, out, err := timedRun(p.prog.FD(), data, buf, ctx, p.repeat)
			if errors.Is(err, unix.EINTR) {
				interrupted++ // 0 to repeat runs happened, untimed
				continue
			}
			if err != nil {
				return fmt.Errorf("run %d: %w", runs, err)
			}
			if v != p.want {
				return fmt.Errorf("run %d: verdict %s, want %s: not the path under test", runs, verdictName(v), verdictName(p.want))
			}
			if err := p.check(data, out, p.repeat); err != nil {
				return fmt.Errorf("run %d: %w: not the path under test", runs, err)
			}
			runs += uint64(p.repeat)
			total += uint64(dur) * uint64(p.repeat)
			if p.minus != nil {
				v, dur, _, err := timedRun(p.minus.FD(), data, nil, ctx, 1)
				for errors.Is(err, unix.EINTR) { // counts nothing: just retry
					v, dur, _, err = timedRun(p.minus.FD(), data, nil, ctx, 1)
				}
				if err != nil {
					return fmt.Errorf("baseline run %d: %w", runs, err)
				}
				if v != xdpPass {
					return fmt.Errorf("baseline run %d: verdict %s", runs, verdictName(v))
				}
				minus += uint64(dur)
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	counted := runs
	if interrupted > 0 {
		// Interrupted syscalls ran the program an unknown number of
		// times: take that number from one of the path's counters, within
		// what the interruptions allow, and check the rest against it.
		counted = e.countedRuns(b, before, p.counts(1), runs, runs+interrupted*uint64(p.repeat))
	}
	e.expectCounters(b, before, p.counts(counted))
	b.ReportMetric((float64(total)-float64(minus))/float64(runs), "ns/pkt")
}

// countedRuns returns how many runs a path's counters (perRun: their
// movement for one run) show since before, failing the benchmark unless it
// lies within [lo, hi].
func (e *env) countedRuns(b *testing.B, before map[[2]uint32]uint64, perRun delta, lo, hi uint64) uint64 {
	for k, v := range perRun {
		if v != 1 {
			continue
		}
		n := e.counter(b, k[0], xdp.Counter(k[1])) - before[k]
		if n < lo || n > hi {
			b.Fatalf("service %d %s: +%d, want %d to %d runs", k[0], counterNames[xdp.Counter(k[1])], n, lo, hi)
		}
		return n
	}
	return lo // a path that counts nothing
}

// forwardedAs checks a forwarded output: sent from srcMAC to dstMAC (nil:
// any neighbour), TTL lowered once per run, valid checksums, and otherwise
// (with TTL and IP checksum set aside) the input, since a repeatable path
// translates to the addresses the packet already carries.
func forwardedAs(srcMAC, dstMAC net.HardwareAddr) func(in, out []byte, repeat uint32) error {
	return func(in, out []byte, repeat uint32) error {
		if len(out) != len(in) {
			return fmt.Errorf("output of %d bytes for %d", len(out), len(in))
		}
		if _, err := checkFrame(out); err != nil {
			return err
		}
		if !bytes.Equal(out[6:12], srcMAC) || (dstMAC != nil && !bytes.Equal(out[0:6], dstMAC)) {
			return fmt.Errorf("MACs %s → %s, want %s → %v", net.HardwareAddr(out[6:12]), net.HardwareAddr(out[0:6]), srcMAC, dstMAC)
		}
		const ttlOff, checkOff = ethHlen + 8, ethHlen + 10
		if got, want := uint32(out[ttlOff]), uint32(in[ttlOff])-repeat; got != want {
			return fmt.Errorf("TTL %d after %d runs from %d, want %d", got, repeat, in[ttlOff], want)
		}
		if repeat == 1 {
			return nil // a new flow is translated: addresses differ
		}
		a, z := bytes.Clone(in[ethHlen:]), bytes.Clone(out[ethHlen:])
		for _, f := range [][]byte{a, z} {
			f[8], f[10], f[11] = 0, 0, 0
		}
		if !bytes.Equal(a, z) {
			return errors.New("packet changed beyond TTL and IP checksum")
		}
		return nil
	}
}

// untouched checks that a pass or drop path left the frame as it was.
func untouched(in, out []byte, _ uint32) error {
	if !bytes.Equal(in, out) {
		return errors.New("frame modified")
	}
	return nil
}

// progRunAttr is the BPF_PROG_TEST_RUN part of union bpf_attr.
type progRunAttr struct {
	progFd      uint32
	retval      uint32
	dataSizeIn  uint32
	dataSizeOut uint32
	dataIn      uint64
	dataOut     uint64
	repeat      uint32
	duration    uint32
	ctxSizeIn   uint32
	ctxSizeOut  uint32
	ctxIn       uint64
	ctxOut      uint64
	flags       uint32
	cpu         uint32
	batchSize   uint32
	_           uint32
}

// timedRun is one BPF_PROG_TEST_RUN of data with the context ctx, the
// program run repeat times in a row on the same buffer. It returns the last
// run's verdict, the kernel's mean time per run (whole ns, rounded down)
// and, when out is given, the buffer after the last run (a prefix of out).
// Cilium's Program.Run does not return the duration, hence the raw syscall.
// EINTR (a signal arrived between two runs) is returned as is: an unknown
// number of runs happened, which the caller must account for.
func timedRun(fd int, data, out []byte, ctx *xdpMd, repeat uint32) (uint32, uint32, []byte, error) {
	var pin runtime.Pinner
	pin.Pin(&data[0])
	pin.Pin(ctx)
	defer pin.Unpin()
	attr := progRunAttr{
		progFd:     uint32(fd),
		dataSizeIn: uint32(len(data)),
		dataIn:     uint64(uintptr(unsafe.Pointer(&data[0]))),
		repeat:     repeat,
		ctxSizeIn:  uint32(unsafe.Sizeof(*ctx)),
		ctxIn:      uint64(uintptr(unsafe.Pointer(ctx))),
	}
	if len(out) > 0 {
		pin.Pin(&out[0])
		attr.dataOut = uint64(uintptr(unsafe.Pointer(&out[0])))
		attr.dataSizeOut = uint32(len(out))
	}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return 0, 0, nil, errno
	}
	if len(out) > 0 {
		out = out[:attr.dataSizeOut]
	}
	return attr.retval, attr.duration, out, nil
}

// loadNoop loads an XDP program that only returns XDP_PASS.
func loadNoop(b testing.TB) *ebpf.Program {
	noop, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		b.Fatalf("load noop program: %v", err)
	}
	b.Cleanup(func() { noop.Close() })
	return noop
}

// forgetFlows deletes every flow with an address in prefix at either end, so
// that each new-flow measurement starts from the same flow table instead of
// one filled (and, past each CPU's share of the LRU, evicting) by the runs
// before it.
func (e *env) forgetFlows(tb testing.TB, prefix netip.Prefix) {
	tb.Helper()
	var doomed []xdp.FlowKey
	var k xdp.FlowKey
	var f xdp.Flow
	it := e.objs.Flows.Iterate()
	for it.Next(&k, &f) {
		if prefix.Contains(xdp.AddrFrom(k.Saddr)) || prefix.Contains(xdp.AddrFrom(k.Daddr)) {
			doomed = append(doomed, k)
		}
	}
	if err := it.Err(); err != nil {
		tb.Fatalf("iterate flows: %v", err)
	}
	for _, k := range doomed {
		if err := e.objs.Flows.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			tb.Fatalf("delete flow: %v", err)
		}
	}
}
