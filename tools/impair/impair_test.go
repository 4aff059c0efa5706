package impair

import (
	"encoding/binary"
	"math"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

const (
	xdpDrop        = 1
	xdpPass        = 2
	tcxNext        = math.MaxUint32 // -1
	tcActRedirect  = 7
	ethHeaderBytes = 14
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs")
	}
}

// tcpFrame is Ethernet + IPv4 + TCP (no options) + payload.
func tcpFrame(payload int) []byte {
	f := make([]byte, ethHeaderBytes+20+20+payload)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[ethHeaderBytes:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(40+payload))
	ip[8] = 64
	ip[9] = 6 // TCP
	copy(ip[12:], []byte{10, 0, 2, 2, 10, 0, 0, 100})
	for i := range payload {
		f[ethHeaderBytes+40+i] = byte(i)
	}
	return f
}

func arpFrame() []byte {
	f := make([]byte, 60)
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	return f
}

func loadT(t *testing.T, cfg Config) *bpfObjects {
	t.Helper()
	requireRoot(t)
	objs, err := load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { objs.Close() })
	return objs
}

// total adds both directions' counters.
func counters(t *testing.T, objs *bpfObjects) Counters {
	t.Helper()
	s, err := readStats(objs.Counters)
	if err != nil {
		t.Fatal(err)
	}
	in, out := s.Ingress, s.Egress
	return Counters{
		Seen: in.Seen + out.Seen, Passed: in.Passed + out.Passed, Dropped: in.Dropped + out.Dropped,
		Delayed: in.Delayed + out.Delayed, Reordered: in.Reordered + out.Reordered,
	}
}

func run(t *testing.T, p *ebpf.Program, data []byte, repeat uint32) uint32 {
	t.Helper()
	ret, err := p.Run(&ebpf.RunOptions{Data: data, Repeat: repeat})
	if err != nil {
		t.Fatal(err)
	}
	return ret
}

func TestLossAlwaysDrops(t *testing.T) {
	objs := loadT(t, Config{Loss: 1})
	if got := run(t, objs.ImpairXdp, tcpFrame(100), 1); got != xdpDrop {
		t.Errorf("XDP verdict %d, want XDP_DROP", got)
	}
	// On egress, a loss is a redirect to no interface: freed, but reported
	// as sent (see impair.c).
	if got := run(t, objs.ImpairTc, tcpFrame(100), 1); got != tcActRedirect {
		t.Errorf("TC verdict %d, want TC_ACT_REDIRECT", got)
	}
	if c := counters(t, objs); c.Dropped != 2 || c.Seen != 2 {
		t.Errorf("counters %v, want 2 seen, 2 dropped", c)
	}
}

func TestOnlyIPv4TCPIsImpaired(t *testing.T) {
	objs := loadT(t, Config{Loss: 1})
	if got := run(t, objs.ImpairXdp, arpFrame(), 1); got != xdpPass {
		t.Errorf("XDP verdict on ARP %d, want XDP_PASS", got)
	}
	if got := run(t, objs.ImpairTc, arpFrame(), 1); got != tcxNext {
		t.Errorf("TC verdict on ARP %d, want TCX_NEXT", got)
	}
	if c := counters(t, objs); c.Seen != 0 {
		t.Errorf("counters %v, want nothing seen", c)
	}
}

func TestZeroConfigPasses(t *testing.T) {
	objs := loadT(t, Config{})
	if got := run(t, objs.ImpairXdp, tcpFrame(100), 1); got != xdpPass {
		t.Errorf("XDP verdict %d, want XDP_PASS", got)
	}
	if got := run(t, objs.ImpairTc, tcpFrame(100), 1); got != tcxNext {
		t.Errorf("TC verdict %d, want TCX_NEXT", got)
	}
	if c := counters(t, objs); c.Passed != 2 {
		t.Errorf("counters %v, want 2 passed", c)
	}
}

func TestDirections(t *testing.T) {
	objs := loadT(t, Config{Loss: 1, Egress: true})
	if got := run(t, objs.ImpairXdp, tcpFrame(100), 1); got != xdpPass {
		t.Errorf("egress-only: XDP verdict %d, want XDP_PASS", got)
	}
	objs = loadT(t, Config{Loss: 1, Ingress: true})
	if got := run(t, objs.ImpairTc, tcpFrame(100), 1); got != tcxNext {
		t.Errorf("ingress-only: TC verdict %d, want TCX_NEXT", got)
	}
}

// The loss rate is what was asked for (4,000 tries at 25%: 1,000 ± 6σ).
func TestLossRate(t *testing.T) {
	objs := loadT(t, Config{Loss: 0.25})
	run(t, objs.ImpairXdp, tcpFrame(100), 4000)
	c := counters(t, objs)
	if c.Seen != 4000 || c.Dropped < 835 || c.Dropped > 1165 {
		t.Errorf("counters %v, want ~1000 of 4000 dropped", c)
	}
}

// A delayed frame goes to the ring buffer whole, with its due time, and is
// taken away (XDP_DROP; on egress the redirect to nowhere).
func TestDelayQueuesTheFrame(t *testing.T) {
	objs := loadT(t, Config{Delay: 5 * time.Millisecond, Reorder: 1, ReorderDelay: 20 * time.Millisecond})
	rd, err := ringbuf.NewReader(objs.Delayed)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	in := tcpFrame(1000)
	before := monotonic()
	if got := run(t, objs.ImpairXdp, in, 1); got != xdpDrop {
		t.Fatalf("XDP verdict %d, want XDP_DROP (queued)", got)
	}
	if got := run(t, objs.ImpairTc, in, 1); got != tcActRedirect {
		t.Fatalf("TC verdict %d, want TC_ACT_REDIRECT (queued)", got)
	}
	after := monotonic()
	for _, wantDir := range []bpfImpairDir{bpfImpairDirIMPAIR_DIR_INGRESS, bpfImpairDirIMPAIR_DIR_EGRESS} {
		rd.SetDeadline(time.Now().Add(time.Second))
		rec, err := rd.Read()
		if err != nil {
			t.Fatal(err)
		}
		raw := rec.RawSample
		due := int64(binary.NativeEndian.Uint64(raw))
		n := binary.NativeEndian.Uint32(raw[8:])
		dir := bpfImpairDir(binary.NativeEndian.Uint32(raw[12:]))
		if dir != wantDir {
			t.Errorf("direction %d, want %d", dir, wantDir)
		}
		if int(n) != len(in) || string(raw[frameHeader:frameHeader+int(n)]) != string(in) {
			t.Errorf("queued frame (%d bytes) differs from the packet (%d bytes)", n, len(in))
		}
		const d = int64(25 * time.Millisecond)
		if due < before+d || due > after+d {
			t.Errorf("due %d, want now+25ms in [%d, %d]", due, before+d, after+d)
		}
	}
	if c := counters(t, objs); c.Delayed != 2 || c.Reordered != 2 {
		t.Errorf("counters %v, want 2 delayed and reordered", c)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{{Loss: -0.1}, {Loss: 1.5}, {Reorder: math.NaN()}, {Delay: -1}} {
		if err := c.validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if _, err := load(Config{Loss: 2}); err == nil {
		t.Error("load accepted Loss 2")
	}
}

// A checksum the stack left partial (pseudo-header sum only) comes out
// complete; a complete one is unchanged.
func TestCompleteTCPChecksum(t *testing.T) {
	for _, payload := range []int{0, 1, 1000} {
		f := tcpFrame(payload)
		ip := f[ethHeaderBytes:]
		tcp := ip[20:]
		binary.BigEndian.PutUint16(tcp[0:], 35938)
		binary.BigEndian.PutUint16(tcp[2:], 80)
		binary.BigEndian.PutUint32(tcp[4:], 0xdeadbeef)
		tcp[12] = 5 << 4
		tcp[13] = 0x10
		binary.BigEndian.PutUint16(tcp[16:], 0x1680)
		completeTCPChecksum(f)
		// Verify the RFC 1071 way: the sum over pseudo-header and segment,
		// checksum included, is all ones.
		sum := uint32(6 + len(tcp))
		for i := 12; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		padded := append(append([]byte(nil), tcp...), 0)
		for i := 0; i+1 < len(padded); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(padded[i:]))
		}
		for sum>>16 != 0 {
			sum = sum&0xffff + sum>>16
		}
		if sum != 0xffff {
			t.Errorf("payload %d: checksum %#04x does not verify (sum %#04x)", payload, binary.BigEndian.Uint16(tcp[16:]), sum)
		}
		want := binary.BigEndian.Uint16(tcp[16:])
		completeTCPChecksum(f)
		if got := binary.BigEndian.Uint16(tcp[16:]); got != want {
			t.Errorf("payload %d: complete checksum %#04x changed to %#04x", payload, want, got)
		}
	}
}
