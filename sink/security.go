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
	if !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.Insecure || t.ServerName != "") {
		errs = append(errs, errors.New("kafka-tls-*: TLS settings given but --kafka-tls is off"))
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("kafka-tls-cert-file and kafka-tls-key-file go together"))
	}
	return errs
}

func (s SASLConfig) validate() []error {
	var errs []error
	switch strings.ToUpper(s.Mechanism) {
	case "":
		if s.User != "" || s.Password != "" || s.PasswordFile != "" {
			errs = append(errs, errors.New("kafka-sasl-*: credentials given but no --kafka-sasl-mechanism"))
		}
		return errs
	case sarama.SASLTypePlaintext, sarama.SASLTypeSCRAMSHA256, sarama.SASLTypeSCRAMSHA512:
	default:
		errs = append(errs, fmt.Errorf("kafka-sasl-mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism))
	}
	if s.User == "" {
		errs = append(errs, errors.New("kafka-sasl-user is required with SASL"))
	}
	if s.Password != "" && s.PasswordFile != "" {
		errs = append(errs, errors.New("give kafka-sasl-password or kafka-sasl-password-file, not both"))
	}
	if s.Password == "" && s.PasswordFile == "" {
		errs = append(errs, errors.New("kafka-sasl-password or kafka-sasl-password-file is required with SASL"))
	}
	return errs
}

func (t TLSConfig) build() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.Insecure} //nolint:gosec // Insecure is an explicit operator choice
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading kafka-tls-ca-file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka-tls-ca-file %s holds no PEM certificate", t.CAFile)
		}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the Kafka client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

func (s SASLConfig) apply(sc *sarama.Config) error {
	if s.Mechanism == "" {
		return nil
	}
	pw := s.Password
	if s.PasswordFile != "" {
		b, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			return fmt.Errorf("reading kafka-sasl-password-file: %w", err)
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
