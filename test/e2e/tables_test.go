package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Several outbox tables (schema per tenant) through one publication and one
// slot: every committed event of every table arrives once, routed with the
// same options whatever the table's column order, per-aggregate order holds
// across the tables (an aggregate's events are spread over all three), and
// the slot ends confirmed at the last commit. check reports each table.
func TestSeveralOutboxTables(t *testing.T) {
	e := newEnv(t)
	exec1(t, e.pool, `CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b;
		CREATE TABLE tenant_a.outbox (LIKE outbox INCLUDING ALL);
		CREATE TABLE tenant_b.outbox (payload jsonb, type text NOT NULL, aggregateid text NOT NULL,
			aggregatetype text, id uuid PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now())`)
	tables := "public.outbox,tenant_a.outbox,tenant_b.outbox"
	code, out := e.admin(t, "check", "--table", tables)
	for _, tb := range []string{`"public"."outbox" has the columns`, `"tenant_a"."outbox" has the columns`, `"tenant_b"."outbox" has the columns`,
		"tenant_b.outbox: the router can use every configured column", `FOR TABLE "public"."outbox", "tenant_a"."outbox", "tenant_b"."outbox"`} {
		if code != 0 || !strings.Contains(out, tb) {
			t.Fatalf("check exited %d; want it to report %q:\n%s", code, tb, out)
		}
	}
	p := e.start("--table", tables)
	e.waitStreaming("outboxrelay")
	w := newWriter(e, 30)
	w.tables = []string{"outbox", "tenant_a.outbox", "tenant_b.outbox"}
	if err := w.run(t.Context(), 4, 120); err != nil {
		t.Fatal(err)
	}
	end := e.currentWAL()
	recs := e.readAllOf(w, 60*time.Second)
	if dups := w.verify(t, recs); dups != 0 {
		t.Fatalf("%d duplicates in a run without failures", dups)
	}
	perTable := map[string]int{}
	for _, ev := range w.events() {
		perTable[ev.table]++
	}
	if len(perTable) != 3 {
		t.Fatalf("events per table %v: want all three written", perTable)
	}
	waitUntil(t, 10*time.Second, "the slot to confirm the last commit", func() bool { return e.confirmed("outboxrelay") >= end })
	if p.exited() {
		t.Fatalf("relay exited: %s", p.logs.String())
	}
	// A table missing from an existing publication is refused at start
	// with the statement that adds it.
	exec1(t, e.pool, `CREATE SCHEMA tenant_c; CREATE TABLE tenant_c.outbox (LIKE outbox INCLUDING ALL)`)
	code, out = e.admin(t, "check", "--table", tables+",tenant_c.outbox")
	if code != 1 || !strings.Contains(out, `ALTER PUBLICATION "outboxrelay" ADD TABLE "tenant_c"."outbox"`) {
		t.Fatalf("check with a table the publication lacks exited %d:\n%s", code, out)
	}
	t.Logf("%d events over 3 tables %v delivered once, in commit order per aggregate", len(w.events()), perTable)
}

// An UPDATE of an outbox table reaches the relay only through a publication
// that publishes updates; --on-update then behaves as Debezium's
// table.op.invalid.behavior: warn goes on, fatal stops at it with an error
// naming the table and the flag. The update is never published.
func TestOnUpdate(t *testing.T) {
	e := newEnv(t)
	exec1(t, e.pool, `CREATE PUBLICATION outboxrelay FOR TABLE outbox`) // inserts, updates, deletes, truncates
	insert := func(id string) {
		exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, 'Order', 'o1', 'Created', '{}')`, id)
	}
	update := func(id string) { exec1(t, e.pool, `UPDATE outbox SET type = 'Changed' WHERE id = $1`, id) }
	ids := []string{"00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002", "00000000-0000-0000-0000-000000000003", "00000000-0000-0000-0000-000000000004"}

	p := e.start("--on-update", "warn")
	e.waitStreaming("outboxrelay")
	insert(ids[0])
	update(ids[0])
	insert(ids[1])
	got := e.readTopics(topics([]string{"Order"}), func(r []*kgo.Record) bool { return len(r) >= 2 }, 30*time.Second)
	if len(got) != 2 || header(got[0], "id") != ids[0] || header(got[1], "id") != ids[1] {
		t.Fatalf("warn: got %d records, want the two inserts", len(got))
	}
	p.waitLog(t, "ignoring an UPDATE of an outbox table", 10*time.Second)
	p.signal(syscall.SIGTERM)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("warn: relay exited %d", code)
	}

	p = e.start("--on-update", "fatal")
	e.waitStreaming("outboxrelay")
	insert(ids[2])
	update(ids[2])
	insert(ids[3])
	if code := p.wait(t, 30*time.Second); code == 0 || !strings.Contains(p.logs.String(), "--on-update") || !strings.Contains(p.logs.String(), "public.outbox") {
		t.Fatalf("fatal: relay exited %d; want a failure naming --on-update and the table:\n%s", code, p.logs.String())
	}
	got = e.readTopics(topics([]string{"Order"}), nil, 2*time.Second)
	for _, r := range got {
		if header(r, "id") == ids[3] {
			t.Fatal("fatal: an insert after the update was delivered")
		}
	}
	// Nothing from the update on was confirmed: a relay told to go on
	// delivers the rest.
	e.start("--on-update", "warn")
	got = e.readTopics(topics([]string{"Order"}), func(r []*kgo.Record) bool { return len(r) > 0 && header(r[len(r)-1], "id") == ids[3] }, 30*time.Second)
	seen := map[string]bool{}
	for _, r := range got {
		seen[header(r, "id")] = true
	}
	if len(seen) != 4 {
		t.Fatalf("after the restart: %d distinct events, want all four", len(seen))
	}
}

// A partitioned outbox table: the publication the relay creates publishes
// through the root, so every partition's inserts arrive as the table's; an
// existing publication that names the partitions is refused with the fix
// (before, its inserts were dropped without a word).
func TestPartitionedOutboxTable(t *testing.T) {
	e := newEnv(t)
	exec1(t, e.pool, `CREATE TABLE events (id uuid NOT NULL, aggregatetype text NOT NULL, aggregateid text NOT NULL,
			type text NOT NULL, payload jsonb, created_at timestamptz NOT NULL DEFAULT now()) PARTITION BY LIST (aggregatetype);
		CREATE TABLE events_order PARTITION OF events FOR VALUES IN ('Order');
		CREATE TABLE events_other PARTITION OF events DEFAULT;
		CREATE PUBLICATION leafs FOR TABLE events`)
	if code, out := e.admin(t, "check", "--table", "events", "--publication", "leafs"); code != 1 || !strings.Contains(out, `ALTER PUBLICATION "leafs" SET (publish_via_partition_root = true)`) {
		t.Fatalf("check with a publication that names the partitions exited %d:\n%s", code, out)
	}
	e.start("--table", "events")
	e.waitStreaming("outboxrelay")
	exec1(t, e.pool, `INSERT INTO events (id, aggregatetype, aggregateid, type, payload) VALUES
		('00000000-0000-0000-0000-00000000000a', 'Order', 'o1', 'Created', '{}'),
		('00000000-0000-0000-0000-00000000000b', 'Customer', 'c1', 'Created', '{}')`)
	got := e.readTopics(topics([]string{"Order", "Customer"}), func(r []*kgo.Record) bool { return len(r) >= 2 }, 30*time.Second)
	if len(got) != 2 {
		t.Fatalf("%d records from the partitions, want 2", len(got))
	}
}
