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
type localVIPs struct {
	added map[netip.Addr]bool
}

func newLocalVIPs() *localVIPs { return &localVIPs{added: map[netip.Addr]bool{}} }

// ensure adds the VIPs the host does not have yet. It runs in the data
// path's network namespace.
func (v *localVIPs) ensure(vips map[netip.Addr]bool) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	have, err := hostAddrs()
	if err != nil {
		return err
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

// hostRoute is vip as a /32 address.
func hostRoute(vip netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: vip.AsSlice(), Mask: net.CIDRMask(32, 32)}}
}

func hostAddrs() (map[netip.Addr]bool, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	have := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			have[ip] = true
		}
	}
	return have, nil
}
