package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kgo"
)

// On PostgreSQL 17+, --slot-failover creates a failover slot, a standby with
// slot synchronization keeps a synced copy of it, and check tells an
// operator which piece of that is missing, with the fix, and never shows
// primary_conninfo (it may hold a password).
func TestFailoverSlotIsCheckedOnBothSides(t *testing.T) {
	ctx := t.Context()
	pg, e := newPrimaryEnv(t)
	if version := e.serverVersion(t); version < 170000 {
		if code, out := e.admin(t, "check", "--slot-failover"); code != 1 || !strings.Contains(out, "failover slots need PostgreSQL 17") || !strings.Contains(out, "--slot-failover") {
			t.Fatalf("check --slot-failover on PostgreSQL %d: %d %s", version/10000, code, out)
		}
		t.Skipf("PostgreSQL %d has no failover slots (17+); run with OUTBOXRELAY_PG_MAJOR=17 or 18", version/10000)
	}

	// The primary alone: the slot is still to be created, nothing holds
	// the relay back for a standby.
	code, out := e.admin(t, "check", "--slot-failover")
	wantLines(t, "check on the primary alone", code, 0, out,
		"WARN\tsynchronized_standby_slots\tempty", "PASS\tfailover slot\tslot \"outboxrelay\" will be created as a failover slot")

	standby, err := pg.StartStandby(ctx, harness.StandbyOptions{SlotName: "standby1", Settings: map[string]string{
		"sync_replication_slots": "on", "hot_standby_feedback": "on"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Stop() })
	exec1(t, e.pool, `ALTER SYSTEM SET synchronized_standby_slots = 'standby1'`)
	exec1(t, e.pool, `SELECT pg_reload_conf()`)

	p := e.start("--slot-failover")
	e.waitStreaming("outboxrelay")
	w := newWriter(e, 3)
	if err := w.run(ctx, 1, 20); err != nil {
		t.Fatal(err)
	}
	e.readAllOf(w, 30*time.Second)
	if code, out := e.admin(t, "slot", "list"); code != 0 || !strings.Contains(out, "yes") {
		t.Fatalf("slot list on the primary does not show a failover slot: %d %s", code, out)
	}
	standbyURL := standby.URL("postgres", dbName(e.url))
	waitSynced(t, e, standbyURL)
	code, out = e.admin(t, "check", "--slot-failover", "--standby-url", standbyURL)
	wantLines(t, "check with a complete standby", code, 0, out,
		"PASS\tsynchronized_standby_slots", "PASS\tfailover slot\tslot \"outboxrelay\" is a failover slot",
		"PASS\tstandby: sync_replication_slots", "PASS\tstandby: hot_standby_feedback", "PASS\tstandby: primary_slot_name\tstandby1",
		"PASS\tstandby: primary_conninfo\tnames a database (value not shown)", "standby: slot copy")
	t.Logf("check with a complete standby:\n%s", out)
	if strings.Contains(out, "no confirmed position") || strings.Contains(out, "FAIL") {
		t.Errorf("the standby's synced copy is not reported as usable:\n%s", out)
	}
	if strings.Contains(out, "application_name=") || strings.Contains(out, "user=postgres") {
		t.Errorf("check printed primary_conninfo:\n%s", out)
	}

	// A standby that lost a piece: check names it, with the fix.
	sconn, err := pgx.Connect(ctx, standby.URL("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer sconn.Close(context.WithoutCancel(ctx))
	for _, sql := range []string{`ALTER SYSTEM SET hot_standby_feedback = off`, `SELECT pg_reload_conf()`} {
		if _, err := sconn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 10*time.Second, "the standby to reload", func() bool {
		var v string
		return sconn.QueryRow(ctx, "SELECT current_setting('hot_standby_feedback')").Scan(&v) == nil && v == "off"
	})
	code, out = e.admin(t, "check", "--slot-failover", "--standby-url", standbyURL)
	wantLines(t, "check with hot_standby_feedback off", code, 1, out,
		"FAIL\tstandby: hot_standby_feedback\toff on the standby", "fix: on the standby: ALTER SYSTEM SET hot_standby_feedback = on;")
	if p.exited() {
		t.Fatalf("relay exited: %s", p.logs.String())
	}
}

// wantLines checks an exit code and that out holds every line fragment.
func wantLines(t *testing.T, what string, code, wantCode int, out string, fragments ...string) {
	t.Helper()
	if code != wantCode {
		t.Fatalf("%s: exit code %d, want %d:\n%s", what, code, wantCode, out)
	}
	squash := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	flat := squash(out)
	for _, f := range fragments {
		if !strings.Contains(flat, squash(f)) {
			t.Errorf("%s: output lacks %q:\n%s", what, f, out)
		}
	}
}

// waitSynced waits until the standby holds a synced copy of the relay's
// slot; a snapshot of the running transactions on the primary lets the sync
// worker create it.
func waitSynced(t *testing.T, e *env, standbyURL string) {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, standbyURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	waitUntil(t, 60*time.Second, "a synced copy of the slot on the standby", func() bool {
		exec1(t, e.pool, `SELECT pg_log_standby_snapshot()`)
		var synced bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = 'outboxrelay' AND synced AND NOT temporary AND confirmed_flush_lsn IS NOT NULL)`).Scan(&synced)
		return err == nil && synced
	})
}

// dbName is the database a PostgreSQL URL names.
func dbName(url string) string {
	name := url[strings.LastIndex(url, "/")+1:]
	name, _, _ = strings.Cut(name, "?")
	return name
}

// A relay that has delivered from a slot remembers it in Kafka: when the
// slot is missing at a later start (as on a promoted standby without a
// synchronized copy), it refuses to create a fresh one, which would skip
// every event committed meanwhile, unless --accept-new-source says so.
func TestLostSlotIsNotRecreatedSilently(t *testing.T) {
	e := newEnv(t)
	p := e.start()
	e.waitStreaming("outboxrelay")
	w := newWriter(e, 3)
	if err := w.run(t.Context(), 1, 10); err != nil {
		t.Fatal(err)
	}
	e.readAllOf(w, 30*time.Second)
	p.signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("clean stop: exit code %d", code)
	}
	// The slot is gone, as after a promotion without a synchronized copy,
	// and events are committed meanwhile.
	exec1(t, e.pool, `SELECT pg_drop_replication_slot('outboxrelay')`)
	if err := w.run(t.Context(), 1, 5); err != nil {
		t.Fatal(err)
	}
	p = e.start()
	if code := p.wait(t, 60*time.Second); code != 3 {
		t.Fatalf("exit code %d, want 3:\n%s", code, p.logs.String())
	}
	for _, want := range []string{`slot "outboxrelay" does not exist on this server, but this relay has delivered from it before`, "--accept-new-source", "--slot-failover"} {
		if !strings.Contains(p.logs.String(), want) {
			t.Errorf("the refusal lacks %q:\n%s", want, p.logs.String())
		}
	}
	if slots, _ := e.slotAndPublication(t); slots != 0 {
		t.Fatalf("the refusing relay created %d slot(s)", slots)
	}
	p = e.start("--accept-new-source")
	p.waitLog(t, "creating a new slot where this relay delivered before", 30*time.Second)
	e.waitStreaming("outboxrelay")
}

// A primary dies under a steady write load and its standby, which keeps a
// synchronized copy of the failover slot, is promoted: the relay, given both
// hosts and target_session_attrs=read-write, follows by itself. Every event
// the new primary holds is delivered, at least once, in per-key order of
// first delivery; nothing is delivered that the new primary does not hold
// (synchronized_standby_slots); the time from the death to the first event
// from the new primary is logged.
func TestFailoverToPromotedStandby(t *testing.T) {
	for _, mode := range deliveryModes() {
		t.Run(mode, func(t *testing.T) { failoverToPromotedStandby(t, mode) })
	}
}

func failoverToPromotedStandby(t *testing.T, mode string) {
	ctx := t.Context()
	pg, e := newPrimaryEnv(t)
	if e.serverVersion(t) < 170000 {
		t.Skip("failover slots need PostgreSQL 17+; run with OUTBOXRELAY_PG_MAJOR=17 or 18")
	}
	exec1(t, e.pool, `CREATE TABLE ledger (id uuid PRIMARY KEY, aid text NOT NULL, n int NOT NULL)`)
	standby, err := pg.StartStandby(ctx, harness.StandbyOptions{SlotName: "standby1", Settings: map[string]string{
		"sync_replication_slots": "on", "hot_standby_feedback": "on"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Stop() })
	exec1(t, e.pool, `ALTER SYSTEM SET synchronized_standby_slots = 'standby1'`)
	exec1(t, e.pool, `SELECT pg_reload_conf()`)
	db := dbName(e.url)
	both := fmt.Sprintf("postgres://postgres@%s:%d,%s:%d/%s?target_session_attrs=read-write&connect_timeout=2", pg.Host, pg.Port, standby.Host, standby.Port, db)
	p := e.start("--pg-url", both, "--slot-failover", "--delivery", mode)
	e.waitStreaming("outboxrelay")

	load := startLedgerLoad(t, both)
	time.Sleep(time.Second)
	waitSynced(t, e, standby.URL("postgres", db))
	time.Sleep(time.Second)
	died, promoted, written := failOver(t, pg, standby, load)

	newPrimary, err := pgx.Connect(ctx, standby.URL("postgres", db))
	if err != nil {
		t.Fatal(err)
	}
	defer newPrimary.Close(context.WithoutCancel(ctx))
	held := ledgerOf(t, newPrimary)
	recs := readLedgerHeld(t, e, held, mode)
	if dups := checkFailoverDelivery(t, held, recs, load.committedAfter(promoted), died, p); mode == "exactly-once" && dups > 0 {
		t.Errorf("%d duplicates read with read_committed in exactly-once mode; relay logs:\n%s", dups, p.logs.String())
	}
	if mode == "exactly-once" && !strings.Contains(p.logs.String(), "the checkpoint's positions hold on this promoted server") {
		t.Errorf("the relay did not resume from its checkpoint on the promoted server; relay logs:\n%s", p.logs.String())
	}
	t.Logf("events written (commit acknowledged): %d; held by the new primary: %d; records read: %d; promoted %v after the death",
		written, len(held), len(recs), promoted.Sub(died).Round(time.Millisecond))
	// Bring the old primary back (as a diverged server nobody uses) so that
	// the test's clean-up can drop its slots; the relay stops first.
	p.signal(syscall.SIGTERM)
	p.wait(t, 30*time.Second)
	if err := pg.Restart(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
}

// checkFailoverDelivery checks what was read against what the new primary
// holds: all of it, nothing else, per-key order of first delivery.
func checkFailoverDelivery(t *testing.T, held map[string]ledgerRow, recs []*kgo.Record, after map[string]time.Time, died time.Time, p *relayProc) (dups int) {
	t.Helper()
	first := map[string]bool{}
	last := map[string]int{}
	var firstNew time.Time
	for _, r := range recs {
		id := header(r, "id")
		row, ok := held[id]
		if !ok {
			t.Errorf("event %s was delivered but the new primary does not hold it", id)
			continue
		}
		if first[id] {
			dups++
			continue
		}
		first[id] = true
		if row.n <= last[row.aid] {
			t.Errorf("aggregate %s: event %d delivered after %d", row.aid, row.n, last[row.aid])
		}
		last[row.aid] = row.n
		if _, ok := after[id]; ok && firstNew.IsZero() {
			firstNew = r.Timestamp
		}
	}
	lost := 0
	for id := range held {
		if !first[id] {
			lost++
			if lost <= 5 {
				t.Logf("lost %s (aggregate %s, #%d)", id, held[id].aid, held[id].n)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d events the new primary holds were not delivered; relay logs:\n%s", lost, p.logs.String())
	}
	t.Logf("delivered %d distinct events, %d duplicates, %d lost; first event committed on the new primary delivered %v after the old one died",
		len(first), dups, lost, firstNew.Sub(died).Round(time.Millisecond))
	if firstNew.IsZero() {
		t.Errorf("no event committed on the new primary was delivered")
	}
	return dups
}

type ledgerRow struct {
	aid string
	n   int
}

func ledgerOf(t *testing.T, conn *pgx.Conn) map[string]ledgerRow {
	t.Helper()
	rows, err := conn.Query(t.Context(), `SELECT id::text, aid, n FROM ledger`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]ledgerRow{}
	for rows.Next() {
		var id string
		var r ledgerRow
		if err := rows.Scan(&id, &r.aid, &r.n); err != nil {
			t.Fatal(err)
		}
		out[id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// ledgerLoad writes one event per transaction, insert-and-delete, with its
// ledger row in the same transaction, about 100 per second over 5
// aggregates, through a connection that follows the primary.
type ledgerLoad struct {
	stopped chan struct{}
	done    chan int
	mu      sync.Mutex
	commits map[string]time.Time // event id: when its commit was acknowledged
}

func startLedgerLoad(t *testing.T, url string) *ledgerLoad {
	l := &ledgerLoad{stopped: make(chan struct{}), done: make(chan int, 1), commits: map[string]time.Time{}}
	go func() {
		ctx := context.Background()
		var conn *pgx.Conn
		n := map[string]int{}
		for i := 0; ; i++ {
			select {
			case <-l.stopped:
				if conn != nil {
					conn.Close(ctx)
				}
				l.done <- len(l.commits)
				return
			case <-time.After(10 * time.Millisecond):
			}
			if conn == nil {
				var err error
				if conn, err = pgx.Connect(ctx, url); err != nil {
					conn = nil
					continue
				}
			}
			aid := fmt.Sprintf("agg-%d", i%5)
			id := fmt.Sprintf("%08x-0000-4000-8000-%012d", i, i)
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `INSERT INTO ledger (id, aid, n) VALUES ($1, $2, $3)`, id, aid, n[aid]+1); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
					VALUES ($1, 'Ledger', $2, 'Entry', jsonb_build_object('n', $3::int))`, id, aid, n[aid]+1); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `DELETE FROM outbox WHERE id = $1`, id)
				return err
			})
			if err != nil {
				conn.Close(ctx)
				conn = nil // its fate is unknown: the ledger on the new primary decides
				continue
			}
			n[aid]++
			l.mu.Lock()
			l.commits[id] = time.Now()
			l.mu.Unlock()
		}
	}()
	return l
}

// stop ends the load and returns how many commits were acknowledged.
func (l *ledgerLoad) stop() int {
	close(l.stopped)
	return <-l.done
}

// committedAfter returns the events whose commit was acknowledged after t.
func (l *ledgerLoad) committedAfter(t time.Time) map[string]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]time.Time{}
	for id, at := range l.commits {
		if at.After(t) {
			out[id] = at
		}
	}
	return out
}

// Exactly-once resumes across a timeline change only from a slot that is a
// synchronized copy of the old primary's failover slot: on a promoted server
// whose slot was made by hand (or came back with a restored backup) the
// checkpoint's positions cannot be trusted, and the relay stops, saying why,
// until --accept-new-source.
func TestExactlyOnceRefusesAPromotedServerWithoutASyncedSlot(t *testing.T) {
	ctx := t.Context()
	pg, e := newPrimaryEnv(t)
	p := e.start("--delivery", "exactly-once")
	e.waitStreaming("outboxrelay")
	w := newWriter(e, 3)
	if err := w.run(ctx, 1, 10); err != nil {
		t.Fatal(err)
	}
	e.readAllOfWith(w, 30*time.Second, isolationOf("exactly-once")...)
	p.signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("clean stop: exit code %d", code)
	}

	standby, err := pg.StartStandby(ctx, harness.StandbyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Stop() })
	if err := pg.StopFast(ctx); err != nil { // a clean stop: the standby receives all of it
		t.Fatal(err)
	}
	if err := standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	promotedURL := standby.URL("postgres", dbName(e.url))
	conn, err := pgx.Connect(ctx, promotedURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot('outboxrelay', 'pgoutput')`); err != nil {
		t.Fatal(err)
	}
	p = e.start("--pg-url", promotedURL, "--delivery", "exactly-once")
	if code := p.wait(t, 60*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1:\n%s", code, p.logs.String())
	}
	for _, want := range []string{"refusing to resume", "timeline 1 to 2", "not a synchronized copy", "--accept-new-source"} {
		if !strings.Contains(p.logs.String(), want) {
			t.Errorf("the refusal lacks %q:\n%s", want, p.logs.String())
		}
	}
	p = e.start("--pg-url", promotedURL, "--delivery", "exactly-once", "--accept-new-source")
	p.waitLog(t, "starting over on a new source", 30*time.Second)
	p.signal(syscall.SIGTERM)
	p.wait(t, 30*time.Second)
	if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot('outboxrelay')`); err != nil {
		t.Fatal(err)
	}
	if err := pg.Restart(ctx, "fast"); err != nil { // for the clean-up, which drops its slots
		t.Fatal(err)
	}
}

// newPrimaryEnv starts a PostgreSQL cluster of the test's own (a test that
// promotes a standby must not share one) and an environment on it.
func newPrimaryEnv(t *testing.T) (*harness.Postgres, *env) {
	t.Helper()
	pg, err := harness.StartPostgres(t.Context(), harness.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	return pg, newEnvOn(t, pg)
}

// readLedgerHeld reads the ledger topic until every event held by the
// surviving server has arrived, with the isolation level of the mode.
func readLedgerHeld(t *testing.T, e *env, held map[string]ledgerRow, mode string) []*kgo.Record {
	t.Helper()
	recs, err := harness.ReadAll(t.Context(), e.kafka.ListenAddrs(), []string{"outbox.event.Ledger"}, func(r []*kgo.Record) bool {
		seen := map[string]bool{}
		for _, rec := range r {
			seen[header(rec, "id")] = true
		}
		for id := range held {
			if !seen[id] {
				return false
			}
		}
		return true
	}, 60*time.Second, isolationOf(mode)...)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// failOver kills the primary (an immediate stop, as a crash), promotes its
// standby, lets the writers go on against the new primary for 3 s and stops
// them: when the primary died, when the standby was promoted, and how many
// events were committed (acknowledged) in all.
func failOver(t *testing.T, primary, standby *harness.Postgres, load *ledgerLoad) (died, promoted time.Time, written int) {
	t.Helper()
	died = time.Now()
	if err := primary.StopImmediate(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := standby.Promote(t.Context()); err != nil {
		t.Fatal(err)
	}
	promoted = time.Now()
	time.Sleep(3 * time.Second)
	return died, promoted, load.stop()
}
