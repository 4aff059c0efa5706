/* The flow table on its own, for programs that share only it (the TC
 * handoff reads what XDP decided about a connection). */
#ifndef RAUTA_FLOWS_MAP_H
#define RAUTA_FLOWS_MAP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "constants.h"
#include "types.h"

/* Per-CPU LRU lists (BPF_F_NO_COMMON_LRU): inserting a new flow takes no
 * global lock. Each CPU then evicts from its own share of the entries. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow);
} flows SEC(".maps");

#endif
