package daemon

import (
	"context"
	"log/slog"
	"net"
	"slices"

	"github.com/rauta-lb/rauta/config"
	"github.com/rauta-lb/rauta/health"
)

// healthTargets are the backends of the pools that have a health_check.
func healthTargets(cfg *config.Config) []health.Target {
	var targets []health.Target
	for _, p := range cfg.Pools {
		hc := p.HealthCheck
		if hc == nil {
			continue
		}
		spec := health.Spec(*hc)
		for _, b := range p.Backends {
			targets = append(targets, health.Target{Key: health.Key{Pool: p.Name, Backend: b.Address}, Spec: spec})
		}
	}
	return targets
}

// stillChecked is the part of down that cfg still health-checks: a backend
// whose pool lost its check (or was renamed) is up, since no probe would
// ever bring it back.
func stillChecked(down map[health.Key]bool, cfg *config.Config) map[health.Key]bool {
	kept := map[health.Key]bool{}
	for _, t := range healthTargets(cfg) {
		if down[t.Key] {
			kept[t.Key] = true
		}
	}
	return kept
}

// withHealth is cfg with the backends found down drained (weight 0): they
// get no new flows or requests, their established flows stay. A pool
// whose every weighted backend is down keeps them all: sending traffic to
// backends that fail their check beats refusing all of it (Envoy's panic
// mode; a health check that fails everywhere is more often wrong than the
// whole pool dead). cfg itself is not modified.
func withHealth(cfg *config.Config, down map[health.Key]bool, log *slog.Logger) *config.Config {
	if len(down) == 0 {
		return cfg
	}
	eff := *cfg
	eff.Pools = slices.Clone(cfg.Pools)
	for i, p := range eff.Pools {
		backends := slices.Clone(p.Backends)
		drained, weighted := 0, 0
		for j, b := range backends {
			if b.Weight == 0 {
				continue
			}
			weighted++
			if down[health.Key{Pool: p.Name, Backend: b.Address}] {
				backends[j].Weight = 0
				drained++
			}
		}
		if drained == 0 {
			continue
		}
		if drained == weighted {
			log.Warn("every backend of the pool fails its health check; sending traffic to all of them anyway", "pool", p.Name)
			continue
		}
		eff.Pools[i].Backends = backends
	}
	return &eff
}

// netnsDial dials from the data path's network namespace (not the
// process's own under `rauta demo`).
func netnsDial(inNetns func(fn func() error) error) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		var conn net.Conn
		err := inNetns(func() error {
			var d net.Dialer
			var err error
			conn, err = d.DialContext(ctx, network, address)
			return err
		})
		return conn, err
	}
}
