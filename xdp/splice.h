/* The HTTP fast path (DESIGN §4): answer the handshake with a SYN cookie,
 * route the first request, open a connection to the backend carrying the
 * client's options and ISN, hand it the request, then translate sequence
 * numbers both ways. No state exists before a valid first data segment. */
#ifndef RAUTA_SPLICE_H
#define RAUTA_SPLICE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "constants.h"
#include "types.h"
#include "maps.h"
#include "csum.h"
#include "hash.h"
#include "parse.h"
#include "syncookie.h"
#include "handshake.h"
#include "http_parse.h"
#include "sack.h"
#include "socket.h"

struct stash {
	__u16 len;
	__u16 pad;
	/* zero-padded past len to a multiple of 4, for bpf_csum_diff */
	__u8 data[STASH_MAX + 4];
};

/* The first request of each connection whose backend handshake is in
 * flight, keyed by the client's flow key. When it is full the update fails
 * and the connection goes to the slow path. Preallocated: allocating each
 * 1.5 KB entry on insert (and charging it to the memory cgroup) took 2.3 µs,
 * half of a new connection's cost; preallocated entries come from a per-CPU
 * free list (0.3 µs) and cost MAX_STASHED × 1.5 KB of kernel memory. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_STASHED);
	__type(key, struct flow_key);
	__type(value, struct stash);
} stash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stash);
} stash_scratch SEC(".maps");

/* Keeps the len (1..STASH_MAX) payload bytes at off until the backend's
 * SYN-ACK, keyed by the client's flow. Fails when the stash is full. */
static __always_inline int stash_request(struct xdp_md *ctx, const struct packet *pkt, __u32 off,
					 __u32 len)
{
	__u32 zero = 0;
	struct stash *st = bpf_map_lookup_elem(&stash_scratch, &zero);

	if (!st)
		return -1;
	/* 1..STASH_MAX in a form the verifier keeps */
	len = ((len - 1) & 0x7ff) + 1;
	if (len > STASH_MAX)
		return -1;
	if (bpf_xdp_load_bytes(ctx, off, st->data, len))
		return -1;
	st->len = len;
	/* zero padding, so a checksum over whole words covers only the request */
	st->data[len & 0x7ff] = 0;
	st->data[(len + 1) & 0x7ff] = 0;
	st->data[(len + 2) & 0x7ff] = 0;
	return bpf_map_update_elem(&stash, &pkt->key, st, BPF_ANY) ? -1 : 0;
}

static __always_inline void count_slowpath(__u32 service_id, __u32 reason)
{
	__u32 key = service_id * SLOW_MAX + (reason < SLOW_MAX ? reason : SLOW_NOT_HTTP);
	__u64 *v = bpf_map_lookup_elem(&slowpath_counters, &key);

	if (v)
		*v += 1;
	count(service_id, COUNTER_SLOWPATH, 1);
}

static __always_inline __u32 payload_len(const struct packet *pkt)
{
	return bpf_ntohs(pkt->ip->tot_len) - pkt->ip->ihl * 4 - pkt->tcp->doff * 4;
}

static __always_inline __u32 payload_offset(const struct packet *pkt)
{
	return (void *)pkt->tcp + pkt->tcp->doff * 4 - pkt->data;
}

/* Where the request s describes, which began at sequence number seq, ends
 * (the next one begins there), and how what follows is read. */
static __always_inline void frame_request(struct flow *f, __u32 seq, const struct http_scratch *s)
{
	f->req_next = seq + s->p.hdr_end + (__u32)s->p.clen;
	f->framing = s->p.upgrade ? FRAMING_UPGRADE : FRAMING_HTTP;
}

/* Re-reads the headers after a call that invalidated the packet pointers
 * (write_frame, a global function), the TCP header l4_off bytes into the
 * frame: after the Ethernet and IP headers, IP options included. */
static __always_inline int reparse(struct xdp_md *ctx, struct packet *pkt, __u32 l4_off)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct tcphdr *tcp;

	if ((void *)(ip + 1) > data_end)
		return -1;
	if (l4_off < sizeof(*eth) + sizeof(*ip) || l4_off > sizeof(*eth) + 60)
		return -1;
	tcp = data + l4_off;
	if ((void *)(tcp + 1) > data_end)
		return -1;
	pkt->data = data;
	pkt->data_end = data_end;
	pkt->eth = eth;
	pkt->ip = ip;
	pkt->l4 = tcp;
	pkt->tcp = tcp;
	pkt->ports = (struct udphdr *)tcp;
	pkt->udp = NULL;
	return 0;
}

/* Turns the packet into the SYN to the backend of forward entry f: the
 * address and port of the client (cl, cport), its ISN, the options its
 * cookie carried, TTL ttl. The packet is the client's request, or the RST
 * of a backend that refused the previous SYN. */
static __always_inline int write_backend_syn(struct xdp_md *ctx, struct packet *pkt, const struct flow *f,
					     __be32 cl, __be16 cport, __u8 ttl)
{
	struct syn_frame out = {};
	__u32 window = f->client_window;

	__builtin_memcpy(&out.eth, pkt->eth, sizeof(out.eth));
	out.ip.version = 4;
	out.ip.ihl = 5;
	out.ip.tot_len = bpf_htons(sizeof(out.ip) + sizeof(out.tcp) + sizeof(out.opts));
	out.ip.frag_off = bpf_htons(IP_DF);
	out.ip.ttl = ttl;
	out.ip.protocol = IPPROTO_TCP;
	out.ip.saddr = cl;
	out.ip.daddr = f->nat_addr;
	out.tcp.source = cport;
	out.tcp.dest = f->nat_port;
	out.tcp.seq = bpf_htonl(f->client_isn);
	out.tcp.doff = (sizeof(out.tcp) + sizeof(out.opts)) / 4;
	out.tcp.syn = 1;
	/* A SYN's window is never scaled. */
	if (f->client_wscale <= 14)
		window <<= f->client_wscale;
	out.tcp.window = bpf_htons(window > 65535 ? 65535 : window);
	syn_frame_options(&out, f->mss, f->sack, f->client_wscale);
	syn_frame_checksums(&out);
	if (write_frame(ctx, &out, sizeof(out) - FRAME_PAD, sizeof(out) - FRAME_PAD) ||
	    reparse(ctx, pkt, sizeof(out.eth) + sizeof(out.ip)))
		return -1;
	return 0;
}

/* Picks the backend of a pool for a connection with Maglev. */
static __always_inline const struct backend *pool_backend(__u32 pool_id, const struct flow_key *key,
							  __u32 *backend_id)
{
	struct pool *pool = bpf_map_lookup_elem(&pools, &pool_id);
	const struct backend *be;
	__u32 slot, index, *id;
	void *table;

	if (!pool || pool->table_size == 0)
		return NULL;
	slot = pool->table_slot;
	table = bpf_map_lookup_elem(&maglev_tables, &slot);
	if (!table)
		return NULL;
	index = flow_hash(key) % pool->table_size;
	id = bpf_map_lookup_elem(table, &index);
	if (!id)
		return NULL;
	be = bpf_map_lookup_elem(&backends, id);
	if (!be || be->addr == 0)
		return NULL;
	*backend_id = *id;
	return be;
}

/* The walk through a pool's Maglev table for the next choice after a
 * refusal: slots idx, idx+1, ... (wrapping), each backend counted once,
 * empty entries (a backend removed by a reload) skipped; the want-th
 * distinct backend (0: the first choice) is the answer. The Go slow path
 * (router.Table.Backends) walks in exactly this order. */
struct next_choice {
	__u32 slot;    /* of the table in maglev_tables */
	__u32 size;
	__u32 idx;
	__u32 want;
	__u32 seen[HTTP_BACKEND_TRIES];
	__u32 found;   /* distinct backends met so far */
	__u32 id;      /* the answer, when found > want */
};

static long next_choice_step(__u64 k, void *ctx)
{
	struct next_choice *nc = ctx;
	__u32 slot = nc->slot, index = (nc->idx + (__u32)k) % nc->size, id;
	const struct backend *be;
	void *table;
	__u32 *entry;

	table = bpf_map_lookup_elem(&maglev_tables, &slot);
	if (!table)
		return 1;
	entry = bpf_map_lookup_elem(table, &index);
	if (!entry)
		return 1;
	id = *entry;
	be = bpf_map_lookup_elem(&backends, &id);
	if (!be || be->addr == 0)
		return 0;
	for (int i = 0; i < HTTP_BACKEND_TRIES; i++)
		if (i < nc->found && nc->seen[i] == id)
			return 0;
	if (nc->found >= nc->want) {
		nc->id = id;
		nc->found++;
		return 1;
	}
	/* constant indexes: the verifier sees every write inside seen */
	if (nc->found == 0)
		nc->seen[0] = id;
	else if (nc->found == 1)
		nc->seen[1] = id;
	else
		nc->seen[2] = id;
	nc->found++;
	return 0;
}

/* The want-th distinct usable backend of the pool for a connection, in the
 * order of next_choice; NULL when the pool has fewer. */
static __always_inline const struct backend *pool_choice(__u32 pool_id, const struct flow_key *key,
							 __u32 want, __u32 *backend_id)
{
	struct pool *pool = bpf_map_lookup_elem(&pools, &pool_id);
	struct next_choice nc = {};

	if (!pool || pool->table_size == 0 || want >= HTTP_BACKEND_TRIES)
		return NULL;
	nc.slot = pool->table_slot;
	nc.size = pool->table_size;
	nc.idx = flow_hash(key) % nc.size;
	nc.want = want;
	bpf_loop(nc.size, next_choice_step, &nc, 0);
	if (nc.found <= want)
		return NULL;
	*backend_id = nc.id;
	return bpf_map_lookup_elem(&backends, backend_id);
}

/* Looks up a route: first for the request's host, then host-less. */
static __always_inline struct route *find_route(struct http_scratch *s)
{
	struct route *r = bpf_map_lookup_elem(&routes, &s->key);

	if (r)
		return r;
	__builtin_memset(s->key.host, 0, sizeof(s->key.host));
	return bpf_map_lookup_elem(&routes, &s->key);
}

/* Whether the kernel has a connection (not a listener) for the segment's
 * tuple. Asked only off the hot paths: for SYNs, and for segments with no
 * flow that complete no cookie handshake (kernel_segment). */
static __always_inline int has_local_socket(struct xdp_md *ctx, const struct packet *pkt)
{
	struct bpf_sock *sk = tcp_socket(ctx, &pkt->key);
	int found;

	if (!sk)
		return 0;
	found = sk->state != BPF_TCP_LISTEN;
	bpf_sk_release(sk);
	return found;
}

/* Writes f as the entry of a connection the kernel owns: XDP passes its
 * segments, refreshing the entry and its state (SPLICE_SLOWPATH in
 * http_to_backend). */
static __always_inline void remember_slowpath(const struct packet *pkt, __u32 service_id, struct flow *f,
					      __u32 reason)
{
	f->splice = SPLICE_SLOWPATH;
	f->reason = reason;
	f->direction = FLOW_TO_BACKEND;
	f->service_id = service_id;
	f->last_seen_ns = bpf_ktime_get_coarse_ns();
	bpf_map_update_elem(&flows, &pkt->key, f, BPF_ANY);
}

static __always_inline int to_slowpath(struct packet *pkt, const struct service *svc, struct flow *f,
				       __u32 reason)
{
	remember_slowpath(pkt, svc->id, f, reason);
	count_slowpath(svc->id, reason);
	return XDP_PASS;
}

/* A client segment with no flow that does not complete a cookie handshake
 * (a bad cookie, an RST, a segment without ACK). It is the kernel's when
 * the kernel has a connection on the tuple: a slow-path connection whose
 * entry expired or was evicted, or one the kernel handshook itself after
 * a TIME_WAIT; the RST a client answers a TIME_WAIT socket's ACK with is
 * what frees the port. A data segment leaves a slow-path entry (f, still
 * empty), so the connection's next segments pass on one lookup. Without
 * such a connection the segment is dropped and counted as drop. */
static __always_inline int kernel_segment(struct xdp_md *ctx, struct packet *pkt, const struct service *svc,
					  struct flow *f, __u32 drop)
{
	if (!has_local_socket(ctx, pkt)) {
		count(svc->id, drop, 1);
		return XDP_DROP;
	}
	if (!pkt->tcp->syn && !pkt->tcp->rst)
		remember_slowpath(pkt, svc->id, f, SLOW_NONE);
	count(svc->id, COUNTER_PASS_LOCAL_SOCKET, 1);
	return XDP_PASS;
}

/* A client segment with no flow: the handshake's ACK, or the first request. */
static __always_inline int http_first_segment(struct xdp_md *ctx, struct packet *pkt,
					      const struct service *svc)
{
	struct tcphdr *tcp = pkt->tcp;
	struct syn_options o;
	struct flow f = {};
	struct http_scratch *s;
	struct route *r;
	const struct backend *be;
	__u32 zero = 0, isn, cookie, len, off, method = 0, reason, backend_id;

	if (!tcp->ack || tcp->rst || tcp->syn)
		return kernel_segment(ctx, pkt, svc, &f, COUNTER_DROP_HTTP_STATE);
	isn = bpf_ntohl(tcp->seq) - 1;
	cookie = bpf_ntohl(tcp->ack_seq) - 1;
	if (!syncookie_check(pkt->key.saddr, pkt->key.daddr, pkt->key.sport, pkt->key.dport, isn, cookie, &o))
		return kernel_segment(ctx, pkt, svc, &f, COUNTER_DROP_BAD_COOKIE);
	len = payload_len(pkt);
	if (len == 0) {
		/* The bare ACK completing the handshake: nothing to keep. */
		count(svc->id, COUNTER_HANDSHAKES_COMPLETED, 1);
		return XDP_DROP;
	}

	f.client_isn = isn;
	f.lb_isn = cookie;
	f.mss = o.mss;
	f.client_wscale = o.wscale;
	f.sack = o.sack;
	f.client_window = bpf_ntohs(tcp->window);

	/* Not even parsed: the slow path routes all of this service. */
	if (svc->flags & SERVICE_SLOWPATH)
		return to_slowpath(pkt, svc, &f, SLOW_SERVICE);

	s = bpf_map_lookup_elem(&http_scratch, &zero);
	if (!s)
		return XDP_DROP;
	off = payload_offset(pkt);
	reason = http_parse_request(ctx, off, len, s, &method);
	if (reason)
		return to_slowpath(pkt, svc, &f, reason);
	/* The slow path takes a segment with a second request in it: XDP
	 * routes one request per segment and would have to let the other go
	 * unrouted with it. */
	if (s->p.hdr_end + s->p.clen < len)
		return to_slowpath(pkt, svc, &f, SLOW_PIPELINED);
	s->key.service_id = svc->id;
	r = find_route(s);
	if (!r)
		return to_slowpath(pkt, svc, &f, SLOW_NO_ROUTE);
	if (r->methods && !(r->methods & method))
		return to_slowpath(pkt, svc, &f, SLOW_METHOD);
	if (len > STASH_MAX)
		return to_slowpath(pkt, svc, &f, SLOW_STASH_FULL);

	be = pool_backend(r->pool_id, &pkt->key, &backend_id);
	if (!be)
		goto no_backend;

	/* Stash the request until the backend's SYN-ACK. */
	if (stash_request(ctx, pkt, off, len))
		return to_slowpath(pkt, svc, &f, SLOW_STASH_FULL);

	f.nat_addr = be->addr;
	f.nat_port = be->port;
	f.direction = FLOW_TO_BACKEND;
	f.service_id = svc->id;
	f.backend_id = backend_id;
	f.pool_id = r->pool_id;
	f.splice = SPLICE_SYN_SENT;
	f.stash_pending = 1;
	f.stash_len = len;
	frame_request(&f, isn + 1, s);
	f.last_seen_ns = bpf_ktime_get_coarse_ns();
	record_reverse(&pkt->key, &f);
	bpf_map_update_elem(&flows, &pkt->key, &f, BPF_ANY);

	if (write_backend_syn(ctx, pkt, &f, pkt->ip->saddr, pkt->tcp->source, pkt->ip->ttl))
		return XDP_DROP;
	count(svc->id, COUNTER_NEW_FLOWS, 1);
	count(svc->id, COUNTER_BACKEND_SYNS, 1);
	return forward(ctx, pkt, svc->id);

no_backend:
	count(svc->id, COUNTER_DROP_NO_BACKEND, 1);
	return XDP_DROP;
}

/* Adds a 32-bit value to a sequence field, keeping the checksum. */
static __always_inline void seq_add(__be32 *field, __u32 delta, __u16 *check)
{
	__be32 old = *field;

	*field = bpf_htonl(bpf_ntohl(old) + delta);
	*check = csum_replace4(*check, old, *field);
}

static __always_inline void drop_splice(struct packet *pkt, struct flow *f)
{
	struct flow_key peer;

	peer_key(&pkt->key, f, &peer);
	if (f->direction == FLOW_TO_BACKEND)
		bpf_map_delete_elem(&stash, &pkt->key);
	else
		bpf_map_delete_elem(&stash, &peer);
	bpf_map_delete_elem(&flows, &peer);
	bpf_map_delete_elem(&flows, &pkt->key);
}

/* A frame the LB writes: Ethernet, IP and TCP headers without options,
 * after FRAME_PAD bytes that write_frame skips. */
struct tcp_frame {
	__u8 pad[FRAME_PAD];
	struct ethhdr eth;
	struct iphdr ip;
	struct tcphdr tcp;
};

/* Rewrites the packet into an RST from (saddr, sport) to (daddr, dport) with
 * sequence number seq, addressed back to the sender's MAC, and sends it
 * back out of the ingress interface. */
static __always_inline int reset_back(struct xdp_md *ctx, const struct packet *pkt, __be32 saddr,
				      __be16 sport, __be32 daddr, __be16 dport, __u32 seq)
{
	struct tcp_frame out = {};

	__builtin_memcpy(out.eth.h_dest, pkt->eth->h_source, ETH_ALEN);
	__builtin_memcpy(out.eth.h_source, pkt->eth->h_dest, ETH_ALEN);
	out.eth.h_proto = bpf_htons(ETH_P_IP);
	out.ip.version = 4;
	out.ip.ihl = 5;
	out.ip.tot_len = bpf_htons(sizeof(out.ip) + sizeof(out.tcp));
	out.ip.ttl = 64;
	out.ip.protocol = IPPROTO_TCP;
	out.ip.saddr = saddr;
	out.ip.daddr = daddr;
	out.tcp.source = sport;
	out.tcp.dest = dport;
	out.tcp.seq = bpf_htonl(seq);
	out.tcp.doff = 5;
	out.tcp.rst = 1;
	tcp_frame_checksums(&out.ip, &out.tcp, sizeof(out.tcp), sizeof(out.tcp), 0);
	if (write_frame(ctx, &out, sizeof(out) - FRAME_PAD, sizeof(out) - FRAME_PAD))
		return XDP_DROP;
	return send_back(ctx);
}

/* Whether a client segment begins with a method XDP routes: after a request
 * that asked for an upgrade, what tells a next request from the bytes of
 * the protocol the backend switched to. */
static __always_inline int starts_request(struct xdp_md *ctx, const struct packet *pkt)
{
	__u32 word;

	if (payload_len(pkt) < 4 || bpf_xdp_load_bytes(ctx, payload_offset(pkt), &word, 4))
		return 0;
	switch (bpf_ntohl(word)) {
	case 0x47455420: /* "GET " */
	case 0x48454144: /* "HEAD" */
	case 0x504f5354: /* "POST" */
	case 0x50555420: /* "PUT " */
	case 0x44454c45: /* "DELE" */
	case 0x50415443: /* "PATC" */
	case 0x4f505449: /* "OPTI" */
	case 0x54524143: /* "TRAC" */
		return 1;
	}
	return 0;
}

/* Ends a spliced connection whose client sent something XDP must not let
 * through to any backend (a request it cannot route, bytes it cannot
 * frame): RST to the client at the sequence number it expects from the LB,
 * both entries and the stash forgotten, counted with the reason. */
static __always_inline int reset_client(struct xdp_md *ctx, struct packet *pkt, struct flow *f,
					__u32 service_id, __u32 reason)
{
	__be32 vip = pkt->key.daddr, client = pkt->key.saddr;
	__be16 vport = pkt->key.dport, cport = pkt->key.sport;
	__u32 ack = bpf_ntohl(pkt->tcp->ack_seq);

	count(service_id, COUNTER_RESET_UNROUTABLE, 1);
	count_slowpath(service_id, reason);
	drop_splice(pkt, f);
	return reset_back(ctx, pkt, vip, vport, client, cport, ack);
}

/* A later request on a spliced connection. If it routes to the pool the
 * connection is bound to, it goes on as data. If it routes elsewhere, the
 * connection is rebound (DESIGN §4): the request is stashed and this segment
 * becomes a SYN to the new pool's backend, with the client's sequence
 * number continuing and the LB's continuing at what the client has
 * acknowledged; the old backend is reset when it next speaks. A request XDP
 * cannot route resets the client: it must never reach a pool its route
 * does not name. Returns 0 to let the segment through unchanged, else 1
 * with the verdict in *verdict. */
static __always_inline int http_later_request(struct xdp_md *ctx, struct packet *pkt,
					      __u32 service_id, struct flow *f, int *verdict)
{
	struct tcphdr *tcp = pkt->tcp;
	struct flow_key old_reverse;
	struct flow *old;
	struct http_scratch *s;
	struct route *r;
	const struct backend *be;
	__u32 zero = 0, method = 0, reason, len, off, backend_id;

	s = bpf_map_lookup_elem(&http_scratch, &zero);
	*verdict = XDP_DROP;
	if (!s)
		return 1;
	len = payload_len(pkt);
	off = payload_offset(pkt);
	reason = http_parse_request(ctx, off, len, s, &method);
	/* one request per segment: see http_first_segment */
	if (reason == SLOW_NONE && s->p.hdr_end + s->p.clen < len)
		reason = SLOW_PIPELINED;
	if (reason == SLOW_NONE) {
		s->key.service_id = service_id;
		r = find_route(s);
		if (!r)
			reason = SLOW_NO_ROUTE;
		else if (r->methods && !(r->methods & method))
			reason = SLOW_METHOD;
		else if (r->pool_id == f->pool_id)
			goto same_pool;
		else if (len > STASH_MAX)
			reason = SLOW_STASH_FULL;
	}
	if (reason != SLOW_NONE)
		goto reset;
	be = pool_backend(r->pool_id, &pkt->key, &backend_id);
	if (!be)
		goto reset;

	/* Rebind only once the client has acknowledged all the old backend
	 * sent: the new backend's bytes continue at the client's ack. A
	 * pipelined request is held (dropped) until then; the client sends it
	 * again. */
	peer_key(&pkt->key, f, &old_reverse);
	old = bpf_map_lookup_elem(&flows, &old_reverse);
	if (old && old->snd_nxt && bpf_ntohl(tcp->ack_seq) != old->snd_nxt) {
		count(service_id, COUNTER_DROP_HTTP_STATE, 1);
		return 1;
	}

	if (stash_request(ctx, pkt, off, len))
		goto reset;

	/* The old backend's entry stays, orphaned, to reset it. */
	if (old)
		old->splice = SPLICE_ORPHAN;

	f->nat_addr = be->addr;
	f->nat_port = be->port;
	f->backend_id = backend_id;
	f->pool_id = r->pool_id;
	f->splice = SPLICE_SYN_SENT;
	f->client_isn = bpf_ntohl(tcp->seq) - 1;
	f->lb_isn = bpf_ntohl(tcp->ack_seq) - 1;
	f->client_window = bpf_ntohs(tcp->window);
	f->stash_pending = 1;
	f->stash_len = len;
	frame_request(f, bpf_ntohl(tcp->seq), s);
	f->refusals = 0;

	record_reverse(&pkt->key, f);
	if (write_backend_syn(ctx, pkt, f, pkt->ip->saddr, pkt->tcp->source, pkt->ip->ttl))
		return 1;
	count(service_id, COUNTER_REBINDS, 1);
	count(service_id, COUNTER_BACKEND_SYNS, 1);
	*verdict = forward(ctx, pkt, service_id);
	return 1;

same_pool:
	frame_request(f, bpf_ntohl(tcp->seq), s);
	return 0;

reset:
	*verdict = reset_client(ctx, pkt, f, service_id, reason ? reason : SLOW_NO_ROUTE);
	return 1;
}

/* client -> backend on a spliced flow. */
static __always_inline int http_to_backend(struct xdp_md *ctx, struct packet *pkt, struct flow *f)
{
	__u32 service_id = f->service_id;
	struct tcphdr *tcp = pkt->tcp;
	__u32 seq = bpf_ntohl(tcp->seq);
	int refreshed;

	switch (f->splice) {
	case SPLICE_SLOWPATH:
		/* The kernel owns the connection; the entry only has to
		 * outlive it: the GC must see it used, and closed once the
		 * client ends it. */
		touch(f);
		raise_state(pkt, f);
		count(service_id, COUNTER_PASS_NOT_SERVICE, 1);
		return XDP_PASS;
	case SPLICE_SYN_SENT:
		/* The client retransmits its request while the backend has not
		 * answered: the backend's SYN was probably lost, send it again. */
		if (seq == f->client_isn + 1 && payload_len(pkt) > 0 && !tcp->syn && !tcp->rst) {
			if (write_backend_syn(ctx, pkt, f, pkt->ip->saddr, pkt->tcp->source, pkt->ip->ttl))
				return XDP_DROP;
			count(service_id, COUNTER_BACKEND_SYNS, 1);
			return forward(ctx, pkt, service_id);
		}
		if (tcp->rst) {
			drop_splice(pkt, f);
			return XDP_DROP;
		}
		count(service_id, COUNTER_DROP_HTTP_STATE, 1);
		return XDP_DROP;
	case SPLICE_ESTABLISHED:
		break;
	default:
		return XDP_DROP;
	}
	if (tcp->syn) {
		count(service_id, COUNTER_DROP_HTTP_STATE, 1);
		return XDP_DROP;
	}
	if (!tcp->rst && f->framing != FRAMING_OPAQUE) {
		__u32 len = payload_len(pkt);
		__s32 rel = seq - f->req_next;
		int verdict;

		if (len == 0) {
			/* an ACK, a FIN: nothing to frame */
		} else if (rel < 0) {
			/* The current request's bytes (body, or a retransmission):
			 * data, whatever they look like. A segment that also
			 * carries bytes past the request's end holds a pipelined
			 * request XDP did not route. */
			if ((__s32)(seq + len - f->req_next) > 0)
				return reset_client(ctx, pkt, f, service_id, SLOW_PIPELINED);
		} else if (rel > 0) {
			/* The segment that begins the next request is missing
			 * (lost, reordered): what follows it may go nowhere before
			 * it is routed. The client sends it again. */
			count(service_id, COUNTER_DROP_HTTP_STATE, 1);
			return XDP_DROP;
		} else if (f->framing == FRAMING_UPGRADE && !starts_request(ctx, pkt)) {
			/* The backend switched protocols: the rest is its. */
			f->framing = FRAMING_OPAQUE;
		} else if (http_later_request(ctx, pkt, service_id, f, &verdict)) {
			return verdict;
		}
	}
	refreshed = touch(f);
	/* an RST or FIN marks both entries; the RST itself is forwarded */
	track_teardown(pkt, f);
	if (tcp->ack)
		seq_add(&tcp->ack_seq, -f->seq_delta, &tcp->check);
	if (f->sack && tcp->doff > 5) {
		__u32 l4_off = (void *)tcp - pkt->data;

		if (sack_translate(ctx, l4_off, -f->seq_delta) || reparse(ctx, pkt, l4_off))
			return XDP_DROP;
	}
	if (nat_destination(pkt, f->nat_addr, f->nat_port))
		return XDP_DROP;
	return forward_flow(ctx, pkt, service_id, f, refreshed);
}

/* The backend's SYN-ACK: record its ISN and window scale and answer with the
 * ACK that carries the stashed request, back out the interface it came in. */
static __always_inline int http_backend_synack(struct xdp_md *ctx, struct packet *pkt, struct flow *f)
{
	struct tcphdr *tcp = pkt->tcp;
	struct syn_options o;
	struct flow_key client_key = {};
	struct flow *cf;
	struct stash *st;
	struct tcp_frame out = {};
	__u32 s = bpf_ntohl(tcp->seq), len;

	parse_syn_options(ctx, pkt, &o);
	peer_key(&pkt->key, f, &client_key);
	st = bpf_map_lookup_elem(&stash, &client_key);
	if (!st) {
		count(f->service_id, COUNTER_DROP_HTTP_STATE, 1);
		return XDP_DROP;
	}

	f->seq_delta = f->lb_isn - s;
	f->backend_wscale = o.wscale;
	f->splice = SPLICE_ESTABLISHED;
	cf = bpf_map_lookup_elem(&flows, &client_key);
	if (cf) {
		cf->seq_delta = f->seq_delta;
		cf->backend_wscale = o.wscale;
		cf->splice = SPLICE_ESTABLISHED;
	}

	len = ((st->len - 1) & 0x7ff) + 1;
	if (len > STASH_MAX)
		return XDP_DROP;
	__builtin_memcpy(out.eth.h_dest, pkt->eth->h_source, ETH_ALEN);
	__builtin_memcpy(out.eth.h_source, pkt->eth->h_dest, ETH_ALEN);
	out.eth.h_proto = bpf_htons(ETH_P_IP);
	out.ip.version = 4;
	out.ip.ihl = 5;
	out.ip.tot_len = bpf_htons(sizeof(out.ip) + sizeof(out.tcp) + len);
	out.ip.frag_off = bpf_htons(IP_DF);
	out.ip.ttl = 64;
	out.ip.protocol = IPPROTO_TCP;
	out.ip.saddr = pkt->ip->daddr;
	out.ip.daddr = pkt->ip->saddr;
	out.tcp.source = tcp->dest;
	out.tcp.dest = tcp->source;
	out.tcp.seq = bpf_htonl(f->client_isn + 1);
	out.tcp.ack_seq = bpf_htonl(s + 1);
	out.tcp.doff = 5;
	out.tcp.ack = 1;
	out.tcp.psh = 1;
	out.tcp.window = bpf_htons(f->client_window);
	tcp_frame_checksums(&out.ip, &out.tcp, sizeof(out.tcp), sizeof(out.tcp) + len,
			    bpf_csum_diff(NULL, 0, (__be32 *)st->data, (len + 3) & 0x7fc, 0));

	if (write_frame(ctx, &out, sizeof(out) - FRAME_PAD, sizeof(out) - FRAME_PAD + len) == 0) {
		if (bpf_xdp_store_bytes(ctx, sizeof(out) - FRAME_PAD, st->data, len))
			return XDP_DROP;
		count(f->service_id, COUNTER_SPLICED, 1);
		return send_back(ctx);
	}

	/* No room for the request in this frame: complete the backend's
	 * handshake with a bare ACK. The client's request was never
	 * acknowledged, so its retransmission carries it, translated like any
	 * established segment — slower (one retransmission timeout), not lost. */
	out.ip.tot_len = bpf_htons(sizeof(out.ip) + sizeof(out.tcp));
	out.tcp.psh = 0;
	tcp_frame_checksums(&out.ip, &out.tcp, sizeof(out.tcp), sizeof(out.tcp), 0);
	if (write_frame(ctx, &out, sizeof(out) - FRAME_PAD, sizeof(out) - FRAME_PAD))
		return XDP_DROP;
	count(f->service_id, COUNTER_SPLICED_NO_ROOM, 1);
	return send_back(ctx);
}

/* The backend refused the SYN of reverse entry f's connection (RST): offer
 * the SYN to the pool's next Maglev choice (pool_choice), the client's ISN
 * and options as before, unless HTTP_BACKEND_TRIES backends have refused.
 * The forward entry moves to the new backend, the refusing backend's
 * reverse entry is replaced by the new one's, the stash (keyed by the
 * client) stays. Returns 0 when there is no next choice, else 1 with the
 * verdict in *verdict. */
static __always_inline int next_backend(struct xdp_md *ctx, struct packet *pkt, struct flow *f, int *verdict)
{
	struct flow_key client_key = {};
	struct flow *cf;
	const struct backend *be;
	__u32 backend_id, refused = f->backend_id, service_id = f->service_id;
	__be32 cl = pkt->key.daddr;
	__be16 cport = pkt->key.dport;

	peer_key(&pkt->key, f, &client_key);
	cf = bpf_map_lookup_elem(&flows, &client_key);
	/* only the backend the connection is waiting for can refuse it */
	if (!cf || cf->splice != SPLICE_SYN_SENT || cf->backend_id != refused)
		return 0;
	if (cf->refusals + 1 >= HTTP_BACKEND_TRIES)
		return 0;
	be = pool_choice(cf->pool_id, &client_key, cf->refusals + 1, &backend_id);
	/* the same backend again only after a reload reshuffled the table */
	if (!be || be->addr == 0 || backend_id == refused)
		return 0;

	/* In place (a copy would not fit the stack beside bpf_loop's frame).
	 * The new backend cannot answer before the SYN below, so its reverse
	 * entry is there in time. */
	cf->nat_addr = be->addr;
	cf->nat_port = be->port;
	cf->backend_id = backend_id;
	cf->refusals++;
	record_reverse(&client_key, cf);
	bpf_map_delete_elem(&flows, &pkt->key); /* f is gone after this */

	*verdict = XDP_DROP;
	if (write_backend_syn(ctx, pkt, cf, cl, cport, 64))
		return 1;
	count(service_id, COUNTER_BACKEND_RETRIES, 1);
	count(service_id, COUNTER_BACKEND_SYNS, 1);
	*verdict = forward(ctx, pkt, service_id);
	return 1;
}

/* backend -> client on a spliced flow. */
static __always_inline int http_to_client(struct xdp_md *ctx, struct packet *pkt, struct flow *f)
{
	struct tcphdr *tcp = pkt->tcp;
	struct flow_key client_key = {};
	__u32 window;
	__u16 old_window;
	int refreshed;

	if (!tcp)
		return XDP_DROP;
	if (!accept_packet(pkt, f->service_id))
		return XDP_DROP;
	if (f->splice == SPLICE_ORPHAN) {
		/* The connection moved to another backend: end this one. */
		__be32 backend = pkt->key.saddr, client = pkt->key.daddr;
		__be16 bport = pkt->key.sport, cport = pkt->key.dport;
		__u32 seq = bpf_ntohl(tcp->ack_seq);

		bpf_map_delete_elem(&flows, &pkt->key);
		if (tcp->rst)
			return XDP_DROP;
		return reset_back(ctx, pkt, client, cport, backend, bport, seq);
	}
	if (tcp->syn && tcp->ack) {
		if (bpf_ntohl(tcp->ack_seq) != f->client_isn + 1) {
			count(f->service_id, COUNTER_DROP_HTTP_STATE, 1);
			return XDP_DROP;
		}
		/* first SYN-ACK, or a retransmission of it (our ACK was lost) */
		return http_backend_synack(ctx, pkt, f);
	}
	if (f->splice == SPLICE_SYN_SENT && tcp->ack && !tcp->rst) {
		/* An ACK instead of a SYN-ACK: the backend still has an older
		 * connection on this tuple (one the client was rebound away
		 * from) and challenges our SYN (RFC 5961). Its ACK number is
		 * the sequence an RST must carry; the client's retransmission
		 * then brings our SYN again. */
		return reset_back(ctx, pkt, pkt->key.daddr, pkt->key.dport, pkt->key.saddr, pkt->key.sport,
				  bpf_ntohl(tcp->ack_seq));
	}
	if (f->splice != SPLICE_ESTABLISHED) {
		if (tcp->rst) {
			/* The backend refused the connection: try the next one;
			 * when there is none, reset the client at the sequence
			 * number it expects from the LB. */
			__be32 old = tcp->seq;
			__u32 service_id = f->service_id;
			int verdict;

			if (f->splice == SPLICE_SYN_SENT && next_backend(ctx, pkt, f, &verdict))
				return verdict;

			tcp->seq = bpf_htonl(f->lb_isn + 1);
			tcp->check = csum_replace4(tcp->check, old, tcp->seq);
			if (nat_source(pkt, f->nat_addr, f->nat_port))
				return XDP_DROP;
			drop_splice(pkt, f); /* f is gone after this */
			return forward(ctx, pkt, service_id);
		}
		count(f->service_id, COUNTER_DROP_HTTP_STATE, 1);
		return XDP_DROP;
	}
	refreshed = touch(f);
	if (f->stash_pending && tcp->ack &&
	    (__s32)(bpf_ntohl(tcp->ack_seq) - (f->client_isn + 1 + f->stash_len)) >= 0) {
		peer_key(&pkt->key, f, &client_key);
		bpf_map_delete_elem(&stash, &client_key);
		f->stash_pending = 0;
	}
	track_teardown(pkt, f);
	seq_add(&tcp->seq, f->seq_delta, &tcp->check);
	{
		__u32 end = bpf_ntohl(tcp->seq) + payload_len(pkt) + tcp->fin;

		if ((__s32)(end - f->snd_nxt) > 0 || f->snd_nxt == 0)
			f->snd_nxt = end;
	}
	/* The client reads this window with the scale the LB announced. */
	if (f->client_wscale <= 14 && f->backend_wscale != LB_WSCALE) {
		old_window = tcp->window;
		window = bpf_ntohs(old_window);
		if (f->backend_wscale <= 14)
			window <<= f->backend_wscale;
		window >>= LB_WSCALE;
		if (window > 65535)
			window = 65535;
		tcp->window = bpf_htons(window);
		tcp->check = csum_replace2(tcp->check, old_window, tcp->window);
	}
	if (nat_source(pkt, f->nat_addr, f->nat_port))
		return XDP_DROP;
	return forward_flow(ctx, pkt, f->service_id, f, refreshed);
}

/* Every TCP packet to an HTTP service. */
static __always_inline int to_http_service(struct xdp_md *ctx, struct packet *pkt,
					   const struct service *svc, struct flow *f)
{
	struct tcphdr *tcp = pkt->tcp;
	struct syn_options o;
	__u32 cookie;
	int ok;

	if (!tcp) {
		count(svc->id, COUNTER_PASS_NOT_SERVICE, 1);
		return XDP_PASS;
	}
	if (!accept_packet(pkt, svc->id))
		return XDP_DROP;
	if (is_vip(pkt->key.saddr)) {
		count(svc->id, COUNTER_DROP_SPOOFED_VIP, 1);
		return XDP_DROP;
	}

	if (tcp->syn && !tcp->ack) {
		/* A SYN on the tuple of a known connection is a new connection:
		 * the old one finished, or ended unseen (a NAT reused the port,
		 * the client crashed, the kernel reset a slow-path one). Flows
		 * dispatched here never see a SYN of their own after the LB's
		 * SYN-ACK. */
		if (f && f->direction == FLOW_TO_BACKEND)
			drop_splice(pkt, f);
		/* The kernel still has a socket on this tuple: a slow-path
		 * connection the proxy closed first sits in TIME_WAIT, and a
		 * client reusing the port would get nothing but that socket's
		 * ACKs for the cookie's handshake. The kernel must see this
		 * SYN, to recycle the socket and answer it itself. */
		if (has_local_socket(ctx, pkt)) {
			count(svc->id, COUNTER_PASS_LOCAL_SOCKET, 1);
			return XDP_PASS;
		}
		parse_syn_options(ctx, pkt, &o);
		cookie = syncookie_make(pkt->key.saddr, pkt->key.daddr, pkt->key.sport, pkt->key.dport,
					bpf_ntohl(tcp->seq), &o, &ok);
		if (!ok) {
			count(svc->id, COUNTER_PASS_NO_COOKIE_KEY, 1);
			return XDP_PASS;
		}
		if (answer_syn(ctx, pkt, cookie, &o))
			return XDP_DROP;
		count(svc->id, COUNTER_SYN_COOKIES_SENT, 1);
		return send_back(ctx);
	}

	/* Segments of known connections were dispatched on their flow before
	 * the service lookup (rauta_xdp); what reaches here has none. */
	return http_first_segment(ctx, pkt, svc);
}

/* A client segment of a spliced connection, found by its flow. */
static __always_inline int http_from_client(struct xdp_md *ctx, struct packet *pkt, struct flow *f)
{
	if (!pkt->tcp)
		return XDP_DROP;
	if (!accept_packet(pkt, f->service_id))
		return XDP_DROP;
	return http_to_backend(ctx, pkt, f);
}

#endif
