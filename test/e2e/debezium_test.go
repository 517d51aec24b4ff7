package e2e

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// A Debezium Server configuration is converted and run as it is: the same
// slot, publication, topics, headers and Kafka credentials, with its
// ${VAR} and ${VAR:default} placeholders expanded from the environment as
// Debezium Server does, and its producer's compression.type.
func TestRunsFromDebeziumServerConfig(t *testing.T) {
	e := newEnv(t)
	secure, err := harness.StartKafka(kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "relay", `s3cr"et`))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(secure.Close)
	exec1(t, e.pool, `CREATE PUBLICATION dbz_publication FOR ALL TABLES`)
	exec1(t, e.pool, `SELECT pg_create_logical_replication_slot('debezium', 'pgoutput')`)

	u, _ := url.Parse(e.url)
	props := `# Debezium Server, as it ran before
debezium.sink.type=kafka
debezium.sink.kafka.producer.bootstrap.servers=${KAFKA_BOOTSTRAP_SERVERS}
debezium.sink.kafka.producer.compression.type=${KAFKA_COMPRESSION:lz4}
debezium.sink.kafka.producer.key.serializer=org.apache.kafka.common.serialization.StringSerializer
debezium.sink.kafka.producer.value.serializer=org.apache.kafka.common.serialization.StringSerializer
debezium.sink.kafka.producer.security.protocol=SASL_PLAINTEXT
debezium.sink.kafka.producer.sasl.mechanism=SCRAM-SHA-512
debezium.sink.kafka.producer.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \
    username="${KAFKA_USER:relay}" password="s3cr\\"et";
debezium.source.connector.class=io.debezium.connector.postgresql.PostgresConnector
debezium.source.offset.storage.file.filename=data/offsets.dat
debezium.source.offset.flush.interval.ms=0
debezium.source.database.hostname=${PGHOST}
debezium.source.database.port=${PGPORT:5432}
debezium.source.database.user=postgres
debezium.source.database.dbname=${debezium.source.database.name}
debezium.source.database.name=${DB_NAME:app}
debezium.source.database.sslmode=disable
debezium.source.topic.prefix=app
debezium.source.plugin.name=pgoutput
debezium.source.slot.name=debezium
debezium.source.publication.name=dbz_publication
debezium.source.table.include.list=public.outbox
debezium.transforms=outbox
debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
debezium.transforms.outbox.route.topic.replacement=$${routedByValue}.events
debezium.transforms.outbox.table.fields.additional.placement=type:header:eventType
debezium.transforms.outbox.table.op.invalid.behavior=warn
debezium.format.key=json
debezium.format.key.schemas.enable=false
debezium.format.value=json
debezium.format.value.schemas.enable=false
debezium.format.header=json
`
	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", strings.Join(secure.ListenAddrs(), ","))
	t.Setenv("PGHOST", u.Hostname())
	t.Setenv("PGPORT", u.Port())
	t.Setenv("DB_NAME", strings.TrimPrefix(u.Path, "/"))
	file := filepath.Join(t.TempDir(), "application.properties")
	if err := os.WriteFile(file, []byte(props), 0o600); err != nil {
		t.Fatal(err)
	}

	p := e.startRaw("run", "--debezium-config", file, "--http-addr", "127.0.0.1:0", "--status-interval", "200ms")
	e.waitStreaming("debezium")
	exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES
		('33333333-3333-3333-3333-333333333333', 'Order', 'o-9', 'OrderPaid', '{"paid": true}')`)
	recs, err := harness.ReadAll(t.Context(), secure.ListenAddrs(), []string{"Order.events"}, harness.Count(1), 30*time.Second,
		kgo.SASL(scram.Auth{User: "relay", Pass: `s3cr"et`}.AsSha512Mechanism()))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("read %d records; relay logs:\n%s", len(recs), p.logs.String())
	}
	r := recs[0]
	if c := r.Attrs.CompressionType(); c != codecLZ4 {
		t.Errorf("the record came in a batch of codec %d, want lz4 (3) from compression.type", c)
	}
	if string(r.Key) != `"o-9"` || string(r.Value) != `"{\"paid\": true}"` || header(r, "id") != "33333333-3333-3333-3333-333333333333" || header(r, "eventType") != "OrderPaid" {
		t.Fatalf("record %+v", r)
	}
	logs := p.logs.String()
	for _, key := range []string{"offset.storage.file.filename", "topic.prefix", "debezium.format.header"} {
		if !strings.Contains(logs, key) {
			t.Errorf("the unsupported key %s was not listed in the logs", key)
		}
	}
}
