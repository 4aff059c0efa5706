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
		if afterEnsure, _, err = hostAddrs(); err != nil {
			return err
		}
		if err := v.release(nil); err != nil {
			return err
		}
		afterRelease, _, err = hostAddrs()
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

// TestLocalVIPsAdoptsWhatAKilledDaemonLeft: VIPs added by a daemon that
// never released them (SIGKILL) are taken over by the next one, which
// removes those no longer configured and, at exit, the rest; the host's own
// address stays throughout.
func TestLocalVIPsAdoptsWhatAKilledDaemonLeft(t *testing.T) {
	tb := testbed.NewT(t, testbed.Options{Backends: 1})
	owned := netip.MustParseAddr("10.0.0.100")
	stale := netip.MustParseAddr("10.0.0.201")
	kept := netip.MustParseAddr("10.0.0.202")
	var afterRestart, afterExit map[netip.Addr]bool
	err := tb.LB.Do(func() error {
		killed := newLocalVIPs()
		if err := killed.ensure(map[netip.Addr]bool{stale: true, kept: true}); err != nil {
			return err
		}
		// killed never releases; a new daemon configures owned and kept
		next := newLocalVIPs()
		want := map[netip.Addr]bool{owned: true, kept: true}
		if err := next.ensure(want); err != nil {
			return err
		}
		if err := next.release(want); err != nil {
			return err
		}
		var err error
		if afterRestart, _, err = hostAddrs(); err != nil {
			return err
		}
		if err := next.release(nil); err != nil {
			return err
		}
		afterExit, _, err = hostAddrs()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if afterRestart[stale] || !afterRestart[kept] || !afterRestart[owned] {
		t.Errorf("after the restart: %v, want %s and %s but not %s", afterRestart, owned, kept, stale)
	}
	if afterExit[kept] || afterExit[stale] || !afterExit[owned] {
		t.Errorf("after exit: %v, want only %s of the three", afterExit, owned)
	}
}
