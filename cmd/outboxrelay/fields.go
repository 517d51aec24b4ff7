package main

import "strings"

// flagNames turns the configuration field names that library errors use
// (router.Config, sink.Config) into the flags a person sets. Longer names
// come first where one is a prefix of another.
var flagNames = strings.NewReplacer(
	"RouteTopicReplacement", "--route-topic-replacement",
	"RouteTopicRegex", "--route-topic-regex",
	"RouteTopicAllow", "--route-topic-allow",
	"RouteByField", "--route-by-field",
	"FieldEventTimestamp", "--field-event-timestamp",
	"FieldTracingSpanContext", "--field-tracing-span-context",
	"FieldTraceParent", "--field-traceparent",
	"FieldTraceState", "--field-tracestate",
	"FieldEventID", "--field-event-id",
	"FieldEventKey", "--field-event-key",
	"FieldPayload", "--field-payload",
	"Additional:", "--fields-additional-placement:",
	"partition placement, Additional)", "partition placement)",
	"(Additional)", "(--fields-additional-placement)",
	"JSONPayloadNullBehavior", "--json-payload-null-behavior",
	"KeyFormat", "--key-format",
	"AcceptNewSource", "--accept-new-source",
	"OnUpdate", "--on-update",
	"SnapshotOrderBy", "--snapshot-order-by",
	"MaxMessageBytes", "--kafka-max-message-bytes",
	"(Config.Heartbeat)", "(--heartbeat-interval)",
	"(Config.Slot)", "(--slot)",
	"(Config.SlotFailover)", "(--slot-failover)",
	"name another column in the router's Field* settings", "set the matching --field-* flag",
	"force the drop to terminate", "pass --force to terminate",
	"ValueFormat", "--value-format",
	"TLS.SkipHostnameVerification", "--kafka-tls-skip-hostname-verification",
	"TLS.Insecure", "--kafka-tls-insecure",
	"TLS.ServerName", "--kafka-tls-server-name",
	"TLS.CertFile", "--kafka-tls-cert-file",
	"TLS.KeyFile", "--kafka-tls-key-file",
	"TLS.CAFile", "--kafka-tls-ca-file",
	"TLS.Enabled", "--kafka-tls",
	"SASL.Mechanism", "--kafka-sasl-mechanism",
	"SASL.User", "--kafka-sasl-user",
	"SASL.PasswordFile", "--kafka-sasl-password-file",
	"SASL.Password", "--kafka-sasl-password",
)

// forPeople is an error message as printed: with flags for field names.
func forPeople(msg string) string { return flagNames.Replace(msg) }
