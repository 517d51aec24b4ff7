package main

import "testing"

func TestForPeopleNamesFlags(t *testing.T) {
	tests := map[string]string{
		`RouteTopicReplacement "x.${a}": ${a} names no group of RouteTopicRegex "(.*)"`: `--route-topic-replacement "x.${a}": ${a} names no group of --route-topic-regex "(.*)"`,
		"give SASL.Password or SASL.PasswordFile, not both":                             "give --kafka-sasl-password or --kafka-sasl-password-file, not both",
		"TLS.CertFile set but TLS.Enabled is false":                                     "--kafka-tls-cert-file set but --kafka-tls is false",
		"TLS.SkipHostnameVerification and TLS.Insecure":                                 "--kafka-tls-skip-hostname-verification and --kafka-tls-insecure",
		"nothing to map here": "nothing to map here",
	}
	for in, want := range tests {
		if got := forPeople(in); got != want {
			t.Errorf("forPeople(%q) = %q, want %q", in, got, want)
		}
	}
}
