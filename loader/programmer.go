package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/rauta-lb/rauta/maglev"
	"github.com/rauta-lb/rauta/xdp"
)

// Protocol numbers as the IP header carries them.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Service is what the data path matches packets against.
type Service struct {
	Name     string
	VIP      netip.Addr
	Port     uint16
	Protocol uint8  // ProtoTCP or ProtoUDP
	Pool     string // L4 services
	// HTTP services route each connection's first request instead.
	HTTP   bool
	Routes []Route
	// SlowpathOnly (HTTP services) keeps XDP from routing any request of
	// the service: it still answers the handshake with SYN cookies, then
	// hands every connection to the slow path. Apply also programs a
	// service so, leaving this field as it is, when one of its routes
	// cannot be expressed in XDP (see serviceRoutes).
	SlowpathOnly bool
}

// Route sends requests for a host (empty: any host) and path prefix (or
// exact path) to a pool. Methods, uppercase, restrict it; none allows all.
type Route struct {
	Host    string
	Path    string
	Exact   bool
	Methods []string
	Pool    string
}

// ErrUnroutable is returned for a route XDP cannot match on raw bytes.
var ErrUnroutable = errors.New("route cannot be matched in XDP")

// xdpRoute is a route as the routes map holds it. The key's service id is
// left zero: Apply knows it only once the service is written.
type xdpRoute struct {
	key     xdp.RouteKey
	methods uint32
	route   Route
}

// serviceRoutes returns the routes map entries of the HTTP service svc, or
// why XDP cannot route it (an error wrapping ErrUnroutable): a wildcard
// host, a host or path longer than the route key holds, a method without a
// bit.
//
// Such a service is programmed slow-path only (ServiceSlowpath) rather than
// rejected, and none of its routes is written: XDP routing the requests its
// routes can express while the slow path routes the rest would let the two
// disagree on which route wins (a request for a.example.com matching a
// host-less "/" route in XDP where the slow path picks "*.example.com").
// Connections XDP spliced before the service turned slow-path only then
// find no route for their next request and are reset, as any unroutable
// later request is.
func serviceRoutes(svc Service) ([]xdpRoute, error) {
	routes := make([]xdpRoute, 0, len(svc.Routes))
	for _, r := range svc.Routes {
		key, err := RouteKey(0, r.Host, r.Path, r.Exact)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", svc.Name, err)
		}
		var methods uint32
		for _, m := range r.Methods {
			bit := xdp.MethodBit(m)
			if bit == 0 {
				return nil, fmt.Errorf("service %s: method %q: %w", svc.Name, m, ErrUnroutable)
			}
			methods |= bit
		}
		routes = append(routes, xdpRoute{key: key, methods: methods, route: r})
	}
	return routes, nil
}

// Pool is a set of weighted backends behind one Maglev table.
type Pool struct {
	Name       string
	MaglevSize uint32
	Backends   []Backend
}

// Backend is one server of a pool. Weight 0 drains it: no new flows, while
// flows already in the flow table keep going to it.
type Backend struct {
	Address netip.AddrPort
	Weight  uint32
}

// State is everything the maps describe. Apply makes the maps say exactly it.
type State struct {
	Services []Service
	Pools    []Pool
}

// ErrUnknownPool is returned by Apply for a service naming no pool of the
// state; the config package normally catches this first.
var ErrUnknownPool = errors.New("unknown pool")

// Programmer writes a State into the maps of a loaded program and remembers
// what it wrote, so the next Apply changes only what differs. Identifiers
// (backend ids, table slots, service ids) stay stable across applies.
// It is safe for concurrent use: a reload and a metrics scrape may overlap.
type Programmer struct {
	mu         sync.Mutex
	objs       *xdp.Objects
	innerTable *ebpf.MapSpec

	backendIDs ids[netip.AddrPort]
	slots      ids[string] // table slot per pool generation
	serviceIDs ids[string]

	poolIDs ids[string]

	pools    map[string]poolTable
	services map[string]programmedService
	routes   map[xdp.RouteKey]bool
}

type poolTable struct {
	slot        uint32
	size        uint32
	fingerprint string
}

type programmedService struct {
	key xdp.ServiceKey
	vip netip.Addr
	id  uint32
}

// NewProgrammer takes over the maps of objs, which must be freshly loaded
// (empty).
func NewProgrammer(objs *xdp.Objects) (*Programmer, error) {
	spec, err := xdp.Spec()
	if err != nil {
		return nil, err
	}
	outer, ok := spec.Maps["maglev_tables"]
	if !ok || outer.InnerMap == nil {
		return nil, errors.New("program has no maglev_tables map of maps")
	}
	return &Programmer{
		objs:       objs,
		innerTable: outer.InnerMap,
		backendIDs: newIDs[netip.AddrPort](1, objs.Backends.MaxEntries()),
		slots:      newIDs[string](0, objs.MaglevTables.MaxEntries()),
		serviceIDs: newIDs[string](1, objs.Services.MaxEntries()),
		poolIDs:    newIDs[string](0, objs.Pools.MaxEntries()),
		pools:      map[string]poolTable{},
		services:   map[string]programmedService{},
		routes:     map[xdp.RouteKey]bool{},
	}, nil
}

// Apply writes s into the maps. Readers (the data path) see every service
// switch from its old table to its new one in a single map update; flows
// already in the flow table are left alone and keep their backends.
func (p *Programmer) Apply(s State) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	pools := make(map[string]Pool, len(s.Pools))
	for _, pool := range s.Pools {
		pools[pool.Name] = pool
	}
	used := map[string]bool{}
	for _, svc := range s.Services {
		names := []string{svc.Pool}
		if svc.HTTP {
			names = names[:0]
			for _, r := range svc.Routes {
				names = append(names, r.Pool)
			}
		}
		for _, name := range names {
			if _, ok := pools[name]; !ok {
				return fmt.Errorf("service %s: %w %q", svc.Name, ErrUnknownPool, name)
			}
			used[name] = true
		}
	}

	liveBackends := map[netip.AddrPort]bool{}
	for name := range used {
		for _, b := range pools[name].Backends {
			liveBackends[b.Address] = true
			if err := p.writeBackend(b.Address); err != nil {
				return err
			}
		}
	}

	newTables := map[string]poolTable{}
	var retiredSlots []uint32
	for name := range used {
		table, err := p.poolTable(pools[name])
		if err != nil {
			return err
		}
		if old, ok := p.pools[name]; ok && old.slot != table.slot {
			retiredSlots = append(retiredSlots, old.slot)
		}
		newTables[name] = table
	}
	for name, old := range p.pools {
		if _, ok := newTables[name]; !ok {
			retiredSlots = append(retiredSlots, old.slot)
		}
	}

	if err := p.writePools(newTables); err != nil {
		return err
	}

	newServices := map[string]programmedService{}
	newRoutes := map[xdp.RouteKey]bool{}
	for _, svc := range s.Services {
		table := newTables[svc.Pool]
		var (
			routes []xdpRoute
			only   bool
		)
		if svc.HTTP {
			table = poolTable{}
			// A service XDP cannot route (why: serviceRoutes' error)
			// goes to the slow path as a whole; the Programmer has no
			// logger to say so.
			var unroutable error
			routes, unroutable = serviceRoutes(svc)
			only = svc.SlowpathOnly || unroutable != nil
		}
		programmed, err := p.writeService(svc, table, only)
		if err != nil {
			return err
		}
		newServices[svc.Name] = programmed
		if only {
			continue // no route at all: see serviceRoutes
		}
		if err := p.writeRoutes(svc.Name, programmed.id, routes, newRoutes); err != nil {
			return err
		}
	}
	if err := p.removeRoutes(newRoutes); err != nil {
		return err
	}
	if err := p.removeServices(newServices); err != nil {
		return err
	}
	p.services = newServices
	p.pools = newTables
	for name := range p.poolIDs.byKey {
		if _, ok := newTables[name]; !ok {
			p.poolIDs.release(name)
		}
	}

	for _, slot := range retiredSlots {
		if err := p.objs.MaglevTables.Delete(slot); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete retired Maglev table: %w", err)
		}
		p.slots.releaseID(slot)
	}
	return p.removeBackends(liveBackends)
}

// ServiceNames maps the service ids used as counter indexes to names.
func (p *Programmer) ServiceNames() map[uint32]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	names := make(map[uint32]string, len(p.services))
	for name, svc := range p.services {
		names[svc.id] = name
	}
	return names
}

func (p *Programmer) writeBackend(addr netip.AddrPort) error {
	id, isNew, err := p.backendIDs.get(addr)
	if err != nil {
		return fmt.Errorf("backend %s: %w", addr, err)
	}
	if !isNew {
		return nil
	}
	be := xdp.Backend{Addr: xdp.Addr(addr.Addr()), Port: xdp.Port(addr.Port())}
	if err := p.objs.Backends.Put(id, &be); err != nil {
		return fmt.Errorf("write backend %s: %w", addr, err)
	}
	return nil
}

func (p *Programmer) removeBackends(live map[netip.AddrPort]bool) error {
	for addr, id := range p.backendIDs.byKey {
		if live[addr] {
			continue
		}
		// Zeroed entries make a packet that raced the table switch drop
		// rather than reach a backend that no longer belongs here.
		if err := p.objs.Backends.Put(id, &xdp.Backend{}); err != nil {
			return fmt.Errorf("clear backend %s: %w", addr, err)
		}
		p.backendIDs.release(addr)
	}
	return nil
}

// poolTable returns the pool's current table if nothing that shapes it
// changed, else builds a new table in a fresh slot.
func (p *Programmer) poolTable(pool Pool) (poolTable, error) {
	weighted := make([]maglev.Backend, len(pool.Backends))
	ids := make([]uint32, len(pool.Backends))
	var fp strings.Builder
	fmt.Fprintf(&fp, "%d", pool.MaglevSize)
	for i, b := range pool.Backends {
		ids[i] = p.backendIDs.byKey[b.Address]
		weighted[i] = maglev.Backend{Name: b.Address.String(), Weight: b.Weight}
		fmt.Fprintf(&fp, " %d:%d", ids[i], b.Weight)
	}
	if old, ok := p.pools[pool.Name]; ok && old.fingerprint == fp.String() {
		return old, nil
	}

	table := poolTable{fingerprint: fp.String()}
	owners, err := maglev.Table(weighted, pool.MaglevSize)
	if errors.Is(err, maglev.ErrNoBackends) {
		// Every backend drained: new flows are dropped (and counted).
		table.slot, err = p.slots.allocate()
		if err != nil {
			return poolTable{}, fmt.Errorf("pool %s: %w", pool.Name, err)
		}
		return table, nil
	}
	if err != nil {
		return poolTable{}, fmt.Errorf("pool %s: %w", pool.Name, err)
	}

	entries := make([]uint32, len(owners))
	keys := make([]uint32, len(owners))
	for i, owner := range owners {
		keys[i] = uint32(i)
		entries[i] = ids[owner]
	}
	spec := p.innerTable.Copy()
	spec.Name = "maglev_" + truncate(pool.Name, 8)
	spec.MaxEntries = pool.MaglevSize
	inner, err := ebpf.NewMap(spec)
	if err != nil {
		return poolTable{}, fmt.Errorf("pool %s: create Maglev table: %w", pool.Name, err)
	}
	defer inner.Close() // the outer map holds its own reference
	if _, err := inner.BatchUpdate(keys, entries, nil); err != nil {
		return poolTable{}, fmt.Errorf("pool %s: fill Maglev table: %w", pool.Name, err)
	}
	table.slot, err = p.slots.allocate()
	if err != nil {
		return poolTable{}, fmt.Errorf("pool %s: %w", pool.Name, err)
	}
	if err := p.objs.MaglevTables.Put(table.slot, inner); err != nil {
		p.slots.releaseID(table.slot)
		return poolTable{}, fmt.Errorf("pool %s: install Maglev table: %w", pool.Name, err)
	}
	table.size = pool.MaglevSize
	return table, nil
}

func (p *Programmer) writeService(svc Service, table poolTable, slowOnly bool) (programmedService, error) {
	id, isNew, err := p.serviceIDs.get(svc.Name)
	if err != nil {
		return programmedService{}, fmt.Errorf("service %s: %w", svc.Name, err)
	}
	if isNew {
		if err := p.resetCounters(id); err != nil {
			return programmedService{}, fmt.Errorf("service %s: %w", svc.Name, err)
		}
	}
	key := xdp.ServiceKey{Vip: xdp.Addr(svc.VIP), Port: xdp.Port(svc.Port), Proto: svc.Protocol}
	value := xdp.Service{Id: id, TableSlot: table.slot, TableSize: table.size}
	if svc.HTTP {
		value.Flags = xdp.ServiceHTTP
	}
	if slowOnly {
		value.Flags |= xdp.ServiceSlowpath
	}
	if err := p.objs.Services.Put(key, &value); err != nil {
		return programmedService{}, fmt.Errorf("service %s: write: %w", svc.Name, err)
	}
	if err := p.objs.Vips.Put(key.Vip, uint32(1)); err != nil {
		return programmedService{}, fmt.Errorf("service %s: write VIP: %w", svc.Name, err)
	}
	return programmedService{key: key, vip: svc.VIP, id: id}, nil
}

// removeServices deletes what the previous state had and keep does not:
// keys no service of keep owns (a renamed or moved service may own an old
// key now), ids of removed names, and addresses that are no VIP any more.
func (p *Programmer) removeServices(keep map[string]programmedService) error {
	liveKeys := map[xdp.ServiceKey]bool{}
	liveVIPs := map[uint32]bool{}
	for _, svc := range keep {
		liveKeys[svc.key] = true
		liveVIPs[svc.key.Vip] = true
	}
	for name, old := range p.services {
		if _, ok := keep[name]; !ok {
			p.serviceIDs.release(name)
		}
		if !liveKeys[old.key] {
			if err := p.objs.Services.Delete(old.key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("remove service %s: %w", name, err)
			}
		}
		if !liveVIPs[old.key.Vip] {
			if err := p.objs.Vips.Delete(old.key.Vip); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("remove VIP %s: %w", old.vip, err)
			}
		}
	}
	return nil
}

// writePools points each pool id at its current table, one update per
// pool: HTTP routes name pools by id and follow a reload atomically.
func (p *Programmer) writePools(tables map[string]poolTable) error {
	for name, t := range tables {
		id, _, err := p.poolIDs.get(name)
		if err != nil {
			return fmt.Errorf("pool %s: %w", name, err)
		}
		if err := p.objs.Pools.Put(id, xdp.Pool{TableSlot: t.slot, TableSize: t.size}); err != nil {
			return fmt.Errorf("pool %s: %w", name, err)
		}
	}
	return nil
}

// RouteKey builds the LPM key of a route: host zero-padded (all zeros for
// any host), path followed, for an exact route, by the zero byte that the
// data path appends to every request path.
func RouteKey(serviceID uint32, host, path string, exact bool) (xdp.RouteKey, error) {
	var k xdp.RouteKey
	if strings.HasPrefix(host, "*.") {
		return k, fmt.Errorf("host %q: wildcard hosts need the slow path: %w", host, ErrUnroutable)
	}
	if len(host) > len(k.Host) {
		return k, fmt.Errorf("host %q longer than %d bytes: %w", host, len(k.Host), ErrUnroutable)
	}
	if len(path) == 0 || len(path) > len(k.Path)-1 {
		return k, fmt.Errorf("path %q: 1 to %d bytes: %w", path, len(k.Path)-1, ErrUnroutable)
	}
	k.ServiceId = serviceID
	copy(k.Host[:], strings.ToLower(host))
	copy(k.Path[:], path)
	bits := 32 + 8*len(k.Host) + 8*len(path)
	if exact {
		bits += 8
	}
	k.Prefixlen = uint32(bits)
	return k, nil
}

// writeRoutes writes the entries serviceRoutes built under the service's
// id.
func (p *Programmer) writeRoutes(service string, serviceID uint32, routes []xdpRoute, written map[xdp.RouteKey]bool) error {
	for _, r := range routes {
		key := r.key
		key.ServiceId = serviceID
		value := xdp.Route{PoolId: p.poolIDs.byKey[r.route.Pool], Methods: r.methods}
		if err := p.objs.Routes.Put(key, value); err != nil {
			return fmt.Errorf("service %s: route %s%s: %w", service, r.route.Host, r.route.Path, err)
		}
		written[key] = true
	}
	return nil
}

func (p *Programmer) removeRoutes(keep map[xdp.RouteKey]bool) error {
	for key := range p.routes {
		if keep[key] {
			continue
		}
		if err := p.objs.Routes.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove route: %w", err)
		}
	}
	p.routes = keep
	return nil
}

// resetCounters zeroes a service id's counters, so a new service does not
// inherit the totals of a removed one that had the same id.
func (p *Programmer) resetCounters(id uint32) error {
	zero := make([]uint64, ebpf.MustPossibleCPU())
	for c := range xdp.NumCounters {
		if err := p.objs.Counters.Put(xdp.CounterIndex(id, xdp.Counter(c)), zero); err != nil {
			return fmt.Errorf("reset counters: %w", err)
		}
	}
	for r := range xdp.NumSlowpathReasons {
		if err := p.objs.SlowpathCounters.Put(xdp.SlowpathIndex(id, xdp.SlowpathReason(r)), zero); err != nil {
			return fmt.Errorf("reset slow-path counters: %w", err)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ErrExhausted means a map has no free index left.
var ErrExhausted = errors.New("no free index left")

// ids hands out small integers as map indexes, keyed by identity so the same
// thing keeps its index across applies.
type ids[K comparable] struct {
	byKey map[K]uint32
	free  []uint32 // released indexes, reused lowest first
	next  uint32
	limit uint32
}

func newIDs[K comparable](first, limit uint32) ids[K] {
	return ids[K]{byKey: map[K]uint32{}, next: first, limit: limit}
}

func (i *ids[K]) allocate() (uint32, error) {
	if len(i.free) > 0 {
		slices.Sort(i.free)
		id := i.free[0]
		i.free = i.free[1:]
		return id, nil
	}
	if i.next >= i.limit {
		return 0, ErrExhausted
	}
	id := i.next
	i.next++
	return id, nil
}

func (i *ids[K]) get(k K) (id uint32, isNew bool, err error) {
	if id, ok := i.byKey[k]; ok {
		return id, false, nil
	}
	id, err = i.allocate()
	if err != nil {
		return 0, false, err
	}
	i.byKey[k] = id
	return id, true, nil
}

func (i *ids[K]) release(k K) {
	if id, ok := i.byKey[k]; ok {
		delete(i.byKey, k)
		i.free = append(i.free, id)
	}
}

func (i *ids[K]) releaseID(id uint32) { i.free = append(i.free, id) }
