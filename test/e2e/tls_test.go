package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
)

// The relay reads its replication socket outside Go's poller, and with
// sslmode=require TLS reads through that socket. Over a connection
// PostgreSQL reports as encrypted, a burst of small events and events that
// span many TLS records arrive exactly once, in commit order per aggregate,
// and the slot confirms the last commit.
func TestStreamsOverTLS(t *testing.T) {
	pg, err := harness.StartPostgres(t.Context(), harness.PostgresOptions{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	e := newEnvOn(t, pg)
	e.url = strings.Replace(e.url, "sslmode=disable", "sslmode=require", 1)
	// A transaction open while the relay starts keeps slot creation waiting
	// for a second; the slot is active all that time without a walsender,
	// so the check below also proves waitStreaming waits for the walsender.
	hold, err := e.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(t.Context(), "SELECT txid_current()"); err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(time.Second); _ = hold.Rollback(context.Background()) }()
	p := e.start()
	e.waitStreaming("outboxrelay")

	var encrypted bool
	if err := e.pool.QueryRow(t.Context(), `SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
		WHERE r.application_name = 'outboxrelay'`).Scan(&encrypted); err != nil || !encrypted {
		t.Fatalf("the relay's replication connection is not encrypted (ssl %v, err %v)", encrypted, err)
	}

	w := newWriter(e, 20)
	if err := w.run(t.Context(), 2, 100); err != nil {
		t.Fatal(err)
	}
	// Payloads of 100 kB: each CopyData message spans several TLS records.
	exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
		SELECT gen_random_uuid(), 'Big', 'big-1', 't', jsonb_build_object('n', g, 'pad', repeat('x', 100000))
		FROM generate_series(1, 3) g`)
	end := e.currentWAL()
	recs := e.readAllOf(w, 60*time.Second)
	if dups := w.verify(t, recs); dups != 0 {
		t.Fatalf("%d duplicates in a run without failures", dups)
	}
	big := e.readTopics([]string{"outbox.event.Big"}, harness.Count(3), 30*time.Second)
	for i, r := range big {
		if want := `"n": ` + string(rune('1'+i)); !strings.Contains(string(r.Value), want) || len(r.Value) < 100000 {
			t.Fatalf("large event %d: %d bytes, want %s first", i, len(r.Value), want)
		}
	}
	waitUntil(t, 10*time.Second, "the slot to confirm the last commit", func() bool { return e.confirmed("outboxrelay") >= end })
	if p.exited() {
		t.Fatalf("relay exited: %s", p.logs.String())
	}
}
