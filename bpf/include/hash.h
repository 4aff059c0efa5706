#ifndef RAUTA_HASH_H
#define RAUTA_HASH_H

#include "types.h"

/* flow_hash picks the Maglev slot of a new flow. The program tests carry a
 * Go copy (flowHash in xdp/env_test.go) and check thousands of the
 * program's choices against it; the slow path will need it in a package of
 * its own. The finaliser is murmur3's fmix64. */
static __always_inline __u32 flow_hash(const struct flow_key *k)
{
	__u64 h = ((__u64)k->saddr << 32) | k->daddr;

	h ^= (((__u64)k->sport << 32) | ((__u64)k->dport << 16) | k->proto) *
	     0x9e3779b97f4a7c15ULL;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return (__u32)h;
}

#endif
