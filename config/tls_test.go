package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writePair writes a self-signed certificate for name and its key to dir.
// (certs.WriteSelfSigned does the same, but certs imports config.)
func writePair(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
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
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	return certFile, keyFile
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// httpsConfig is a configuration with one https service whose certificate
// list is certs, a YAML flow sequence; the list is on line 8.
func httpsConfig(certs string) []byte {
	return doc(`
interfaces: [eth1]
services:
  - name: site-tls
    vip: 10.0.0.1
    port: 443
    protocol: https
    tls:
      certificates: ` + certs + `
    routes: [{path: /, pool: app}]
pools:
  app:
    backends: [{address: 10.0.1.11:80}]
`)
}

func TestParseLoadsCertificates(t *testing.T) {
	dir := t.TempDir()
	aCert, aKey := writePair(t, dir, "a.example.com")
	bCert, bKey := writePair(t, dir, "b.example.com")
	cfg, err := Parse("rauta.yaml", httpsConfig(`[{cert: `+aCert+`, key: `+aKey+`}, {cert: `+bCert+`, key: `+bKey+`}]`), Options{})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []Certificate{{Cert: aCert, Key: aKey}, {Cert: bCert, Key: bKey}}
	if got := cfg.Services[0].TLS.Certificates; !reflect.DeepEqual(got, want) {
		t.Errorf("certificates = %v, want %v", got, want)
	}
}

func TestParseRejectsCertificateFiles(t *testing.T) {
	dir := t.TempDir()
	aCert, aKey := writePair(t, dir, "a.example.com")
	_, bKey := writePair(t, dir, "b.example.com")
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, []byte("not PEM\n"))
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name  string
		certs string
		field string
		msg   string
	}{
		{
			name:  "missing cert file",
			certs: `[{cert: ` + missing + `, key: ` + aKey + `}]`,
			field: "services[0].tls.certificates[0].cert", msg: "cannot read: open " + missing + ": no such file or directory",
		},
		{
			name:  "missing key file",
			certs: `[{cert: ` + aCert + `, key: ` + missing + `}]`,
			field: "services[0].tls.certificates[0].key", msg: "cannot read: open " + missing,
		},
		{
			name:  "key of another certificate",
			certs: `[{cert: ` + aCert + `, key: ` + bKey + `}]`,
			field: "services[0].tls.certificates[0]", msg: "cert and key do not load as a pair: tls: private key does not match public key",
		},
		{
			name:  "cert file is not PEM",
			certs: `[{cert: ` + garbage + `, key: ` + aKey + `}]`,
			field: "services[0].tls.certificates[0]", msg: "cert and key do not load as a pair: tls: failed to find any PEM data in certificate input",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("rauta.yaml", httpsConfig(tt.certs), Options{})
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg)
			}
			errs := configErrors(t, err)
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1:\n%v", len(errs), err)
			}
			if got := errs[0]; got.Line != 8 || got.Field != tt.field || !strings.Contains(got.Msg, tt.msg) {
				t.Errorf("got  %s\nwant rauta.yaml:8: %s: …%s…", got, tt.field, tt.msg)
			}
		})
	}

	// The same file validated for another host: paths only.
	if _, err := Parse("rauta.yaml", httpsConfig(`[{cert: `+missing+`, key: `+aKey+`}]`), Options{SkipFileChecks: true}); err != nil {
		t.Errorf("with SkipFileChecks: %v", err)
	}
}

func TestParseRejectsSpecialFiles(t *testing.T) {
	_, aKey := writePair(t, t.TempDir(), "a.example.com")
	_, err := Parse("rauta.yaml", httpsConfig(`[{cert: /dev/zero, key: `+aKey+`}]`), Options{})
	errs := configErrors(t, err)
	if len(errs) != 1 || errs[0].Field != "services[0].tls.certificates[0].cert" || !strings.Contains(errs[0].Msg, "not a regular file") {
		t.Errorf("cert: /dev/zero: %v", err)
	}
}
