package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rauta-lb/rauta/config"
)

// selfSigned writes a certificate for names to dir and returns the pair.
func selfSigned(t *testing.T, dir string, names ...string) config.Certificate {
	t.Helper()
	cert, key, err := WriteSelfSigned(dir, names)
	if err != nil {
		t.Fatalf("WriteSelfSigned(%v): %v", names, err)
	}
	return config.Certificate{Cert: cert, Key: key}
}

// leafOf returns the certificate in a pair's file, to compare with what the
// store or a handshake returns.
func leafOf(t *testing.T, p config.Certificate) []byte {
	t.Helper()
	c, err := tls.LoadX509KeyPair(p.Cert, p.Key)
	if err != nil {
		t.Fatal(err)
	}
	return c.Certificate[0]
}

// fixture is the store the selection tests share: a default without names
// first, then a.example.com and *.b.example.com, then exact.b.example.com,
// which must beat the wildcard listed before it.
type fixture struct {
	store                 *Store
	def, a, wildB, exactB []byte
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	dir := t.TempDir()
	pairs := []config.Certificate{
		selfSigned(t, dir),
		selfSigned(t, dir, "a.example.com"),
		selfSigned(t, dir, "*.b.example.com"),
		selfSigned(t, dir, "exact.b.example.com"),
	}
	s, err := New(pairs)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return fixture{s, leafOf(t, pairs[0]), leafOf(t, pairs[1]), leafOf(t, pairs[2]), leafOf(t, pairs[3])}
}

func served(t *testing.T, s *Store, serverName string) []byte {
	t.Helper()
	c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: serverName})
	if err != nil || c == nil {
		t.Fatalf("GetCertificate(%q) = %v, %v", serverName, c, err)
	}
	return c.Certificate[0]
}

func TestGetCertificateBySNI(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		sni  string
		want []byte
		what string
	}{
		{"a.example.com", f.a, "a"},
		{"A.Example.COM", f.a, "a"},
		{"a.example.com.", f.a, "a"},
		{"x.b.example.com", f.wildB, "*.b"},
		{"X.B.EXAMPLE.COM.", f.wildB, "*.b"},
		{"exact.b.example.com", f.exactB, "exact.b"},
		{"Exact.B.example.com.", f.exactB, "exact.b"},
		// A wildcard covers exactly one label.
		{"b.example.com", f.def, "default"},
		{"y.x.b.example.com", f.def, "default"},
		{"", f.def, "default"},
		{"example.com", f.def, "default"},
		{"unknown.test", f.def, "default"},
		{".", f.def, "default"},
	}
	for _, tt := range tests {
		if got := served(t, f.store, tt.sni); !bytes.Equal(got, tt.want) {
			t.Errorf("SNI %q: did not get the %s certificate", tt.sni, tt.what)
		}
	}
	if c, err := f.store.GetCertificate(nil); err != nil || !bytes.Equal(c.Certificate[0], f.def) {
		t.Errorf("GetCertificate(nil) = %v, %v; want the default", c, err)
	}
}

func TestFirstCertificateNamingANameWins(t *testing.T) {
	dir := t.TempDir()
	first := selfSigned(t, dir, "www.example.com", "*.example.com")
	second := selfSigned(t, dir, "www.example.com", "*.example.com")
	s, err := New([]config.Certificate{first, second})
	if err != nil {
		t.Fatal(err)
	}
	for _, sni := range []string{"www.example.com", "api.example.com"} {
		if !bytes.Equal(served(t, s, sni), leafOf(t, first)) {
			t.Errorf("SNI %q: got the second certificate", sni)
		}
	}
}

func TestCommonNameOnlyWithoutSANs(t *testing.T) {
	dir := t.TempDir()
	def := selfSigned(t, dir)
	cnOnly := writeCN(t, dir, "legacy.example.com", nil)
	withSAN := writeCN(t, dir, "cn.example.com", []string{"san.example.com"})
	s, err := New([]config.Certificate{def, cnOnly, withSAN})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(t, s, "legacy.example.com"), leafOf(t, cnOnly)) {
		t.Error("a certificate without SANs is not selected by its CN")
	}
	if !bytes.Equal(served(t, s, "san.example.com"), leafOf(t, withSAN)) {
		t.Error("not selected by its SAN")
	}
	if !bytes.Equal(served(t, s, "cn.example.com"), leafOf(t, def)) {
		t.Error("a certificate with SANs is selected by its CN")
	}
	// The default's CN, "rauta self-signed", is not a host name.
	if !bytes.Equal(served(t, s, "rauta self-signed"), leafOf(t, def)) {
		t.Error("descriptive CN indexed")
	}
}

// writeCN writes a certificate with the given CN and DNS SANs.
func writeCN(t *testing.T, dir, cn string, dnsNames []string) config.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dnsNames,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := config.Certificate{Cert: filepath.Join(dir, cn+".pem"), Key: filepath.Join(dir, cn+".key")}
	writeFile(t, p.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, p.Key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	return p
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// copyPair overwrites dst's files with src's, as a certificate renewal
// would.
func copyPair(t *testing.T, dst, src config.Certificate) {
	t.Helper()
	for _, f := range [][2]string{{dst.Cert, src.Cert}, {dst.Key, src.Key}} {
		data, err := os.ReadFile(f[1])
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, f[0], data)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	good := selfSigned(t, dir, "a.example.com")
	other := selfSigned(t, dir, "b.example.com")
	missing := filepath.Join(dir, "missing.pem")

	if _, err := New(nil); !errors.Is(err, ErrNoCertificates) {
		t.Errorf("New(nil) = %v, want ErrNoCertificates", err)
	}
	tests := []struct {
		name  string
		pair  config.Certificate
		names string // in the error
	}{
		{"missing cert", config.Certificate{Cert: missing, Key: good.Key}, missing},
		{"missing key", config.Certificate{Cert: good.Cert, Key: missing}, missing},
		{"mismatched key", config.Certificate{Cert: good.Cert, Key: other.Key}, good.Cert},
		{"not a file", config.Certificate{Cert: "/dev/zero", Key: good.Key}, "/dev/zero"},
	}
	for _, tt := range tests {
		_, err := New([]config.Certificate{good, tt.pair})
		if err == nil || !strings.Contains(err.Error(), tt.names) {
			t.Errorf("%s: New = %v, want an error naming %s", tt.name, err, tt.names)
		}
	}
}

func TestReloadSwapsAfterFilesChange(t *testing.T) {
	dir := t.TempDir()
	def := selfSigned(t, dir)
	a := selfSigned(t, dir, "a.example.com")
	s, err := New([]config.Certificate{def, a})
	if err != nil {
		t.Fatal(err)
	}
	before := leafOf(t, a)
	held, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: "a.example.com"})
	if err != nil {
		t.Fatal(err)
	}

	// a's files now hold a certificate for other names.
	renewed := selfSigned(t, dir, "a.example.com", "c.example.com")
	copyPair(t, a, renewed)
	if got := served(t, s, "c.example.com"); !bytes.Equal(got, leafOf(t, def)) {
		t.Fatal("files were read before Reload")
	}
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	for _, sni := range []string{"a.example.com", "c.example.com"} {
		if got := served(t, s, sni); !bytes.Equal(got, leafOf(t, renewed)) {
			t.Errorf("after Reload, SNI %q: not the renewed certificate", sni)
		}
	}
	// What a handshake already holds is not changed under it.
	if !bytes.Equal(held.Certificate[0], before) {
		t.Error("the certificate handed out before Reload was modified")
	}
}

func TestReloadKeepsOldSetOnError(t *testing.T) {
	dir := t.TempDir()
	def := selfSigned(t, dir)
	a := selfSigned(t, dir, "a.example.com")
	s, err := New([]config.Certificate{def, a})
	if err != nil {
		t.Fatal(err)
	}
	want, wantDef := leafOf(t, a), leafOf(t, def)

	// A renewal caught half-way: a new certificate with the old key.
	renewed := selfSigned(t, dir, "a.example.com")
	data, err := os.ReadFile(renewed.Cert)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, a.Cert, data)
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), a.Cert) {
		t.Errorf("Reload with a mismatched pair = %v, want an error naming %s", err, a.Cert)
	}
	if got := served(t, s, "a.example.com"); !bytes.Equal(got, want) {
		t.Error("a failed Reload replaced the certificate")
	}

	writeFile(t, def.Key, []byte("garbage"))
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), def.Key) {
		t.Errorf("Reload with a garbage key = %v, want an error naming %s", err, def.Key)
	}
	if got := served(t, s, ""); !bytes.Equal(got, wantDef) {
		t.Error("a failed Reload replaced the default")
	}
}

// TestConcurrentReload runs handshake-time lookups against reloads; run
// with -race.
func TestConcurrentReload(t *testing.T) {
	f := newFixture(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c, err := f.store.GetCertificate(&tls.ClientHelloInfo{ServerName: "a.example.com"}); err != nil || c == nil {
					t.Errorf("GetCertificate = %v, %v", c, err)
					return
				}
			}
		})
	}
	for range 20 {
		if err := f.store.Reload(); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}

// handshake runs a real TLS handshake over net.Pipe against the store's
// TLSConfig, with a client that trusts roots and asks for serverName.
func handshake(t *testing.T, s *Store, roots *x509.CertPool, serverName string) tls.ConnectionState {
	t.Helper()
	c, srv := net.Pipe()
	defer c.Close()
	defer srv.Close()
	server := tls.Server(srv, s.TLSConfig())
	serverErr := make(chan error, 1)
	go func() { serverErr <- server.Handshake() }()
	client := tls.Client(c, &tls.Config{
		RootCAs:    roots,
		ServerName: serverName,
		NextProtos: []string{"h2", "http/1.1"},
	})
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake with SNI %q: %v", serverName, err)
	}
	if err := <-serverErr; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return client.ConnectionState()
}

func TestHandshake(t *testing.T) {
	f := newFixture(t)
	roots := x509.NewCertPool()
	for _, der := range [][]byte{f.def, f.a, f.wildB, f.exactB} {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		roots.AddCert(c)
	}
	tests := []struct {
		sni  string
		want []byte
	}{
		{"a.example.com", f.a},
		{"x.b.example.com", f.wildB},
		{"exact.b.example.com", f.exactB},
	}
	for _, tt := range tests {
		st := handshake(t, f.store, roots, tt.sni)
		if !bytes.Equal(st.PeerCertificates[0].Raw, tt.want) {
			t.Errorf("SNI %q: served %v", tt.sni, st.PeerCertificates[0].DNSNames)
		}
		if st.NegotiatedProtocol != "http/1.1" {
			t.Errorf("ALPN = %q, want http/1.1", st.NegotiatedProtocol)
		}
		if st.Version < tls.VersionTLS12 {
			t.Errorf("version %x", st.Version)
		}
	}
}

func TestHandshakeWithoutSNIGetsDefault(t *testing.T) {
	f := newFixture(t)
	c, srv := net.Pipe()
	defer c.Close()
	defer srv.Close()
	go tls.Server(srv, f.store.TLSConfig()).Handshake()
	// Without a ServerName the client sends no SNI, and has no name to
	// verify, so it only records what it was served.
	var got []byte
	client := tls.Client(c, &tls.Config{
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			got = cs.PeerCertificates[0].Raw
			return nil
		},
	})
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, f.def) {
		t.Error("a client without SNI did not get the default certificate")
	}
}

func TestTLSConfig(t *testing.T) {
	f := newFixture(t)
	cfg := f.store.TLSConfig()
	if cfg.MinVersion != tls.VersionTLS12 || !slices.Equal(cfg.NextProtos, []string{"http/1.1"}) || cfg.GetCertificate == nil {
		t.Errorf("TLSConfig = MinVersion %x, NextProtos %v", cfg.MinVersion, cfg.NextProtos)
	}
	// Each call returns its own Config, so a caller adjusting one does
	// not change another listener's.
	cfg.NextProtos[0] = "h2"
	if got := f.store.TLSConfig().NextProtos; got[0] != "http/1.1" {
		t.Errorf("TLSConfig shares NextProtos: %v", got)
	}
}

func TestWriteSelfSigned(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, err := WriteSelfSigned(dir, []string{"a.example.com", "*.b.example.com", "10.0.0.100"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.Leaf
	if err := leaf.VerifyHostname("x.b.example.com"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("10.0.0.100"); err != nil {
		t.Error(err)
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("key file mode %v is readable by others", fi.Mode())
	}
	// The files of a second call do not overwrite the first's.
	c2, k2, err := WriteSelfSigned(dir, []string{"a.example.com"})
	if err != nil || c2 == certFile || k2 == keyFile {
		t.Errorf("second call: %s %s %v", c2, k2, err)
	}
	if _, _, err := WriteSelfSigned(filepath.Join(dir, "missing"), nil); err == nil {
		t.Error("WriteSelfSigned into a missing directory succeeded")
	}
}
