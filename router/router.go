// Package router decides, in Go, what the XDP program decides in BPF: which
// pool an HTTP request's route names and which backend Maglev picks for a
// connection. The slow-path proxy uses it; both are built from the same
// config.Config snapshot, so both paths agree (a test in this package proves
// it against the loaded XDP program).
package router

import (
	"errors"
	"net/netip"
	"strings"

	"github.com/rauta-lb/rauta/config"
)

// Sentinel errors of Route.
var (
	// ErrNoService: no http or https service listens on that VIP:port.
	ErrNoService = errors.New("no such service")
	// ErrNoRoute: no route of the service matches the host and path.
	ErrNoRoute = errors.New("no route")
	// ErrMethodNotAllowed is wrapped by *MethodNotAllowedError.
	ErrMethodNotAllowed = errors.New("method not allowed")
)

// MethodNotAllowedError is returned when the best route for a path does not
// allow the method. Allow lists the methods it does allow, uppercase and
// sorted, for a 405's Allow header.
type MethodNotAllowedError struct {
	Allow []string
}

func (e *MethodNotAllowedError) Error() string {
	return "method not allowed; allowed: " + strings.Join(e.Allow, ", ")
}

func (e *MethodNotAllowedError) Unwrap() error { return ErrMethodNotAllowed }

// Table is an immutable routing snapshot of one configuration. It is safe
// for concurrent use; a reload builds a new Table.
type Table struct {
	// filled in by the implementation
}

// New builds the table for cfg's http and https services and pools.
func New(cfg *config.Config) (*Table, error) {
	return nil, errors.New("router: not implemented")
}

// Route returns the pool that the request's route names. service is the
// VIP:port the connection arrived on; host is the Host header as received
// (any case, maybe with a port); path is the request target's path, already
// normalised with NormalizePath (the query, if any, is cut off by Route).
func (t *Table) Route(service netip.AddrPort, method, host, path string) (pool string, err error) {
	return "", ErrNoRoute
}

// Backends returns up to n distinct usable backends of pool in Maglev
// preference order for the connection client→service: the first is the one
// XDP's Maglev table gives that 4-tuple, the rest are the next choices to try
// when a backend refuses.
func (t *Table) Backends(pool string, client, service netip.AddrPort, n int) []netip.AddrPort {
	return nil
}

// NormalizePath returns the path XDP would route a clean request to:
// RFC 3986 dot segments removed, percent-encoded unreserved characters
// decoded (other escapes kept, hex upper-cased), repeated slashes merged.
// The query is kept unchanged after '?'. A path that is not origin-form or
// escapes above the root is an error.
func NormalizePath(raw string) (string, error) {
	return "", errors.New("router: not implemented")
}
