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
	stash    *ebpf.Map
	suspects map[xdp.FlowKey]bool
}

// NewStashGC collects the stash map of a program. Whether a connection
// still has a flow is learnt from the flow table's own collection (see
// Collect), so the flow map is not read again.
func NewStashGC(stash *ebpf.Map) *StashGC {
	return &StashGC{stash: stash, suspects: map[xdp.FlowKey]bool{}}
}

// Collect deletes the stashes that had no flow on the previous call and
// still have none, and returns how many it deleted.
//
// walkFlows walks the flow table once (normally Table.Collect) and calls
// live with the key of every flow it keeps. Collect reads the stash's keys
// first, so live only looks keys up in that small set. walkFlows runs even
// when the stash cannot be read; if it fails, nothing is deleted and its
// error is returned as is.
func (g *StashGC) Collect(walkFlows func(live func(xdp.FlowKey)) error) (int, error) {
	flowless, err := g.keys()
	if err != nil {
		if werr := walkFlows(nil); werr != nil {
			return 0, werr
		}
		return 0, err
	}
	if err := walkFlows(func(k xdp.FlowKey) { delete(flowless, k) }); err != nil {
		return 0, err
	}
	removed := 0
	for k := range flowless {
		if !g.suspects[k] {
			continue
		}
		delete(flowless, k)
		if err := g.stash.Delete(k); err == nil {
			removed++
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return removed, fmt.Errorf("delete stash: %w", err)
		}
	}
	g.suspects = flowless
	return removed, nil
}

// keys returns the set of the stash's keys, walked with NextKey so that
// no 1.5 KB value is copied out.
func (g *StashGC) keys() (map[xdp.FlowKey]bool, error) {
	keys := map[xdp.FlowKey]bool{}
	var (
		k    xdp.FlowKey
		prev any // nil: the first key
	)
	// A key XDP deletes under the walk makes NextKey start over: bound
	// the walk like ebpf.MapIterator does; the set drops the repeats.
	for range g.stash.MaxEntries() + 1 {
		err := g.stash.NextKey(prev, &k)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return keys, nil
		}
		if err != nil {
			return nil, fmt.Errorf("walk stash: %w", err)
		}
		keys[k] = true
		prev = &k // NextKey reads the cursor before writing the next key into it
	}
	// Restarted too often: collect what was seen, the rest on the next
	// pass.
	return keys, nil
}
