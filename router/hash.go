package router

import (
	"encoding/binary"
	"net/netip"

	"github.com/rauta-lb/rauta/xdp"
)

// FlowHash is the Go twin of flow_hash in bpf/include/hash.h: the hash whose
// value modulo a pool's table size is the Maglev slot XDP gives a new TCP
// connection from client to service (a VIP:port). XDP hashes its flow key as
// the packet carries it: addresses and ports in network byte order, loaded
// into little-endian registers, protocol 6.
//
// XDP handles IPv4 only. An IPv4-mapped IPv6 address hashes as its IPv4
// address; any other IPv6 address is folded into 32 bits, which gives a
// stable hash that XDP never has to agree with.
func FlowHash(client, service netip.AddrPort) uint32 {
	const protoTCP = 6
	saddr, daddr := addrWord(client.Addr()), addrWord(service.Addr())
	sport, dport := portWord(client.Port()), portWord(service.Port())

	h := saddr<<32 | daddr
	h ^= (sport<<32 | dport<<16 | protoTCP) * 0x9e3779b97f4a7c15
	// murmur3's fmix64
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return uint32(h)
}

// addrWord is an address as XDP's flow key holds it: the four bytes in
// network order read as a little-endian uint32.
func addrWord(a netip.Addr) uint64 {
	a = a.Unmap()
	if a.Is4() {
		return uint64(xdp.Addr(a))
	}
	b := a.As16() // the zero Addr gives 16 zero bytes
	var w uint32
	for i := 0; i < len(b); i += 4 {
		w ^= binary.LittleEndian.Uint32(b[i:])
	}
	return uint64(w)
}

// portWord is a port as XDP's flow key holds it.
func portWord(p uint16) uint64 {
	return uint64(xdp.Port(p))
}
