package slowpath

import (
	"fmt"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/prometheus/client_golang/prometheus"
)

// reason is why the proxy answered a request itself (or lost it midway).
// Each has a fixed status, body and counter, so the error path allocates
// nothing and the three can never disagree.
type reason int

const (
	reasonBadRequest reason = iota
	reasonNoService
	reasonNoRoute
	reasonMethodNotAllowed
	reasonClientTimeout
	reasonBodyTooLarge
	reasonHeaderTooLarge
	reasonNotConfigured
	reasonNoBackend
	reasonBackendBusy
	reasonBackendConnect
	reasonBackendError
	reasonBackendTimeout
	// reasonResponseAborted: the response had started when the backend or
	// the client failed; the client connection was closed.
	reasonResponseAborted
	reasonInternal
	numReasons
)

type reasonInfo struct {
	label  string
	status int
	body   []byte
}

var reasons = [numReasons]reasonInfo{
	reasonBadRequest:       {"bad_request", 400, []byte("400 bad request\n")},
	reasonNoService:        {"no_service", 404, []byte("404 no service\n")},
	reasonNoRoute:          {"no_route", 404, []byte("404 no route\n")},
	reasonMethodNotAllowed: {"method_not_allowed", 405, []byte("405 method not allowed\n")},
	reasonClientTimeout:    {"client_timeout", 408, []byte("408 request timeout\n")},
	reasonBodyTooLarge:     {"body_too_large", 413, []byte("413 request body too large\n")},
	reasonHeaderTooLarge:   {"header_too_large", 431, []byte("431 request header too large\n")},
	reasonNotConfigured:    {"not_configured", 503, []byte("503 not configured\n")},
	reasonNoBackend:        {"no_backend", 503, []byte("503 no backend available\n")},
	reasonBackendBusy:      {"backend_busy", 503, []byte("503 backend busy\n")},
	reasonBackendConnect:   {"backend_connect", 502, []byte("502 backend unreachable\n")},
	reasonBackendError:     {"backend_error", 502, []byte("502 bad gateway\n")},
	reasonBackendTimeout:   {"backend_timeout", 504, []byte("504 backend timeout\n")},
	reasonResponseAborted:  {"response_aborted", 0, nil},
	reasonInternal:         {"internal", 500, []byte("500 internal error\n")},
}

// canned are fail's answers as whole responses, for who writes them without
// fasthttp (the event loop, garbage refusals): [reason][close].
var canned = func() (c [numReasons][2][]byte) {
	for r, ri := range reasons {
		if ri.status == 0 {
			continue
		}
		for i, conn := range [2]string{"", "Connection: close\r\n"} {
			c[r][i] = fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n%sContent-Length: %d\r\n\r\n%s",
				ri.status, fasthttp.StatusMessage(ri.status), conn, len(ri.body), ri.body)
		}
	}
	return c
}()

// cannedResponse is reason's whole response; close adds Connection: close.
func cannedResponse(r reason, close bool) []byte {
	if close {
		return canned[r][1]
	}
	return canned[r][0]
}

// metrics are the proxy's own collectors. They are per Proxy (not
// registered globally), so tests and reloads never share counters.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	handoffs prometheus.Counter
	// errorCounters caches each reason's child: the error path does no
	// label hashing.
	errorCounters [numReasons]prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rauta_slowpath_requests_total",
			Help: "Requests answered by the slow-path proxy, by service, pool (empty when none was routed to) and status code.",
		}, []string{"service", "pool", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rauta_slowpath_request_duration_seconds",
			Help:    "Time from a request's first byte to the end of its response body, by service.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"service"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rauta_slowpath_errors_total",
			Help: "Requests the slow-path proxy answered with an error itself, or lost midway (response_aborted), by reason.",
		}, []string{"reason"}),
		handoffs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rauta_slowpath_handoffs_total",
			Help: "Plain-HTTP connections the event loops handed to the fasthttp server with a request they do not serve themselves: errors, redirects, chunked uploads, HTTP/1.0, upgrades, Expect, garbage.",
		}),
	}
	for r := range numReasons {
		m.errorCounters[r] = m.errors.WithLabelValues(reasons[r].label)
	}
	return m
}

// Collectors returns the proxy's metrics for the daemon's registry.
func (p *Proxy) Collectors() []prometheus.Collector {
	tunnels := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rauta_slowpath_tunnels",
		Help: "Upgraded connections (WebSocket and others) the slow-path proxy is relaying.",
	}, func() float64 { return float64(p.tunnels.count()) })
	return []prometheus.Collector{p.metrics.requests, p.metrics.duration, p.metrics.errors, p.metrics.handoffs, tunnels}
}

// statusLabels avoids an strconv allocation per request for the code label.
var statusLabels = func() (s [600]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

func codeLabel(status int) string {
	if status >= 0 && status < len(statusLabels) {
		return statusLabels[status]
	}
	return strconv.Itoa(status)
}
