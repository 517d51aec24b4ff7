package sink

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"
)

// TLSConfig enables TLS to the brokers.
type TLSConfig struct {
	Enabled bool
	// CAFile is a PEM bundle of the CAs to trust; empty: the system's.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and key, for
	// brokers that authenticate clients by certificate.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the broker's certificate.
	ServerName string
	// Insecure skips verifying the broker's certificate. Only by explicit
	// choice: it allows a man in the middle.
	Insecure bool
	// SkipHostnameVerification verifies the broker's certificate chain
	// against the trusted CAs but not the name in it, as Java clients do
	// with ssl.endpoint.identification.algorithm set empty. Any certificate
	// the CAs signed is then accepted for any broker.
	SkipHostnameVerification bool
}

// Warnings lists the settings that weaken the connection's security, one
// sentence each, for the caller to log at start; none when it is safe.
func (c Config) Warnings() []string {
	var w []string
	if c.TLS.Enabled && c.TLS.Insecure {
		w = append(w, "TLS.Insecure: the brokers' certificates are not verified, so anyone on the network path can impersonate a broker and read or change what is produced")
	}
	if c.TLS.Enabled && c.TLS.SkipHostnameVerification && !c.TLS.Insecure {
		w = append(w, "TLS.SkipHostnameVerification: the brokers' certificates are verified against the trusted CAs but not their names, so any certificate those CAs signed is accepted for any broker")
	}
	if strings.EqualFold(c.SASL.Mechanism, sarama.SASLTypePlaintext) && !c.TLS.Enabled {
		w = append(w, "SASL PLAIN without TLS: the SASL password crosses the network in clear text; enable TLS or use SCRAM-SHA-256/512")
	}
	return w
}

// SASLConfig authenticates to the brokers.
type SASLConfig struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty: no SASL.
	Mechanism string
	User      string
	Password  string
	// PasswordFile holds the password (trailing newline removed), so the
	// secret need not be on the command line.
	PasswordFile string
}

func (t TLSConfig) validate() []error {
	var errs []error
	if set := t.settings(); !t.Enabled && len(set) > 0 {
		errs = append(errs, fmt.Errorf("TLS.%s set but TLS.Enabled is false", strings.Join(set, ", TLS.")))
	}
	if t.Insecure && t.SkipHostnameVerification {
		errs = append(errs, errors.New("TLS.Insecure skips all verification and TLS.SkipHostnameVerification only the name check: set one"))
	}
	if t.ServerName != "" && t.SkipHostnameVerification {
		errs = append(errs, errors.New("TLS.ServerName is the name to verify and TLS.SkipHostnameVerification verifies none: set one"))
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("TLS.CertFile and TLS.KeyFile go together"))
	}
	return errs
}

// settings names the TLS settings given besides Enabled.
func (t TLSConfig) settings() []string {
	var set []string
	for _, f := range []struct {
		name string
		on   bool
	}{
		{"CAFile", t.CAFile != ""}, {"CertFile", t.CertFile != ""}, {"KeyFile", t.KeyFile != ""}, {"ServerName", t.ServerName != ""},
		{"Insecure", t.Insecure}, {"SkipHostnameVerification", t.SkipHostnameVerification},
	} {
		if f.on {
			set = append(set, f.name)
		}
	}
	return set
}

func (s SASLConfig) validate() []error {
	var errs []error
	switch strings.ToUpper(s.Mechanism) {
	case "":
		if s.User != "" || s.Password != "" || s.PasswordFile != "" {
			errs = append(errs, errors.New("SASL credentials given but no SASL.Mechanism"))
		}
		return errs
	case sarama.SASLTypePlaintext, sarama.SASLTypeSCRAMSHA256, sarama.SASLTypeSCRAMSHA512:
	default:
		errs = append(errs, fmt.Errorf("SASL.Mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism))
	}
	if s.User == "" {
		errs = append(errs, errors.New("SASL.User is required with SASL"))
	}
	if s.Password != "" && s.PasswordFile != "" {
		errs = append(errs, errors.New("give SASL.Password or SASL.PasswordFile, not both"))
	}
	if s.Password == "" && s.PasswordFile == "" {
		errs = append(errs, errors.New("SASL.Password or SASL.PasswordFile is required with SASL"))
	}
	return errs
}

func (t TLSConfig) build() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.Insecure} //nolint:gosec // Insecure is an explicit operator choice
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading TLS.CAFile: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS.CAFile %s holds no PEM certificate", t.CAFile)
		}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the Kafka client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	if t.SkipHostnameVerification && !t.Insecure {
		// crypto/tls verifies the chain and the name together or neither:
		// turn its check off and verify the chain here.
		c.InsecureSkipVerify = true //nolint:gosec // the chain is verified by VerifyConnection
		c.VerifyConnection = verifyChain(c.RootCAs)
	}
	return c, nil
}

// verifyChain verifies the peer's certificate chain against roots (nil: the
// system's) for server authentication, ignoring the name it is for.
func verifyChain(roots *x509.CertPool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("verifying the broker's certificate: the broker sent none")
		}
		opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			return fmt.Errorf("verifying the broker's certificate (name not checked): %w", err)
		}
		return nil
	}
}

func (s SASLConfig) apply(sc *sarama.Config) error {
	if s.Mechanism == "" {
		return nil
	}
	pw := s.Password
	if s.PasswordFile != "" {
		b, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			return fmt.Errorf("reading SASL.PasswordFile: %w", err)
		}
		pw = strings.TrimRight(string(b), "\r\n")
	}
	sc.Net.SASL.Enable = true
	sc.Net.SASL.Handshake = true
	sc.Net.SASL.User = s.User
	sc.Net.SASL.Password = pw
	mech := strings.ToUpper(s.Mechanism)
	sc.Net.SASL.Mechanism = sarama.SASLMechanism(mech)
	switch mech {
	case sarama.SASLTypeSCRAMSHA256:
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.HashGeneratorFcn(sha256.New)} }
	case sarama.SASLTypeSCRAMSHA512:
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.HashGeneratorFcn(sha512.New)} }
	}
	return nil
}

// scramClient adapts xdg-go/scram to sarama's SCRAMClient.
type scramClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (c *scramClient) Begin(user, password, authzID string) error {
	client, err := c.hash.NewClient(user, password, authzID)
	if err != nil {
		return fmt.Errorf("starting SCRAM: %w", err)
	}
	c.conv = client.NewConversation()
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) { return c.conv.Step(challenge) }

func (c *scramClient) Done() bool { return c.conv.Done() }
