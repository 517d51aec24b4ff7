package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseProperties(t *testing.T) {
	in := "# comment\n! also a comment\n  a=1\nb : two words \nc three\nd\\=key=x\\ty\ne=\\u00e9t\\u00e9\n" +
		"long=first \\\n    second\nempty=\nwin\\\\=path\\\\\n"
	got, _, err := parseProperties(in)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "1", "b": "two words ", "c": "three", "d=key": "x\ty", "e": "été",
		"long": "first second", "empty": "", `win\`: `path\`}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%q = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d keys %v, want %d", len(got), got, len(want))
	}
	if _, _, err := parseProperties("k=\\u12"); err == nil {
		t.Error("truncated \\u escape: want an error")
	}
}

func FuzzParseProperties(f *testing.F) {
	f.Add("a=b\nc:d\\\n e\n#x\n")
	f.Add("\\u00")
	f.Fuzz(func(t *testing.T, s string) {
		props, lines, err := parseProperties(s)
		if err != nil {
			return
		}
		_, _, _ = mapDebezium(props, lines) // must not panic on anything parsed
	})
}

func TestMapDebezium(t *testing.T) {
	tests := []struct {
		name        string
		props       map[string]string
		want        map[string]string
		unsupported []string
		err         string
	}{
		{
			name: "kafka connect connector",
			props: map[string]string{
				"connector.class": "io.debezium.connector.postgresql.PostgresConnector", "database.hostname": "h",
				"database.user": "u", "database.dbname": "d", "table.include.list": `app\.outbox`,
				"transforms": "outbox,other", "transforms.outbox.type": "io.debezium.transforms.outbox.EventRouter",
				"transforms.outbox.route.topic.replacement": "t.$${routedByValue}", "transforms.other.type": "x.Y",
				"transforms.outbox.table.op.invalid.behavior": "warn", "snapshot.mode": "never",
			},
			want:        map[string]string{"pg-url": "postgres://u@h/d", "table": "app.outbox", "route-topic-replacement": "t.$${routedByValue}", "on-update": "warn", "snapshot": "never"},
			unsupported: []string{"transforms.other.type"},
		},
		{
			name:  "debezium server unescapes dollars (expanding the file)",
			props: map[string]string{"debezium.transforms": "o", "debezium.transforms.o.type": "io.debezium.transforms.outbox.EventRouter", "debezium.transforms.o.route.topic.replacement": "$${routedByValue}"},
			want:  map[string]string{"route-topic-replacement": "${routedByValue}"},
		},
		{
			name: "the router's tracing options",
			props: map[string]string{"transforms": "outbox", "transforms.outbox.type": "io.debezium.transforms.outbox.EventRouter",
				"transforms.outbox.tracing.span.context.field": "ctx", "transforms.outbox.tracing.with.context.field.only": "true",
				"transforms.outbox.tracing.operation.name": "debezium-read"},
			want:        map[string]string{"field-tracing-span-context": "ctx"},
			unsupported: []string{"transforms.outbox.tracing.operation.name"},
		},
		{
			name:  "PEM trust store and TLS",
			props: map[string]string{"debezium.sink.kafka.producer.security.protocol": "SSL", "debezium.sink.kafka.producer.ssl.truststore.location": "/ca.pem", "debezium.sink.kafka.producer.ssl.truststore.type": "PEM"},
			want:  map[string]string{"kafka-tls": "true", "kafka-tls-ca-file": "/ca.pem"},
		},
		{
			name:  "producer linger",
			props: map[string]string{"debezium.sink.kafka.producer.linger.ms": "5"},
			want:  map[string]string{"kafka-linger": "5ms"},
		},
		{
			name:        "producer linger that is no number is listed",
			props:       map[string]string{"producer.override.linger.ms": "soon"},
			unsupported: []string{"linger.ms"},
		},
		{
			name:        "JKS trust store is listed",
			props:       map[string]string{"debezium.sink.kafka.producer.ssl.truststore.location": "/ts.jks"},
			unsupported: []string{"ssl.truststore.location"},
		},
		{
			name: "connect converters become formats; schemas.enable defaults to true",
			props: map[string]string{"key.converter": "org.apache.kafka.connect.json.JsonConverter", "key.converter.schemas.enable": "false",
				"value.converter": "org.apache.kafka.connect.json.JsonConverter", "header.converter": "x.Y"},
			want:        map[string]string{"key-format": "json", "value-format": "json-schema"},
			unsupported: []string{"header.converter"},
		},
		{
			name:  "StringConverter and ByteArrayConverter are raw",
			props: map[string]string{"key.converter": "org.apache.kafka.connect.storage.StringConverter", "value.converter": "org.apache.kafka.connect.converters.ByteArrayConverter"},
			want:  map[string]string{"key-format": "raw", "value-format": "raw"},
		},
		{
			name:  "a connector without converters keeps the flags' formats",
			props: map[string]string{"slot.name": "s"},
			want:  map[string]string{"slot": "s", "key-format": "", "value-format": ""},
		},
		{
			name: "debezium server formats default to json with schemas",
			props: map[string]string{"debezium.source.slot.name": "s", "debezium.format.value": "json", "debezium.format.value.schemas.enable": "false",
				"debezium.format.header": "json"},
			want:        map[string]string{"key-format": "json-schema", "value-format": "json"},
			unsupported: []string{"debezium.format.header (outboxrelay writes header values as text"},
		},
		{
			name:  "debezium server producer compression",
			props: map[string]string{"debezium.sink.kafka.producer.compression.type": "ZSTD", "debezium.sink.kafka.producer.compression.zstd.level": "9"},
			want:  map[string]string{"kafka-compression": "zstd", "kafka-compression-level": "9"},
		},
		{
			name:  "connector producer override",
			props: map[string]string{"producer.override.compression.type": "gzip", "producer.override.compression.gzip.level": "-1"},
			want:  map[string]string{"kafka-compression": "gzip", "kafka-compression-level": ""},
		},
		{
			name:        "connect worker producer settings",
			props:       map[string]string{"producer.compression.type": "lz4", "producer.compression.lz4.level": "9", "producer.compression.zstd.level": "3", "producer.batch.size": "1"},
			want:        map[string]string{"kafka-compression": "lz4", "kafka-compression-level": ""},
			unsupported: []string{"compression.lz4.level (outboxrelay's lz4 encoder has one level)", "compression.zstd.level (compression.type is lz4, not zstd)", "batch.size (Kafka producer setting"},
		},
		{
			name:        "a level without a codec",
			props:       map[string]string{"compression.gzip.level": "5", "compression.type": "snappy"},
			want:        map[string]string{"kafka-compression": "snappy", "kafka-compression-level": ""},
			unsupported: []string{"compression.gzip.level (compression.type is snappy, not gzip)"},
		},
		{name: "unknown codec", props: map[string]string{"debezium.sink.kafka.producer.compression.type": "brotli"}, err: `compression.type "brotli" is not one of none, gzip, snappy, lz4, zstd`},
		{name: "avro converter", props: map[string]string{"value.converter": "io.confluent.connect.avro.AvroConverter"}, err: "value.converter is io.confluent.connect.avro.AvroConverter"},
		{name: "server avro format", props: map[string]string{"debezium.source.slot.name": "s", "debezium.format.key": "avro"}, err: `debezium.format.key is "avro"`},
		{name: "several tables", props: map[string]string{"table.include.list": `tenant_a\.outbox, tenant_b.outbox,public\.events`}, want: map[string]string{"table": "tenant_a.outbox,tenant_b.outbox,public.events"}},
		{name: "a table pattern", props: map[string]string{"table.include.list": `a\.b,tenant_.*\.outbox`}, err: `"tenant_.*\\.outbox" is a pattern: list the tables it matches`},
		{name: "initial snapshot", props: map[string]string{"snapshot.mode": "initial"}, want: map[string]string{"snapshot": "initial"}},
		{name: "snapshot always", props: map[string]string{"snapshot.mode": "always"}, err: "outboxrelay replay"},
		{name: "fatal on updates", props: map[string]string{"transforms": "o", "transforms.o.type": "io.debezium.transforms.outbox.EventRouter", "transforms.o.table.op.invalid.behavior": "fatal"}, want: map[string]string{"on-update": "fatal"}},
		{name: "other plugin", props: map[string]string{"plugin.name": "decoderbufs"}, err: "decodes pgoutput"},
		{name: "other sink", props: map[string]string{"debezium.sink.type": "pulsar"}, err: "produces to Kafka"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			props, err := expandPlaceholders(tc.props, nil, envOf(nil))
			if err != nil {
				t.Fatal(err)
			}
			got, unsupported, err := mapDebezium(props, nil)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q (all: %v)", k, got[k], v, got)
				}
			}
			joined := strings.Join(unsupported, "\n")
			for _, u := range tc.unsupported {
				if !strings.Contains(joined, u) {
					t.Errorf("unsupported %v does not list %s", unsupported, u)
				}
			}
		})
	}
}

// runCLI runs the command tree in process.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(file, []byte("pg-url: postgres://u:hunter2@db/app\nbrokers: [k1:9092, k2:9092]\nslot: from_file\npublication: from_file\nkafka_retries: 4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OUTBOXRELAY_SLOT", "from_env")
	t.Setenv("OUTBOXRELAY_PUBLICATION", "from_env")
	out, err := runCLI(t, "config", "print", "--config", file, "--publication", "from_flag")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		"publication: from_flag  # flag", "slot: from_env  # env", `kafka-retries: "4"  # file`,
		"brokers: k1:9092,k2:9092  # file", "pg-url: postgres://u:*****@db/app  # file", "table: public.outbox  # default",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("config print lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Error("config print shows the password")
	}
}

func TestConfigFileErrorsAllAtOnce(t *testing.T) {
	file := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(file, []byte("pg-ulr: x\nkafka-retries: many\nnested: {a: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := runCLI(t, "config", "print", "--config", file)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitUsage {
		t.Fatalf("err = %v, want a usage error", err)
	}
	for _, want := range []string{`unknown key "pg-ulr"`, `unknown key "nested"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	file2 := filepath.Join(t.TempDir(), "r.yaml")
	_ = os.WriteFile(file2, []byte("kafka-retries: many\n"), 0o600)
	if _, err := runCLI(t, "config", "print", "--config", file2); err == nil || !strings.Contains(err.Error(), "kafka-retries") {
		t.Errorf("bad value: err = %v", err)
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	out, err := runCLI(t, "config", "print", "--config", "../../deploy/relay.yaml")
	// The example names certificate files of a production host; everything
	// else must validate.
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n")[1:] {
			if !strings.Contains(line, "no such file or directory") {
				t.Errorf("unexpected problem: %s", line)
			}
		}
	}
	for _, want := range []string{"kafka-sasl-password-file: /run/secrets/kafka-password  # file", "kafka-sasl-mechanism: SCRAM-SHA-512  # file", "heartbeat-interval: 10s  # file", "brokers: kafka-1:9093,kafka-2:9093,kafka-3:9093  # file"} {
		if !strings.Contains(out, want) {
			t.Errorf("lacks %q:\n%s", want, out)
		}
	}
}

// --kafka-compression and its level are validated with the rest, every
// problem at once; a Debezium Server file's codec reaches them.
func TestCompressionFlags(t *testing.T) {
	base := []string{"config", "print", "--pg-url", "postgres://u@db/app", "--brokers", "k:9092"}
	tests := []struct {
		args []string
		want []string // in the output, or in the error when err is set
		err  bool
	}{
		{args: []string{"--kafka-compression", "zstd", "--kafka-compression-level", "19"}, want: []string{"kafka-compression: zstd  # flag", `kafka-compression-level: "19"  # flag`}},
		{args: []string{}, want: []string{"kafka-compression: none  # default", `kafka-compression-level: "0"  # default`}},
		{args: []string{"--kafka-compression", "lz4", "--kafka-compression-level", "4", "--kafka-retries", "0"}, err: true,
			want: []string{"kafka-compression-level: lz4 has no levels", "kafka-retries: 0"}},
		{args: []string{"--kafka-compression", "gzip", "--kafka-compression-level", "12"}, err: true, want: []string{"12 is outside gzip's levels 1 to 9"}},
		{args: []string{"--kafka-compression", "xz"}, err: true, want: []string{`kafka-compression: "xz" is not one of`}},
		{args: []string{"--kafka-compression", "zstd", "--kafka-version", "2.0.0"}, err: true, want: []string{"zstd needs kafka-version 2.1.0 or later"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, err := runCLI(t, append(base, tc.args...)...)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want an error: %v\n%s", err, tc.err, out)
			}
			got := out
			if err != nil {
				got = err.Error()
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("lacks %q:\n%s", w, got)
				}
			}
		})
	}
	file := filepath.Join(t.TempDir(), "application.properties")
	if err := os.WriteFile(file, []byte("debezium.sink.kafka.producer.bootstrap.servers=k:9092\ndebezium.sink.kafka.producer.compression.type=gzip\n"+
		"debezium.sink.kafka.producer.compression.gzip.level=6\ndebezium.source.database.hostname=db\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "config", "print", "--debezium-config", file)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, w := range []string{"kafka-compression: gzip  # debezium-config", `kafka-compression-level: "6"  # debezium-config`} {
		if !strings.Contains(out, w) {
			t.Errorf("lacks %q:\n%s", w, out)
		}
	}
}

// config print runs from a Debezium Server file with placeholders, and from
// a Kafka Connect connector in JSON with config provider variables; an
// unset variable is an error naming the key and the variable, never a value.
func TestDebeziumConfigPlaceholders(t *testing.T) {
	dir := t.TempDir()
	server := filepath.Join(dir, "application.properties")
	if err := os.WriteFile(server, []byte("debezium.sink.kafka.producer.bootstrap.servers=${KAFKA_BROKERS:localhost:9092}\n"+
		"debezium.source.database.hostname=${PGHOST}\ndebezium.source.database.user=${PGUSER:postgres}\n"+
		"debezium.source.database.password=${PGPASSWORD}\ndebezium.source.database.dbname=app\n"+
		"debezium.transforms=outbox\ndebezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n"+
		"debezium.transforms.outbox.route.topic.replacement=${TOPIC_PREFIX}.$${routedByValue}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGHOST", "db.internal")
	t.Setenv("PGPASSWORD", "hunter2")
	t.Setenv("TOPIC_PREFIX", "outbox")
	out, err := runCLI(t, "config", "print", "--debezium-config", server)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, w := range []string{"brokers: localhost:9092  # debezium-config", "pg-url: postgres://postgres:*****@db.internal/app  # debezium-config",
		"route-topic-replacement: outbox.${routedByValue}  # debezium-config"} {
		if !strings.Contains(out, w) {
			t.Errorf("lacks %q:\n%s", w, out)
		}
	}
	os.Unsetenv("PGHOST")
	os.Unsetenv("TOPIC_PREFIX")
	_, err = runCLI(t, "config", "print", "--debezium-config", server)
	for _, w := range []string{`line 2: "debezium.source.database.hostname": ${PGHOST} is not set`, `"debezium.transforms.outbox.route.topic.replacement": ${TOPIC_PREFIX} is not set`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("err = %v, want %q", err, w)
		}
	}
	if err != nil && strings.Contains(err.Error(), "hunter2") {
		t.Errorf("the error shows the password: %v", err)
	}

	connector := filepath.Join(dir, "outbox-connector.json")
	if err := os.WriteFile(connector, []byte(`{"name": "outbox", "config": {
		"connector.class": "io.debezium.connector.postgresql.PostgresConnector", "database.hostname": "${env:PGHOST2}",
		"database.port": 5433, "database.user": "relay", "database.password": "${env:PGPASSWORD}", "database.dbname": "app",
		"slot.name": "outbox_slot", "producer.override.compression.type": "zstd"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGHOST2", "db2.internal")
	out, err = runCLI(t, "config", "print", "--debezium-config", connector, "--brokers", "k:9092")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, w := range []string{"pg-url: postgres://relay:*****@db2.internal:5433/app  # debezium-config", "slot: outbox_slot  # debezium-config",
		"kafka-compression: zstd  # debezium-config"} {
		if !strings.Contains(out, w) {
			t.Errorf("lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Error("config print shows the password")
	}
}
