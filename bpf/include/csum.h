/* Incremental Internet checksum updates (RFC 1624: HC' = ~(~HC + ~m + m')).
 * Values are used as they sit in the packet; one's complement sums do not
 * care about byte order as long as old and new are in the same one. */
#ifndef RAUTA_CSUM_H
#define RAUTA_CSUM_H

#include <linux/types.h>

static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* Folds a 64-bit sum (bpf_csum_diff's, or one accumulated in 64 bits). */
static __always_inline __u16 csum_fold64(__u64 sum)
{
	return csum_fold((sum & 0xffffffff) + (sum >> 32));
}

/* Returns the checksum after replacing the 32-bit word old with new. */
static __always_inline __u16 csum_replace4(__u16 check, __u32 old, __u32 new)
{
	__u64 sum = (__u16)~check;

	sum += (__u16)~(old & 0xffff) + (__u16)~(old >> 16);
	sum += (new & 0xffff) + (new >> 16);
	return ~csum_fold(sum);
}

static __always_inline __u16 csum_replace2(__u16 check, __u16 old, __u16 new)
{
	__u64 sum = (__u16)~check;

	sum += (__u16)~old;
	sum += new;
	return ~csum_fold(sum);
}

/* UDP uses 0 for "no checksum", so a computed 0 is sent as 0xffff. */
static __always_inline __u16 udp_csum_mangled(__u16 check)
{
	return check ? check : 0xffff;
}

#endif
