// Package syncookie is the Go twin of bpf/include/syncookie.h: the SYN
// cookies XDP answers handshakes with. The slow path recovers a client's
// options from a cookie with it, and tests check XDP's cookies against it.
package syncookie

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
)

// NoWindowScale marks a client that offered no window scale option.
const NoWindowScale = 15

// MSSValues are the MSS values a cookie can carry, as syncookie_mss[] in C.
var MSSValues = [4]uint16{536, 1220, 1440, 1460}

// Options are the client's SYN options a cookie carries.
type Options struct {
	MSS    uint16
	WScale uint8 // 0..14, or NoWindowScale
	SACK   bool
}

// Tuple is the client's side and the VIP's side of a connection.
type Tuple struct {
	Client, VIP netip.AddrPort
}

// NewKey returns a random key.
func NewKey() (Key, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Key{}, fmt.Errorf("random cookie key: %w", err)
	}
	return Key{K0: binary.LittleEndian.Uint64(b[:8]), K1: binary.LittleEndian.Uint64(b[8:])}, nil
}

func optionBits(o Options, keyIndex int) uint32 {
	var mssIndex uint32
	for i := len(MSSValues) - 1; i > 0; i-- {
		if o.MSS >= MSSValues[i] {
			mssIndex = uint32(i)
			break
		}
	}
	ws := uint32(o.WScale)
	if ws > 14 {
		ws = NoWindowScale
	}
	var sack uint32
	if o.SACK {
		sack = 1
	}
	return mssIndex<<6 | sack<<5 | uint32(keyIndex&1)<<4 | ws
}

// be32 and be16 read an address or port the way the BPF program does: as
// the packet's bytes loaded into a little-endian register.
func be32(a netip.Addr) uint64 {
	b := a.As4()
	return uint64(binary.LittleEndian.Uint32(b[:]))
}

func be16(p uint16) uint64 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return uint64(binary.LittleEndian.Uint16(b[:]))
}

func hash(t Tuple, isn, bits uint32, key Key) uint32 {
	a := be32(t.Client.Addr())<<32 | be32(t.VIP.Addr())
	b := be16(t.Client.Port())<<48 | be16(t.VIP.Port())<<32 | uint64(isn)
	return uint32(sipHash2(a, b, Key{K0: key.K0 ^ uint64(bits), K1: key.K1}) >> 40)
}

// Make returns the cookie XDP sends as its ISN for a SYN with client ISN
// isn, made with keys[keyIndex].
func Make(t Tuple, isn uint32, o Options, keyIndex int, key Key) uint32 {
	bits := optionBits(o, keyIndex)
	return hash(t, isn, bits, key)<<8 | bits
}

// Check validates a cookie against both keys' slots and returns the
// options it carries.
func Check(t Tuple, isn, cookie uint32, keys [2]Key) (Options, bool) {
	bits := cookie & 0xff
	key := keys[(bits>>4)&1]
	if key == (Key{}) || hash(t, isn, bits, key) != cookie>>8 {
		return Options{}, false
	}
	return Options{MSS: MSSValues[(bits>>6)&3], SACK: bits>>5&1 == 1, WScale: uint8(bits & 0xf)}, true
}
