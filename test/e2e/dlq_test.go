package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
)

// With --on-bad-event=dlq each kind of bad event becomes a dead-letter record
// with its reason, and the stream goes on past it.
func TestBadEventsGoToDLQ(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		setup     func(t *testing.T, e *env)
		bad       string
		reason    string
		original  string
		noPayload bool
	}{
		{"NULL route value", nil, nil,
			`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('dddddddd-0000-0000-0000-000000000001', NULL, 'k', 't', '{"x": 1}')`,
			"route-by column", "", false},
		{"invalid topic name", nil, nil,
			`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('dddddddd-0000-0000-0000-000000000002', 'has space', 'k', 't', '{"x": 1}')`,
			"Kafka allows only", "", false},
		{"missing topic without creation", []string{"--create-topics=false"}, nil,
			`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('dddddddd-0000-0000-0000-000000000003', 'Nowhere', 'k', 't', '{"x": 1}')`,
			"--create-topics=false", "outbox.event.Nowhere", false},
		{"payload over the message limit", []string{"--kafka-max-message-bytes", "2000"}, nil,
			`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('dddddddd-0000-0000-0000-000000000004', 'Order', 'k', 't', jsonb_build_object('pad', repeat('x', 5000)))`,
			"MaxMessageBytes", "outbox.event.Order", true},
		{"payload over the broker's limit", nil, brokerLimit,
			`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('dddddddd-0000-0000-0000-000000000005', 'Big', 'k', 't', jsonb_build_object('pad', repeat('x', 5000)))`,
			"Message was too large", "outbox.event.Big", true},
		{"topic authorization failure", nil, forbidden,
			`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('dddddddd-0000-0000-0000-000000000006', 'Secret', 'k', 't', '{}')`,
			"not authorized to access this topic", "outbox.event.Secret", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			for _, topic := range []string{"outbox.event.Order", "outbox.dlq"} {
				if err := createTopic(e, topic); err != nil {
					t.Fatal(err)
				}
			}
			if tc.setup != nil {
				tc.setup(t, e)
			}
			p := e.start(append([]string{"--on-bad-event", "dlq", "--dlq-topic", "outbox.dlq"}, tc.args...)...)
			e.waitStreaming("outboxrelay")
			exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('aaaaaaaa-0000-0000-0000-000000000001', 'Order', 'k', 't', '{}')`)
			exec1(t, e.pool, tc.bad)
			exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('aaaaaaaa-0000-0000-0000-000000000002', 'Order', 'k', 't', '{}')`)
			end := e.currentWAL()
			good := e.readTopics([]string{"outbox.event.Order"}, harness.Count(2), 30*time.Second)
			if len(good) != 2 || header(good[1], "id") != "aaaaaaaa-0000-0000-0000-000000000002" {
				t.Fatalf("events around the bad one: %d records; logs:\n%s", len(good), p.logs.String())
			}
			dead := e.readTopics([]string{"outbox.dlq"}, harness.Count(1), 10*time.Second)
			if len(dead) != 1 {
				t.Fatalf("%d dead letters, want 1", len(dead))
			}
			d := dead[0]
			if !strings.Contains(header(d, "outboxrelay.dlq.reason"), tc.reason) || !strings.HasPrefix(header(d, "outboxrelay.dlq.event.id"), "dddddddd") ||
				header(d, "outboxrelay.dlq.original.topic") != tc.original || string(d.Key) != "k" {
				t.Fatalf("dead letter %+v", d)
			}
			if tc.noPayload != (d.Value == nil) {
				t.Fatalf("dead letter payload %q; want it omitted: %v", d.Value, tc.noPayload)
			}
			waitUntil(t, 10*time.Second, "the slot to confirm past the bad event", func() bool { return e.confirmed("outboxrelay") >= end })
			if code, _ := get(t, p.httpAddr(t)+"/readyz"); code != 200 {
				t.Fatalf("/readyz %d after a dead letter", code)
			}
		})
	}
}
