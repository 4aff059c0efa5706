// Package testbed builds a throwaway network of namespaces around a
// gateway-mode load balancer, for e2e tests, `rauta demo` and benchmarks:
//
//	client ns   eth0 10.0.2.2/24, default via 10.0.2.1
//	   | veth
//	LB ns       eth1 10.0.2.1/24 (client side), eth2 10.0.1.1/24 (backend side),
//	            VIPs as /32 on lo, ip_forward=1
//	   | veth
//	switch ns   bridge br0: port "lb" (peer of LB eth2), ports b1..bN
//	   | veth per backend
//	backend i   eth0 10.0.1.(10+i)/24, default via 10.0.1.1
//
// Without an XDP program the LB namespace is a plain router, so every
// backend is reachable from the client through kernel forwarding.
//
// All traffic stays inside the namespaces; nothing is created in the
// caller's namespace.
package testbed

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
)

// Interface names are fixed per namespace; only namespace names are unique
// per testbed.
const (
	clientIface    = "eth0"
	lbClientIface  = "eth1"
	lbBackendIface = "eth2"
	backendIface   = "eth0"
	switchBridge   = "br0"
	switchLBPort   = "lb"
)

// switchBackendPort names the switch port facing backend i (1-based).
func switchBackendPort(i int) string { return "b" + strconv.Itoa(i) }

const (
	defaultBackends = 3
	// Backends are 10.0.1.11 and up; .255 is broadcast.
	maxBackends = 244
)

var (
	clientNet     = netip.MustParsePrefix("10.0.2.0/24")
	clientAddr    = netip.MustParseAddr("10.0.2.2")
	lbClientAddr  = netip.MustParseAddr("10.0.2.1")
	backendNet    = netip.MustParsePrefix("10.0.1.0/24")
	lbBackendAddr = netip.MustParseAddr("10.0.1.1")
	defaultVIP    = netip.MustParseAddr("10.0.0.100")
)

// Options shapes a testbed. The zero value gives 3 backends and the VIP
// 10.0.0.100.
type Options struct {
	// Backends is the number of backend namespaces, 1..244; 0 means 3.
	Backends int
	// VIPs are IPv4 addresses assigned as /32 to lo in the LB namespace,
	// outside 10.0.1.0/24 and 10.0.2.0/24; empty means [10.0.0.100].
	VIPs []netip.Addr

	// checkpoint, if set, runs after each build step; an error aborts New.
	// Tests use it to fail New midway.
	checkpoint func(step string) error
}

func (o Options) normalized() (Options, error) {
	if o.Backends == 0 {
		o.Backends = defaultBackends
	}
	if o.Backends < 1 || o.Backends > maxBackends {
		return o, fmt.Errorf("testbed: Backends must be 1..%d, got %d", maxBackends, o.Backends)
	}
	if len(o.VIPs) == 0 {
		o.VIPs = []netip.Addr{defaultVIP}
	}
	seen := make(map[netip.Addr]bool, len(o.VIPs))
	for _, vip := range o.VIPs {
		switch {
		case !vip.Is4():
			return o, fmt.Errorf("testbed: VIP %v is not IPv4", vip)
		case clientNet.Contains(vip) || backendNet.Contains(vip):
			return o, fmt.Errorf("testbed: VIP %v overlaps the testbed subnets %v/%v", vip, clientNet, backendNet)
		case !vip.IsGlobalUnicast():
			return o, fmt.Errorf("testbed: VIP %v is not a unicast address", vip)
		case seen[vip]:
			return o, fmt.Errorf("testbed: duplicate VIP %v", vip)
		}
		seen[vip] = true
	}
	o.VIPs = append([]netip.Addr(nil), o.VIPs...)
	return o, nil
}

// Testbed is a running topology. Close it to delete every namespace.
type Testbed struct {
	Client, LB, Switch *Namespace
	// Backends[i] is backend i+1, at BackendAddrs[i].
	Backends []*Namespace

	ClientAddr    netip.Addr // client eth0
	LBClientAddr  netip.Addr // LB eth1, the client's gateway
	LBBackendAddr netip.Addr // LB eth2, the backends' gateway
	BackendAddrs  []netip.Addr
	VIPs          []netip.Addr

	LBClientIface, LBBackendIface string

	// created lists every namespace in creation order, including those of a
	// half-built testbed, so Close can remove exactly what exists.
	created   []*Namespace
	closeOnce sync.Once
	closeErr  error
}

// New builds a testbed. It first removes namespaces left behind by dead
// processes (see removeStaleNamespaces). On error it removes whatever it
// created. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and ethtool.
func New(opts Options) (*Testbed, error) {
	opts, err := opts.normalized()
	if err != nil {
		return nil, err
	}
	ethtool, err := exec.LookPath("ethtool")
	if err != nil {
		return nil, fmt.Errorf("testbed: ethtool is required to set veth offloads for XDP (install the ethtool package): %w", err)
	}
	if err := removeStaleNamespaces(); err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	prefix, err := newNamePrefix()
	if err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}

	tb := &Testbed{
		ClientAddr:     clientAddr,
		LBClientAddr:   lbClientAddr,
		LBBackendAddr:  lbBackendAddr,
		VIPs:           opts.VIPs,
		LBClientIface:  lbClientIface,
		LBBackendIface: lbBackendIface,
	}
	for i := 1; i <= opts.Backends; i++ {
		tb.BackendAddrs = append(tb.BackendAddrs, backendAddr(i))
	}

	b := builder{tb: tb, opts: opts, prefix: prefix, ethtool: ethtool}
	if err := b.build(); err != nil {
		return nil, errors.Join(fmt.Errorf("testbed: %w", err), tb.Close())
	}
	return tb, nil
}

// backendAddr returns the address of backend i (1-based): 10.0.1.(10+i).
func backendAddr(i int) netip.Addr {
	a := backendNet.Addr().As4()
	a[3] = byte(10 + i)
	return netip.AddrFrom4(a)
}

// NewT builds a testbed for a test and closes it in t.Cleanup. It skips the
// test when not running as root and fails it if the testbed cannot be built.
func NewT(t testing.TB, opts Options) *Testbed {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testbed needs root to create network namespaces")
	}
	tb, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Errorf("close testbed: %v", err)
		}
	})
	return tb
}

// Close deletes every namespace and its mount point. Interfaces go with
// their namespace, but the kernel only destroys a namespace once nothing
// references it: close sockets from Listen/DialContext and stop processes
// started with Command first, or they keep it alive (unnamed). Calling Close
// again returns the first call's result.
func (tb *Testbed) Close() error {
	tb.closeOnce.Do(func() {
		var errs []error
		for i := len(tb.created) - 1; i >= 0; i-- {
			if err := tb.created[i].remove(); err != nil {
				errs = append(errs, err)
			}
		}
		tb.closeErr = errors.Join(errs...)
	})
	return tb.closeErr
}
