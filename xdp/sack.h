/* SACK blocks of spliced connections. The client's sequence space reaches
 * the backend unchanged (the backend SYN carries the client's ISN), but the
 * backend's bytes reach the client moved by seq_delta: the SACK blocks a
 * client sends acknowledge LB sequence numbers and must be moved back, like
 * its ACK number. The backend's own blocks need nothing. */
#ifndef RAUTA_SACK_H
#define RAUTA_SACK_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "constants.h"
#include "csum.h"

/* The options before and after translation. 64 bytes each so that a byte
 * index masked with 63 is inside both, whatever the verifier knows. */
struct sack_scratch {
	__u8 old[64];
	__u8 new[64];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sack_scratch);
} sack_scratch SEC(".maps");

/* Adds delta to every SACK block edge of the TCP header at tcp_off and
 * fixes its checksum. A global function: the verifier checks it once, on
 * its own, instead of once per path through the established code (the
 * program is close to its complexity limit). Returns 0, or -1 when the
 * frame could not be read or written. Only called for segments with
 * options, from clients that negotiated SACK. */
__attribute__((noinline)) int sack_translate(struct xdp_md *ctx, __u32 tcp_off, __u32 delta)
{
	struct sack_scratch *s;
	__u32 zero = 0, len, n;
	__u8 doff, i = 0, found = 0;
	__u16 check;
	__s64 diff;

	if (!ctx || tcp_off > 256)
		return -1;
	if (bpf_xdp_load_bytes(ctx, tcp_off + 12, &doff, 1))
		return -1;
	len = (doff >> 4) * 4;
	if (len <= 20)
		return 0;
	len -= 20;
	if (len > TCP_MAX_OPTIONS)
		return -1;
	s = bpf_map_lookup_elem(&sack_scratch, &zero);
	if (!s)
		return -1;
	if (bpf_xdp_load_bytes(ctx, tcp_off + 20, s->old, len))
		return -1;
	__builtin_memcpy(s->new, s->old, sizeof(s->new));

	for (n = 0; n < TCP_MAX_OPTIONS; n++) {
		__u8 kind, olen;

		if (i >= len)
			break;
		kind = s->old[i & 63];
		if (kind == TCPOPT_EOL)
			break;
		if (kind == TCPOPT_NOP) {
			i++;
			continue;
		}
		olen = s->old[(i + 1) & 63];
		if (olen < 2 || i + olen > len)
			break;
		if (kind == TCPOPT_SACK && olen >= 10 && (olen - 2) % 8 == 0) {
			/* up to 4 blocks of two 32-bit edges, big-endian */
			found = 1;
			for (__u32 e = 0; e < 8; e++) {
				__u32 at = i + 2 + e * 4, v;

				if (e * 4 + 4 > (__u32)olen - 2)
					break;
				v = ((__u32)s->new[at & 63] << 24) | ((__u32)s->new[(at + 1) & 63] << 16) |
				    ((__u32)s->new[(at + 2) & 63] << 8) | s->new[(at + 3) & 63];
				v += delta;
				s->new[at & 63] = v >> 24;
				s->new[(at + 1) & 63] = v >> 16;
				s->new[(at + 2) & 63] = v >> 8;
				s->new[(at + 3) & 63] = v;
			}
		}
		i += olen;
	}
	if (!found)
		return 0;

	/* Options start 20 bytes into the TCP header and are a multiple of 4
	 * long, so their sum difference applies to the checksum as is. */
	diff = bpf_csum_diff((__be32 *)s->old, len, (__be32 *)s->new, len, 0);
	if (diff < 0)
		return -1;
	if (bpf_xdp_load_bytes(ctx, tcp_off + 16, &check, 2))
		return -1;
	check = ~csum_fold((__u64)(__u16)~check + (__u32)diff);
	if (bpf_xdp_store_bytes(ctx, tcp_off + 20, s->new, len) ||
	    bpf_xdp_store_bytes(ctx, tcp_off + 16, &check, 2))
		return -1;
	return 0;
}

#endif
