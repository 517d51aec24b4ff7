package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/cmd/internal/pipeline"
	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/router"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// runOptions holds every setting of the run command, with defaults.
type runOptions struct {
	repl       replication.Config
	pgPassFile string // read at start into repl.ConnString
	route      router.Config
	placements string
	kafka      sink.Config
	limits     checkpoint.Limits
	backoffMax time.Duration
	httpAddr   string
	pprof      bool
	delivery   string
	acceptNew  bool
	onBadEvent string
	onUpdate   string
	// snapshot is --snapshot (initial or never); snapshotOrderBy orders
	// each table's rows.
	snapshot        string
	snapshotOrderBy string
	heartbeat       time.Duration
}

// defaultHTTPPort is --http-addr's port. It is not 8080, the port
// applications most often serve on, because the relay often runs beside one
// (a sidecar) and a standby runs beside the active relay. Like Prometheus
// exporters, which take their ports from 9100-9999, it lies in that range,
// away from the ports of the exporters and tools run next to PostgreSQL and
// Kafka (9090-9094, 9100, 9187, 9308, 9404).
const defaultHTTPPort = 9847

func defaultRunOptions() runOptions {
	return runOptions{
		repl:       replication.DefaultConfig(),
		route:      router.DefaultConfig(),
		kafka:      sink.DefaultConfig(),
		limits:     checkpoint.Limits{MaxEvents: 10000, MaxBytes: 4 << 20},
		backoffMax: 5 * time.Second,
		httpAddr:   fmt.Sprintf(":%d", defaultHTTPPort),
		delivery:   "at-least-once",
		onBadEvent: "fail",
	}
}

func (o *runOptions) addFlags(fs *pflag.FlagSet) {
	r, k, rt := &o.repl, &o.kafka, &o.route
	fs.StringVar(&r.ConnString, "pg-url", "", "PostgreSQL URL or key=value string without the password, e.g. postgres://relay@host:5432/db?sslmode=verify-full; "+
		"the password from --pg-password-file, PGPASSWORD or PGPASSFILE (a password written here is visible in ps) (required)")
	fs.StringVar(&o.pgPassFile, "pg-password-file", "", "file holding the PostgreSQL password (trailing newline removed), read at start; it is never printed")
	fs.StringSliceVar(&k.Brokers, "brokers", nil, "Kafka bootstrap brokers, host:port, comma-separated (required)")
	fs.StringSliceVar(&r.Tables, "table", r.Tables, "outbox tables, schema.table, comma-separated or the flag repeated: one publication and one slot cover them all, every table is routed with the same options")
	fs.StringVar(&r.Slot, "slot", r.Slot, "logical replication slot; created with pgoutput if missing")
	fs.StringVar(&r.Publication, "publication", r.Publication, "publication; created FOR TABLE <table> WITH (publish = 'insert') if missing")
	fs.BoolVar(&r.SlotFailover, "slot-failover", false, "create the slot as a failover slot (PostgreSQL 17+), which a standby with sync_replication_slots keeps a copy of, and check the primary's side of that at start (docs/high-availability.md)")

	fs.StringVar(&rt.FieldEventID, "field-event-id", rt.FieldEventID, "column sent as the \"id\" header (table.field.event.id)")
	fs.StringVar(&rt.FieldEventKey, "field-event-key", rt.FieldEventKey, "column used as the record key (table.field.event.key)")
	fs.StringVar(&rt.FieldPayload, "field-payload", rt.FieldPayload, "column used as the record value (table.field.event.payload)")
	fs.StringVar(&rt.FieldEventTimestamp, "field-event-timestamp", "", "column holding the record timestamp; empty: the time the event is routed (table.field.event.timestamp)")
	fs.StringVar(&rt.FieldTraceParent, "field-traceparent", rt.FieldTraceParent, "column holding a W3C traceparent stored with the event, sent as the \"traceparent\" header; "+
		"a table without it is fine, an invalid value is left out with a warning; empty: off (docs/tracing.md)")
	fs.StringVar(&rt.FieldTraceState, "field-tracestate", rt.FieldTraceState, "column holding the W3C tracestate that goes with --field-traceparent, sent as the \"tracestate\" header; empty: off")
	fs.StringVar(&rt.FieldTracingSpanContext, "field-tracing-span-context", rt.FieldTracingSpanContext, "column holding the trace context as java.util.Properties text, as Debezium's Quarkus outbox extension writes it "+
		"(tracing.span.context.field); its traceparent and tracestate become the same headers; a valid --field-traceparent wins; empty: off")
	fs.StringVar(&rt.RouteByField, "route-by-field", rt.RouteByField, "column whose value selects the topic (route.by.field)")
	fs.StringVar(&rt.RouteTopicRegex, "route-topic-regex", rt.RouteTopicRegex, "regular expression matched against the whole route value (route.topic.regex)")
	fs.StringVar(&rt.RouteTopicReplacement, "route-topic-replacement", rt.RouteTopicReplacement, "topic template; ${routedByValue} is the route value (route.topic.replacement); a reference to a group --route-topic-regex lacks is refused")
	fs.StringVar(&rt.RouteTopicAllow, "route-topic-allow", "", "regular expression every routed topic must match as a whole, e.g. 'outbox\\.event\\.(Order|Customer)'; an event routed to any other topic is a bad event (--on-bad-event). "+
		"Empty (the default, as with Debezium): every distinct route value a writer inserts creates a topic and a metrics series")
	fs.StringVar(&o.placements, "fields-additional-placement", "", "extra columns, column:header|envelope|partition[:alias], comma-separated (table.fields.additional.placement)")
	fs.BoolVar(&rt.TombstoneOnEmptyPayload, "tombstone-on-empty-payload", false, "send a NULL or empty payload as a tombstone (route.tombstone.on.empty.payload)")
	fs.BoolVar(&rt.ExpandJSONPayload, "expand-json-payload", false, "embed a text, json or jsonb payload starting with { or [ as compact JSON inside an envelope (table.expand.json.payload)")
	fs.StringVar(&rt.JSONPayloadNullBehavior, "json-payload-null-behavior", rt.JSONPayloadNullBehavior, "with --expand-json-payload, an object member whose value is null: ignore (left out, as Debezium's default) or optional_bytes (kept) (table.json.payload.null.behavior); "+
		"a member whose value is an empty array is always left out, as Debezium does")
	fs.StringVar((*string)(&rt.KeyFormat), "key-format", string(rt.KeyFormat), "how the key is written, as Kafka Connect's key.converter would: raw (StringConverter), json (JsonConverter, schemas.enable=false) "+
		"or json-schema (JsonConverter with schemas); the partition is the murmur2 hash of the written key")
	fs.StringVar((*string)(&rt.ValueFormat), "value-format", string(rt.ValueFormat), "how a payload without envelope is written, as value.converter would: raw (StringConverter or ByteArrayConverter), "+
		"json (JsonConverter, schemas.enable=false; with --expand-json-payload a JSON document compactly) or json-schema (JsonConverter with schemas); an envelope is always JSON")

	fs.BoolVar(&k.CreateTopics, "create-topics", k.CreateTopics, "create missing topics through the Kafka admin API; when false a missing topic is an error")
	fs.Int32Var(&k.TopicPartitions, "topic-partitions", k.TopicPartitions, "partitions of created topics; -1: the broker's default")
	fs.Int16Var(&k.TopicReplicationFactor, "topic-replication-factor", k.TopicReplicationFactor, "replication factor of created topics; -1: the broker's default")
	fs.StringVar(&k.Version, "kafka-version", k.Version, "Kafka protocol version to speak (at least 0.11 for the idempotent producer)")
	fs.StringVar(&k.ClientID, "kafka-client-id", k.ClientID, "client id sent to Kafka")
	fs.IntVar(&k.Retries, "kafka-retries", k.Retries, "produce retries before the stream restarts from the slot")
	fs.IntVar(&k.MaxMessageBytes, "kafka-max-message-bytes", k.MaxMessageBytes, "largest record produced; keep it at or below the broker's message.max.bytes")
	fs.DurationVar(&k.Linger, "kafka-linger", k.Linger, "least time between two produce requests to one broker: an event that finds its broker idle goes at once; under load events gather into larger batches")
	fs.StringVar(&k.Compression, "kafka-compression", "none", "codec of the record batches produced, as Kafka's compression.type: none, gzip, snappy, lz4 or zstd (Kafka 2.1+); consumers decompress on their own (docs/performance.md#compression)")
	fs.IntVar(&k.CompressionLevel, "kafka-compression-level", 0, "level of --kafka-compression: gzip 1 to 9, zstd up to 22; 0: the codec's default; lz4, snappy and none take none")

	fs.BoolVar(&k.TLS.Enabled, "kafka-tls", false, "connect to the brokers with TLS")
	fs.StringVar(&k.TLS.CAFile, "kafka-tls-ca-file", "", "PEM file of the CAs that sign the brokers' certificates (default: the system's)")
	fs.StringVar(&k.TLS.CertFile, "kafka-tls-cert-file", "", "PEM client certificate, for brokers that authenticate clients by certificate")
	fs.StringVar(&k.TLS.KeyFile, "kafka-tls-key-file", "", "PEM key of the client certificate")
	fs.StringVar(&k.TLS.ServerName, "kafka-tls-server-name", "", "name to verify in the brokers' certificates (default: the host dialled)")
	fs.BoolVar(&k.TLS.Insecure, "kafka-tls-insecure", false, "do not verify the brokers' certificates (allows a man in the middle; only by explicit choice; logged as a warning)")
	fs.BoolVar(&k.TLS.SkipHostnameVerification, "kafka-tls-skip-hostname-verification", false, "verify the brokers' certificates against the CAs but not the name in them, as Java clients do with ssl.endpoint.identification.algorithm empty "+
		"(any certificate the CAs signed is accepted for any broker; logged as a warning)")
	fs.StringVar(&k.SASL.Mechanism, "kafka-sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default: no SASL)")
	fs.StringVar(&k.SASL.User, "kafka-sasl-user", "", "SASL user name")
	fs.StringVar(&k.SASL.PasswordFile, "kafka-sasl-password-file", "", "file holding the SASL password (trailing newline removed); or set OUTBOXRELAY_KAFKA_SASL_PASSWORD")
	fs.StringVar(&k.SASL.Password, "kafka-sasl-password", "", "SASL password; visible in ps: prefer --kafka-sasl-password-file or OUTBOXRELAY_KAFKA_SASL_PASSWORD")

	fs.IntVar(&o.limits.MaxEvents, "max-in-flight-events", o.limits.MaxEvents, "most events read and not yet acknowledged by Kafka; reading pauses at the bound")
	fs.Int64Var(&o.limits.MaxBytes, "max-in-flight-bytes", o.limits.MaxBytes, "most event bytes read and not yet acknowledged by Kafka; reading pauses at the bound")
	fs.DurationVar(&r.StatusInterval, "status-interval", r.StatusInterval, "how often the confirmed position is reported to PostgreSQL while events arrive; once caught up it is reported as soon as Kafka acknowledges")
	fs.DurationVar(&r.DrainTimeout, "shutdown-timeout", r.DrainTimeout, "on SIGTERM, how long to wait for Kafka to acknowledge what is in flight")
	fs.DurationVar(&o.backoffMax, "retry-backoff-max", o.backoffMax, "longest wait between reconnection attempts (also while another relay holds the slot)")
	fs.StringVar(&o.httpAddr, "http-addr", o.httpAddr, "address serving /healthz, /readyz, /streaming and /metrics (all interfaces unless a host is given); empty: none")
	fs.StringVar(&o.delivery, "delivery", o.delivery, "at-least-once, or exactly-once: events and a checkpoint are written in Kafka transactions (consumers read with isolation.level=read_committed)")
	fs.StringVar(&k.CheckpointTopic, "checkpoint-topic", "outboxrelay.checkpoints", "compacted topic of the exactly-once checkpoints, keyed by slot, and of each slot's origin record (both delivery modes): "+
		"the proof that lets the relay refuse to recreate a lost slot (docs/high-availability.md)")
	fs.BoolVar(&o.acceptNew, "accept-new-source", false, "exactly-once: start over when the checkpoint was written for another database system or timeline, instead of refusing")
	fs.StringVar(&o.snapshot, "snapshot", "never", "initial: when the relay creates its slot, first deliver the rows already in the outbox tables, read in the snapshot the slot exports, then stream from the slot with no gap and no overlap; never: stream only (snapshot.mode)")
	fs.StringVar(&o.snapshotOrderBy, "snapshot-order-by", "", "SQL ORDER BY list for each table's snapshot rows, e.g. created_at,ctid (the order per aggregate in Kafka); empty: ctid, the physical order")
	fs.StringVar(&o.onUpdate, "on-update", "warn", "an UPDATE of an outbox table, which arrives only when the publication publishes updates: warn or error (log it and go on) or fatal (stop at it); never published (table.op.invalid.behavior)")
	fs.StringVar(&o.onBadEvent, "on-bad-event", o.onBadEvent, "an event that cannot be routed or that Kafka refuses: fail (stop confirming at it, stay up and not ready) or dlq (write it to --dlq-topic and go on)")
	fs.StringVar(&k.DLQTopic, "dlq-topic", "", "dead-letter topic for --on-bad-event=dlq")
	fs.BoolVar(&o.pprof, "pprof", false, "also serve Go's profiler under /debug/pprof on --http-addr")
	fs.DurationVar(&o.heartbeat, "heartbeat-interval", 0, "emit a heartbeat through the slot this often (pg_logical_emit_message; PostgreSQL 14+), measuring liveness and lag when the outbox is quiet; 0: off")
}

// finish parses the composite flags and validates everything, reporting every
// problem at once.
func (o *runOptions) finish() error { return o.validate(true) }

// finishDB is finish without the Kafka settings, for commands that only talk
// to PostgreSQL.
func (o *runOptions) finishDB() error { return o.validate(false) }

func (o *runOptions) validate(kafka bool) error {
	var errs []error
	secrets := []string{o.kafka.SASL.Password}
	if o.pgPassFile != "" {
		cs, pw, err := addPasswordFile(o.repl.ConnString, o.pgPassFile)
		if err != nil {
			errs = append(errs, err)
		}
		o.repl.ConnString, secrets = cs, append(secrets, pw)
	}
	secrets = append(secrets, connPasswords(o.repl.ConnString)...)
	placements, err := router.ParsePlacements(o.placements)
	if err != nil {
		errs = append(errs, fmt.Errorf("fields-additional-placement: %w", err))
	}
	o.route.Additional = placements
	if err := o.route.Validate(); err != nil {
		errs = append(errs, err)
	}
	o.repl.Columns = o.route.Columns()
	o.kafka.QueueSize = o.limits.MaxEvents
	if err := o.repl.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, o.delivering()...)
	if _, err := pipeline.ParseOnUpdate(o.onUpdate); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, o.snapshotting()...)
	if kafka {
		if err := o.kafka.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if o.limits.MaxEvents < 1 {
		errs = append(errs, fmt.Errorf("max-in-flight-events %d must be positive", o.limits.MaxEvents))
	}
	if o.limits.MaxBytes < 1 {
		errs = append(errs, fmt.Errorf("max-in-flight-bytes %d must be positive", o.limits.MaxBytes))
	}
	o.repl.Heartbeat = o.heartbeat > 0
	if o.heartbeat < 0 {
		errs = append(errs, fmt.Errorf("heartbeat-interval %v must not be negative", o.heartbeat))
	}
	if o.backoffMax < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("retry-backoff-max %v is below 100ms", o.backoffMax))
	}
	if err := errors.Join(errs...); err != nil {
		msg := scrub(strings.ReplaceAll(err.Error(), "\n", "\n  - "), secrets)
		return usageError(fmt.Errorf("invalid configuration:\n  - %s", msg))
	}
	return nil
}

// delivering applies --on-bad-event and --delivery to the sink's
// configuration.
func (o *runOptions) delivering() []error {
	var errs []error
	switch o.onBadEvent {
	case "fail":
		if o.kafka.DLQTopic != "" {
			errs = append(errs, errors.New("dlq-topic is set but on-bad-event is fail; use --on-bad-event=dlq"))
		}
	case "dlq":
		if err := router.ValidTopic(o.kafka.DLQTopic); err != nil {
			errs = append(errs, fmt.Errorf("on-bad-event=dlq needs a valid --dlq-topic: %w", err))
		}
	default:
		errs = append(errs, fmt.Errorf("on-bad-event %q: want fail or dlq", o.onBadEvent))
	}
	switch o.delivery {
	case "at-least-once":
		o.kafka.TransactionalID = ""
	case "exactly-once":
		// The transactional id derives from the slot: a second instance
		// fences the first.
		o.kafka.TransactionalID = "outboxrelay." + o.repl.Slot
		o.kafka.CheckpointKey = o.repl.Slot
	default:
		errs = append(errs, fmt.Errorf("delivery %q: want at-least-once or exactly-once", o.delivery))
	}
	return errs
}

// addPasswordFile reads the PostgreSQL password from file and adds it to the
// connection string, returning the password for scrubbing from messages.
func addPasswordFile(connString, file string) (string, string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return connString, "", fmt.Errorf("reading pg-password-file: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return connString, "", fmt.Errorf("pg-password-file %s is empty", file)
	}
	cs, err := withPassword(connString, pw)
	if err != nil {
		return connString, pw, err
	}
	return cs, pw, nil
}

func newRunCmd(logs *logOptions, src *sources) *cobra.Command {
	opts := defaultRunOptions()
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Relay outbox inserts to Kafka until stopped (SIGINT/SIGTERM stop it cleanly)",
		Long: `Relay outbox inserts to Kafka until stopped.

Every flag can also be set through an environment variable named after it
(--pg-url is OUTBOXRELAY_PG_URL), a YAML file given with --config whose keys are
the flag names, or a Debezium configuration given with --debezium-config.
Precedence: flags, then environment variables, then files, then defaults.

Secrets: a flag's value is visible to every user of the host (ps). Give the
PostgreSQL password with --pg-password-file, PGPASSWORD or a PGPASSFILE, and
the Kafka SASL password with --kafka-sasl-password-file or
OUTBOXRELAY_KAFKA_SASL_PASSWORD; never in --pg-url or --kafka-sasl-password.
"outboxrelay config print" masks every password.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.finish(); err != nil {
				return err
			}
			log, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			log.Info("starting outboxrelay", currentBuild().logAttrs()...)
			for _, k := range src.unsupported {
				log.Warn("ignoring a Debezium setting", "key", k)
			}
			for _, w := range opts.kafka.Warnings() {
				log.Warn("unsafe Kafka connection setting", "risk", w)
			}
			r, err := newRelay(opts, log)
			if err != nil {
				return err
			}
			return r.Run(cmd.Context())
		},
	}
	opts.addFlags(cmd.Flags())
	src.addFlags(cmd.Flags())
	useFlagGroups(cmd)
	return cmd
}
