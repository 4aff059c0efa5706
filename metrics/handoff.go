package metrics

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Handoff exports what the TC handoff did with the connections XDP sent to
// the slow path, read from its per-CPU counters at each scrape.
type Handoff struct {
	read func() (map[string]uint64, error)
	log  *slog.Logger
	desc *prometheus.Desc
}

// NewHandoff reads the counters with read (tc.Objects.Counters).
func NewHandoff(read func() (map[string]uint64, error), log *slog.Logger) *Handoff {
	return &Handoff{
		read: read,
		log:  log,
		desc: prometheus.NewDesc("rauta_tc_handoff_total",
			"Connections XDP sent to the slow path, by what the TC handoff did: assigned (the kernel got the socket), no_listener, bad_cookie, failed.",
			[]string{"outcome"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (h *Handoff) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect implements prometheus.Collector.
func (h *Handoff) Collect(ch chan<- prometheus.Metric) {
	counts, err := h.read()
	if err != nil {
		h.log.Warn("read handoff counters", "error", err)
		return
	}
	for outcome, n := range counts {
		ch <- prometheus.MustNewConstMetric(h.desc, prometheus.CounterValue, float64(n), outcome)
	}
}
