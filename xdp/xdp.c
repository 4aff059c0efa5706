//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/* The RAUTA XDP program: L4 load balancing in gateway mode.
 *
 * client -> VIP:port    service lookup, flow table or Maglev, DNAT to the
 *                       backend, forward.
 * backend -> client     flow table (reverse entry), SNAT back to VIP:port,
 *                       forward.
 * ICMP errors           translated like the flow they quote.
 * anything else         XDP_PASS, untouched.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "constants.h"
#include "types.h"
#include "maps.h"
#include "csum.h"
#include "hash.h"
#include "parse.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Keep the enums in BTF so bpf2go -type can generate them for Go. */
const enum counter *unused_counter __attribute__((unused));
const enum flow_direction *unused_flow_direction __attribute__((unused));
const enum flow_state *unused_flow_state __attribute__((unused));
const enum splice_state *unused_splice_state __attribute__((unused));
const enum slowpath_reason *unused_slowpath_reason __attribute__((unused));
const enum http_method *unused_http_method __attribute__((unused));
const enum service_flags *unused_service_flags __attribute__((unused));
const enum http_framing *unused_http_framing __attribute__((unused));

static __always_inline int is_vip(__be32 addr)
{
	return bpf_map_lookup_elem(&vips, &addr) != NULL;
}

/* Rewrites one address of the IP header and the L4 checksum that covers it
 * through the pseudo header. l4_check may be NULL (ICMP, or UDP without a
 * checksum). */
static __always_inline void rewrite_addr(struct iphdr *ip, __be32 *field, __be32 to,
					 __u16 *l4_check, int is_udp)
{
	__be32 from = *field;

	*field = to;
	ip->check = csum_replace4(ip->check, from, to);
	if (l4_check) {
		*l4_check = csum_replace4(*l4_check, from, to);
		if (is_udp)
			*l4_check = udp_csum_mangled(*l4_check);
	}
}

static __always_inline void rewrite_port(__be16 *field, __be16 to, __u16 *l4_check, int is_udp)
{
	__be16 from = *field;

	*field = to;
	if (l4_check) {
		*l4_check = csum_replace2(*l4_check, from, to);
		if (is_udp)
			*l4_check = udp_csum_mangled(*l4_check);
	}
}

/* The L4 checksum field of a TCP or UDP packet, or NULL when there is none
 * to maintain (UDP with checksum 0). */
static __always_inline __u16 *l4_checksum(struct packet *pkt)
{
	if (pkt->tcp)
		return &pkt->tcp->check;
	if (pkt->udp && pkt->udp->check)
		return &pkt->udp->check;
	return NULL;
}

static __always_inline int nat_destination(struct packet *pkt, __be32 addr, __be16 port)
{
	int udp = pkt->key.proto == IPPROTO_UDP;
	struct udphdr *ports = pkt->ports;
	__u16 *check = l4_checksum(pkt);

	if (!ports)
		return -1;
	rewrite_addr(pkt->ip, &pkt->ip->daddr, addr, check, udp);
	rewrite_port(&ports->dest, port, check, udp);
	return 0;
}

static __always_inline int nat_source(struct packet *pkt, __be32 addr, __be16 port)
{
	int udp = pkt->key.proto == IPPROTO_UDP;
	struct udphdr *ports = pkt->ports;
	__u16 *check = l4_checksum(pkt);

	if (!ports)
		return -1;
	rewrite_addr(pkt->ip, &pkt->ip->saddr, addr, check, udp);
	rewrite_port(&ports->source, port, check, udp);
	return 0;
}

/* Sends a frame back out of the interface it came in on. A redirect to the
 * ingress interface rather than XDP_TX: on veth, frames that XDP_TX sends
 * from a packet the peer's stack transmitted never reached the peer (seen on
 * 6.18), while redirects do. */
static __always_inline int send_back(struct xdp_md *ctx)
{
	return bpf_redirect_map(&tx_ports, ctx->ingress_ifindex, XDP_TX);
}

/* Sends the (already translated) packet to its next hop: decrement the TTL
 * like any router, find the neighbour with the kernel's FIB, rewrite the MACs
 * and transmit. Whatever the FIB cannot finish (unknown neighbour, no route)
 * goes to the kernel, which resolves ARP or sends the ICMP error itself; the
 * packet is already translated, so the kernel forwards it as is. TTL expiry
 * is checked by the callers before anything is translated or recorded. */
static __always_inline void decrement_ttl(struct iphdr *ip)
{
	__u16 old_ttl_word = *(__u16 *)&ip->ttl, new_ttl_word;

	ip->ttl--;
	new_ttl_word = *(__u16 *)&ip->ttl;
	ip->check = csum_replace2(ip->check, old_ttl_word, new_ttl_word);
}

static __always_inline int transmit(struct xdp_md *ctx, __u32 ifindex)
{
	if (ifindex == ctx->ingress_ifindex)
		return send_back(ctx);
	return bpf_redirect_map(&tx_ports, ifindex, XDP_PASS);
}

/* forward for a packet of flow f (NULL when there is none). When the flow's
 * cached next hop is current (refreshed is 0: touch() did not just start a
 * new second) and covers the packet's size, it is used without a FIB
 * lookup; otherwise the lookup's result is cached in f. */
static __always_inline int forward_flow(struct xdp_md *ctx, struct packet *pkt, __u32 service_id,
					struct flow *f, int refreshed)
{
	struct iphdr *ip = pkt->ip;
	struct bpf_fib_lookup fib = {};
	__u16 len = bpf_ntohs(ip->tot_len);
	int rc;

	if (f && !refreshed && f->nh_ifindex && len <= f->nh_len) {
		decrement_ttl(ip);
		__builtin_memcpy(pkt->eth->h_dest, f->nh_dmac, ETH_ALEN);
		__builtin_memcpy(pkt->eth->h_source, f->nh_smac, ETH_ALEN);
		count(service_id, COUNTER_FORWARDED, 1);
		return transmit(ctx, f->nh_ifindex);
	}

	fib.family = AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	fib.tot_len = bpf_ntohs(ip->tot_len);
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	fib.ifindex = ctx->ingress_ifindex;

	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		count(service_id, COUNTER_PASS_NO_NEIGHBOUR, 1);
		return XDP_PASS;
	}
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		count(service_id, COUNTER_PASS_FRAG_NEEDED, 1);
		return XDP_PASS;
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		count(service_id, COUNTER_PASS_NO_ROUTE, 1);
		return XDP_PASS;
	}
	if (fib.ifindex != ctx->ingress_ifindex &&
	    !bpf_map_lookup_elem(&tx_ports, &fib.ifindex)) {
		count(service_id, COUNTER_PASS_NOT_IN_DEVMAP, 1);
		return XDP_PASS;
	}

	decrement_ttl(ip);
	__builtin_memcpy(pkt->eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(pkt->eth->h_source, fib.smac, ETH_ALEN);
	if (f) {
		/* a new lookup period starts from this packet's size */
		if (refreshed || f->nh_ifindex != fib.ifindex || len > f->nh_len)
			f->nh_len = len;
		f->nh_ifindex = fib.ifindex;
		__builtin_memcpy(f->nh_dmac, fib.dmac, ETH_ALEN);
		__builtin_memcpy(f->nh_smac, fib.smac, ETH_ALEN);
	}
	count(service_id, COUNTER_FORWARDED, 1);
	return transmit(ctx, fib.ifindex);
}

static __always_inline int forward(struct xdp_md *ctx, struct packet *pkt, __u32 service_id)
{
	return forward_flow(ctx, pkt, service_id, NULL, 0);
}

static __always_inline int is_tcp_syn(struct packet *pkt)
{
	struct tcphdr *tcp = pkt->tcp;

	return tcp && tcp->syn && !tcp->ack;
}

/* The key of the entry for the other direction of the same connection. */
static __always_inline void peer_key(const struct flow_key *key, const struct flow *f,
				     struct flow_key *peer)
{
	__builtin_memset(peer, 0, sizeof(*peer));
	peer->proto = key->proto;
	if (f->direction == FLOW_TO_BACKEND) {
		peer->saddr = f->nat_addr;
		peer->sport = f->nat_port;
		peer->daddr = key->saddr;
		peer->dport = key->sport;
	} else {
		peer->saddr = key->daddr;
		peer->sport = key->dport;
		peer->daddr = f->nat_addr;
		peer->dport = f->nat_port;
	}
}

/* Records the backend -> client entry mirroring forward entry f of the
 * connection whose client -> VIP key is key. */
static __always_inline void record_reverse(const struct flow_key *key, const struct flow *f)
{
	struct flow_key reverse;
	struct flow back = *f;

	peer_key(key, f, &reverse);
	back.nat_addr = key->daddr;
	back.nat_port = key->dport;
	back.direction = FLOW_TO_CLIENT;
	bpf_map_update_elem(&flows, &reverse, &back, BPF_ANY);
}

/* Moves f to FLOW_CLOSING on a FIN and to FLOW_CLOSED on an RST, never
 * back; returns the state it moved to, FLOW_OPEN (0) when it did not. */
static __always_inline __u8 raise_state(const struct packet *pkt, struct flow *f)
{
	struct tcphdr *tcp = pkt->tcp;
	__u8 state;

	if (!tcp || !(tcp->fin || tcp->rst))
		return FLOW_OPEN;
	state = tcp->rst ? FLOW_CLOSED : FLOW_CLOSING;
	if (f->state >= state)
		return FLOW_OPEN;
	f->state = state;
	return state;
}

/* FIN and RST end a connection: mark both entries so the Go GC can remove
 * them after the short closed timeout rather than the idle one. */
static __always_inline void track_teardown(struct packet *pkt, struct flow *f)
{
	struct flow_key peer;
	struct flow *pf;
	__u8 state = raise_state(pkt, f);

	if (state == FLOW_OPEN)
		return;
	peer_key(&pkt->key, f, &peer);
	pf = bpf_map_lookup_elem(&flows, &peer);
	if (pf && pf->state < state)
		pf->state = state;
}

/* Refreshes last_seen_ns once a second; returns 1 when it did, which also
 * tells forward_flow to look the next hop up again. */
static __always_inline int touch(struct flow *f)
{
	__u64 now = bpf_ktime_get_coarse_ns();

	if (now - f->last_seen_ns <= FLOW_REFRESH_NS)
		return 0;
	f->last_seen_ns = now;
	return 1;
}

/* Picks a backend with the service's Maglev table and records both
 * directions of the flow. Returns NULL when the pool has no backend. */
static __always_inline const struct backend *new_flow(struct packet *pkt, const struct service *svc,
						      struct flow *f)
{
	const struct backend *be;
	__u32 slot = svc->table_slot;
	__u32 index, *backend_id;
	void *table;

	if (svc->table_size == 0)
		return NULL;
	table = bpf_map_lookup_elem(&maglev_tables, &slot);
	if (!table)
		return NULL;
	index = flow_hash(&pkt->key) % svc->table_size;
	backend_id = bpf_map_lookup_elem(table, &index);
	if (!backend_id)
		return NULL;
	be = bpf_map_lookup_elem(&backends, backend_id);
	if (!be || be->addr == 0)
		return NULL;

	f->nat_addr = be->addr;
	f->nat_port = be->port;
	f->direction = FLOW_TO_BACKEND;
	/* a flow first seen through its FIN or RST is already ending */
	f->state = FLOW_OPEN;
	raise_state(pkt, f);
	f->service_id = svc->id;
	f->backend_id = *backend_id;
	f->last_seen_ns = bpf_ktime_get_coarse_ns();

	/* Reverse first: a reply can never find a forward entry without its
	 * way back. */
	record_reverse(&pkt->key, f);
	bpf_map_update_elem(&flows, &pkt->key, f, BPF_ANY);
	return be;
}

/* A packet that would leave with TTL 0 is dropped before it is translated or
 * recorded. The LB does not send time-exceeded errors yet: traceroute through
 * a VIP shows a silent hop. */
static __always_inline int ttl_expired(struct packet *pkt, __u32 service_id)
{
	if (pkt->ip->ttl > 1)
		return 0;
	count(service_id, COUNTER_DROP_TTL_EXCEEDED, 1);
	return 1;
}

/* Counts a packet of a service and says whether it may go on: one that
 * would leave with TTL 0 is dropped before anything is translated. */
static __always_inline int accept_packet(struct packet *pkt, __u32 service_id)
{
	count(service_id, COUNTER_RX_PACKETS, 1);
	count(service_id, COUNTER_RX_BYTES, pkt->data_end - pkt->data);
	return !ttl_expired(pkt, service_id);
}

/* A packet of an L4 connection the flow table knows, either direction:
 * client -> backend gets its destination translated, backend -> client its
 * source. */
static __always_inline int established(struct xdp_md *ctx, struct packet *pkt, struct flow *f)
{
	int refreshed, bad;

	if (!accept_packet(pkt, f->service_id))
		return XDP_DROP;
	refreshed = touch(f);
	track_teardown(pkt, f);
	if (f->direction == FLOW_TO_BACKEND)
		bad = nat_destination(pkt, f->nat_addr, f->nat_port);
	else
		bad = nat_source(pkt, f->nat_addr, f->nat_port);
	if (bad) {
		count(f->service_id, COUNTER_DROP_MALFORMED, 1);
		return XDP_DROP;
	}
	return forward_flow(ctx, pkt, f->service_id, f, refreshed);
}

/* client -> VIP with no usable flow: a new L4 flow. */
static __always_inline int to_service(struct xdp_md *ctx, struct packet *pkt,
				      const struct service *svc)
{
	struct flow fresh = {};

	if (!accept_packet(pkt, svc->id))
		return XDP_DROP;

	/* Only the LB speaks from a VIP. A flow opened from one would turn the
	 * backend's replies into packets from the VIP to itself. */
	if (is_vip(pkt->key.saddr)) {
		count(svc->id, COUNTER_DROP_SPOOFED_VIP, 1);
		return XDP_DROP;
	}
	if (!new_flow(pkt, svc, &fresh)) {
		count(svc->id, COUNTER_DROP_NO_BACKEND, 1);
		return XDP_DROP;
	}
	count(svc->id, COUNTER_NEW_FLOWS, 1);
	if (nat_destination(pkt, fresh.nat_addr, fresh.nat_port))
		goto malformed;
	return forward(ctx, pkt, svc->id);
malformed:
	count(svc->id, COUNTER_DROP_MALFORMED, 1);
	return XDP_DROP;
}

/* ICMP errors quote the IP header and first 8 bytes of the packet they are
 * about. An error about a translated flow is translated the same way, so the
 * host that sent the original packet recognises it (path MTU discovery
 * depends on this). The quoted L4 checksum is left alone: it covers bytes
 * that the quote truncates, and no stack verifies it. */
static __always_inline int handle_icmp(struct xdp_md *ctx, struct packet *pkt)
{
	struct icmphdr *icmp = pkt->l4;
	struct iphdr *inner;
	struct udphdr *inner_l4; /* ports sit at the same offsets in TCP */
	struct flow_key key = {};
	struct service_key quoted_service = {};
	struct flow *f;
	__be32 old_addr;
	__be16 old_port;
	int to_vip = is_vip(pkt->key.daddr);

	if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED) {
		/* echo and friends to a VIP are the kernel's: it owns the address */
		count(0, COUNTER_PASS_NOT_SERVICE, 1);
		return XDP_PASS;
	}

	inner = (void *)(icmp + 1);
	if ((void *)(inner + 1) > pkt->data_end)
		goto truncated;
	if (inner->ihl != 5 || (inner->protocol != IPPROTO_TCP && inner->protocol != IPPROTO_UDP)) {
		count(0, COUNTER_PASS_NOT_SERVICE, 1);
		return XDP_PASS;
	}
	inner_l4 = (void *)(inner + 1);
	/* the quote must lie inside the IP packet, not in Ethernet padding */
	if ((void *)(inner_l4 + 1) > pkt->data_end ||
	    (void *)(inner_l4 + 1) > (void *)pkt->ip + bpf_ntohs(pkt->ip->tot_len))
		goto truncated;

	/* The quote is a packet the LB emitted; the entry that translated it
	 * is the one for packets travelling the other way, keyed by the
	 * reversed quote.
	 *
	 * The ICMP checksum covers the quoted IP header, but a valid IP header
	 * always sums to ~0: changing an address and fixing the header's own
	 * checksum leaves the ICMP sum as it was. Only the port changes count. */
	key.saddr = inner->daddr;
	key.daddr = inner->saddr;
	key.sport = inner_l4->dest;
	key.dport = inner_l4->source;
	key.proto = inner->protocol;
	f = bpf_map_lookup_elem(&flows, &key);
	/* an error that would be translated must survive its own hop too */
	if (f && f->direction == (to_vip ? FLOW_TO_BACKEND : FLOW_TO_CLIENT) &&
	    ttl_expired(pkt, f->service_id))
		return XDP_DROP;

	if (to_vip) {
		/* Client side: the quote is VIP:vport -> client. */
		if (!f || f->direction != FLOW_TO_BACKEND) {
			/* About a service's flow we no longer know: nobody to
			 * tell. About the host's own sockets on the VIP (ssh,
			 * the slow path): the kernel's. */
			quoted_service.vip = inner->saddr;
			quoted_service.port = inner_l4->source;
			quoted_service.proto = inner->protocol;
			if (bpf_map_lookup_elem(&services, &quoted_service)) {
				count(0, COUNTER_DROP_ICMP_UNKNOWN_FLOW, 1);
				return XDP_DROP;
			}
			count(0, COUNTER_PASS_NOT_SERVICE, 1);
			return XDP_PASS;
		}
		/* quote: VIP:vport -> client  becomes  backend:bport -> client */
		old_addr = inner->saddr;
		inner->saddr = f->nat_addr;
		inner->check = csum_replace4(inner->check, old_addr, f->nat_addr);
		old_port = inner_l4->source;
		inner_l4->source = f->nat_port;
		icmp->checksum = csum_replace2(icmp->checksum, old_port, f->nat_port);
		/* A spliced flow's quoted sequence number is in the LB's space;
		 * the backend only accepts an error about its own. It sits in
		 * the 8 quoted bytes, where UDP has its length and checksum. */
		if (f->splice != SPLICE_NONE && inner->protocol == IPPROTO_TCP) {
			__be32 *seq = (__be32 *)((void *)inner_l4 + 4);
			__be32 old_seq = *seq;

			*seq = bpf_htonl(bpf_ntohl(old_seq) - f->seq_delta);
			icmp->checksum = csum_replace4(icmp->checksum, old_seq, *seq);
		}
		rewrite_addr(pkt->ip, &pkt->ip->daddr, f->nat_addr, NULL, 0);
	} else {
		/* Backend side: the quote is client -> backend:bport; the
		 * reverse entry holds the VIP to restore. */
		if (!f || f->direction != FLOW_TO_CLIENT) {
			count(0, COUNTER_PASS_NOT_SERVICE, 1);
			return XDP_PASS;
		}
		/* quote: client -> backend:bport  becomes  client -> VIP:vport */
		old_addr = inner->daddr;
		inner->daddr = f->nat_addr;
		inner->check = csum_replace4(inner->check, old_addr, f->nat_addr);
		old_port = inner_l4->dest;
		inner_l4->dest = f->nat_port;
		icmp->checksum = csum_replace2(icmp->checksum, old_port, f->nat_port);
		/* The error came from the backend (or a router on its side); to
		 * the client it must look like it came from the VIP's side. */
		if (pkt->ip->saddr == old_addr)
			rewrite_addr(pkt->ip, &pkt->ip->saddr, f->nat_addr, NULL, 0);
	}
	count(f->service_id, COUNTER_ICMP_FORWARDED, 1);
	return forward(ctx, pkt, f->service_id);

truncated:
	if (to_vip) {
		count(0, COUNTER_DROP_MALFORMED, 1);
		return XDP_DROP;
	}
	count(0, COUNTER_PASS_NOT_SERVICE, 1);
	return XDP_PASS;
}

/* The HTTP fast path builds on the L4 helpers above. */
#include "splice.h"

SEC("xdp")
int rauta_xdp(struct xdp_md *ctx)
{
	struct packet pkt = {};
	struct service *svc;
	struct service_key skey = {};
	struct flow *f;

	switch (parse_packet(ctx, &pkt)) {
	case PARSE_OK:
		break;
	case PARSE_NOT_IPV4:
		count(0, COUNTER_PASS_NOT_IPV4, 1);
		return XDP_PASS;
	case PARSE_FRAGMENT:
		if (is_vip(pkt.key.daddr)) {
			count(0, COUNTER_DROP_FRAGMENT, 1);
			return XDP_DROP;
		}
		count(0, COUNTER_PASS_NOT_SERVICE, 1);
		return XDP_PASS;
	case PARSE_MALFORMED:
		/* Garbage for a VIP is ours to drop; anything else is the
		 * kernel's to judge, exactly as if we were not here. */
		if (pkt.ip && is_vip(pkt.key.daddr)) {
			count(0, COUNTER_DROP_MALFORMED, 1);
			return XDP_DROP;
		}
		count(0, COUNTER_PASS_NOT_SERVICE, 1);
		return XDP_PASS;
	default:
		count(0, COUNTER_PASS_NOT_SERVICE, 1);
		return XDP_PASS;
	}

	if (pkt.key.proto == IPPROTO_ICMP)
		return handle_icmp(ctx, &pkt);

	/* Known connections first: one lookup serves both directions, and a
	 * service removed while its connections are open lets them finish, as
	 * draining does. A SYN on a finished connection starts a new one. */
	f = bpf_map_lookup_elem(&flows, &pkt.key);
	if (f) {
		if (f->direction == FLOW_TO_CLIENT) {
			if (f->splice != SPLICE_NONE)
				return http_to_client(ctx, &pkt, f);
			return established(ctx, &pkt, f);
		}
		if (!is_tcp_syn(&pkt)) {
			if (f->splice != SPLICE_NONE)
				return http_from_client(ctx, &pkt, f);
			return established(ctx, &pkt, f);
		}
		if (f->splice == SPLICE_NONE && f->state == FLOW_OPEN)
			return established(ctx, &pkt, f); /* a retransmitted SYN */
	}

	skey.vip = pkt.key.daddr;
	skey.port = pkt.key.dport;
	skey.proto = pkt.key.proto;
	svc = bpf_map_lookup_elem(&services, &skey);
	if (svc) {
		if (svc->flags & SERVICE_HTTP)
			return to_http_service(ctx, &pkt, svc, f);
		return to_service(ctx, &pkt, svc);
	}

	count(0, COUNTER_PASS_NOT_SERVICE, 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
