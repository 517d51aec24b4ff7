package main

import "testing"

func TestForPeopleNamesFlags(t *testing.T) {
	tests := map[string]string{
		`RouteTopicReplacement "x.${a}": ${a} names no group of RouteTopicRegex "(.*)"`: `--route-topic-replacement "x.${a}": ${a} names no group of --route-topic-regex "(.*)"`,
		"give SASL.Password or SASL.PasswordFile, not both":                             "give --kafka-sasl-password or --kafka-sasl-password-file, not both",
		"TLS.CertFile set but TLS.Enabled is false":                                     "--kafka-tls-cert-file set but --kafka-tls is false",
		"TLS.SkipHostnameVerification and TLS.Insecure":                                 "--kafka-tls-skip-hostname-verification and --kafka-tls-insecure",
		"nothing to map here": "nothing to map here",
		"upgrade, or run without heartbeats (Config.Heartbeat)":                      "upgrade, or run without heartbeats (--heartbeat-interval)",
		"connect to that database or choose another slot (Config.Slot)":              "connect to that database or choose another slot (--slot)",
		"refusing to resume ...; restart with AcceptNewSource (events are then ...)": "refusing to resume ...; restart with --accept-new-source (events are then ...)",
		"KeyFormat \"avro\": want one of [raw json json-schema]":                     "--key-format \"avro\": want one of [raw json json-schema]",
	}
	for in, want := range tests {
		if got := forPeople(in); got != want {
			t.Errorf("forPeople(%q) = %q, want %q", in, got, want)
		}
	}
}
