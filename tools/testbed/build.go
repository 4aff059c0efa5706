package testbed

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

const (
	// ethtoolTimeout bounds one ethtool run; it normally takes milliseconds.
	ethtoolTimeout = 10 * time.Second
	// linkUpTimeout bounds the wait for carrier; with the ifindex scheme in
	// createLinks it normally takes well under a millisecond.
	linkUpTimeout   = 5 * time.Second
	linkUpPollDelay = 2 * time.Millisecond
	// firstLocalIfindex numbers the veth ends created in the LB and switch
	// namespaces; see createLinks.
	firstLocalIfindex = 100
)

// builder assembles a Testbed step by step. Every namespace is recorded in
// tb.created as soon as it exists, so tb.Close can undo a partial build.
type builder struct {
	tb      *Testbed
	opts    Options
	prefix  string
	ethtool string
	// handles are netlink sockets bound to each namespace, only needed while
	// building.
	handles map[*Namespace]*netlink.Handle
}

func (b *builder) build() error {
	b.handles = make(map[*Namespace]*netlink.Handle)
	defer func() {
		for _, h := range b.handles {
			h.Close()
		}
	}()
	steps := []struct {
		name string
		run  func() error
	}{
		{"create namespaces", b.createNamespaces},
		{"create links", b.createLinks},
		{"configure addresses", b.configureAddresses},
		{"set offloads", b.setOffloads},
		{"enable forwarding", b.enableForwarding},
		{"wait for links", b.waitForLinks},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if err := b.checkpoint(s.name); err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) checkpoint(step string) error {
	if b.opts.checkpoint == nil {
		return nil
	}
	if err := b.opts.checkpoint(step); err != nil {
		return fmt.Errorf("after %s: %w", step, err)
	}
	return nil
}

func (b *builder) createNamespaces() error {
	var err error
	if b.tb.Client, err = b.newNamespace("client"); err != nil {
		return err
	}
	if b.tb.LB, err = b.newNamespace("lb"); err != nil {
		return err
	}
	if b.tb.Switch, err = b.newNamespace("sw"); err != nil {
		return err
	}
	for i := 1; i <= b.opts.Backends; i++ {
		ns, err := b.newNamespace(fmt.Sprintf("b%d", i))
		if err != nil {
			return err
		}
		b.tb.Backends = append(b.tb.Backends, ns)
	}
	return nil
}

func (b *builder) newNamespace(role string) (*Namespace, error) {
	ns, err := createNamespace(b.prefix + role)
	if err != nil {
		return nil, err
	}
	b.tb.created = append(b.tb.created, ns)
	h, err := ns.netlinkHandle()
	if err != nil {
		return nil, err
	}
	b.handles[ns] = h
	return ns, b.checkpoint("create namespace " + role)
}

// createLinks creates every veth inside the LB or switch namespace with its
// peer placed directly into the other namespace (IFLA_NET_NS_FD on the
// peer), so no interface ever exists in the caller's namespace and the fixed
// names cannot clash between testbeds.
//
// The locally created ends get explicit ifindexes from firstLocalIfindex up,
// while peers get the kernel's small defaults. That keeps a veth's ifindex
// different from its peer's: when they are equal the kernel treats the
// carrier change as non-urgent and batches it for up to a second, and until
// then the first end brought up drops everything it sends and the bridge
// keeps its port disabled.
func (b *builder) createLinks() error {
	tb := b.tb
	lb, sw := b.handles[tb.LB], b.handles[tb.Switch]
	if err := addVeth(lb, lbClientIface, firstLocalIfindex, tb.Client, clientIface); err != nil {
		return err
	}

	bridgeAttrs := netlink.NewLinkAttrs()
	bridgeAttrs.Name = switchBridge
	bridge := &netlink.Bridge{LinkAttrs: bridgeAttrs}
	if err := sw.LinkAdd(bridge); err != nil {
		return fmt.Errorf("add bridge %s: %w", switchBridge, err)
	}
	ports := []string{switchLBPort}
	if err := addVeth(sw, switchLBPort, firstLocalIfindex, tb.LB, lbBackendIface); err != nil {
		return err
	}
	for i, backend := range tb.Backends {
		port := switchBackendPort(i + 1)
		if err := addVeth(sw, port, firstLocalIfindex+1+i, backend, backendIface); err != nil {
			return err
		}
		ports = append(ports, port)
	}
	for _, port := range ports {
		link, err := sw.LinkByName(port)
		if err != nil {
			return fmt.Errorf("look up switch port %s: %w", port, err)
		}
		if err := sw.LinkSetMaster(link, bridge); err != nil {
			return fmt.Errorf("attach %s to %s: %w", port, switchBridge, err)
		}
	}
	return nil
}

func addVeth(h *netlink.Handle, name string, index int, peerNS *Namespace, peerName string) error {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.Index = index
	veth := netlink.NewVeth(attrs)
	veth.PeerName = peerName
	veth.PeerNamespace = netlink.NsFd(peerNS.handle)
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s <-> %s in %s: %w", name, peerName, peerNS.Name, err)
	}
	return nil
}

func (b *builder) configureAddresses() error {
	tb := b.tb
	for _, ns := range tb.created {
		if err := setUp(b.handles[ns], "lo"); err != nil {
			return fmt.Errorf("netns %s: %w", ns.Name, err)
		}
	}

	client := b.handles[tb.Client]
	if err := addAddr(client, clientIface, netip.PrefixFrom(tb.ClientAddr, clientNet.Bits())); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if err := setUp(client, clientIface); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if err := addDefaultRoute(client, clientIface, tb.LBClientAddr); err != nil {
		return fmt.Errorf("client: %w", err)
	}

	lb := b.handles[tb.LB]
	type ifaceAddr struct {
		iface  string
		prefix netip.Prefix
	}
	lbAddrs := []ifaceAddr{
		{lbClientIface, netip.PrefixFrom(tb.LBClientAddr, clientNet.Bits())},
		{lbBackendIface, netip.PrefixFrom(tb.LBBackendAddr, backendNet.Bits())},
	}
	for _, vip := range tb.VIPs {
		lbAddrs = append(lbAddrs, ifaceAddr{"lo", netip.PrefixFrom(vip, 32)})
	}
	for _, a := range lbAddrs {
		if err := addAddr(lb, a.iface, a.prefix); err != nil {
			return fmt.Errorf("lb: %w", err)
		}
	}
	for _, iface := range []string{lbClientIface, lbBackendIface} {
		if err := setUp(lb, iface); err != nil {
			return fmt.Errorf("lb: %w", err)
		}
	}

	sw := b.handles[tb.Switch]
	swLinks := []string{switchBridge, switchLBPort}
	for i := range tb.Backends {
		swLinks = append(swLinks, switchBackendPort(i+1))
	}
	for _, iface := range swLinks {
		if err := setUp(sw, iface); err != nil {
			return fmt.Errorf("switch: %w", err)
		}
	}

	for i, backend := range tb.Backends {
		h := b.handles[backend]
		if err := addAddr(h, backendIface, netip.PrefixFrom(tb.BackendAddrs[i], backendNet.Bits())); err != nil {
			return fmt.Errorf("backend %d: %w", i+1, err)
		}
		if err := setUp(h, backendIface); err != nil {
			return fmt.Errorf("backend %d: %w", i+1, err)
		}
		if err := addDefaultRoute(h, backendIface, tb.LBBackendAddr); err != nil {
			return fmt.Errorf("backend %d: %w", i+1, err)
		}
	}
	return nil
}

func setUp(h *netlink.Handle, iface string) error {
	link, err := h.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("look up %s: %w", iface, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", iface, err)
	}
	return nil
}

func addAddr(h *netlink.Handle, iface string, prefix netip.Prefix) error {
	link, err := h.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("look up %s: %w", iface, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   prefix.Addr().AsSlice(),
		Mask: net.CIDRMask(prefix.Bits(), prefix.Addr().BitLen()),
	}}
	if err := h.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add %v to %s: %w", prefix, iface, err)
	}
	return nil
}

func addDefaultRoute(h *netlink.Handle, iface string, gateway netip.Addr) error {
	link, err := h.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("look up %s: %w", iface, err)
	}
	route := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw:        gateway.AsSlice(),
	}
	if err := h.RouteAdd(route); err != nil {
		return fmt.Errorf("add default route via %v dev %s: %w", gateway, iface, err)
	}
	return nil
}

// setOffloads prepares the veths the load balancer's XDP program sends
// through or receives from:
//   - tx checksumming off on the senders, so packets carry complete
//     checksums that XDP can patch incrementally instead of partial ones;
//   - GRO on where XDP_TX / XDP_REDIRECT frames arrive (client eth0 and the
//     switch's "lb" port): in native mode a veth only accepts such frames
//     when its peer receive path runs NAPI, which GRO (or an XDP program)
//     enables. Generic mode (xdp_mode auto on veths) redirects skbs and
//     needs neither.
//
// GRO stays off (the veth default) everywhere else.
func (b *builder) setOffloads() error {
	tb := b.tb
	type setting struct {
		ns       *Namespace
		iface    string
		features []string
	}
	txOffGROOn := []string{"tx", "off", "gro", "on"}
	txOff := []string{"tx", "off"}
	settings := []setting{
		{tb.Client, clientIface, txOffGROOn},
		{tb.Switch, switchLBPort, txOffGROOn},
	}
	for i, backend := range tb.Backends {
		settings = append(settings,
			setting{tb.Switch, switchBackendPort(i + 1), txOff},
			setting{backend, backendIface, txOff},
		)
	}
	for _, s := range settings {
		if err := b.runEthtool(s.ns, s.iface, s.features); err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) runEthtool(ns *Namespace, iface string, features []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), ethtoolTimeout)
	defer cancel()
	args := append([]string{"-K", iface}, features...)
	out, err := ns.Command(ctx, b.ethtool, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ethtool %s in %s: %w: %s", strings.Join(args, " "), ns.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// enableForwarding turns the LB namespace into a router. /proc/sys/net
// resolves against the opening thread's namespace, hence the write in Do.
func (b *builder) enableForwarding() error {
	err := b.tb.LB.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
	})
	if err != nil {
		return fmt.Errorf("set ip_forward in %s: %w", b.tb.LB.Name, err)
	}
	return nil
}

// waitForLinks returns once every interface except lo is operationally up.
// Carrier changes are applied asynchronously by the kernel's link watcher,
// which also attaches the transmit queue and enables bridge ports: before
// that, packets are dropped.
func (b *builder) waitForLinks() error {
	deadline := time.Now().Add(linkUpTimeout)
	for _, ns := range b.tb.created {
		h := b.handles[ns]
		for {
			down, err := linksNotUp(h)
			if err != nil {
				return fmt.Errorf("netns %s: %w", ns.Name, err)
			}
			if len(down) == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("netns %s: links %v not up after %v", ns.Name, down, linkUpTimeout)
			}
			time.Sleep(linkUpPollDelay)
		}
	}
	return nil
}

func linksNotUp(h *netlink.Handle) ([]string, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var down []string
	for _, l := range links {
		// lo reports "unknown": it has no carrier to wait for.
		if a := l.Attrs(); a.Name != "lo" && a.OperState != netlink.OperUp {
			down = append(down, a.Name+"="+a.OperState.String())
		}
	}
	return down, nil
}
