package router_test

import (
	"net/netip"

	"github.com/rauta-lb/rauta/xdp"
)

// flowHashRef is xdp/env_test.go's flowHash, fed the way that test feeds it
// (xdp.Addr, xdp.Port: the program's own key encoding), so FlowHash is
// checked against the same reading of hash.h the program tests trust.
func flowHashRef(client, service string) uint32 {
	c, s := netip.MustParseAddrPort(client), netip.MustParseAddrPort(service)
	saddr, daddr := xdp.Addr(c.Addr()), xdp.Addr(s.Addr())
	sport, dport := xdp.Port(c.Port()), xdp.Port(s.Port())
	const proto = 6
	h := uint64(saddr)<<32 | uint64(daddr)
	h ^= (uint64(sport)<<32 | uint64(dport)<<16 | uint64(proto)) * 0x9e3779b97f4a7c15
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return uint32(h)
}
