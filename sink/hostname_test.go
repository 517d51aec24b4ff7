package sink

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// issuer signs test certificates.
type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial int64 = 100

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sign issues tmpl for key, signed by parent (nil: self-signed).
func sign(t *testing.T, tmpl *x509.Certificate, key *ecdsa.PrivateKey, parent *issuer) *x509.Certificate {
	t.Helper()
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newCA(t *testing.T, name string, parent *issuer) *issuer {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	return &issuer{cert: sign(t, tmpl, key, parent), key: key}
}

// leaf is a server certificate for broker.test only (not for 127.0.0.1,
// the address dialled), as served with the chain above it.
func leaf(t *testing.T, by *issuer, chain []*x509.Certificate, change func(*x509.Certificate)) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		Subject: pkix.Name{CommonName: "broker.test"}, DNSNames: []string{"broker.test"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if change != nil {
		change(tmpl)
	}
	c := tls.Certificate{Certificate: [][]byte{sign(t, tmpl, key, by).Raw}, PrivateKey: key}
	for _, ch := range chain {
		c.Certificate = append(c.Certificate, ch.Raw)
	}
	return c
}

func writeCA(t *testing.T, ca *issuer) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// handshake serves cert on a local port and connects to 127.0.0.1 with the
// client configuration t builds, returning the client's handshake error.
func handshake(t *testing.T, cert tls.Certificate, tc TLSConfig) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_ = c.(*tls.Conn).Handshake()
		_ = c.Close()
	}()
	cfg, err := tc.build()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "127.0.0.1" // what sarama's dialer sets: the host dialled
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), cfg)
	if err == nil {
		_ = c.Close()
	}
	return err
}

// SkipHostnameVerification accepts a certificate for another name but still
// verifies its chain: an unknown CA, an expired certificate or one not meant
// for servers is refused, as with full verification.
func TestSkipHostnameVerification(t *testing.T) {
	root := newCA(t, "root", nil)
	inter := newCA(t, "intermediate", root)
	other := newCA(t, "other", nil)
	caFile := writeCA(t, root)
	expired := func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	}
	clientOnly := func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }
	skip := TLSConfig{Enabled: true, CAFile: caFile, SkipHostnameVerification: true}
	tests := []struct {
		name string
		cert tls.Certificate
		tc   TLSConfig
		want string // empty: the handshake succeeds
	}{
		{"full verification checks the name", leaf(t, root, nil, nil), TLSConfig{Enabled: true, CAFile: caFile}, "127.0.0.1"},
		{"full verification with the right name", leaf(t, root, nil, nil), TLSConfig{Enabled: true, CAFile: caFile, ServerName: "broker.test"}, ""},
		{"another name, trusted CA", leaf(t, root, nil, nil), skip, ""},
		{"through an intermediate CA", leaf(t, inter, []*x509.Certificate{inter.cert}, nil), skip, ""},
		{"intermediate not sent", leaf(t, inter, nil, nil), skip, "unknown authority"},
		{"unknown CA", leaf(t, other, nil, nil), skip, "unknown authority"},
		{"expired", leaf(t, root, nil, expired), skip, "expired"},
		{"client certificate", leaf(t, root, nil, clientOnly), skip, "usage"},
		{"insecure accepts anything", leaf(t, other, nil, expired), TLSConfig{Enabled: true, Insecure: true}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := handshake(t, tc.cert, tc.tc)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("handshake: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("handshake error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// Through the producer: a broker whose certificate names another host is
// reached with SkipHostnameVerification, refused without it, and refused
// with it when its CA is not trusted.
func TestSkipHostnameVerificationProduces(t *testing.T) {
	root := newCA(t, "root", nil)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{leaf(t, root, nil, nil)}}
	kc := startKafka(t, kfake.TLS(serverTLS), kfake.SeedTopics(1, "secure"))
	base := DefaultConfig()
	base.Brokers = kc.ListenAddrs()
	base.DialTimeout = 3 * time.Second
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))

	skip := base
	skip.TLS = TLSConfig{Enabled: true, CAFile: writeCA(t, root), SkipHostnameVerification: true}
	if err := skip.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := produceOne(t, skip); err != nil {
		t.Fatalf("hostname-only skip: %v", err)
	}
	full := base
	full.TLS = TLSConfig{Enabled: true, CAFile: skip.TLS.CAFile}
	if _, err := Open(full, discard, func(any) {}); err == nil {
		t.Fatal("full verification connected to a broker whose certificate names another host")
	}
	untrusted := base
	untrusted.TLS = TLSConfig{Enabled: true, CAFile: writeCA(t, newCA(t, "other", nil)), SkipHostnameVerification: true}
	if _, err := Open(untrusted, discard, func(any) {}); err == nil {
		t.Fatal("hostname-only skip connected to a broker signed by an untrusted CA")
	}
}

func TestTLSValidationNamesFields(t *testing.T) {
	tests := []struct {
		name string
		tls  TLSConfig
		want []string
	}{
		{"settings without TLS", TLSConfig{CAFile: "ca", SkipHostnameVerification: true}, []string{"TLS.CAFile, TLS.SkipHostnameVerification set but TLS.Enabled is false"}},
		{"insecure and hostname-only", TLSConfig{Enabled: true, Insecure: true, SkipHostnameVerification: true}, []string{"TLS.Insecure", "set one"}},
		{"server name and hostname-only", TLSConfig{Enabled: true, ServerName: "b", SkipHostnameVerification: true}, []string{"TLS.ServerName", "set one"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Brokers = []string{"k:9092"}
			c.TLS = tc.tls
			err := c.Validate()
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to mention %q", err, w)
				}
			}
			if err != nil && strings.Contains(err.Error(), "--") {
				t.Errorf("Validate() = %v names a command-line flag", err)
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		name string
		cfg  func(*Config)
		want []string // substrings, one per warning
	}{
		{"defaults", func(*Config) {}, nil},
		{"verified TLS with SCRAM", func(c *Config) {
			c.TLS = TLSConfig{Enabled: true}
			c.SASL = SASLConfig{Mechanism: "SCRAM-SHA-512", User: "u", Password: "p"}
		}, nil},
		{"PLAIN over TLS", func(c *Config) {
			c.TLS = TLSConfig{Enabled: true}
			c.SASL = SASLConfig{Mechanism: "PLAIN", User: "u", Password: "p"}
		}, nil},
		{"insecure TLS", func(c *Config) { c.TLS = TLSConfig{Enabled: true, Insecure: true} }, []string{"not verified"}},
		{"hostname-only", func(c *Config) { c.TLS = TLSConfig{Enabled: true, SkipHostnameVerification: true} }, []string{"not their names"}},
		{"PLAIN over plaintext", func(c *Config) { c.SASL = SASLConfig{Mechanism: "plain", User: "u", Password: "p"} }, []string{"clear text"}},
		{"SCRAM over plaintext", func(c *Config) { c.SASL = SASLConfig{Mechanism: "SCRAM-SHA-256", User: "u", Password: "p"} }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.cfg(&c)
			got := c.Warnings()
			if len(got) != len(tc.want) {
				t.Fatalf("Warnings() = %q, want %d", got, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("warning %q does not mention %q", got[i], w)
				}
			}
		})
	}
}
