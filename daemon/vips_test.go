package daemon

import (
	"net/netip"
	"testing"

	"github.com/rauta-lb/rauta/tools/testbed"
)

// TestLocalVIPsAddsOnlyWhatIsMissingAndRemovesOnlyWhatItAdded: the
// testbed's LB already has 10.0.0.100 on lo; ensure adds 10.0.0.200 and
// leaves .100 alone, release removes .200 and keeps .100.
func TestLocalVIPsAddsOnlyWhatIsMissingAndRemovesOnlyWhatItAdded(t *testing.T) {
	tb := testbed.NewT(t, testbed.Options{Backends: 1})
	owned := netip.MustParseAddr("10.0.0.100")
	added := netip.MustParseAddr("10.0.0.200")
	v := newLocalVIPs()
	var afterEnsure, afterRelease map[netip.Addr]bool
	err := tb.LB.Do(func() error {
		if err := v.ensure(map[netip.Addr]bool{owned: true, added: true}); err != nil {
			return err
		}
		var err error
		if afterEnsure, err = hostAddrs(); err != nil {
			return err
		}
		if err := v.release(nil); err != nil {
			return err
		}
		afterRelease, err = hostAddrs()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !afterEnsure[owned] || !afterEnsure[added] {
		t.Errorf("after ensure: %v, want both VIPs", afterEnsure)
	}
	if !afterRelease[owned] {
		t.Error("release removed a VIP the host had before")
	}
	if afterRelease[added] {
		t.Error("release left the VIP it added")
	}
}
