// Package certs holds the certificates an https service serves and picks
// one per TLS handshake by the client's server name (SNI).
//
// A Store is built from the service's configured certificate files and can
// re-read them (Reload) while handshakes run: each handshake uses the set
// that was current when it asked, and established connections are never
// touched, so replacing a certificate needs no restart and drops nothing.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/rauta-lb/rauta/config"
)

// ErrNoCertificates is returned by New for an empty list: a TLS listener
// without a certificate could complete no handshake.
var ErrNoCertificates = errors.New("certs: no certificates")

// Store selects certificates by SNI. It is safe for concurrent use.
type Store struct {
	pairs []config.Certificate
	set   atomic.Pointer[set]
	// reload serialises Reload, so a slow reload that read older files
	// cannot replace the set a later one stored.
	reload sync.Mutex
}

// set is one immutable generation of loaded certificates, indexed by the
// names they cover.
type set struct {
	def *tls.Certificate
	// exact maps a lowercase DNS name to the first certificate naming it.
	exact map[string]*tls.Certificate
	// wildcard maps the parent of a wildcard name ("example.com" for
	// "*.example.com") to the first certificate naming it.
	wildcard map[string]*tls.Certificate
}

// New loads every certificate and key pair. The first pair is the default,
// served when the client sends no server name or one no certificate covers.
// An error names the file at fault.
func New(pairs []config.Certificate) (*Store, error) {
	if len(pairs) == 0 {
		return nil, ErrNoCertificates
	}
	s := &Store{pairs: append([]config.Certificate(nil), pairs...)}
	set, err := load(s.pairs)
	if err != nil {
		return nil, err
	}
	s.set.Store(set)
	return s, nil
}

// Reload re-reads the files the Store was built from and, only if all of
// them load, makes them current. On error the previous certificates stay in
// use. Handshakes already past certificate selection and established
// connections are unaffected either way.
func (s *Store) Reload() error {
	s.reload.Lock()
	defer s.reload.Unlock()
	set, err := load(s.pairs)
	if err != nil {
		return err
	}
	s.set.Store(set)
	return nil
}

// GetCertificate picks the certificate for a handshake, for
// tls.Config.GetCertificate. The server name is matched case-insensitively
// and without a trailing dot: an exact DNS name beats a wildcard, a wildcard
// covers exactly one label, and anything else gets the default. It never
// fails, so a client with an unknown name still completes the handshake and
// can be told so over HTTP (or reject the certificate itself).
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	set := s.set.Load()
	if hello == nil {
		return set.def, nil
	}
	return set.lookup(hello.ServerName), nil
}

// TLSConfig returns a new server configuration that selects certificates
// from s. It offers only HTTP/1.1 by ALPN because that is what the slow path
// speaks, and accepts TLS 1.2 and 1.3 with Go's default cipher suites.
func (s *Store) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
		GetCertificate: s.GetCertificate,
	}
}

func (st *set) lookup(serverName string) *tls.Certificate {
	name := normalize(serverName)
	if name == "" {
		return st.def
	}
	if c, ok := st.exact[name]; ok {
		return c
	}
	if _, parent, ok := strings.Cut(name, "."); ok {
		if c, ok := st.wildcard[parent]; ok {
			return c
		}
	}
	return st.def
}

func normalize(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

func load(pairs []config.Certificate) (*set, error) {
	st := &set{
		exact:    make(map[string]*tls.Certificate),
		wildcard: make(map[string]*tls.Certificate),
	}
	for _, p := range pairs {
		cert, err := loadPair(p)
		if err != nil {
			return nil, err
		}
		if st.def == nil {
			st.def = cert
		}
		for _, name := range names(cert.Leaf) {
			index := st.exact
			if parent, ok := strings.CutPrefix(name, "*."); ok {
				index, name = st.wildcard, parent
			}
			// The earlier certificate keeps a name both cover, so the
			// file's order decides, not the order of a map.
			if _, taken := index[name]; !taken {
				index[name] = cert
			}
		}
	}
	return st, nil
}

// names returns the lowercase names a certificate is selected by: its DNS
// SANs, or its CN if it has none (as clients that still honour the CN would
// only then).
func names(leaf *x509.Certificate) []string {
	raw := leaf.DNSNames
	if cn := leaf.Subject.CommonName; len(raw) == 0 && isHostname(cn) {
		raw = []string{cn}
	}
	out := make([]string, 0, len(raw))
	for _, n := range raw {
		if n = normalize(n); n != "" && n != "*." {
			out = append(out, n)
		}
	}
	return out
}

// isHostname tells a CN that is a host name (maybe a wildcard) from one
// that is a description, such as "Acme Corp Server".
func isHostname(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '*'
		if !ok {
			return false
		}
	}
	return true
}

func loadPair(p config.Certificate) (*tls.Certificate, error) {
	certPEM, err := config.ReadPEM(p.Cert)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	keyPEM, err := config.ReadPEM(p.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: %s with key %s: %w", p.Cert, p.Key, err)
	}
	if cert.Leaf == nil { // only with GODEBUG=x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certs: %s: %w", p.Cert, err)
		}
	}
	return &cert, nil
}
