package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"time"
)

// certKey is a throwaway certificate (DER) and its key, valid for a day.
type certKey struct {
	der []byte
	key *ecdsa.PrivateKey
}

// newServerCert makes a server certificate for 127.0.0.1 (and localhost),
// signed by ca, or self-signed when ca is nil.
func newServerCert(serial int64, ca *certKey, caCert *x509.Certificate) (*certKey, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	return newCert(tmpl, ca, caCert)
}

// newCA makes a throwaway certificate authority.
func newCA() (*certKey, *x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outboxrelay test CA"},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	ca, err := newCert(tmpl, nil, nil)
	return ca, tmpl, err
}

func newCert(tmpl *x509.Certificate, parent *certKey, parentCert *x509.Certificate) (*certKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	signer, signerCert := key, tmpl
	if parent != nil {
		signer, signerCert = parent.key, parentCert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	return &certKey{der: der, key: key}, nil
}
