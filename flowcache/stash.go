package flowcache

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/rauta-lb/rauta/xdp"
)

// StashGC removes request stashes whose connection is gone. XDP deletes a
// stash when the backend acknowledges the request or the connection ends,
// but a connection can vanish without either: the client gives up while
// the backend never answers, and the GC then expires its flow entries. The
// stash map is small and preallocated, so such leftovers would slowly send
// every new connection to the slow path.
//
// XDP writes a stash just before the connection's flow entries, so a stash
// without a flow is only taken for a leftover when it is still one on the
// next collection.
type StashGC struct {
	stash, flows *ebpf.Map
	suspects     map[xdp.FlowKey]bool
}

// NewStashGC collects the stash map against the flow map of the same
// program.
func NewStashGC(stash, flows *ebpf.Map) *StashGC {
	return &StashGC{stash: stash, flows: flows, suspects: map[xdp.FlowKey]bool{}}
}

// Collect deletes the stashes that had no flow on the previous call and
// still have none, and returns how many it deleted.
func (g *StashGC) Collect() (int, error) {
	var keys []xdp.FlowKey
	var k xdp.FlowKey
	iter := g.stash.Iterate()
	value := make([]byte, g.stash.ValueSize())
	for iter.Next(&k, &value) {
		keys = append(keys, k)
	}
	if err := iter.Err(); err != nil {
		return 0, fmt.Errorf("walk stash: %w", err)
	}
	orphans := map[xdp.FlowKey]bool{}
	removed := 0
	var f xdp.Flow
	for _, k := range keys {
		err := g.flows.Lookup(k, &f)
		switch {
		case err == nil:
			continue
		case !errors.Is(err, ebpf.ErrKeyNotExist):
			return removed, fmt.Errorf("look up flow of stash: %w", err)
		case !g.suspects[k]:
			orphans[k] = true
			continue
		}
		if err := g.stash.Delete(k); err == nil {
			removed++
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return removed, fmt.Errorf("delete stash: %w", err)
		}
	}
	g.suspects = orphans
	return removed, nil
}
