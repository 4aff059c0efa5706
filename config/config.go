// Package config parses and validates RAUTA's YAML configuration file.
//
// Parsing is strict: unknown keys are errors at every level, every value is
// converted to its Go type (netip.Addr, netip.AddrPort, uint16,
// time.Duration), cross references (services → pools) are resolved, and
// defaults are filled in, so the rest of the daemon never sees a half-valid
// configuration. All problems are reported at once, each as an *Error that
// names the file, line and field, e.g.
//
//	rauta.yaml:12: services[1].pool: unknown pool "foo"
//
// The returned Config is plain data with no pointers into the YAML tree; the
// loader and the slow path may share it read-only.
package config

import (
	"cmp"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/rauta-lb/rauta/maglev"
)

// Defaults applied when the file leaves a setting out.
const (
	DefaultBPFFS          = "/sys/fs/bpf/rauta"
	DefaultTCPIdleTimeout = 5 * time.Minute
	DefaultUDPIdleTimeout = 30 * time.Second
	DefaultClosedTimeout  = 10 * time.Second

	DefaultConnectTimeout = 5 * time.Second
	DefaultIdleTimeout    = 60 * time.Second
	// DefaultRequestTimeout is none: a whole request (a long download,
	// an event stream) is not bounded unless configured, as in nginx and
	// HAProxy; idle_timeout bounds every wait instead.
	DefaultRequestTimeout = time.Duration(0)
	DefaultMaxHeaderBytes = 8192

	// Health checks, as HAProxy's (inter 2s, fall 3, rise 2).
	DefaultHealthInterval = 2 * time.Second
	DefaultHealthTimeout  = time.Second
	DefaultHealthFall     = 3
	DefaultHealthRise     = 2
	// MaxHealthCount bounds fall and rise.
	MaxHealthCount = 100
	// MinHealthInterval and MinHealthTimeout keep probing from becoming a
	// busy loop (and a probe from being unanswerable).
	MinHealthInterval = 100 * time.Millisecond
	MinHealthTimeout  = 10 * time.Millisecond
)

// Bounds on slowpath.max_header_bytes. Below 1 KiB ordinary browser
// requests (cookies, user agents) fail; above 1 MiB one client can make the
// proxy hold a lot of memory before a request is even routed.
const (
	MinMaxHeaderBytes = 1024
	MaxMaxHeaderBytes = 1 << 20
)

// Bounds on a pool's maglev_size. The lower bound keeps a table meaningful;
// the upper bound (the largest prime below 2^20) caps the BPF array each
// table is written to at 4 MiB.
const (
	MinMaglevSize = 7
	MaxMaglevSize = 1048573
)

// MaxWeight is the largest backend weight. Weights are relative, so 1000
// gives 0.1% resolution, which is finer than a default-sized table shows.
const MaxWeight = 1000

// Options adjusts validation to the host the configuration is loaded on.
type Options struct {
	// InterfaceExists, when non-nil, is asked about every interface the
	// file names; an interface it rejects is reported as unknown. Leave it
	// nil to validate a file for another host (e.g. in CI).
	InterfaceExists func(name string) bool
	// SkipFileChecks skips reading the certificate and key files an https
	// service names, so a file can be validated for another host. Paths
	// are still checked for form.
	SkipFileChecks bool
}

// Config is a complete, validated configuration.
type Config struct {
	Interfaces []string
	XDPMode    XDPMode
	// BPFFS is the directory maps and links are pinned under.
	BPFFS    string
	Services []Service
	// Pools are sorted by name.
	Pools    []Pool
	Metrics  Metrics
	Flows    Flows
	Slowpath Slowpath
}

// XDPMode selects how the XDP program is attached.
type XDPMode string

const (
	// XDPModeAuto attaches in generic mode to veths, where it costs less
	// than veth's native XDP, and in native mode elsewhere, falling back
	// to generic when the driver has no native XDP (as `ip link set xdp`).
	XDPModeAuto    XDPMode = "auto"
	XDPModeNative  XDPMode = "native"
	XDPModeGeneric XDPMode = "generic"
)

// Protocol is a service's protocol.
type Protocol string

const (
	ProtocolTCP   Protocol = "tcp"
	ProtocolUDP   Protocol = "udp"
	ProtocolHTTP  Protocol = "http"
	ProtocolHTTPS Protocol = "https"
)

// Service is one VIP:port the balancer answers on. A TCP or UDP service sends
// every flow to Pool; an HTTP or HTTPS service picks a pool per request from
// Routes.
type Service struct {
	Name     string
	VIP      netip.Addr // IPv4
	Port     uint16
	Protocol Protocol
	Pool     string  // tcp and udp only
	Routes   []Route // http and https, in file order; may be empty if RedirectHTTPS
	TLS      TLS     // https only
	// RedirectHTTPS (http only) answers requests that match no route with
	// a 308 to the same host and path on https at RedirectPort, the port
	// of the https service on the same VIP (443 if there is one there).
	// Routes still apply, so e.g. ACME challenges can be served over http.
	RedirectHTTPS bool
	RedirectPort  uint16
}

// TLS is how an https service terminates TLS.
type TLS struct {
	// Certificates are chosen by SNI; the first is the default, sent to
	// clients that send no server name or one no certificate covers. There
	// is at least one.
	Certificates []Certificate
}

// Certificate names the PEM files of one certificate chain and its private
// key. Both paths are absolute.
type Certificate struct {
	Cert string
	Key  string
}

// IsHTTP says whether the service routes each request (http and https),
// rather than every flow to one pool.
func (s Service) IsHTTP() bool {
	return s.Protocol == ProtocolHTTP || s.Protocol == ProtocolHTTPS
}

// Route sends matching HTTP requests to a pool. Among a service's routes the
// most specific match wins: an exact host before a wildcard before any host,
// then the longest path.
type Route struct {
	// Host is lowercase without a trailing dot; "" matches any host and
	// "*.example.com" any subdomain of example.com.
	Host string
	// Path is a prefix of the request path, or the whole path if Exact.
	Path  string
	Exact bool
	// Methods are uppercase; nil allows every method.
	Methods []string
	Pool    string
}

// Pool is a named set of backends sharing one Maglev table.
type Pool struct {
	Name       string
	MaglevSize uint32 // prime
	Backends   []Backend
	// HealthCheck probes every backend; nil: none, every backend counts
	// as up (HAProxy without `check`, nginx's open-source default).
	HealthCheck *HealthCheck
}

// HealthCheck is a pool's active check of its backends. A backend goes down
// after Fall failed probes in a row and up after Rise good ones; a down
// backend gets no new flows or requests (as weight 0), its established
// flows stay.
type HealthCheck struct {
	Interval time.Duration // between probes of one backend
	Timeout  time.Duration // one probe; at most Interval
	Fall     int
	Rise     int
	// HTTPPath, if set, makes a probe a GET of this path with the
	// backend's address as Host, healthy on 2xx and 3xx; otherwise a
	// probe is a TCP connect.
	HTTPPath string
}

// Backend is one server of a pool.
type Backend struct {
	Address netip.AddrPort // IPv4
	// Weight is relative to the pool's other backends; 0 means drained.
	Weight uint32
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen is a host:port to serve /metrics on; "" disables it.
	Listen string
}

// Flows configures how long idle entries stay in the flow table.
type Flows struct {
	TCPIdleTimeout time.Duration
	UDPIdleTimeout time.Duration
	// ClosedTimeout is how long a flow lingers after FIN or RST, so late
	// retransmissions still reach the same backend.
	ClosedTimeout time.Duration
}

// Slowpath configures the proxy that handles what XDP passes to the kernel
// (TLS, requests XDP cannot route). Every field has a default.
type Slowpath struct {
	// ConnectTimeout bounds dialing one backend.
	ConnectTimeout time.Duration
	// IdleTimeout is how long a connection may stay silent: a client
	// waiting to send its next request, and any read or write of a request
	// or response in progress, on either side.
	IdleTimeout time.Duration
	// RequestTimeout bounds one request, from its first byte to the end of
	// the response; 0 (the default) means no bound.
	RequestTimeout time.Duration
	// MaxHeaderBytes caps a request's header block; larger ones get 431.
	MaxHeaderBytes int
	// MaxBodyBytes caps a request body; 0 means no limit.
	MaxBodyBytes int64
	// AccessLog logs one line per request.
	AccessLog bool
}

// Load reads and parses the configuration file at path. Problems with the
// content are reported as in Parse, naming path as the file.
func Load(path string, opts Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data, opts)
}

// Parse parses and validates a configuration; name is the file name used in
// errors. On failure the error is an errors.Join of one *Error per problem,
// ordered by line.
func Parse(name string, data []byte, opts Options) (*Config, error) {
	root, err := parseDocument(name, data)
	if err != nil {
		return nil, err
	}
	p := &parser{file: name, opts: opts}
	cfg := p.config(root)
	if err := p.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Pool returns the pool with the given name.
func (c *Config) Pool(name string) (Pool, bool) {
	i, found := slices.BinarySearchFunc(c.Pools, name, func(p Pool, name string) int {
		return cmp.Compare(p.Name, name)
	})
	if !found {
		return Pool{}, false
	}
	return c.Pools[i], true
}

// MaglevBackends returns the pool's backends as Maglev input, in the pool's
// order. Every component that builds a table for this pool must use it: the
// backend's name seeds its Maglev permutation, so the loader and the slow
// path agree only if they name backends identically.
func (p Pool) MaglevBackends() []maglev.Backend {
	out := make([]maglev.Backend, len(p.Backends))
	for i, b := range p.Backends {
		out[i] = maglev.Backend{Name: b.Address.String(), Weight: b.Weight}
	}
	return out
}
