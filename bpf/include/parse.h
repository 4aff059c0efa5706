/* Bounds-checked header parsing. Every accessor proves to the verifier that
 * the bytes it returns lie inside the frame; callers never index raw data. */
#ifndef RAUTA_PARSE_H
#define RAUTA_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>

#include "constants.h"
#include "types.h"

/* linux/icmp.h drags in libc headers that a BPF target cannot build, so the
 * few ICMP definitions needed live here. */
#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11

struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest;
};

struct packet {
	void *data;
	void *data_end;
	struct ethhdr *eth;
	struct iphdr *ip;
	void *l4;
	/* Typed views of l4, NULL unless the protocol matches and the header
	 * fits. Kept as pointers so the verifier still knows their bounds after
	 * they are spilled to the stack; ports covers TCP and UDP alike. */
	struct tcphdr *tcp;
	struct udphdr *udp;
	struct udphdr *ports;
	struct flow_key key;
};

enum parse_result {
	PARSE_OK = 0,
	PARSE_NOT_IPV4,
	PARSE_MALFORMED,
	PARSE_FRAGMENT,
	PARSE_OTHER_PROTO,
};

/* Parses Ethernet, IPv4 (with options) and the ports of TCP and UDP into
 * pkt->key. ICMP is returned as PARSE_OK with zero ports; the caller looks at
 * pkt->key.proto. */
static __always_inline enum parse_result parse_packet(struct xdp_md *ctx, struct packet *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 ihl, tot;

	pkt->data = data;
	pkt->data_end = data_end;
	if ((void *)(eth + 1) > data_end)
		return PARSE_MALFORMED;
	pkt->eth = eth;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IPV4;

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return PARSE_MALFORMED;
	pkt->ip = ip;
	pkt->key.saddr = ip->saddr;
	pkt->key.daddr = ip->daddr;
	pkt->key.proto = ip->protocol;
	if (ip->version != 4)
		return PARSE_MALFORMED;
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return PARSE_MALFORMED;
	if ((void *)ip + ihl > data_end)
		return PARSE_MALFORMED;
	/* A total length beyond the frame means a truncated packet; one shorter
	 * than the headers is nonsense. Ethernet padding may follow it. */
	if (bpf_ntohs(ip->tot_len) < ihl || (void *)ip + bpf_ntohs(ip->tot_len) > data_end)
		return PARSE_MALFORMED;

	pkt->l4 = (void *)ip + ihl;

	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PARSE_FRAGMENT;

	/* Headers must fit the IP packet, not only the frame: Ethernet padding
	 * after a short packet is not a header. */
	tot = bpf_ntohs(ip->tot_len);
	switch (ip->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = pkt->l4;

		if ((void *)(tcp + 1) > data_end)
			return PARSE_MALFORMED;
		if (tcp->doff < 5 || (void *)tcp + tcp->doff * 4 > data_end ||
		    ihl + tcp->doff * 4 > tot)
			return PARSE_MALFORMED;
		pkt->key.sport = tcp->source;
		pkt->key.dport = tcp->dest;
		pkt->tcp = tcp;
		pkt->ports = (struct udphdr *)tcp;
		return PARSE_OK;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = pkt->l4;

		if ((void *)(udp + 1) > data_end)
			return PARSE_MALFORMED;
		if (bpf_ntohs(udp->len) < sizeof(*udp) || ihl + bpf_ntohs(udp->len) > tot)
			return PARSE_MALFORMED;
		pkt->key.sport = udp->source;
		pkt->key.dport = udp->dest;
		pkt->udp = udp;
		pkt->ports = udp;
		return PARSE_OK;
	}
	case IPPROTO_ICMP:
		if (pkt->l4 + sizeof(struct icmphdr) > data_end || ihl + sizeof(struct icmphdr) > tot)
			return PARSE_MALFORMED;
		return PARSE_OK;
	default:
		return PARSE_OTHER_PROTO;
	}
}

#endif
