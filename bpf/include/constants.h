#ifndef RAUTA_CONSTANTS_H
#define RAUTA_CONSTANTS_H

#define MAX_SERVICES 1024
#define MAX_BACKENDS 4096
/* Two slots per pool lets every pool have its old and new table at once
 * during a reload. */
#define MAX_TABLE_SLOTS 2048
#define MAX_FLOWS (1 << 20)
#define MAX_INTERFACES 64
#define MAX_ROUTES 16384
#define MAX_POOLS 1024
/* Half-open spliced connections whose first request waits for a backend.
 * An entry lives one backend round trip: 4096 covers millions of new
 * connections a second at a millisecond's RTT, in 6 MB preallocated. */
#define MAX_STASHED 4096
#define STASH_MAX 1460
/* Distinct backends a spliced connection's SYN is offered to, the first
 * Maglev choice included, before a refusal (RST) resets the client. */
#define HTTP_BACKEND_TRIES 3

#define FLOW_REFRESH_NS 1000000000ULL

/* The MSS the LB announces, and the window of its SYN-ACK: one segment, so
 * the client sends its first request in one packet and then waits for the
 * backend to open the window. */
#define LB_MSS 1460
/* The window scale the LB announces. Backend windows are rescaled to it,
 * and the kernel socket a slow-path connection gets is told it (tc/);
 * 7 is what Linux picks for its default buffer sizes. */
#define LB_WSCALE 7

/* TCP option kinds. */
#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MSS 2
#define TCPOPT_WINDOW 3
#define TCPOPT_SACK_PERM 4
#define TCPOPT_SACK 5
/* The most option bytes a TCP header carries (doff 15). */
#define TCP_MAX_OPTIONS 40

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

#endif
