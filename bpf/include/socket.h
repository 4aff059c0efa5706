/* The kernel's socket for a TCP connection the flow table knows by key:
 * XDP asks whether the kernel owns a connection, the TC handoff needs the
 * listener it hands one to. */
#ifndef RAUTA_SOCKET_H
#define RAUTA_SOCKET_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"

/* Looks up the established, TIME_WAIT or request socket of the key's
 * tuple, else the listener of its destination. A non-NULL result must be
 * given back with bpf_sk_release. */
static __always_inline struct bpf_sock *tcp_socket(void *ctx, const struct flow_key *key)
{
	struct bpf_sock_tuple t = {
		.ipv4 = {
			.saddr = key->saddr,
			.daddr = key->daddr,
			.sport = key->sport,
			.dport = key->dport,
		},
	};

	return bpf_skc_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
}

#endif
