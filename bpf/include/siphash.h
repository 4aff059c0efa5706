/* SipHash-2-4 of two 64-bit words, the keyed hash behind the SYN cookies. It
 * must match the Go implementation in package syncookie bit for bit: a test
 * runs both on the same inputs. */
#ifndef RAUTA_SIPHASH_H
#define RAUTA_SIPHASH_H

#include <linux/types.h>

struct siphash_key {
	__u64 k0;
	__u64 k1;
};

#define SIP_ROTL(x, b) (__u64)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIP_ROUND(v0, v1, v2, v3)                                                            \
	do {                                                                                 \
		v0 += v1; v1 = SIP_ROTL(v1, 13); v1 ^= v0; v0 = SIP_ROTL(v0, 32);            \
		v2 += v3; v3 = SIP_ROTL(v3, 16); v3 ^= v2;                                   \
		v0 += v3; v3 = SIP_ROTL(v3, 21); v3 ^= v0;                                   \
		v2 += v1; v1 = SIP_ROTL(v1, 17); v1 ^= v2; v2 = SIP_ROTL(v2, 32);            \
	} while (0)

/* The message is the 16 bytes of a then b, little-endian. */
static __always_inline __u64 siphash_2u64(__u64 a, __u64 b, const struct siphash_key *key)
{
	__u64 v0 = 0x736f6d6570736575ULL ^ key->k0;
	__u64 v1 = 0x646f72616e646f6dULL ^ key->k1;
	__u64 v2 = 0x6c7967656e657261ULL ^ key->k0;
	__u64 v3 = 0x7465646279746573ULL ^ key->k1;
	__u64 last = (__u64)16 << 56;

	v3 ^= a;
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	v0 ^= a;
	v3 ^= b;
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	v0 ^= b;
	v3 ^= last;
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	v0 ^= last;
	v2 ^= 0xff;
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

#endif
