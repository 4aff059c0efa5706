/* Structs and enums shared by the BPF programs and Go. The Go side is
 * generated from these definitions with bpf2go -type, never written by hand,
 * so a field added here reaches Go through `make generate` only. */
#ifndef RAUTA_TYPES_H
#define RAUTA_TYPES_H

#include <linux/types.h>

/* A service is what clients connect to: VIP, port and IP protocol. Addresses
 * and ports are kept in network byte order everywhere so the data path copies
 * them straight from the packet. */
struct service_key {
	__be32 vip;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct service {
	/* Index into the per-service counters; 0 is reserved for traffic that
	 * belongs to no service. */
	__u32 id;
	/* Slot of the service's Maglev table in maglev_tables and its length.
	 * Both change together in one map update, which is what makes a reload
	 * atomic: a packet sees the old table or the new one, never a mix. */
	__u32 table_slot;
	__u32 table_size;
	__u32 flags;
};

struct backend {
	__be32 addr;
	__be16 port;
	__u16 flags;
};

/* The 5-tuple of a packet as it arrives, in either direction. */
struct flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

enum flow_direction {
	/* client -> VIP: the destination becomes nat_addr:nat_port (a backend) */
	FLOW_TO_BACKEND = 0,
	/* backend -> client: the source becomes nat_addr:nat_port (the VIP) */
	FLOW_TO_CLIENT = 1,
};

enum flow_state {
	FLOW_OPEN = 0,
	/* a FIN was seen: the GC applies the short closed timeout */
	FLOW_CLOSING = 1,
	/* an RST was seen */
	FLOW_CLOSED = 2,
};

struct flow {
	__be32 nat_addr;
	__be16 nat_port;
	__u8 direction; /* enum flow_direction */
	__u8 state;     /* enum flow_state */
	__u32 service_id;
	__u32 backend_id;
	/* CLOCK_MONOTONIC nanoseconds, refreshed at most once a second so that
	 * busy flows do not write a shared cache line on every packet. */
	__u64 last_seen_ns;
};

/* Per-service, per-CPU counters: the index into the counters map is
 * service_id * COUNTER_MAX + counter. */
enum counter {
	COUNTER_RX_PACKETS = 0,
	COUNTER_RX_BYTES,
	COUNTER_FORWARDED,
	COUNTER_NEW_FLOWS,
	COUNTER_ICMP_FORWARDED,
	COUNTER_PASS_NOT_IPV4,
	COUNTER_PASS_NOT_SERVICE,
	COUNTER_PASS_NO_NEIGHBOUR,
	COUNTER_PASS_NO_ROUTE,
	COUNTER_PASS_NOT_IN_DEVMAP,
	/* The egress MTU is smaller than the packet. The kernel's
	 * fragmentation-needed error will quote the translated header, which the
	 * sender cannot match: a known limitation until XDP builds the ICMP
	 * error itself. */
	COUNTER_PASS_FRAG_NEEDED,
	COUNTER_DROP_MALFORMED,
	COUNTER_DROP_FRAGMENT,
	COUNTER_DROP_NO_BACKEND,
	COUNTER_DROP_ICMP_UNKNOWN_FLOW,
	COUNTER_DROP_TTL_EXCEEDED,
	/* a packet claiming to come from a VIP: only the LB itself may */
	COUNTER_DROP_SPOOFED_VIP,
	COUNTER_MAX,
};

#endif
