package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// WriteSelfSigned creates a self-signed certificate for names (DNS names,
// wildcards such as "*.example.com", or IP addresses) and its ECDSA P-256
// key, and writes them as PEM to two new files in dir. With no names the
// certificate has none and serves only as a default. It is for tests and
// demos: nothing trusts the certificate unless told to, and it expires
// after a year.
func WriteSelfSigned(dir string, names []string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("certs: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return "", "", fmt.Errorf("certs: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "rauta self-signed"},
		// An hour of slack for clocks of test machines and VMs.
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if len(names) > 0 {
		tmpl.Subject.CommonName = names[0]
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("certs: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("certs: %w", err)
	}
	certFile, err = writeNew(dir, "cert-*.pem", &pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err != nil {
		return "", "", err
	}
	keyFile, err = writeNew(dir, "key-*.pem", &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err != nil {
		os.Remove(certFile)
		return "", "", err
	}
	return certFile, keyFile, nil
}

// writeNew writes b to a new file in dir named after pattern (as for
// os.CreateTemp), readable only by its owner because it may hold a key.
func writeNew(dir, pattern string, b *pem.Block) (string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", fmt.Errorf("certs: %w", err)
	}
	if err := pem.Encode(f, b); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", fmt.Errorf("certs: write %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("certs: write %s: %w", f.Name(), err)
	}
	return f.Name(), nil
}
