package slowpath

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// selfSigned returns a certificate for "example.test" and a pool that
// trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "example.test"},
		DNSNames:     []string{"example.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// tlsClientHello returns the bytes a TLS client sends first.
func tlsClientHello(t *testing.T) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: "example.test", NextProtos: []string{"h2", "http/1.1"}})
		_ = c.Handshake()
	}()
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func TestTLSListener(t *testing.T) {
	be := startBackend(t, nameHandler("a"))
	rt := &fakeRouter{service: vip, routes: []fakeRoute{{prefix: "/", pool: "p"}},
		pools: map[string][]netip.AddrPort{"p": {be.addr}}}
	cert, roots := selfSigned(t)
	// The config offers h2 too (as a shared certs config might); the proxy
	// must still negotiate http/1.1.
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	_, addr := startProxy(t, Options{}, Listener{Service: vip, Name: "tls", TLS: cfg}, rt)

	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: "example.test", NextProtos: []string{"h2", "http/1.1"}},
		ForceAttemptHTTP2: true,
	}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/secure", nil)
	req.Host = "example.test"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "a GET /secure" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if resp.TLS == nil {
		t.Fatalf("proto %s without TLS state", resp.Proto)
	}
	if resp.ProtoMajor != 1 || resp.TLS.NegotiatedProtocol != "http/1.1" {
		t.Errorf("proto %s, ALPN %q", resp.Proto, resp.TLS.NegotiatedProtocol)
	}
	if v := be.lastRequest().Header.Get("X-Forwarded-Proto"); v != "https" {
		t.Errorf("X-Forwarded-Proto %q", v)
	}
	// The caller's config is not modified.
	if len(cfg.NextProtos) != 2 {
		t.Errorf("caller's NextProtos changed: %v", cfg.NextProtos)
	}
}
