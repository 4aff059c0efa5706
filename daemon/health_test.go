package daemon

import (
	"log/slog"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/rauta-lb/rauta/config"
	"github.com/rauta-lb/rauta/health"
)

func TestWithHealthDrainsDownBackendsButNeverAWholePool(t *testing.T) {
	a, b, c := netip.MustParseAddrPort("10.0.1.1:80"), netip.MustParseAddrPort("10.0.1.2:80"), netip.MustParseAddrPort("10.0.1.3:80")
	hc := &config.HealthCheck{Interval: time.Second, Timeout: time.Second, Fall: 3, Rise: 2}
	file := &config.Config{Pools: []config.Pool{
		{Name: "web", HealthCheck: hc, Backends: []config.Backend{{Address: a, Weight: 1}, {Address: b, Weight: 2}, {Address: c, Weight: 0}}},
		{Name: "api", HealthCheck: hc, Backends: []config.Backend{{Address: a, Weight: 1}, {Address: c, Weight: 0}}},
		{Name: "static", Backends: []config.Backend{{Address: a, Weight: 1}}},
	}}
	log := slog.New(slog.DiscardHandler)

	if got := withHealth(file, nil, log); got != file {
		t.Error("nothing down: want the file's config itself")
	}
	down := map[health.Key]bool{
		{Pool: "web", Backend: b}: true,
		{Pool: "api", Backend: a}: true, // api's only weighted backend
	}
	got := withHealth(file, down, log)
	weights := func(p config.Pool) []uint32 {
		var w []uint32
		for _, b := range p.Backends {
			w = append(w, b.Weight)
		}
		return w
	}
	for i, want := range [][]uint32{{1, 0, 0}, {1, 0}, {1}} {
		if w := weights(got.Pools[i]); !reflect.DeepEqual(w, want) {
			t.Errorf("pool %s weights %v, want %v", got.Pools[i].Name, w, want)
		}
	}
	if w := weights(file.Pools[0]); !reflect.DeepEqual(w, []uint32{1, 2, 0}) {
		t.Errorf("withHealth modified the file's config: web weights %v", w)
	}
}

func TestHealthTargets(t *testing.T) {
	a, b := netip.MustParseAddrPort("10.0.1.1:80"), netip.MustParseAddrPort("10.0.1.2:80")
	hc := &config.HealthCheck{Interval: time.Second, Timeout: 500 * time.Millisecond, Fall: 3, Rise: 2, HTTPPath: "/healthz"}
	got := healthTargets(&config.Config{Pools: []config.Pool{
		{Name: "web", HealthCheck: hc, Backends: []config.Backend{{Address: a, Weight: 1}, {Address: b, Weight: 0}}},
		{Name: "static", Backends: []config.Backend{{Address: a, Weight: 1}}},
	}})
	spec := health.Spec{Interval: time.Second, Timeout: 500 * time.Millisecond, Fall: 3, Rise: 2, HTTPPath: "/healthz"}
	want := []health.Target{
		{Key: health.Key{Pool: "web", Backend: a}, Spec: spec},
		{Key: health.Key{Pool: "web", Backend: b}, Spec: spec},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("targets = %+v, want %+v", got, want)
	}
}

func TestStillCheckedForgetsBackendsNoLongerProbed(t *testing.T) {
	a, b := netip.MustParseAddrPort("10.0.1.1:80"), netip.MustParseAddrPort("10.0.1.2:80")
	hc := &config.HealthCheck{Interval: time.Second, Timeout: time.Second, Fall: 3, Rise: 2}
	file := &config.Config{Pools: []config.Pool{
		{Name: "web", HealthCheck: hc, Backends: []config.Backend{{Address: a, Weight: 1}, {Address: b, Weight: 1}}},
		{Name: "api", Backends: []config.Backend{{Address: a, Weight: 1}, {Address: b, Weight: 1}}}, // check removed
	}}
	down := map[health.Key]bool{{Pool: "web", Backend: a}: true, {Pool: "api", Backend: a}: true, {Pool: "old", Backend: b}: true}
	got := stillChecked(down, file)
	want := map[health.Key]bool{{Pool: "web", Backend: a}: true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stillChecked = %v, want %v", got, want)
	}
}
