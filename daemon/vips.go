package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// localVIPs makes the VIPs of HTTP services local addresses of the host,
// as /32s on lo, the way DSR and IPVS hosts carry theirs. The slow path
// needs it: a connection handed to the kernel is only delivered to the
// proxy's socket when the destination is local. Addresses the host already
// has are left alone; the ones added are removed again by release.
//
// Added addresses carry the label vipLabel, so a daemon that was killed
// before it could remove its VIPs leaves them recognisable: the next one
// adopts them (and removes those no longer configured), instead of taking
// them for the host's own. kube-proxy's IPVS mode keeps its dummy
// interface for the same reason.
type localVIPs struct {
	added map[netip.Addr]bool
}

// vipLabel marks the addresses localVIPs adds (an address label must
// begin with its interface's name).
const vipLabel = "lo:rauta"

func newLocalVIPs() *localVIPs { return &localVIPs{added: map[netip.Addr]bool{}} }

// ensure adds the VIPs the host does not have yet, and adopts addresses a
// previous daemon added, so that release removes them. It runs in the data
// path's network namespace.
func (v *localVIPs) ensure(vips map[netip.Addr]bool) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	have, ours, err := hostAddrs()
	if err != nil {
		return err
	}
	for ip := range ours {
		v.added[ip] = true
	}
	for vip := range vips {
		if have[vip] || v.added[vip] {
			continue
		}
		if err := netlink.AddrAdd(lo, hostRoute(vip)); err != nil {
			return fmt.Errorf("add VIP %s to lo: %w", vip, err)
		}
		v.added[vip] = true
	}
	return nil
}

// release removes the VIPs ensure added that keep is false for (all of
// them for a nil keep).
func (v *localVIPs) release(keep map[netip.Addr]bool) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	var errs []error
	for vip := range v.added {
		if keep[vip] {
			continue
		}
		if err := netlink.AddrDel(lo, hostRoute(vip)); err != nil {
			errs = append(errs, fmt.Errorf("remove VIP %s from lo: %w", vip, err))
			continue
		}
		delete(v.added, vip)
	}
	return errors.Join(errs...)
}

// hostRoute is vip as a /32 address with our label.
func hostRoute(vip netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: vip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Label: vipLabel}
}

// hostAddrs lists the host's IPv4 addresses in one dump: have holds all of
// them, ours those labelled vipLabel (added by a localVIPs, possibly of a
// daemon that is gone).
func hostAddrs() (have, ours map[netip.Addr]bool, err error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, nil, fmt.Errorf("list addresses: %w", err)
	}
	have = make(map[netip.Addr]bool, len(addrs))
	ours = map[netip.Addr]bool{}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		have[ip] = true
		if a.Label == vipLabel {
			ours[ip] = true
		}
	}
	return have, ours, nil
}
