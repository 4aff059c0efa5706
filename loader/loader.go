// Package loader puts RAUTA's data path into the kernel: it loads the XDP
// program, pins its maps under a bpffs directory so bpftool and other
// processes can read them, attaches the program to interfaces and writes the
// configuration into the maps (see Programmer).
package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rauta-lb/rauta/tc"
	"github.com/rauta-lb/rauta/xdp"
)

// DefaultPinPath is where the maps are pinned unless configured otherwise.
const DefaultPinPath = "/sys/fs/bpf/rauta"

// XDP attach modes.
const (
	ModeAuto    = "auto"
	ModeNative  = "native"
	ModeGeneric = "generic"
)

// Options configure Load.
type Options struct {
	PinPath string // default DefaultPinPath
	Logger  *slog.Logger
}

// Loader owns the loaded program, its pins and its attachments.
type Loader struct {
	*Programmer
	objs *xdp.Objects
	// handoff is the TC program that gives slow-path connections their
	// kernel socket; nil on kernels without bpf_sk_assign_tcp_reqsk.
	handoff *tc.Objects
	pinPath string
	log     *slog.Logger
	links   []attachment
	// cookieKeyed: RotateCookieKey has written the first key.
	cookieKeyed bool
}

type attachment struct {
	iface string
	link  link.Link
}

// Load loads the program and pins its maps. Pins left by a process that
// died without cleaning up are replaced: their maps belong to nobody.
func Load(opts Options) (*Loader, error) {
	if opts.PinPath == "" {
		opts.PinPath = DefaultPinPath
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("lift memlock limit: %w", err)
	}
	if err := removePins(opts.PinPath); err != nil {
		return nil, err
	}
	if err := ensureBPFFS(opts.PinPath); err != nil {
		return nil, err
	}
	objs, err := xdp.Load(nil)
	if err != nil {
		return nil, err
	}
	l := &Loader{objs: objs, pinPath: opts.PinPath, log: opts.Logger}
	l.handoff, err = tc.Load(tc.SharedMaps{
		Flows:            objs.Flows,
		SyncookieKeys:    objs.SyncookieKeys,
		SyncookieCurrent: objs.SyncookieCurrent,
	})
	switch {
	case errors.Is(err, ebpf.ErrNotSupported):
		// An older kernel: XDP still answers and routes; connections it
		// sends to the slow path are reset by the kernel instead of
		// reaching the proxy.
		l.log.Warn("slow-path handoff unavailable: this kernel has no bpf_sk_assign_tcp_reqsk (Linux 6.9+); connections XDP cannot route will be reset", "err", err)
	case err != nil:
		l.Close()
		return nil, err
	}
	if err := l.pin(); err != nil {
		l.Close()
		return nil, err
	}
	l.Programmer, err = NewProgrammer(objs)
	if err != nil {
		l.Close()
		return nil, err
	}
	if err := l.RotateCookieKey(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// pinnedMaps are the maps pinned under the pin path, by pin name.
func (l *Loader) pinnedMaps() map[string]*ebpf.Map {
	maps := l.objs.MapsByName()
	if l.handoff != nil {
		maps[handoffCountersPin] = l.handoff.HandoffCounters
	}
	return maps
}

const handoffCountersPin = "handoff_counters"

func (l *Loader) pin() error {
	for name, m := range l.pinnedMaps() {
		if err := m.Pin(filepath.Join(l.pinPath, name)); err != nil {
			return fmt.Errorf("pin map %s: %w", name, err)
		}
	}
	return nil
}

// Objects returns the loaded program and maps.
func (l *Loader) Objects() *xdp.Objects { return l.objs }

// Handoff returns the TC handoff program, or nil when this kernel cannot
// run it.
func (l *Loader) Handoff() *tc.Objects { return l.handoff }

// PinPath is the directory holding the pinned maps.
func (l *Loader) PinPath() string { return l.pinPath }

// Attach attaches the program to each interface of the calling thread's
// network namespace and registers it as a redirect target, in mode (see
// attachMode).
func (l *Loader) Attach(ifaces []string, mode string) error {
	attached := map[string]bool{}
	for _, name := range ifaces {
		got, err := l.attach(name, mode)
		if err != nil {
			return err
		}
		attached[got] = true
	}
	if len(attached) < 2 {
		return nil
	}
	// auto chose native for some interfaces and generic for others. A
	// frame a native program redirects goes out through the target's
	// ndo_xdp_xmit, which a driver without native XDP lacks and a veth
	// only serves when its peer runs NAPI: such redirects would be
	// dropped. Generic everywhere redirects skbs, which every device
	// takes.
	l.log.Warn("interfaces need different XDP modes; attaching all in generic mode so redirects between them work", "interfaces", ifaces)
	if err := l.detach(); err != nil {
		return err
	}
	for _, name := range ifaces {
		if _, err := l.attach(name, ModeGeneric); err != nil {
			return err
		}
	}
	return nil
}

// detach closes every link (XDP and TC) attached so far.
func (l *Loader) detach() error {
	var errs []error
	for _, a := range l.links {
		if err := a.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach from %s: %w", a.iface, err))
		}
	}
	l.links = nil
	return errors.Join(errs...)
}

// attach attaches to one interface and returns the mode it got.
func (l *Loader) attach(name, mode string) (string, error) {
	nl, err := netlink.LinkByName(name)
	if err != nil {
		return "", fmt.Errorf("interface %s: %w", name, err)
	}
	index := nl.Attrs().Index
	plan, err := attachMode(mode, nl.Type())
	if err != nil {
		return "", err
	}
	lnk, err := l.attachXDP(index, plan.flags)
	if err != nil && plan.fallback && errors.Is(err, unix.EOPNOTSUPP) {
		l.log.Warn("driver has no native XDP; "+genericCost, "interface", name, "driver_error", err)
		plan = modePlan{name: ModeGeneric, flags: link.XDPGenericMode, why: "fallback"}
		lnk, err = l.attachXDP(index, plan.flags)
	}
	if err != nil {
		if plan.flags == link.XDPDriverMode && !plan.fallback {
			return "", fmt.Errorf("attach XDP to %s in native mode (set xdp_mode: auto or generic if the driver has no XDP support): %w", name, err)
		}
		return "", fmt.Errorf("attach XDP to %s in %s mode: %w", name, plan.name, err)
	}
	l.links = append(l.links, attachment{iface: name, link: lnk})
	if err := l.objs.TxPorts.Put(uint32(index), uint32(index)); err != nil {
		return "", fmt.Errorf("add %s to the redirect map: %w", name, err)
	}
	if plan.why == "configured" && plan.name == ModeGeneric && nl.Type() != vethType {
		l.log.Warn(genericCost, "interface", name)
	}
	l.log.Info("XDP attached", "interface", name, "ifindex", index, "driver", nl.Type(), "mode", plan.name, "chosen", plan.why)
	if l.handoff != nil {
		tcLink, err := l.handoff.Attach(index)
		if err != nil {
			return "", fmt.Errorf("interface %s: %w", name, err)
		}
		l.links = append(l.links, attachment{iface: name, link: tcLink})
	}
	return plan.name, nil
}

func (l *Loader) attachXDP(index int, flags link.XDPAttachFlags) (link.Link, error) {
	return link.AttachXDP(link.XDPOptions{Program: l.objs.RautaXdp, Interface: index, Flags: flags})
}

const genericCost = "XDP in generic mode: packets are copied into socket buffers first; expect a fraction of native performance"

// vethType is netlink's link type of a veth.
const vethType = "veth"

// modePlan is how the program is attached to one interface.
type modePlan struct {
	name  string // ModeNative or ModeGeneric
	flags link.XDPAttachFlags
	// fallback: retry in generic mode when the driver has no native XDP.
	fallback bool
	why      string // for the log: configured, veth, native driver, fallback
}

// attachMode decides the attach mode for an interface of linkType. Native
// fails on drivers without XDP support rather than silently running in the
// much slower generic mode; auto tries native and falls back.
//
// Auto attaches to veths in generic mode: veth's native XDP copies every
// cloned skb (TCP transmits clones) into a page-pool buffer before the
// program runs, and rebuilds every redirected frame into an skb at the
// peer's NAPI; generic mode makes the same copy but redirects the skb
// itself. On the bench's veth testbed that is about 1 µs (5%) less CPU
// per keep-alive request through the HTTP fast path (docs/ARCHITECTURE.md,
// "Attach mode").
func attachMode(mode, linkType string) (modePlan, error) {
	switch mode {
	case ModeNative:
		return modePlan{name: ModeNative, flags: link.XDPDriverMode, why: "configured"}, nil
	case ModeGeneric:
		return modePlan{name: ModeGeneric, flags: link.XDPGenericMode, why: "configured"}, nil
	case "", ModeAuto:
		if linkType == vethType {
			return modePlan{name: ModeGeneric, flags: link.XDPGenericMode, why: "veth"}, nil
		}
		return modePlan{name: ModeNative, flags: link.XDPDriverMode, fallback: true, why: "native driver"}, nil
	}
	return modePlan{}, fmt.Errorf("unknown XDP mode %q (valid: auto, native, generic)", mode)
}

// Close detaches the program from every interface, removes the pins and
// releases the maps. Traffic then flows through the kernel as if RAUTA had
// never been there.
func (l *Loader) Close() error {
	var errs []error
	if err := l.detach(); err != nil {
		errs = append(errs, err)
	}
	if l.objs != nil {
		for name, m := range l.pinnedMaps() {
			if err := m.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("unpin %s: %w", name, err))
			}
		}
		if err := removePins(l.pinPath); err != nil {
			errs = append(errs, err)
		}
		if l.handoff != nil {
			if err := l.handoff.Close(); err != nil {
				errs = append(errs, err)
			}
			l.handoff = nil
		}
		if err := l.objs.Close(); err != nil {
			errs = append(errs, err)
		}
		l.objs = nil
	}
	return errors.Join(errs...)
}
