package sink

import (
	"context"
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

	"github.com/outboxrelay/outboxrelay/router"
	"github.com/twmb/franz-go/pkg/kfake"
)

// testCA makes a CA and a server certificate for 127.0.0.1, writing the CA
// to a PEM file.
func testCA(t *testing.T) (serverTLS *tls.Config, caFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outboxrelay test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "broker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"broker.test"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}}}, caFile
}

// produceOne opens a sink with cfg and produces one acknowledged message.
func produceOne(t *testing.T, cfg Config) error {
	t.Helper()
	acked := make(chan struct{}, 1)
	s, err := Open(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(any) { acked <- struct{}{} })
	if err != nil {
		return err
	}
	defer s.Close()
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(t.Context())
	go func() { done <- s.Run(runCtx) }()
	s.Send(Message{Record: router.Record{Topic: "secure", Key: []byte("k"), Value: []byte("v"), Partition: -1}})
	select {
	case <-acked:
	case <-time.After(15 * time.Second):
		stop()
		t.Fatalf("no acknowledgement; Run: %v", <-done)
	}
	stop()
	return <-done
}

func TestTLS(t *testing.T) {
	serverTLS, caFile := testCA(t)
	kc := startKafka(t, kfake.TLS(serverTLS), kfake.SeedTopics(1, "secure"))
	base := DefaultConfig()
	base.Brokers = kc.ListenAddrs()
	base.DialTimeout = 3 * time.Second

	trusted := base
	trusted.TLS = TLSConfig{Enabled: true, CAFile: caFile}
	if err := produceOne(t, trusted); err != nil {
		t.Fatalf("TLS with the CA: %v", err)
	}
	insecure := base
	insecure.TLS = TLSConfig{Enabled: true, Insecure: true}
	if err := produceOne(t, insecure); err != nil {
		t.Fatalf("TLS without verification: %v", err)
	}
	untrusted := base
	untrusted.TLS = TLSConfig{Enabled: true} // system roots do not know the test CA
	if _, err := Open(untrusted, slog.New(slog.NewTextHandler(io.Discard, nil)), func(any) {}); err == nil {
		t.Fatal("TLS with an unknown CA connected")
	}
	wrongName := base
	wrongName.TLS = TLSConfig{Enabled: true, CAFile: caFile, ServerName: "other.test"}
	if _, err := Open(wrongName, slog.New(slog.NewTextHandler(io.Discard, nil)), func(any) {}); err == nil {
		t.Fatal("TLS with a server name the certificate lacks connected")
	}
}

func TestSASL(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			kc := startKafka(t, kfake.EnableSASL(), kfake.Superuser(mech, "relay", "s3cret"), kfake.SeedTopics(1, "secure"))
			cfg := DefaultConfig()
			cfg.Brokers = kc.ListenAddrs()
			cfg.DialTimeout = 3 * time.Second
			pwFile := filepath.Join(t.TempDir(), "pw")
			if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg.SASL = SASLConfig{Mechanism: strings.ToLower(mech), User: "relay", PasswordFile: pwFile}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			if err := produceOne(t, cfg); err != nil {
				t.Fatalf("with the right password: %v", err)
			}
			cfg.SASL = SASLConfig{Mechanism: mech, User: "relay", Password: "wrong"}
			if _, err := Open(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(any) {}); err == nil {
				t.Fatal("connected with a wrong password")
			}
		})
	}
}

func TestSecurityValidation(t *testing.T) {
	c := DefaultConfig()
	c.Brokers = []string{"k:9092"}
	c.TLS = TLSConfig{CAFile: "x", CertFile: "c"}
	c.SASL = SASLConfig{Mechanism: "GSSAPI", Password: "a", PasswordFile: "b"}
	err := c.Validate()
	for _, want := range []string{"TLS.CAFile, TLS.CertFile set but TLS.Enabled is false", "go together", `"GSSAPI"`, "SASL.User", "not both"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; want it to mention %q", err, want)
		}
	}
}
