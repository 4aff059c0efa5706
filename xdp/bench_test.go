package xdp_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/rauta-lb/rauta/loader"
)

// BenchmarkXDP reports the program's cost per packet ("ns/pkt") on each
// path, as the kernel measures it in BPF_PROG_TEST_RUN.
//
// Why not Repeat: test-run executes the program Repeat times on the same
// buffer without restoring it, so from the second run on a translating path
// sees its own output (a DNATed SYN is then client → backend, which is not
// for us: the repeat would time the pass path). And Program.Benchmark cannot
// pass an xdp_md, so bpf_fib_lookup would see the namespace's loopback as
// the ingress device. So every packet here is one BPF_PROG_TEST_RUN with
// repeat=1, fresh data and the real ingress ifindex, issued directly (the
// kernel's duration is not returned by Program.Run), and ns/pkt is the mean
// of the kernel-measured durations. That includes the test-run harness's
// fixed cost (a ktime read, BH disable/enable), which "baseline/noop", a
// program that only returns XDP_PASS, shows. Go's ns/op is wall time per
// packet, dominated by the syscall and data copies.
//
// Paths:
//
//	established/to-backend  ACK with payload client → VIP:80, flow-table hit, DNAT, FIB, redirect
//	established/to-client   reply backend → client, reverse-flow hit, SNAT, FIB, redirect
//	new-flow/to-backend     SYN from a tuple never seen before (every packet), Maglev pick,
//	                        two flow-table inserts, DNAT, FIB, redirect
//	icmp/frag-needed        frag-needed to the VIP about an open flow, translated to the backend
//	drop/fragment-to-vip    fragment addressed to the VIP
//	pass/non-vip            TCP to a non-VIP address, handed to the kernel untouched
//	baseline/noop           return XDP_PASS, nothing else
func BenchmarkXDP(b *testing.B) {
	e := newEnv(b)
	be := e.connect(b, 40000)

	established := tcpPkt(clientMAC, eth1MAC, clientPort(40000), vipWeb, tcpFlags{ACK: true, PSH: true}).frame()
	reply := tcpPkt(macOf(be.Addr()), eth2MAC, be, clientPort(40000), tcpFlags{ACK: true, PSH: true}).frame()
	toClient := tcpPkt(eth1MAC, clientMAC, vipWeb, clientPort(40000), ack)
	toClient.ttl = 63
	fragNeeded := icmpErr{srcMAC: gatewayMAC, dstMAC: eth1MAC, src: clientGW, dst: vip, ttl: 64,
		typ: 3, code: 4, mtu: 1400, quote: quoteOf(toClient)}.frame()
	frag := tcpPkt(clientMAC, eth1MAC, clientPort(40001), vipWeb, ack)
	frag.fragFlags = layers.IPv4MoreFragments
	fragment := frag.frame()
	nonVIP := tcpPkt(clientMAC, eth1MAC, clientPort(40000), netip.AddrPortFrom(otherHost, 80), ack).frame()

	// Unique tuples for new flows, across the runs the benchmark framework
	// makes (b.N=1 first): source 172.16.x.y, any port.
	var nextTuple uint32
	syn := synFrom(40000).frame()
	newFlow := func(int) []byte {
		n := nextTuple
		nextTuple++
		ip := syn[ethHlen:]
		binary.BigEndian.PutUint32(ip[12:16], 0xac100000|n>>16) // 172.16.0.0 + n/65536
		binary.BigEndian.PutUint16(ip[20:22], uint16(n))
		fixIPChecksum(ip)
		fixTCPChecksum(ip)
		return syn
	}
	same := func(f []byte) func(int) []byte { return func(int) []byte { return f } }

	noop, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		b.Fatalf("load noop program: %v", err)
	}
	b.Cleanup(func() { noop.Close() })

	prog := e.objs.RautaXdp
	for _, c := range []struct {
		name  string
		prog  *ebpf.Program
		in    iface
		want  uint32
		frame func(int) []byte
	}{
		{"established/to-backend", prog, e.eth1, xdpRedirect, same(established)},
		{"established/to-client", prog, e.eth2, xdpRedirect, same(reply)},
		{"new-flow/to-backend", prog, e.eth1, xdpRedirect, newFlow},
		{"icmp/frag-needed", prog, e.eth1, xdpRedirect, same(fragNeeded)},
		{"drop/fragment-to-vip", prog, e.eth1, xdpDrop, same(fragment)},
		{"pass/non-vip", prog, e.eth1, xdpPass, same(nonVIP)},
		{"baseline/noop", noop, e.eth1, xdpPass, same(nonVIP)},
	} {
		b.Run(c.name, func(b *testing.B) {
			e.bench(b, c.prog, c.in, c.want, c.frame)
		})
	}
	// The new-flow path really made a flow per packet.
	if _, ok := e.flow(b, flowKey(loader.ProtoTCP,
		netip.AddrPortFrom(netip.AddrFrom4([4]byte{172, 16, byte((nextTuple - 1) >> 24), byte((nextTuple - 1) >> 16)}), uint16(nextTuple-1)),
		vipWeb)); !ok && nextTuple > 0 {
		b.Error("the last new-flow packet left no flow")
	}
}

// bench runs frame(i) through prog once per iteration on the namespace's
// thread and reports the mean kernel-measured run time as ns/pkt.
func (e *env) bench(b *testing.B, prog *ebpf.Program, in iface, want uint32, frame func(int) []byte) {
	var total time.Duration
	err := e.w.do(func() error {
		ctx := new(xdpMd)
		ctx.IngressIfindex = uint32(in.index)
		for i := range b.N {
			data := frame(i)
			ctx.DataEnd = uint32(len(data))
			v, d, err := timedRun(prog.FD(), data, ctx)
			if err != nil {
				return fmt.Errorf("run %d: %w", i, err)
			}
			if v != want {
				return fmt.Errorf("run %d: verdict %s, want %s: not the path under test", i, verdictName(v), verdictName(want))
			}
			total += d
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/pkt")
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

// timedRun is one BPF_PROG_TEST_RUN (repeat 1) of data with the context
// ctx, returning the verdict and the kernel's measurement of the run.
func timedRun(fd int, data []byte, ctx *xdpMd) (uint32, time.Duration, error) {
	var pin runtime.Pinner
	pin.Pin(&data[0])
	pin.Pin(ctx)
	defer pin.Unpin()
	attr := progRunAttr{
		progFd:     uint32(fd),
		dataSizeIn: uint32(len(data)),
		dataIn:     uint64(uintptr(unsafe.Pointer(&data[0]))),
		repeat:     1,
		ctxSizeIn:  uint32(unsafe.Sizeof(*ctx)),
		ctxIn:      uint64(uintptr(unsafe.Pointer(ctx))),
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		switch errno {
		case 0:
			return attr.retval, time.Duration(attr.duration), nil
		case unix.EINTR:
			continue
		default:
			return 0, 0, errno
		}
	}
}

func fixTCPChecksum(ip []byte) {
	ihl := int(ip[0]&0xf) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:4]))
	l4 := ip[ihl:tot]
	l4[16], l4[17] = 0, 0
	binary.BigEndian.PutUint16(l4[16:], ^fold(sum16(l4, pseudoSum(ip, loader.ProtoTCP, len(l4)))))
}
