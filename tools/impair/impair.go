// Package impair is a stand-in for `tc netem` on kernels built without
// sch_netem: it loses, delays, jitters and reorders the IPv4 TCP packets an
// interface receives and sends, so tests can push traffic through a lossy,
// slow, reordering link.
//
// # Why not netem, fq or EDT
//
// The kernel this project is developed on (6.18) has neither sch_netem nor
// sch_fq nor sch_etf (only pfifo, bfifo, htb, tbf and clsact), and no BPF
// qdisc. Without fq or etf, a BPF program can set skb->tstamp (EDT) but
// nothing honours it, and htb/tbf only shape a rate. No in-kernel facility
// left can hold a packet for a fixed time, so the delay line lives in user
// space:
//
//   - impair_xdp (XDP, the packets the interface receives) and impair_tc
//     (TCX egress, the packets it sends) decide per packet, in BPF, with
//     bpf_get_prandom_u32: lose it, pass it, or delay it by Delay, plus a
//     uniform [0, Jitter), plus ReorderDelay for a fraction Reorder of the
//     packets. A packet to delay is copied with its due time
//     (CLOCK_MONOTONIC) into a BPF ring buffer and taken away.
//   - This package reads the ring buffer, keeps the frames in a heap ordered
//     by due time and, when each is due, sends it out of the same interface
//     on an AF_PACKET socket whose SO_MARK tells impair_tc what it is: a
//     sent frame leaves as it is; a received frame is redirected to the
//     interface's ingress, where it meets the stack (XDP does not run again
//     for it). Frames given an extra delay overtake nothing but are
//     overtaken: that is the reordering.
//
// Received packets are impaired in XDP, not TC ingress, because a veth with
// GRO on (which the testbed needs) hands TC ingress packets already merged
// into 64 KB aggregates; XDP sees them one wire frame at a time. Packets
// larger than a 1500-byte MTU frame are not delayed and are counted as
// Oversize; the tests assert there are none. To keep locally sent TCP from
// building GSO aggregates on egress, Attach sets the interface's
// gso_max_segs to 1 while it is attached (netem sees aggregates whole; this
// impairs wire-sized packets, which is what loss and reordering are about).
//
// Lost and delayed packets leave TC egress by a redirect to ifindex 0: the
// kernel frees them and reports success to the sender, as netem does. A
// TC drop would report NET_XMIT_DROP, and a local TCP would just send the
// segment again immediately instead of seeing a loss.
package impair

import (
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/rauta-lb/rauta/percpu"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Marks carried by frames the delay line sends back through impair_tc.
const (
	reinjectIngressMark = 0x1a4a_0001
	reinjectEgressMark  = 0x1a4a_0002
)

// Config says how to impair. The zero value passes everything untouched.
type Config struct {
	// Loss is the probability, 0..1, that a packet is lost.
	Loss float64
	// Delay is added to every packet that is not lost.
	Delay time.Duration
	// Jitter adds a uniform random [0, Jitter) to each delay; any Jitter
	// larger than the gap between two packets also reorders them.
	Jitter time.Duration
	// Reorder is the probability, 0..1, that a packet is delayed by an extra
	// ReorderDelay, so that the packets after it overtake it.
	Reorder float64
	// ReorderDelay is the extra delay of reordered packets; 0 means
	// max(Delay, 1ms).
	ReorderDelay time.Duration
	// Directions to impair; if both are false, both are impaired.
	Ingress, Egress bool
}

func (c Config) validate() error {
	switch {
	case !(c.Loss >= 0 && c.Loss <= 1):
		return fmt.Errorf("impair: Loss %v is not in [0, 1]", c.Loss)
	case !(c.Reorder >= 0 && c.Reorder <= 1):
		return fmt.Errorf("impair: Reorder %v is not in [0, 1]", c.Reorder)
	case c.Delay < 0 || c.Jitter < 0 || c.ReorderDelay < 0:
		return errors.New("impair: negative delay")
	}
	return nil
}

// threshold scales a probability to the 2^32 range bpf_get_prandom_u32
// draws from.
func threshold(p float64) uint32 {
	if p >= 1 {
		return math.MaxUint32
	}
	return uint32(p * (1 << 32))
}

// Counters are one direction's totals over all CPUs since Attach.
type Counters struct {
	Seen       uint64 // IPv4 TCP packets considered
	Passed     uint64 // passed at once (no delay configured)
	Dropped    uint64 // lost
	Delayed    uint64 // handed to the delay line
	Reordered  uint64 // given the extra reorder delay
	Oversize   uint64 // too large for the delay line: passed undelayed
	RingFull   uint64 // ring buffer full: passed undelayed
	Reinjected uint64 // delayed frames that came back from the delay line
	SendErrors uint64 // delay line sends that failed (lost)
}

func (c Counters) String() string {
	return fmt.Sprintf("seen=%d passed=%d dropped=%d delayed=%d reordered=%d oversize=%d ring_full=%d reinjected=%d send_errors=%d",
		c.Seen, c.Passed, c.Dropped, c.Delayed, c.Reordered, c.Oversize, c.RingFull, c.Reinjected, c.SendErrors)
}

// Stats are the counters of both directions: Ingress for the packets the
// interface receives, Egress for those it sends.
type Stats struct {
	Ingress, Egress Counters
}

func (s Stats) String() string {
	return fmt.Sprintf("ingress{%v} egress{%v}", s.Ingress, s.Egress)
}

// Impairer impairs one interface until closed.
type Impairer struct {
	ifindex int
	objs    bpfObjects
	links   []link.Link
	line    *delayLine
	// nl is a netlink socket in the interface's namespace, to restore
	// gsoMaxSegs on Close from any thread.
	nl         *netlink.Handle
	gsoMaxSegs int
	once       sync.Once
	err        error
}

// directions fills in the default: both.
func (c Config) directions() Config {
	if !c.Ingress && !c.Egress {
		c.Ingress, c.Egress = true, true
	}
	return c
}

// load loads the programs with cfg compiled in as constants.
func load(cfg Config) (*bpfObjects, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.directions()
	reorderDelay := cfg.ReorderDelay
	if reorderDelay == 0 {
		reorderDelay = max(cfg.Delay, time.Millisecond)
	}
	spec, err := loadBpf()
	if err != nil {
		return nil, fmt.Errorf("impair: %w", err)
	}
	b2u := func(b bool) uint32 {
		if b {
			return 1
		}
		return 0
	}
	vars := map[string]any{
		bpfVarLossThreshold:       threshold(cfg.Loss),
		bpfVarReorderThreshold:    threshold(cfg.Reorder),
		bpfVarDelayNs:             uint64(cfg.Delay),
		bpfVarJitterNs:            uint64(cfg.Jitter),
		bpfVarReorderExtraNs:      uint64(reorderDelay),
		bpfVarReinjectIngressMark: uint32(reinjectIngressMark),
		bpfVarReinjectEgressMark:  uint32(reinjectEgressMark),
		bpfVarImpairIngress:       b2u(cfg.Ingress),
		bpfVarImpairEgress:        b2u(cfg.Egress),
	}
	for name, v := range vars {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("impair: set %s: %w", name, err)
		}
	}
	var objs bpfObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, fmt.Errorf("impair: load: %w", err)
	}
	return &objs, nil
}

// Attach impairs the interface ifindex of the calling thread's network
// namespace: call it with the thread in that namespace (testbed's
// Namespace.Do). It attaches impair_xdp (native mode where the driver has
// it, veth does) and impair_tc on TCX egress, and starts the delay line,
// whose sockets stay in the namespace. Close undoes all of it.
//
// The interface must not run another XDP program.
func Attach(ifindex int, cfg Config) (*Impairer, error) {
	objs, err := load(cfg)
	if err != nil {
		return nil, err
	}
	im := &Impairer{ifindex: ifindex, objs: *objs}
	fail := func(err error) (*Impairer, error) {
		return nil, errors.Join(err, im.Close())
	}

	if cfg.directions().Egress {
		if err := im.limitGSO(); err != nil {
			return fail(err)
		}
	}
	// The delay line first, so that no frame handed to it is lost.
	im.line, err = newDelayLine(ifindex, im.objs.Delayed)
	if err != nil {
		return fail(err)
	}
	tc, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   im.objs.ImpairTc,
		Attach:    ebpf.AttachTCXEgress,
	})
	if err != nil {
		return fail(fmt.Errorf("impair: attach TCX egress to ifindex %d: %w", ifindex, err))
	}
	im.links = append(im.links, tc)
	xdp, err := link.AttachXDP(link.XDPOptions{Program: im.objs.ImpairXdp, Interface: ifindex})
	if err != nil {
		return fail(fmt.Errorf("impair: attach XDP to ifindex %d: %w", ifindex, err))
	}
	im.links = append(im.links, xdp)
	return im, nil
}

// limitGSO sets gso_max_segs to 1, remembering the old value.
func (im *Impairer) limitGSO() error {
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("impair: netlink: %w", err)
	}
	im.nl = nl
	l, err := nl.LinkByIndex(im.ifindex)
	if err != nil {
		return fmt.Errorf("impair: link %d: %w", im.ifindex, err)
	}
	if err := nl.LinkSetGSOMaxSegs(l, 1); err != nil {
		return fmt.Errorf("impair: set gso_max_segs of %s: %w", l.Attrs().Name, err)
	}
	im.gsoMaxSegs = int(l.Attrs().GSOMaxSegs)
	return nil
}

func (im *Impairer) restoreGSO() error {
	if im.nl == nil {
		return nil
	}
	defer im.nl.Close()
	if im.gsoMaxSegs == 0 {
		return nil
	}
	l, err := im.nl.LinkByIndex(im.ifindex)
	if err != nil {
		return fmt.Errorf("impair: link %d: %w", im.ifindex, err)
	}
	if err := im.nl.LinkSetGSOMaxSegs(l, im.gsoMaxSegs); err != nil {
		return fmt.Errorf("impair: restore gso_max_segs of %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// Stats reads the counters.
func (im *Impairer) Stats() (Stats, error) {
	s, err := readStats(im.objs.Counters)
	if im.line != nil {
		s.Ingress.SendErrors = im.line.sendErrors[bpfImpairDirIMPAIR_DIR_INGRESS].Load()
		s.Egress.SendErrors = im.line.sendErrors[bpfImpairDirIMPAIR_DIR_EGRESS].Load()
	}
	return s, err
}

func readStats(m *ebpf.Map) (Stats, error) {
	var s Stats
	const perDir = int(bpfImpairCounterIMPAIR_COUNTER_MAX)
	sums, err := percpu.SumFirst(m, 2*perDir)
	if err != nil {
		return s, fmt.Errorf("impair: %w", err)
	}
	if len(sums) < 2*perDir {
		return s, fmt.Errorf("impair: read %d of %d counters", len(sums), 2*perDir)
	}
	for dir, c := range map[bpfImpairDir]*Counters{
		bpfImpairDirIMPAIR_DIR_INGRESS: &s.Ingress,
		bpfImpairDirIMPAIR_DIR_EGRESS:  &s.Egress,
	} {
		fields := []*uint64{
			bpfImpairCounterIMPAIR_SEEN:       &c.Seen,
			bpfImpairCounterIMPAIR_PASSED:     &c.Passed,
			bpfImpairCounterIMPAIR_DROPPED:    &c.Dropped,
			bpfImpairCounterIMPAIR_DELAYED:    &c.Delayed,
			bpfImpairCounterIMPAIR_REORDERED:  &c.Reordered,
			bpfImpairCounterIMPAIR_OVERSIZE:   &c.Oversize,
			bpfImpairCounterIMPAIR_RING_FULL:  &c.RingFull,
			bpfImpairCounterIMPAIR_REINJECTED: &c.Reinjected,
		}
		for i, f := range fields {
			*f = sums[int(dir)*perDir+i]
		}
	}
	return s, nil
}

// Close detaches the programs, stops the delay line (frames still in it are
// lost) and releases everything. It is safe to call more than once.
func (im *Impairer) Close() error {
	im.once.Do(func() {
		var errs []error
		for i := len(im.links) - 1; i >= 0; i-- {
			if err := im.links[i].Close(); err != nil {
				errs = append(errs, fmt.Errorf("impair: detach: %w", err))
			}
		}
		if im.line != nil {
			errs = append(errs, im.line.close())
		}
		errs = append(errs, im.objs.Close(), im.restoreGSO())
		im.err = errors.Join(errs...)
	})
	return im.err
}

// delayLine holds delayed frames until their due time and sends them back
// out of the interface.
type delayLine struct {
	// to is where frames are sent: the interface, as IPv4. Only the
	// schedule goroutine uses it (Sendto marshals into it).
	to         *unix.SockaddrLinklayer
	rd         *ringbuf.Reader
	ingress    int // AF_PACKET socket marked reinjectIngressMark
	egress     int // AF_PACKET socket marked reinjectEgressMark
	frames     chan frame
	done       chan struct{}
	wg         sync.WaitGroup
	sendErrors [2]atomic.Uint64 // by bpfImpairDir
}

type frame struct {
	due     int64 // CLOCK_MONOTONIC ns
	seq     uint64
	ingress bool
	data    []byte
}

// Where struct impair_frame's fields sit in a ring buffer record, from
// its generated twin.
var (
	frameHeader = int(unsafe.Offsetof(bpfImpairFrame{}.Data))
	frameDue    = int(unsafe.Offsetof(bpfImpairFrame{}.DueNs))
	frameLen    = int(unsafe.Offsetof(bpfImpairFrame{}.Len))
	frameDir    = int(unsafe.Offsetof(bpfImpairFrame{}.Dir))
)

func newDelayLine(ifindex int, ring *ebpf.Map) (*delayLine, error) {
	l := &delayLine{to: &unix.SockaddrLinklayer{Ifindex: ifindex, Protocol: htons(unix.ETH_P_IP)}, ingress: -1, egress: -1,
		frames: make(chan frame, 4096), done: make(chan struct{})}
	var err error
	if l.ingress, err = markedSocket(reinjectIngressMark); err != nil {
		return nil, errors.Join(err, l.closeSockets())
	}
	if l.egress, err = markedSocket(reinjectEgressMark); err != nil {
		return nil, errors.Join(err, l.closeSockets())
	}
	if l.rd, err = ringbuf.NewReader(ring); err != nil {
		return nil, errors.Join(fmt.Errorf("impair: ring buffer reader: %w", err), l.closeSockets())
	}
	l.wg.Add(2)
	go l.read()
	go l.schedule()
	return l, nil
}

// markedSocket opens a send-only AF_PACKET socket (protocol 0 receives
// nothing) whose frames carry mark.
func markedSocket(mark int) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("impair: AF_PACKET socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, mark); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("impair: SO_MARK: %w", err)
	}
	return fd, nil
}

// read moves frames from the ring buffer to the scheduler.
func (l *delayLine) read() {
	defer l.wg.Done()
	defer close(l.frames)
	var rec ringbuf.Record
	var seq uint64
	for {
		if err := l.rd.ReadInto(&rec); err != nil {
			return // closed
		}
		raw := rec.RawSample
		if len(raw) < frameHeader {
			continue
		}
		n := int(binary.NativeEndian.Uint32(raw[frameLen:]))
		if n > len(raw)-frameHeader {
			continue
		}
		seq++
		f := frame{
			due:     int64(binary.NativeEndian.Uint64(raw[frameDue:])),
			seq:     seq,
			ingress: binary.NativeEndian.Uint32(raw[frameDir:]) == uint32(bpfImpairDirIMPAIR_DIR_INGRESS),
			data:    append([]byte(nil), raw[frameHeader:frameHeader+n]...),
		}
		completeTCPChecksum(f.data)
		select {
		case l.frames <- f:
		case <-l.done:
			return
		}
	}
}

// schedule sends each frame when it is due.
func (l *delayLine) schedule() {
	defer l.wg.Done()
	var q frameHeap
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	in := l.frames
	for {
		now := monotonic()
		for len(q) > 0 && q[0].due <= now {
			l.send(heap.Pop(&q).(frame))
		}
		if len(q) > 0 {
			timer.Reset(time.Duration(q[0].due - now))
		}
		select {
		case f, ok := <-in:
			if !ok {
				return
			}
			heap.Push(&q, f)
			// Take whatever else is already waiting before sleeping.
			for more := true; more; {
				select {
				case f, ok := <-in:
					if !ok {
						return
					}
					heap.Push(&q, f)
				default:
					more = false
				}
			}
		case <-timer.C:
		case <-l.done:
			return
		}
	}
}

func (l *delayLine) send(f frame) {
	fd, dir := l.egress, bpfImpairDirIMPAIR_DIR_EGRESS
	if f.ingress {
		fd, dir = l.ingress, bpfImpairDirIMPAIR_DIR_INGRESS
	}
	if err := unix.Sendto(fd, f.data, 0, l.to); err != nil {
		l.sendErrors[dir].Add(1)
	}
}

func (l *delayLine) close() error {
	close(l.done)
	err := l.rd.Close()
	l.wg.Wait()
	return errors.Join(err, l.closeSockets())
}

func (l *delayLine) closeSockets() error {
	var errs []error
	for _, fd := range []*int{&l.ingress, &l.egress} {
		if *fd >= 0 {
			errs = append(errs, unix.Close(*fd))
			*fd = -1
		}
	}
	return errors.Join(errs...)
}

// completeTCPChecksum computes the TCP checksum of an Ethernet/IPv4/TCP
// frame. The programs copy packets as they are in the socket buffer, and a
// locally sent segment (or one forwarded from a veth) is often
// CHECKSUM_PARTIAL: its checksum field holds only the pseudo-header sum, and
// the device or the stack was to finish it. That note does not survive the
// copy, so the delay line finishes the checksum itself; a complete checksum
// is recomputed to the same value.
func completeTCPChecksum(frame []byte) {
	const eth = 14
	if len(frame) < eth+20 || binary.BigEndian.Uint16(frame[12:]) != unix.ETH_P_IP {
		return
	}
	ip := frame[eth:]
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:]))
	fragment := binary.BigEndian.Uint16(ip[6:])&0x3fff != 0
	if ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_TCP || fragment || ihl < 20 || total < ihl+20 || total > len(ip) {
		return
	}
	seg := ip[ihl:total]
	seg[16], seg[17] = 0, 0
	sum := uint32(unix.IPPROTO_TCP) + uint32(len(seg))
	for i := 12; i < 20; i += 2 { // source and destination addresses
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for i := 0; i+1 < len(seg); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(seg[i:]))
	}
	if len(seg)%2 == 1 {
		sum += uint32(seg[len(seg)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(seg[16:], ^uint16(sum))
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// frameHeap orders frames by due time, then by arrival.
type frameHeap []frame

func (h frameHeap) Len() int { return len(h) }
func (h frameHeap) Less(i, j int) bool {
	if h[i].due != h[j].due {
		return h[i].due < h[j].due
	}
	return h[i].seq < h[j].seq
}
func (h frameHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *frameHeap) Push(x any)   { *h = append(*h, x.(frame)) }
func (h *frameHeap) Pop() any {
	old := *h
	f := old[len(old)-1]
	*h = old[:len(old)-1]
	return f
}
