//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/* A netem stand-in for kernels without sch_netem (and without sch_fq, so no
 * EDT delay either): loss, delay, jitter and reordering for IPv4 TCP on one
 * interface, decided per packet in BPF, with the delayed packets held by a
 * user-space delay line (tools/impair/delayline.go).
 *
 * impair_xdp   packets the interface receives. Drop with probability
 *              loss; otherwise, if the packet is to be delayed, copy the
 *              frame into the `delayed` ring buffer with its due time and
 *              drop it; user space sends it back in through impair_tc.
 * impair_tc    (TCX egress) packets the interface sends.
 *              - mark == reinject_ingress_mark: a delayed received frame
 *                coming back from user space: redirect it to this
 *                interface's ingress (XDP does not see it again).
 *              - mark == reinject_egress_mark: a delayed sent frame coming
 *                back: let it go.
 *              - otherwise the same decision as impair_xdp.
 *
 * Packets the program takes away on egress (lost or queued for delay) leave
 * with a redirect to ifindex 0, which does not exist: the kernel frees them
 * but reports NET_XMIT_SUCCESS to the sender, as netem does. TCX_DROP would
 * return NET_XMIT_DROP, and a local TCP sender would simply send the segment
 * again at once instead of experiencing a loss.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TCX_NEXT -1
#define TCX_PASS 0

/* The room for a frame in the delay line: a 1500-byte MTU plus Ethernet
 * and a VLAN tag fit. Larger packets (GSO/GRO aggregates, jumbo frames) are
 * not delayed and are counted as IMPAIR_OVERSIZE. A power of two, so that
 * frame_len() can bound a length with a mask the verifier understands. */
#define MAX_FRAME 2048

enum impair_counter {
	IMPAIR_SEEN,      /* IPv4 TCP packets considered */
	IMPAIR_PASSED,    /* passed without delay */
	IMPAIR_DROPPED,   /* lost */
	IMPAIR_DELAYED,   /* handed to the delay line */
	IMPAIR_REORDERED, /* delayed by the extra reorder delay */
	IMPAIR_OVERSIZE,  /* too large for the delay line, passed */
	IMPAIR_RING_FULL, /* ring buffer full, passed undelayed */
	IMPAIR_REINJECTED, /* delayed frames back from the delay line */
	IMPAIR_COUNTER_MAX,
};

enum impair_dir {
	IMPAIR_DIR_INGRESS = 0,
	IMPAIR_DIR_EGRESS = 1,
};

/* One delayed frame in the ring buffer. */
struct impair_frame {
	__u64 due_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u32 len;
	__u32 dir; /* enum impair_dir */
	__u8 data[MAX_FRAME];
};

/* Keep the types in BTF for bpf2go -type. */
const enum impair_counter *unused_counter __attribute__((unused));
const enum impair_dir *unused_dir __attribute__((unused));
const struct impair_frame *unused_frame __attribute__((unused));

/* Set by the loader before load. Probabilities are scaled to 2^32. */
volatile const __u32 loss_threshold = 0;
volatile const __u32 reorder_threshold = 0;
volatile const __u64 delay_ns = 0;
volatile const __u64 jitter_ns = 0;
volatile const __u64 reorder_extra_ns = 0;
volatile const __u32 reinject_ingress_mark = 0;
volatile const __u32 reinject_egress_mark = 0;
volatile const __u32 impair_ingress = 0;
volatile const __u32 impair_egress = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * IMPAIR_COUNTER_MAX); /* index: dir * MAX + counter */
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} delayed SEC(".maps");

static __always_inline void count(enum impair_dir dir, __u32 c)
{
	c += dir * IMPAIR_COUNTER_MAX;
	__u64 *v = bpf_map_lookup_elem(&counters, &c);
	if (v)
		*v += 1;
}

/* frame_len returns len, known to be in [1, MAX_FRAME - 1], in a form the
 * verifier can bound: [1, MAX_FRAME]. */
static __always_inline __u32 frame_len(__u32 len)
{
	return ((len - 1) & (MAX_FRAME - 1)) + 1;
}

enum verdict {
	V_PASS,
	V_DROP,
	V_DELAY,
};

/* decide rolls the dice for one packet; for V_DELAY, *due is when it may
 * leave. */
static __always_inline enum verdict decide(enum impair_dir dir, __u64 *due)
{
	count(dir, IMPAIR_SEEN);
	if (loss_threshold && bpf_get_prandom_u32() < loss_threshold) {
		count(dir, IMPAIR_DROPPED);
		return V_DROP;
	}
	__u64 d = delay_ns;
	if (jitter_ns)
		d += (__u64)bpf_get_prandom_u32() % jitter_ns;
	if (reorder_threshold && bpf_get_prandom_u32() < reorder_threshold) {
		d += reorder_extra_ns;
		count(dir, IMPAIR_REORDERED);
	}
	if (!d) {
		count(dir, IMPAIR_PASSED);
		return V_PASS;
	}
	*due = bpf_ktime_get_ns() + d;
	return V_DELAY;
}

/* is_ipv4_tcp looks at the Ethernet and IPv4 headers in [data, end). */
static __always_inline int is_ipv4_tcp(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return 0;
	return eth->h_proto == bpf_htons(ETH_P_IP) && ip->protocol == IPPROTO_TCP;
}

SEC("xdp.frags")
int impair_xdp(struct xdp_md *ctx)
{
	if (!impair_ingress ||
	    !is_ipv4_tcp((void *)(long)ctx->data, (void *)(long)ctx->data_end))
		return XDP_PASS;

	__u64 due = 0;
	switch (decide(IMPAIR_DIR_INGRESS, &due)) {
	case V_PASS:
		return XDP_PASS;
	case V_DROP:
		return XDP_DROP;
	default:
		break;
	}
	__u32 len = bpf_xdp_get_buff_len(ctx);
	if (len < 1 || len >= MAX_FRAME) {
		count(IMPAIR_DIR_INGRESS, IMPAIR_OVERSIZE);
		return XDP_PASS;
	}
	struct impair_frame *f = bpf_ringbuf_reserve(&delayed, sizeof(*f), 0);
	if (!f) {
		count(IMPAIR_DIR_INGRESS, IMPAIR_RING_FULL);
		return XDP_PASS;
	}
	if (bpf_xdp_load_bytes(ctx, 0, f->data, frame_len(len)) < 0) {
		bpf_ringbuf_discard(f, 0);
		return XDP_PASS;
	}
	f->due_ns = due;
	f->len = len;
	f->dir = IMPAIR_DIR_INGRESS;
	bpf_ringbuf_submit(f, 0);
	count(IMPAIR_DIR_INGRESS, IMPAIR_DELAYED);
	return XDP_DROP;
}

/* consume frees skb while telling the sender it was sent; see the top. */
static __always_inline int consume(void)
{
	return bpf_redirect(0, 0);
}

SEC("tc")
int impair_tc(struct __sk_buff *skb)
{
	if (reinject_ingress_mark && skb->mark == reinject_ingress_mark) {
		skb->mark = 0;
		count(IMPAIR_DIR_INGRESS, IMPAIR_REINJECTED);
		return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
	}
	if (reinject_egress_mark && skb->mark == reinject_egress_mark) {
		skb->mark = 0;
		count(IMPAIR_DIR_EGRESS, IMPAIR_REINJECTED);
		return TCX_PASS;
	}
	if (!impair_egress)
		return TCX_NEXT;

	/* The headers may sit in paged data: pull them. */
	if (bpf_skb_pull_data(skb, sizeof(struct ethhdr) + sizeof(struct iphdr)) < 0)
		return TCX_NEXT;
	if (!is_ipv4_tcp((void *)(long)skb->data, (void *)(long)skb->data_end))
		return TCX_NEXT;

	__u64 due = 0;
	switch (decide(IMPAIR_DIR_EGRESS, &due)) {
	case V_PASS:
		return TCX_NEXT;
	case V_DROP:
		return consume();
	default:
		break;
	}
	__u32 len = skb->len;
	if (len < 1 || len >= MAX_FRAME || skb->gso_segs > 1) {
		count(IMPAIR_DIR_EGRESS, IMPAIR_OVERSIZE);
		return TCX_NEXT;
	}
	struct impair_frame *f = bpf_ringbuf_reserve(&delayed, sizeof(*f), 0);
	if (!f) {
		count(IMPAIR_DIR_EGRESS, IMPAIR_RING_FULL);
		return TCX_NEXT;
	}
	if (bpf_skb_load_bytes(skb, 0, f->data, frame_len(len)) < 0) {
		bpf_ringbuf_discard(f, 0);
		return TCX_NEXT;
	}
	f->due_ns = due;
	f->len = len;
	f->dir = IMPAIR_DIR_EGRESS;
	bpf_ringbuf_submit(f, 0);
	count(IMPAIR_DIR_EGRESS, IMPAIR_DELAYED);
	return consume();
}

char LICENSE[] SEC("license") = "GPL";
