package e2e

import (
	"context"
	"math/rand/v2"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// snapshotTables gives the outbox a commit-ordered column to read the
// snapshot in (a bigserial takes its value when the row is inserted, and a
// writer inserts an aggregate's next event only after the previous one
// committed), and adds a second outbox table.
func snapshotTables(t *testing.T, e *env) {
	t.Helper()
	exec1(t, e.pool, `ALTER TABLE outbox ADD COLUMN position bigserial;
		CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.outbox (LIKE outbox INCLUDING ALL)`)
}

// prefill commits n transactions of kept rows from one session, spread
// over the writer's tables, before the relay starts.
func prefill(t *testing.T, w *writer, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for range n {
		if err := w.tx(t.Context(), rng, 1+rng.IntN(5), false, rng.IntN(10) == 0); err != nil {
			t.Fatal(err)
		}
	}
}

// --snapshot initial: rows kept in two tables before the relay starts, and
// rows committed by writers running while it creates its slot, all arrive
// exactly once (none is missed or repeated by the hand-off from the
// exported snapshot to the stream), in per-aggregate order; the slot ends
// confirmed at the last commit.
func TestInitialSnapshot(t *testing.T) {
	e := newEnv(t)
	snapshotTables(t, e)
	w := newWriter(e, 30)
	// The snapshot reads one table after the other: an aggregate keeps its
	// order when its events are in one table.
	w.tables, w.pinned = []string{"outbox", "tenant_a.outbox"}, true
	prefill(t, w, 400)
	kept := len(w.events())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w.pace = time.Millisecond
	done := make(chan error, 1)
	go func() { done <- w.runUntil(ctx, 3) }() // writing through the slot's creation
	time.Sleep(200 * time.Millisecond)
	p := e.start("--snapshot", "initial", "--table", "public.outbox,tenant_a.outbox", "--snapshot-order-by", "position")
	p.waitLog(t, "initial snapshot complete", 60*time.Second)
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-done
	end := e.currentWAL()
	m := consistentPoint.FindStringSubmatch(p.logs.String())
	if m == nil {
		t.Fatal("no consistent point logged")
	}
	lost := w.forget(e.committedThrough(e.lsn("SELECT $1::pg_lsn::text", m[1])))
	recs := e.readAllOf(w, 60*time.Second)
	if dups := w.verify(t, recs); dups != 0 {
		t.Fatalf("%d duplicates: the hand-off from the snapshot to the stream repeated rows", dups)
	}
	waitUntil(t, 15*time.Second, "the slot to confirm the last commit", func() bool { return e.confirmed("outboxrelay") >= end })
	if !strings.Contains(p.logs.String(), "created replication slot with an exported snapshot") {
		t.Fatal("the slot was not created with an exported snapshot")
	}
	t.Logf("%d rows kept before the start and %d written meanwhile, each delivered once (%d inserted and deleted before the slot existed)", kept, len(w.events())-kept, lost)
}

// forget drops the events that were deleted by their own transactions
// committed among ids (before the slot existed): no table or slot holds
// them. It returns how many.
func (w *writer) forget(ids []string) int {
	before := map[string]bool{}
	for _, id := range ids {
		before[id] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	kept := w.committed[:0]
	for _, ev := range w.committed {
		if !(ev.deleted && before[ev.id]) {
			kept = append(kept, ev)
		}
	}
	n := len(w.committed) - len(kept)
	w.committed = kept
	return n
}

var consistentPoint = regexp.MustCompile(`consistent_point=([0-9A-F]+/[0-9A-F]+)`)

// A kill during the snapshot leaves the slot where it was created and the
// snapshot record pending; the restart reads every row again (at least
// once) and completes; a later restart reads none.
func TestInitialSnapshotResumesAfterKill(t *testing.T) {
	e := newEnv(t)
	snapshotTables(t, e)
	w := newWriter(e, 30)
	prefill(t, w, 3000)
	args := []string{"--snapshot", "initial", "--snapshot-order-by", "position", "--max-in-flight-events", "50"}
	p := e.start(args...)
	p.waitLog(t, "initial snapshot: reading", 30*time.Second)
	time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
	p.signal(syscall.SIGKILL)
	p.wait(t, 10*time.Second)
	m := consistentPoint.FindStringSubmatch(p.logs.String())
	if m == nil {
		t.Fatal("no consistent point logged")
	}
	if got := e.confirmed("outboxrelay"); got != e.lsn("SELECT $1::pg_lsn::text", m[1]) {
		t.Fatalf("slot confirmed %X during an unfinished snapshot; want its consistent point %s", got, m[1])
	}
	rng := rand.New(rand.NewPCG(2, 2))
	for range 20 { // written while no relay runs
		if err := w.tx(t.Context(), rng, 2, rng.IntN(2) == 0, false); err != nil {
			t.Fatal(err)
		}
	}
	p = e.start(args...)
	p.waitLog(t, "initial snapshot complete", 60*time.Second)
	if !strings.Contains(p.logs.String(), "did not complete: reading it again") {
		t.Fatal("the restart did not say it reads the snapshot again")
	}
	recs := e.readAllOf(w, 60*time.Second)
	dups := w.verify(t, recs)
	p.signal(syscall.SIGTERM)
	p.wait(t, 15*time.Second)
	p = e.start(args...)
	e.waitStreaming("outboxrelay")
	if err := w.tx(t.Context(), rng, 1, false, false); err != nil {
		t.Fatal(err)
	}
	recs = e.readAllOf(w, 30*time.Second)
	if again := w.verify(t, recs); again != dups {
		t.Fatalf("a restart after the completed snapshot delivered %d more duplicates", again-dups)
	}
	if strings.Contains(p.logs.String(), "initial snapshot: reading") {
		t.Fatal("a restart after the completed snapshot read it again")
	}
	t.Logf("%d events; the kill cost %d duplicates, nothing missing", len(w.events()), dups)
}

// On PostgreSQL 17+ a failover slot is created with its exported snapshot
// in the options syntax of CREATE_REPLICATION_SLOT.
func TestInitialSnapshotFailoverSlot(t *testing.T) {
	e := newEnv(t)
	if e.serverVersion(t) < 170000 {
		t.Skip("failover slots need PostgreSQL 17+; run with OUTBOXRELAY_PG_MAJOR=17 or 18")
	}
	snapshotTables(t, e)
	w := newWriter(e, 10)
	prefill(t, w, 50)
	p := e.start("--snapshot", "initial", "--slot-failover", "--snapshot-order-by", "position")
	p.waitLog(t, "initial snapshot complete", 30*time.Second)
	if err := w.tx(t.Context(), rand.New(rand.NewPCG(3, 3)), 2, true, false); err != nil {
		t.Fatal(err)
	}
	if dups := w.verify(t, e.readAllOf(w, 30*time.Second)); dups != 0 {
		t.Fatalf("%d duplicates", dups)
	}
	var failover bool
	if err := e.pool.QueryRow(t.Context(), "SELECT failover FROM pg_replication_slots WHERE slot_name = 'outboxrelay'").Scan(&failover); err != nil || !failover {
		t.Fatalf("the slot is not a failover slot (%v, %v)", failover, err)
	}
}

// Two relays started together with --snapshot initial: one creates the slot
// and reads the snapshot, the other waits as a standby; when it takes over
// it reads no rows (the snapshot completed), so nothing is repeated.
func TestInitialSnapshotStandbyReadsNothing(t *testing.T) {
	e := newEnv(t)
	snapshotTables(t, e)
	w := newWriter(e, 10)
	prefill(t, w, 200)
	args := []string{"--snapshot", "initial", "--snapshot-order-by", "position"}
	a, b := e.start(args...), e.start(args...)
	waitUntil(t, 30*time.Second, "one relay to complete the snapshot", func() bool {
		return strings.Contains(a.logs.String(), "initial snapshot complete") || strings.Contains(b.logs.String(), "initial snapshot complete")
	})
	active, standby := a, b
	if strings.Contains(b.logs.String(), "initial snapshot complete") {
		active, standby = b, a
	}
	e.readAllOf(w, 30*time.Second)
	active.signal(syscall.SIGTERM)
	active.wait(t, 15*time.Second)
	rng := rand.New(rand.NewPCG(4, 4))
	for range 5 {
		if err := w.tx(t.Context(), rng, 2, rng.IntN(2) == 0, false); err != nil {
			t.Fatal(err)
		}
	}
	recs := e.readAllOf(w, 30*time.Second)
	if dups := w.verify(t, recs); dups != 0 {
		t.Fatalf("%d duplicates after the standby took over", dups)
	}
	if strings.Contains(standby.logs.String(), "initial snapshot: reading") {
		t.Fatal("the standby read the snapshot again after taking over")
	}
}
