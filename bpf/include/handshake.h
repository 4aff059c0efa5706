/* The LB's side of a TCP handshake it answers without keeping state: read
 * the client's SYN options, answer with a SYN-ACK whose ISN is a SYN cookie.
 */
#ifndef RAUTA_HANDSHAKE_H
#define RAUTA_HANDSHAKE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "constants.h"
#include "csum.h"
#include "parse.h"
#include "syncookie.h"

#define IP_DF 0x4000

/* Options are copied into a map value a little over 256 bytes: any byte-sized index (plus the
 * few bytes of an option after it) is then
 * inside it, which the verifier can see even when the compiler drops a
 * bounds mask (it cannot on the stack). */
struct tcp_options_buf {
	__u8 b[256 + 8]; /* room for the option bytes after an index */
	/* What the walk found. Kept here, not on the stack: the verifier does
	 * not track map values, so loop states that differ only in what was
	 * found so far are the same to it and the walk is checked once. */
	struct syn_options found;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tcp_options_buf);
} tcp_options_scratch SEC(".maps");

/* Reads MSS, window scale and SACK-permitted from a SYN. Absent options get
 * RFC defaults: MSS 536, no scaling, no SACK. */
static __always_inline void parse_syn_options(struct xdp_md *ctx, const struct packet *pkt,
					      struct syn_options *o)
{
	struct tcp_options_buf *buf;
	__u8 *opts;
	__u32 len, off, zero = 0;
	__u8 i = 0; /* a byte: always inside the buffer, even to the verifier */

	o->mss = 536;
	o->wscale = SYNCOOKIE_NO_WSCALE;
	o->sack = 0;
	if (!pkt->tcp)
		return;
	len = pkt->tcp->doff * 4 - sizeof(struct tcphdr);
	if (len == 0 || len > TCP_MAX_OPTIONS)
		return;
	off = (void *)(pkt->tcp + 1) - pkt->data;
	buf = bpf_map_lookup_elem(&tcp_options_scratch, &zero);
	if (!buf)
		return;
	opts = buf->b;
	buf->found = *o;
	if (bpf_xdp_load_bytes(ctx, off, opts, len))
		return;

	for (int n = 0; n < TCP_MAX_OPTIONS; n++) {
		__u8 kind, olen;

		if (i >= len || i >= TCP_MAX_OPTIONS - 1)
			break;
		kind = opts[i & 0xff];
		if (kind == TCPOPT_EOL)
			break;
		if (kind == TCPOPT_NOP) {
			i++;
			continue;
		}
		olen = opts[(i + 1) & 0xff];
		if (olen < 2 || i + olen > len)
			break;
		if (kind == TCPOPT_MSS && olen == 4 && i + 3 < TCP_MAX_OPTIONS) {
			__u16 mss = ((__u16)opts[(i + 2) & 0xff] << 8) | opts[(i + 3) & 0xff];

			if (mss)
				buf->found.mss = mss;
		} else if (kind == TCPOPT_WINDOW && olen == 3 && i + 2 < TCP_MAX_OPTIONS) {
			buf->found.wscale = opts[(i + 2) & 0xff] > 14 ? 14 : opts[(i + 2) & 0xff];
		} else if (kind == TCPOPT_SACK_PERM && olen == 2) {
			buf->found.sack = 1;
		}
		i += olen;
	}
	*o = buf->found;
}

struct pseudo_header {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
};

/* A SYN or SYN-ACK as the LB writes it: fixed-size options block of MSS,
 * SACK-permitted and window scale, NOP-padded where absent. The leading pad
 * aligns the IP and TCP headers for bpf_csum_diff; it is not sent. */
struct syn_frame {
	__u8 pad[2];
	struct ethhdr eth;
	struct iphdr ip;
	struct tcphdr tcp;
	__u8 opts[12];
};

#define FRAME_PAD 2

static __always_inline void syn_frame_options(struct syn_frame *f, __u16 mss, __u8 sack, __u8 wscale)
{
	f->opts[0] = TCPOPT_MSS;
	f->opts[1] = 4;
	f->opts[2] = mss >> 8;
	f->opts[3] = mss & 0xff;
	f->opts[4] = TCPOPT_NOP;
	f->opts[5] = TCPOPT_NOP;
	/* Arithmetic, not branches: every SYN writer passes a sack the
	 * verifier does not know, and a branch here doubles its paths. */
	sack &= 1;
	f->opts[6] = TCPOPT_NOP + sack * (TCPOPT_SACK_PERM - TCPOPT_NOP);
	f->opts[7] = TCPOPT_NOP + sack * (2 - TCPOPT_NOP);
	f->opts[8] = TCPOPT_NOP;
	f->opts[9] = wscale <= 14 ? TCPOPT_WINDOW : TCPOPT_NOP;
	f->opts[10] = wscale <= 14 ? 3 : TCPOPT_NOP;
	f->opts[11] = wscale <= 14 ? wscale : TCPOPT_NOP;
}

/* Fills in the IP header checksum and the TCP checksum of headers the LB
 * wrote itself: the TCP header (options included) is hdr_len bytes, the
 * segment tcp_len bytes, and payload_sum the bpf_csum_diff sum of whatever
 * follows the header (0 for none). */
static __always_inline void tcp_frame_checksums(struct iphdr *ip, struct tcphdr *tcp, __u32 hdr_len,
						__u32 tcp_len, __s64 payload_sum)
{
	struct pseudo_header ph = {
		.saddr = ip->saddr,
		.daddr = ip->daddr,
		.proto = IPPROTO_TCP,
		.len = bpf_htons(tcp_len),
	};
	__s64 sum;

	ip->check = 0;
	ip->check = ~csum_fold64(bpf_csum_diff(NULL, 0, (__be32 *)ip, sizeof(*ip), 0));
	tcp->check = 0;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), payload_sum);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)tcp, hdr_len, sum);
	tcp->check = ~csum_fold64(sum);
}

/* Fills in both checksums of a syn_frame whose other fields are final. */
static __always_inline void syn_frame_checksums(struct syn_frame *f)
{
	__u32 len = sizeof(f->tcp) + sizeof(f->opts);

	tcp_frame_checksums(&f->ip, &f->tcp, len, len, 0);
}

/* Resizes the frame to total bytes and writes the hdr_len bytes at frame
 * (past its pad) at its start. Growth comes from the tailroom, else from
 * the headroom (XDP guarantees 256 bytes of it; the tail of a buffer that
 * began as a socket buffer, as on veth, may have almost none). */
static __always_inline int write_frame(struct xdp_md *ctx, const void *frame, __u32 hdr_len, __u32 total)
{
	/* the verifier allows no arithmetic on data_end; the helper knows */
	int delta = (int)total - (int)bpf_xdp_get_buff_len(ctx);

	if (bpf_xdp_adjust_tail(ctx, delta) && (delta <= 0 || bpf_xdp_adjust_head(ctx, -delta)))
		return -1;
	return bpf_xdp_store_bytes(ctx, 0, (void *)frame + FRAME_PAD, hdr_len);
}

/* Turns a client's SYN into the LB's SYN-ACK, in place, for the caller to
 * send back. Returns 0, or -1 when the frame could not be rewritten. */
static __always_inline int answer_syn(struct xdp_md *ctx, const struct packet *pkt, __u32 cookie,
				      const struct syn_options *o)
{
	struct syn_frame f = {};

	__builtin_memcpy(f.eth.h_dest, pkt->eth->h_source, ETH_ALEN);
	__builtin_memcpy(f.eth.h_source, pkt->eth->h_dest, ETH_ALEN);
	f.eth.h_proto = bpf_htons(ETH_P_IP);
	f.ip.version = 4;
	f.ip.ihl = 5;
	f.ip.tot_len = bpf_htons(sizeof(f.ip) + sizeof(f.tcp) + sizeof(f.opts));
	f.ip.frag_off = bpf_htons(IP_DF);
	f.ip.ttl = 64;
	f.ip.protocol = IPPROTO_TCP;
	f.ip.saddr = pkt->ip->daddr;
	f.ip.daddr = pkt->ip->saddr;
	f.tcp.source = pkt->tcp->dest;
	f.tcp.dest = pkt->tcp->source;
	f.tcp.seq = bpf_htonl(cookie);
	f.tcp.ack_seq = bpf_htonl(bpf_ntohl(pkt->tcp->seq) + 1);
	f.tcp.doff = (sizeof(f.tcp) + sizeof(f.opts)) / 4;
	f.tcp.syn = 1;
	f.tcp.ack = 1;
	f.tcp.window = bpf_htons(LB_MSS);
	/* Window scaling only when the client offered it (RFC 7323). */
	syn_frame_options(&f, LB_MSS, o->sack, o->wscale <= 14 ? LB_WSCALE : SYNCOOKIE_NO_WSCALE);
	syn_frame_checksums(&f);

	return write_frame(ctx, &f, sizeof(f) - FRAME_PAD, sizeof(f) - FRAME_PAD) ? -1 : 0;
}

#endif
