/* SYN cookies: the ISN of the LB's SYN-ACK encodes everything the LB must
 * know about a handshake it keeps no state for.
 *
 *   bits 31..8  keyed hash (SipHash-2-4) of the 4-tuple and the client ISN
 *   bits  7..6  index of the client's MSS in syncookie_mss[]
 *   bit      5  the client offered SACK
 *   bit      4  which of the two keys made it (keys rotate; both validate)
 *   bits  3..0  the client's window scale, 15 when it offered none
 *
 * The option bits are folded into the key, so a forged option changes the
 * hash. Package syncookie is the Go twin, used by tests and the slow path. */
#ifndef RAUTA_SYNCOOKIE_H
#define RAUTA_SYNCOOKIE_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "siphash.h"

#define SYNCOOKIE_NO_WSCALE 15
#define SYNCOOKIE_HASH_SHIFT 8

struct syn_options {
	__u16 mss;
	__u8 wscale; /* SYNCOOKIE_NO_WSCALE when absent */
	__u8 sack;
};

/* The MSS values a cookie can carry: common path MTUs minus 40. */
static const __u16 syncookie_mss[4] = {536, 1220, 1440, 1460};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct siphash_key);
} syncookie_keys SEC(".maps");

/* Index of the key new cookies are made with. The daemon writes a fresh key
 * into the other slot, then flips this: cookies of the previous key still
 * validate, older ones do not. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} syncookie_current SEC(".maps");

static __always_inline __u32 syncookie_hash(__be32 saddr, __be32 daddr, __be16 sport, __be16 dport,
					    __u32 isn, __u32 bits, const struct siphash_key *key)
{
	struct siphash_key k = {.k0 = key->k0 ^ bits, .k1 = key->k1};
	__u64 a = ((__u64)saddr << 32) | daddr;
	__u64 b = ((__u64)sport << 48) | ((__u64)dport << 32) | isn;

	return (__u32)(siphash_2u64(a, b, &k) >> 40);
}

static __always_inline __u32 syncookie_option_bits(const struct syn_options *o, __u32 key_index)
{
	__u32 mss_index = 0;

	if (o->mss >= syncookie_mss[3])
		mss_index = 3;
	else if (o->mss >= syncookie_mss[2])
		mss_index = 2;
	else if (o->mss >= syncookie_mss[1])
		mss_index = 1;
	return (mss_index << 6) | ((o->sack ? 1 : 0) << 5) | ((key_index & 1) << 4) |
	       (o->wscale > 14 ? SYNCOOKIE_NO_WSCALE : o->wscale);
}

/* Returns the cookie for a SYN, or 0 with *ok unset when no key is loaded
 * (the daemon has not started): such SYNs are left to the kernel. */
static __always_inline __u32 syncookie_make(__be32 saddr, __be32 daddr, __be16 sport, __be16 dport,
					    __u32 isn, const struct syn_options *o, int *ok)
{
	__u32 zero = 0, *current, index, bits;
	struct siphash_key *key;

	*ok = 0;
	current = bpf_map_lookup_elem(&syncookie_current, &zero);
	if (!current)
		return 0;
	index = *current & 1;
	key = bpf_map_lookup_elem(&syncookie_keys, &index);
	if (!key || (key->k0 == 0 && key->k1 == 0))
		return 0;
	bits = syncookie_option_bits(o, index);
	*ok = 1;
	return (syncookie_hash(saddr, daddr, sport, dport, isn, bits, key) << SYNCOOKIE_HASH_SHIFT) | bits;
}

/* The client's options a cookie's low byte carries. */
static __always_inline void syncookie_options(__u32 bits, struct syn_options *o)
{
	o->mss = syncookie_mss[(bits >> 6) & 3];
	o->sack = (bits >> 5) & 1;
	o->wscale = bits & 0xf;
}

/* Validates a cookie the client echoed (its ACK number minus one) for the
 * client ISN (its sequence number minus one) and recovers its options. */
static __always_inline int syncookie_check(__be32 saddr, __be32 daddr, __be16 sport, __be16 dport,
					   __u32 isn, __u32 cookie, struct syn_options *o)
{
	__u32 bits = cookie & 0xff, index = (bits >> 4) & 1;
	struct siphash_key *key = bpf_map_lookup_elem(&syncookie_keys, &index);

	if (!key || (key->k0 == 0 && key->k1 == 0))
		return 0;
	if (syncookie_hash(saddr, daddr, sport, dport, isn, bits, key) != cookie >> SYNCOOKIE_HASH_SHIFT)
		return 0;
	syncookie_options(bits, o);
	return 1;
}

#endif
