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

enum service_flags {
	/* HTTP service: handshakes answered with SYN cookies, the first request
	 * routed by host and path, the connection spliced onto a backend's. */
	SERVICE_HTTP = 1,
	/* With SERVICE_HTTP: handshakes are still answered with SYN cookies,
	 * but no request is routed in XDP; every connection goes to the slow
	 * path (SLOW_SERVICE). The loader sets it when a route of the service
	 * cannot be expressed in XDP (wildcard host, over-long host or path, a
	 * method without a bit): routing some requests in XDP and others in
	 * the slow path would let the two disagree on which route wins. */
	SERVICE_SLOWPATH = 2,
};

/* HTTP routes: one LPM lookup finds the longest path prefix for a host. The
 * key covers the service, the whole host (zero-padded, so a host-less route
 * is the all-zero host) and the path; an exact route ends with a zero byte
 * after its path, which only an exactly equal request path also has. */
#define ROUTE_HOST_MAX 64
#define ROUTE_PATH_MAX 128

struct route_key {
	__u32 prefixlen;
	__u32 service_id;
	__u8 host[ROUTE_HOST_MAX];
	__u8 path[ROUTE_PATH_MAX];
};

struct route {
	__u32 pool_id;
	/* bit per method (enum http_method); 0 allows any */
	__u32 methods;
};

enum http_method {
	HTTP_GET = 1 << 0,
	HTTP_HEAD = 1 << 1,
	HTTP_POST = 1 << 2,
	HTTP_PUT = 1 << 3,
	HTTP_DELETE = 1 << 4,
	HTTP_PATCH = 1 << 5,
	HTTP_OPTIONS = 1 << 6,
	HTTP_TRACE = 1 << 7,
};

/* A pool's current Maglev table, for HTTP routes (L4 services carry theirs
 * in the service entry). */
struct pool {
	__u32 table_slot;
	__u32 table_size;
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

enum splice_state {
	SPLICE_NONE = 0,        /* an L4 flow */
	SPLICE_SYN_SENT = 1,    /* request stashed, SYN sent to the backend */
	SPLICE_ESTABLISHED = 2, /* sequence numbers translated both ways */
	SPLICE_SLOWPATH = 3,    /* handed to the kernel (and the slow path) */
	SPLICE_ORPHAN = 4,      /* a backend the connection was rebound away from */
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
	/* HTTP splicing; zero for L4 flows. The client's ISN is c, the LB's
	 * (the cookie) is L, the backend's s: backend sequence numbers get
	 * L - s added on the way to the client, client acknowledgements get
	 * it subtracted on the way to the backend. */
	__u32 seq_delta;
	__u32 client_isn;
	__u32 lb_isn;
	__u16 mss;
	__u8 client_wscale;  /* 15: the client did not scale */
	__u8 backend_wscale;
	__u8 splice;         /* enum splice_state */
	__u8 stash_pending;  /* the backend has not acknowledged the stash yet */
	__u16 stash_len;
	__u16 client_window; /* raw window of the client's first segment */
	__u16 reason;        /* enum slowpath_reason, for SPLICE_SLOWPATH */
	__u32 pool_id;       /* the pool the connection's current request routed to */
	/* reverse entries: the LB's next sequence number towards the client,
	 * i.e. how far the backend's response has been sent */
	__u32 snd_nxt;
	/* forward entries: the client sequence number where the current
	 * request (header and Content-Length body) ends, i.e. where the next
	 * one must begin. Only a segment starting exactly there is parsed as
	 * a request: body bytes, even ones that read like a request, and
	 * retransmissions lie before it. */
	__u32 req_next;
	__u8 framing;        /* enum http_framing */
	/* backends that refused the current request's SYN so far: each
	 * refusal moves the connection to the next Maglev choice, up to
	 * HTTP_BACKEND_TRIES backends in all */
	__u8 refusals;
	/* the client offered SACK: both handshakes agreed to it, and the
	 * client's SACK blocks are moved into the backend's space (sack.h) */
	__u8 sack;
	/* The next hop, cached from bpf_fib_lookup (which is half the cost of
	 * an established packet) and looked up again with each refresh of
	 * last_seen_ns, once a second. Valid for packets of up to nh_len bytes,
	 * the largest the FIB's MTU check passed; nh_ifindex 0 means none. */
	__u32 nh_ifindex;
	__u16 nh_len;
	__u8 nh_dmac[6];
	__u8 nh_smac[6];
};

/* How the client's bytes after the current request are read (forward
 * entries of spliced flows). */
enum http_framing {
	FRAMING_HTTP = 0,    /* the next request begins at req_next */
	/* The request asked for an upgrade (WebSocket, h2c): if what follows
	 * it is not a request, the backend switched protocols. */
	FRAMING_UPGRADE = 1,
	FRAMING_OPAQUE = 2,  /* switched protocols: nothing more is parsed */
};

/* Why a connection left the fast path. */
enum slowpath_reason {
	SLOW_NONE = 0,
	SLOW_NOT_HTTP,
	SLOW_TLS,
	SLOW_H2C,
	SLOW_CONNECT,
	SLOW_TARGET_FORM, /* absolute-form or asterisk-form request target */
	SLOW_UNSAFE_PATH, /* %, backslash, //, dot segments, control bytes */
	SLOW_LONG_PATH,
	SLOW_NO_HOST,
	SLOW_BAD_HOST,
	SLOW_INCOMPLETE, /* request line or Host not in the first segment */
	SLOW_NO_ROUTE,
	SLOW_METHOD,
	SLOW_STASH_FULL,
	SLOW_SERVICE,    /* the service is slow-path only (SERVICE_SLOWPATH) */
	SLOW_BAD_LENGTH, /* Content-Length not one decimal number, repeated, or too large */
	SLOW_CHUNKED,    /* a Transfer-Encoding: a body XDP cannot frame */
	SLOW_PIPELINED,  /* bytes after the request's end in its segment */
	SLOW_MAX,
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
	/* HTTP services */
	COUNTER_SYN_COOKIES_SENT,
	COUNTER_HANDSHAKES_COMPLETED, /* the client's bare ACK carried a valid cookie */
	COUNTER_DROP_BAD_COOKIE,
	COUNTER_PASS_NO_COOKIE_KEY,   /* the daemon has not loaded a key yet */
	/* no flow, no valid cookie, but a kernel socket: a slow-path
	 * connection whose flow entry expired or was evicted */
	COUNTER_PASS_LOCAL_SOCKET,
	COUNTER_BACKEND_SYNS,
	COUNTER_SPLICED,              /* backend SYN-ACK turned into ACK + request */
	COUNTER_SPLICED_NO_ROOM,      /* ... into a bare ACK: no room for the request */
	COUNTER_SLOWPATH,             /* by reason: see the slowpath counters */
	COUNTER_DROP_HTTP_STATE,      /* a segment that fits no state of the splice */
	COUNTER_REBINDS,              /* keep-alive requests moved to another pool's backend */
	COUNTER_RESET_UNROUTABLE,     /* later requests XDP could not route: connection reset */
	COUNTER_BACKEND_RETRIES,      /* backend SYNs refused (RST) and sent to the next Maglev choice */
	COUNTER_MAX,
};

#endif
