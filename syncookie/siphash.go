package syncookie

import "math/bits"

// Key is a SipHash-2-4 key, laid out as struct siphash_key in
// bpf/include/siphash.h.
type Key struct {
	K0, K1 uint64
}

// sipHash2 is SipHash-2-4 of the 16 bytes a‖b (each little-endian), the
// same function as siphash_2u64 in bpf/include/siphash.h.
func sipHash2(a, b uint64, key Key) uint64 {
	v0 := 0x736f6d6570736575 ^ key.K0
	v1 := 0x646f72616e646f6d ^ key.K1
	v2 := 0x6c7967656e657261 ^ key.K0
	v3 := 0x7465646279746573 ^ key.K1
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13)
		v1 ^= v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16)
		v3 ^= v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21)
		v3 ^= v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17)
		v1 ^= v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	for _, m := range []uint64{a, b, 16 << 56} {
		v3 ^= m
		round()
		round()
		v0 ^= m
	}
	v2 ^= 0xff
	round()
	round()
	round()
	round()
	return v0 ^ v1 ^ v2 ^ v3
}
