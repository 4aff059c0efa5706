// Package maglev builds weighted Maglev lookup tables (Eisenbud et al.,
// "Maglev: A Fast and Reliable Software Network Load Balancer", NSDI 2016).
//
// A table has a prime number of slots; a flow hashes to a slot and the slot
// names its backend. The table is a pure function of the backends' names,
// weights and the table size: no random seeds, no per-process hash keys, no
// dependence on the order of the input slice. The loader writes tables into
// BPF maps and the userspace proxy recomputes them, and both must agree slot
// for slot, across processes, hosts and releases (TestTableGolden pins the
// output so an accidental change to the algorithm fails loudly).
package maglev

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// DefaultSize is the table size used when the configuration names none. The
// paper recommends a size well above 100 × the number of backends for even
// shares; 65537 keeps that up to ~650 backends in 256 KiB of uint32 entries.
const DefaultSize = 65537

var (
	// ErrNoBackends means no backend has a weight above zero, so there is
	// nobody to give slots to.
	ErrNoBackends = errors.New("no backends with weight > 0")
	// ErrSizeNotPrime means the table size is not prime. Maglev's
	// permutations only visit every slot when size and skip are coprime,
	// which a prime size guarantees for every skip in 1..size-1.
	ErrSizeNotPrime = errors.New("table size is not prime")
	// ErrSizeTooSmall means there are more weighted backends than slots.
	ErrSizeTooSmall = errors.New("table size is smaller than the number of weighted backends")
	// ErrDuplicateName means two backends share a name. Names are the
	// backends' identity (they seed the permutations and break ties), so
	// duplicates would make the table depend on input order.
	ErrDuplicateName = errors.New("duplicate backend name")
)

// Backend is one entry of a pool.
type Backend struct {
	// Name is the backend's stable identity, e.g. "10.0.1.11:80". It alone
	// decides where the backend's permutation starts and how it strides,
	// so a backend keeps its preferred slots across reloads and restarts.
	Name string
	// Weight is the backend's relative share of slots. Zero means drained:
	// no slots, which is exactly the table the pool would get without it.
	Weight uint32
}

// Table returns a lookup table of length size whose entries are indexes into
// backends. Each backend with a weight above zero gets approximately
// weight/sum(weights) of the slots; backends with weight zero get none.
//
// The result depends only on the set of (name, weight) pairs and size: the
// backends are processed in name order internally, so shuffling the input
// changes the indexes stored but not which backend owns a slot.
func Table(backends []Backend, size uint32) ([]uint32, error) {
	if !IsPrime(size) {
		return nil, fmt.Errorf("maglev: size %d: %w", size, ErrSizeNotPrime)
	}
	perms, err := permutations(backends, size)
	if err != nil {
		return nil, err
	}
	if len(perms) == 0 {
		return nil, fmt.Errorf("maglev: %d backends: %w", len(backends), ErrNoBackends)
	}
	if uint64(len(perms)) > uint64(size) {
		return nil, fmt.Errorf("maglev: %d weighted backends, size %d: %w", len(perms), size, ErrSizeTooSmall)
	}
	return populate(perms, size), nil
}

// permutation is one weighted backend's walk through the table: it prefers
// slot, then slot+skip, slot+2·skip, … (mod size), and takes turns according
// to its credit.
type permutation struct {
	index  uint32 // into the caller's slice
	weight uint64
	credit uint64
	slot   uint64
	skip   uint64
}

// permutations returns the weighted backends' permutations in name order.
func permutations(backends []Backend, size uint32) ([]permutation, error) {
	byName := make([]int, len(backends))
	for i := range byName {
		byName[i] = i
	}
	slices.SortFunc(byName, func(a, b int) int {
		return strings.Compare(backends[a].Name, backends[b].Name)
	})
	// Duplicates are rejected even among drained backends: draining one of
	// two same-named backends would otherwise give an order-dependent table.
	for i := 1; i < len(byName); i++ {
		if name := backends[byName[i]].Name; name == backends[byName[i-1]].Name {
			return nil, fmt.Errorf("maglev: backend %q: %w", name, ErrDuplicateName)
		}
	}

	perms := make([]permutation, 0, len(backends))
	for _, i := range byName {
		b := backends[i]
		if b.Weight == 0 {
			continue
		}
		offset, skip := offsetAndSkip(b.Name, size)
		perms = append(perms, permutation{
			index:  uint32(i),
			weight: uint64(b.Weight),
			slot:   offset,
			skip:   skip,
		})
	}
	return perms, nil
}

// populate fills the table Maglev-style: backends take turns, and on its turn
// a backend claims the next slot of its permutation that is still free.
//
// Weights use credit, as in Katran's MaglevV2 and Envoy: every round each
// backend earns its weight, and a backend whose credit reaches the largest
// weight spends that much for one turn. The heaviest backends therefore turn
// every round and a backend of weight w about w/max(w) of the rounds, which
// gives shares proportional to weight, exact to within a turn. The usual
// alternative, one virtual backend per unit of weight, needs
// size ≥ sum(weights) and walks sum(weights) permutations; credit keeps one
// permutation per backend, derived from its name alone, so a weight change
// moves little more than the share that changed hands (see the disruption
// tests for measured figures).
//
// Cost: at most size rounds of len(perms) steps plus at most size steps per
// permutation; about 2 ms for 100 backends at DefaultSize.
func populate(perms []permutation, size uint32) []uint32 {
	table := make([]uint32, size)
	taken := make([]bool, size)
	var turnCost uint64
	for _, p := range perms {
		turnCost = max(turnCost, p.weight)
	}

	// Every round the heaviest backend claims a slot, so the loop ends
	// after at most size rounds; a claim always succeeds because each
	// permutation visits every slot (size is prime).
	for filled := uint32(0); ; {
		for i := range perms {
			p := &perms[i]
			p.credit += p.weight
			if p.credit < turnCost {
				continue
			}
			p.credit -= turnCost
			for taken[p.slot] {
				p.advance(size)
			}
			table[p.slot] = p.index
			taken[p.slot] = true
			p.advance(size)
			if filled++; filled == size {
				return table
			}
		}
	}
}

func (p *permutation) advance(size uint32) {
	// slot and skip are both below size, so the sum fits and one
	// subtraction replaces the modulo.
	p.slot += p.skip
	if p.slot >= uint64(size) {
		p.slot -= uint64(size)
	}
}

// offsetAndSkip derives a backend's permutation from its name, as in the
// paper: offset in [0, size), skip in [1, size).
//
// FNV-1a-64 is keyless, tiny and fully specified, so any implementation (in
// any language) reproduces it; the splitmix64 finalizer spreads the one or
// two trailing bytes by which names like "10.0.1.11:80" and "10.0.1.12:80"
// differ over all 64 bits, and two different constants stand in for the
// paper's two independent hash functions.
func offsetAndSkip(name string, size uint32) (offset, skip uint64) {
	h := fnv1a64(name)
	offset = mix64(h^0x6d61676c65762d6f) % uint64(size)   // "maglev-o"
	skip = mix64(h^0x6d61676c65762d73)%uint64(size-1) + 1 // "maglev-s"
	return offset, skip
}

func fnv1a64(s string) uint64 {
	const (
		offsetBasis = 14695981039346656037
		prime       = 1099511628211
	)
	h := uint64(offsetBasis)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime
	}
	return h
}

// mix64 is the splitmix64 finalizer (Steele et al., 2014).
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// IsPrime reports whether n is prime. Trial division is enough: the largest
// divisor to try for a uint32 is 65535, a few microseconds of work, and table
// sizes are checked once per configuration load.
func IsPrime(n uint32) bool {
	if n < 2 {
		return false
	}
	if n%2 == 0 {
		return n == 2
	}
	for d := uint64(3); d*d <= uint64(n); d += 2 {
		if uint64(n)%d == 0 {
			return false
		}
	}
	return true
}
