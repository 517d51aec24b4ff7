package e2e

import (
	"context"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kgo"
)

var allTopics = topics([]string{"Order", "Customer", "Invoice"})

// Guarantees 1 and 2: every committed event arrives, nothing rolled back
// does, per-aggregate order of first delivery is commit order, with
// concurrent writers, multi-event transactions and insert-and-delete writers.
// Guarantee 3 (steady state): the slot ends confirmed at the last commit.
func TestDeliversEveryCommittedEventInCommitOrder(t *testing.T) {
	e := newEnv(t)
	p := e.start()
	e.waitStreaming("outboxrelay")
	w := newWriter(e, 40)
	if err := w.run(t.Context(), 4, 150); err != nil {
		t.Fatal(err)
	}
	end := e.currentWAL()
	n := len(w.events())
	recs := e.readAllOf(w, 60*time.Second)
	if dups := w.verify(t, recs); dups != 0 {
		t.Fatalf("%d duplicates in a run without failures", dups)
	}
	waitUntil(t, 10*time.Second, "the slot to confirm the last commit", func() bool { return e.confirmed("outboxrelay") >= end })
	if p.exited() {
		t.Fatalf("relay exited: %s", p.logs.String())
	}
	t.Logf("%d events from %d writers delivered exactly once, in commit order per aggregate", n, 4)
}

// Guarantee 3: kill -9 at random moments loses nothing, and the confirmed
// position never covers a transaction whose events are not all in Kafka.
func TestKill9LosesNothingAndNeverConfirmsAhead(t *testing.T) {
	e := newEnv(t)
	w := newWriter(e, 30)
	w.pace = 3 * time.Millisecond // keep writing through all the kills
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)

	rng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	for i := range 4 {
		p := e.start()
		e.waitStreaming("outboxrelay")
		if i == 0 { // events are captured from the slot's creation on
			go func() { done <- w.run(ctx, 3, 1200) }()
		}
		time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond)
		p.signal(syscall.SIGKILL)
		p.wait(t, 10*time.Second)
		// Whatever the slot confirms must be in Kafka.
		must, held := e.checkNotAhead(t, false)
		t.Logf("kill %d: slot confirmed through %d events, Kafka holds %d records", i, must, held)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.start()
	recs := e.readAllOf(w, 60*time.Second)
	dups := w.verify(t, recs)
	t.Logf("after 4 kills: %d events delivered, %d duplicates (at-least-once)", len(w.events()), dups)
}

// Guarantee 4: SIGTERM drains, confirms, exits 0 within 15 s; a restart after
// a clean stop delivers no duplicates, even when stopped under load.
func TestCleanStopDeliversNoDuplicates(t *testing.T) {
	e := newEnv(t)
	w := newWriter(e, 20)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	for i := range 3 {
		p := e.start()
		e.waitStreaming("outboxrelay")
		if i == 0 {
			go func() { done <- w.run(ctx, 2, 600) }()
		}
		time.Sleep(700 * time.Millisecond)
		began := time.Now()
		p.signal(syscall.SIGTERM)
		if code := p.wait(t, 15*time.Second); code != 0 {
			t.Fatalf("stop %d: exit code %d, want 0; logs:\n%s", i, code, p.logs.String())
		}
		t.Logf("stop %d under load took %v", i, time.Since(began).Round(time.Millisecond))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.start()
	recs := e.readAllOf(w, 60*time.Second)
	if dups := w.verify(t, recs); dups != 0 {
		t.Fatalf("%d duplicates after clean stops", dups)
	}
}

// Guarantee 5: Kafka unreachable for a while: the relay keeps running,
// confirms nothing unacknowledged, restarts the stream from the slot when
// errors outlast the retries, and catches up when Kafka returns.
func TestKafkaOutage(t *testing.T) {
	e := newEnv(t)
	p := e.start("--kafka-retries", "2")
	e.waitStreaming("outboxrelay")
	w := newWriter(e, 10)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		if err := w.tx(t.Context(), rng, 2, false, false); err != nil {
			t.Fatal(err)
		}
	}
	delivered := map[string]bool{} // what Kafka holds when the outage begins
	for _, r := range e.readAllOf(w, 30*time.Second) {
		delivered[header(r, "id")] = true
	}
	before := e.currentWAL()
	waitUntil(t, 10*time.Second, "the slot to catch up", func() bool { return e.confirmed("outboxrelay") >= before })

	// The broker is unreachable: under kfake every request closes the
	// connection; Apache Kafka is killed.
	up := e.kafkaDown()
	for range 20 {
		if err := w.tx(t.Context(), rng, 2, true, false); err != nil {
			t.Fatal(err)
		}
	}
	p.waitLog(t, "reconnecting", 30*time.Second)
	time.Sleep(2 * time.Second)
	// Nothing reaches Kafka during the outage, so every transaction the slot
	// confirms must be among those delivered before it.
	c := e.confirmed("outboxrelay")
	for _, id := range e.committedThrough(c) {
		if !delivered[id] {
			t.Fatalf("slot confirmed %X during the outage, past event %s that Kafka never acknowledged", c, id)
		}
	}
	if p.exited() {
		t.Fatalf("relay exited during the outage: %s", p.logs.String())
	}
	up()
	end := e.currentWAL()
	recs := e.readAllOf(w, 60*time.Second)
	w.verify(t, recs)
	waitUntil(t, 20*time.Second, "the slot to confirm after recovery", func() bool { return e.confirmed("outboxrelay") >= end })
}

// Guarantee 6: PostgreSQL restarts (fast and immediate): the relay reconnects
// by itself and resumes.
func TestPostgresRestart(t *testing.T) {
	pg := newCluster(t)
	e := newEnvOn(t, pg)
	p := e.start()
	e.waitStreaming("outboxrelay")
	w := newWriter(e, 10)
	rng := rand.New(rand.NewPCG(3, 4))
	write := func() {
		t.Helper()
		for range 30 {
			if err := w.tx(t.Context(), rng, 2, true, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	write()
	for _, mode := range []string{"fast", "immediate"} {
		if err := pg.Restart(t.Context(), mode); err != nil {
			t.Fatal(err)
		}
		e.pool.Reset()
		write()
		e.waitStreaming("outboxrelay")
	}
	recs := e.readAllOf(w, 60*time.Second)
	dups := w.verify(t, recs)
	if p.exited() {
		t.Fatalf("relay exited: %s", p.logs.String())
	}
	t.Logf("%d events across a fast and an immediate restart, %d duplicates", len(w.events()), dups)
}

// Guarantee 7: when only other tables are written, the slot's confirmed
// position keeps up with the server, so the slot does not pin WAL. Once the
// server has sent everything the relay confirms as soon as Kafka
// acknowledges, not at the next status interval: with a 30 s interval the
// slot still reaches the end of each burst within seconds, first of writes
// to other tables alone, then of outbox events too, and Kafka holds every
// event.
func TestQuietOutboxDoesNotPinWAL(t *testing.T) {
	e := newEnv(t)
	p := e.start("--status-interval", "30s")
	e.waitStreaming("outboxrelay")
	w := newWriter(e, 5)
	for round := range 6 {
		events := round >= 3
		if events {
			if err := w.run(t.Context(), 1, 20); err != nil {
				t.Fatal(err)
			}
		}
		for range 50 {
			exec1(t, e.pool, `INSERT INTO other (note) VALUES (repeat('x', 200))`)
		}
		target := e.currentWAL()
		began := time.Now()
		waitUntil(t, 5*time.Second, "the slot to confirm the burst", func() bool { return e.confirmed("outboxrelay") >= target })
		t.Logf("round %d (outbox events: %v): slot caught up with the server in %v", round, events, time.Since(began).Round(time.Millisecond))
	}
	e.readAllOf(w, 10*time.Second)
	if p.exited() {
		t.Fatalf("relay exited: %s", p.logs.String())
	}
}

// Guarantee 8: ALTER TABLE ... ADD COLUMN mid-stream does not disturb it.
func TestAlterTableMidStream(t *testing.T) {
	e := newEnv(t)
	p := e.start()
	e.waitStreaming("outboxrelay")
	w := newWriter(e, 5)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 30 {
		if err := w.tx(t.Context(), rng, 1, i%2 == 0, false); err != nil {
			t.Fatal(err)
		}
		switch i {
		case 10:
			exec1(t, e.pool, `ALTER TABLE outbox ADD COLUMN tenant text DEFAULT 'acme'`)
		case 20:
			exec1(t, e.pool, `ALTER TABLE outbox ADD COLUMN region int`)
		}
	}
	recs := e.readAllOf(w, 30*time.Second)
	if dups := w.verify(t, recs); dups != 0 {
		t.Fatalf("%d duplicates", dups)
	}
	if p.exited() {
		t.Fatalf("relay exited: %s", p.logs.String())
	}
}

// Guarantee 9: a second relay on the same slot waits, saying so, and takes
// over within seconds when the first dies.
func TestStandbyTakesOver(t *testing.T) {
	e := newEnv(t)
	first := e.start()
	e.waitStreaming("outboxrelay")
	second := e.start()
	second.waitLog(t, "waiting for the replication slot", 20*time.Second)
	w := newWriter(e, 5)
	rng := rand.New(rand.NewPCG(8, 9))
	for range 10 {
		if err := w.tx(t.Context(), rng, 1, true, false); err != nil {
			t.Fatal(err)
		}
	}
	e.readAllOf(w, 30*time.Second)
	first.signal(syscall.SIGKILL)
	first.wait(t, 10*time.Second)
	killed := time.Now()
	for range 10 {
		if err := w.tx(t.Context(), rng, 1, true, false); err != nil {
			t.Fatal(err)
		}
	}
	recs := e.readAllOf(w, 30*time.Second)
	w.verify(t, recs)
	took := time.Since(killed)
	if took > 10*time.Second {
		t.Fatalf("standby took %v to take over", took)
	}
	second.waitLog(t, "streaming", time.Second)
	t.Logf("standby delivered the next events %v after the first relay was killed", took.Round(time.Millisecond))
}

// The records are Debezium's: an existing FOR ALL TABLES publication and an
// existing pgoutput slot are reused as they are; only outbox inserts become
// records; router options shape them.
func TestReusesDebeziumPublicationAndSlot(t *testing.T) {
	e := newEnv(t)
	exec1(t, e.pool, `CREATE PUBLICATION dbz_publication FOR ALL TABLES`)
	exec1(t, e.pool, `SELECT pg_create_logical_replication_slot('debezium', 'pgoutput')`)
	// Written before the relay ever ran: the slot holds them.
	exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES
		('11111111-1111-1111-1111-111111111111', 'Order', 'o-1', 'OrderCreated', '{"a": 1, "b": [true, null]}')`)
	exec1(t, e.pool, `INSERT INTO other (note) VALUES ('not an event')`)
	exec1(t, e.pool, `UPDATE outbox SET type = 'Changed'`)
	exec1(t, e.pool, `DELETE FROM outbox`)
	exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES
		('22222222-2222-2222-2222-222222222222', 'Customer', 'c-7', 'Renamed', NULL)`)
	p := e.start("--slot", "debezium", "--publication", "dbz_publication",
		"--route-topic-replacement", "events.${routedByValue}", "--fields-additional-placement", "type:header:eventType",
		"--topic-partitions", "5")
	e.readTopics([]string{"events.Order", "events.Customer"}, harness.Count(2), 30*time.Second)
	time.Sleep(time.Second) // anything extra would have arrived by now
	recs := e.readTopics([]string{"events.Order", "events.Customer"}, nil, 1500*time.Millisecond)
	if len(recs) != 2 {
		t.Fatalf("got %d records, want 2 (updates, deletes and other tables are never published)", len(recs))
	}
	byTopic := map[string]*kgo.Record{}
	for _, r := range recs {
		byTopic[r.Topic] = r
	}
	o := byTopic["events.Order"]
	if o == nil || string(o.Key) != "o-1" || string(o.Value) != `{"a": 1, "b": [true, null]}` ||
		header(o, "id") != "11111111-1111-1111-1111-111111111111" || header(o, "eventType") != "OrderCreated" {
		t.Fatalf("order record: %+v", o)
	}
	c := byTopic["events.Customer"]
	if c == nil || string(c.Key) != "c-7" || c.Value != nil || header(c, "eventType") != "Renamed" {
		t.Fatalf("customer record (NULL payload is a null value): %+v", c)
	}
	if c.Partition >= 5 {
		t.Fatalf("partition %d on a topic created with 5 partitions", c.Partition)
	}
	if strings.Contains(p.logs.String(), "created publication") || strings.Contains(p.logs.String(), "created replication slot") {
		t.Fatalf("relay created a publication or slot that existed:\n%s", p.logs.String())
	}
}

// Events of 16 KB, larger than a loopback segment's share of a small
// window, all arrive.
func TestLargeEventsArrive(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.waitStreaming("outboxrelay")
	const n = 600
	exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
		SELECT gen_random_uuid(), 'Order', 'agg-' || (g % 10), 'Big', jsonb_build_object('n', g, 'pad', repeat(md5(g::text), 500))
		FROM generate_series(1, $1) g`, n)
	recs := e.readTopics([]string{"outbox.event.Order"}, harness.Count(n), 60*time.Second)
	if len(recs) != n {
		t.Fatalf("%d of %d large events arrived", len(recs), n)
	}
}
