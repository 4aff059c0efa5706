//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/* The slow-path handoff (DESIGN §7). XDP answers every SYN of an HTTP
 * service with a SYN cookie and keeps no state. When it cannot route a
 * connection's first request it marks the flow SPLICE_SLOWPATH and passes
 * the segment up. No socket exists for it: the kernel never saw the SYN.
 * This program, at TC ingress, gives the kernel the handshake it missed:
 * it re-validates the cookie, recovers the client's options from it and
 * calls bpf_sk_assign_tcp_reqsk, so the listening proxy accepts the
 * connection as if the kernel had answered the SYN itself. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "constants.h"
#include "flows_map.h"
#include "socket.h"
#include "syncookie.h"

char __license[] SEC("license") = "GPL";

/* The kfunc's attribute block, as the kernel defines it (its layout is ABI:
 * the kfunc rejects any other size). */
struct bpf_tcp_req_attrs {
	__u32 rcv_tsval;
	__u32 rcv_tsecr;
	__u16 mss;
	__u8 rcv_wscale;
	__u8 snd_wscale;
	__u8 ecn_ok;
	__u8 wscale_ok;
	__u8 sack_ok;
	__u8 tstamp_ok;
	__u8 usec_ts_ok;
	__u8 reserved[3];
};

/* Only ever pointed to; a complete (empty) type, because a forward
 * declaration does not match the kernel's struct in the kfunc's BTF. */
struct sock {
};
extern int bpf_sk_assign_tcp_reqsk(struct __sk_buff *skb, struct sock *sk, struct bpf_tcp_req_attrs *attrs,
				   int attrs__sz) __ksym;

/* What the handoff did, per CPU; the daemon exports them. */
enum handoff_counter {
	HANDOFF_ASSIGNED,	/* the kernel got a request socket */
	HANDOFF_NO_LISTENER,	/* nothing listens on the VIP:port */
	HANDOFF_BAD_COOKIE,	/* the segment does not complete the cookie handshake */
	HANDOFF_FAILED,		/* bpf_sk_assign_tcp_reqsk refused */
	HANDOFF_COUNTER_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HANDOFF_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} handoff_counters SEC(".maps");

/* Keeps the enum in BTF for bpf2go -type. */
const enum handoff_counter *unused_handoff_counter __attribute__((unused));

static __always_inline void count_handoff(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&handoff_counters, &c);

	if (v)
		*v += 1;
}

SEC("tc")
int rauta_handoff(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct bpf_tcp_req_attrs attrs = {};
	struct flow_key key = {};
	struct syn_options o;
	struct bpf_sock *skc;
	struct tcp_sock *tp;
	struct iphdr *ip;
	struct tcphdr *tcp;
	struct flow *f;
	__u32 isn, cookie;
	int err;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->ihl != 5 || ip->protocol != IPPROTO_TCP)
		return TC_ACT_OK;
	tcp = (void *)(ip + 1);
	if ((void *)(tcp + 1) > data_end)
		return TC_ACT_OK;
	/* Only the segment that completes the handshake can create the
	 * socket: the kernel takes both ISNs from it. */
	if (tcp->syn || tcp->rst || !tcp->ack)
		return TC_ACT_OK;

	key.saddr = ip->saddr;
	key.daddr = ip->daddr;
	key.sport = tcp->source;
	key.dport = tcp->dest;
	key.proto = IPPROTO_TCP;
	f = bpf_map_lookup_elem(&flows, &key);
	if (!f || f->splice != SPLICE_SLOWPATH)
		return TC_ACT_OK;
	isn = bpf_ntohl(tcp->seq) - 1;
	cookie = bpf_ntohl(tcp->ack_seq) - 1;
	if (isn != f->client_isn || cookie != f->lb_isn)
		return TC_ACT_OK; /* a later segment: the socket exists */

	skc = tcp_socket(skb, &key);
	if (!skc) {
		count_handoff(HANDOFF_NO_LISTENER);
		return TC_ACT_OK; /* the kernel answers with a reset */
	}
	if (skc->state != BPF_TCP_LISTEN) {
		/* A retransmission after the socket was made. */
		bpf_sk_release(skc);
		return TC_ACT_OK;
	}
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp) {
		bpf_sk_release(skc);
		return TC_ACT_OK;
	}
	/* XDP validated this cookie before it marked the flow; validating
	 * again costs one SipHash per connection and keeps a flow entry from
	 * being the only thing between a forged segment and a socket. */
	if (!syncookie_check(ip->saddr, ip->daddr, tcp->source, tcp->dest, isn, cookie, &o)) {
		bpf_sk_release(skc);
		count_handoff(HANDOFF_BAD_COOKIE);
		return TC_ACT_SHOT;
	}
	/* The options the LB's SYN-ACK agreed to (bpf/include/handshake.h):
	 * the client's MSS, SACK if offered, scaling with LB_WSCALE if offered,
	 * no timestamps. */
	attrs.mss = o.mss;
	attrs.sack_ok = o.sack;
	if (o.wscale <= 14) {
		attrs.wscale_ok = 1;
		attrs.snd_wscale = o.wscale;
		attrs.rcv_wscale = LB_WSCALE;
	}
	err = bpf_sk_assign_tcp_reqsk(skb, (struct sock *)tp, &attrs, sizeof(attrs));
	bpf_sk_release(skc);
	if (err) {
		count_handoff(HANDOFF_FAILED);
		return TC_ACT_SHOT;
	}
	count_handoff(HANDOFF_ASSIGNED);
	return TC_ACT_OK;
}
