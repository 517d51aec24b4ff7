// Package e2e runs the real outboxrelay binary against a throwaway
// PostgreSQL cluster and an in-process Kafka-protocol broker (kfake; Apache
// Kafka when OUTBOXRELAY_KAFKA=real), and checks what a franz-go consumer
// reads and what pg_replication_slots says.
package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kgo"
)

var (
	binary string            // the outboxrelay binary under test
	shared *harness.Postgres // cluster shared by tests that do not restart it
	dbSeq  atomic.Int64
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "outboxrelay-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// OUTBOXRELAY_E2E_BINARY runs the tests against a prebuilt binary, for
	// example an older release, to show that a test fails there.
	if binary = os.Getenv("OUTBOXRELAY_E2E_BINARY"); binary == "" {
		binary = filepath.Join(dir, "outboxrelay")
		build := exec.Command("go", "build", "-race", "-o", binary, "../../cmd/outboxrelay")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building outboxrelay:", err)
			return 1
		}
	}
	shared, err = harness.StartPostgres(context.Background(), harness.PostgresOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer shared.Stop()
	return m.Run()
}

// env is one test's database, broker and relays.
type env struct {
	t     *testing.T
	pg    *harness.Postgres
	url   string
	pool  *pgxpool.Pool
	kafka *broker // kfake, or Apache Kafka under OUTBOXRELAY_KAFKA=real
	// relayEnv is added to the environment of the relays it starts.
	relayEnv []string
}

const outboxDDL = `CREATE TABLE outbox (
  id uuid PRIMARY KEY, aggregatetype text, aggregateid text NOT NULL,
  type text NOT NULL, payload jsonb, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE aggregates (id text PRIMARY KEY, seq bigint NOT NULL DEFAULT 0);
CREATE TABLE other (id bigserial PRIMARY KEY, note text);`

func newEnv(t *testing.T) *env { return newEnvOn(t, shared) }

func newEnvOn(t *testing.T, pg *harness.Postgres, kafka ...brokerOpt) *env {
	t.Helper()
	ctx := t.Context()
	// The broker first: a failure to start it leaves no slot behind.
	kc := startBroker(t, kafka...)
	url, err := pg.CreateDatabase(ctx, fmt.Sprintf("e2e_%d", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, outboxDDL); err != nil {
		t.Fatal(err)
	}
	// An independent slot that sees every transaction, with its end LSN.
	if _, err := pool.Exec(ctx, `SELECT pg_create_logical_replication_slot('audit', 'test_decoding')`); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, pg: pg, url: url, pool: pool, kafka: kc}
	t.Cleanup(func() {
		// Slot names are cluster-wide: drop every slot of this database, or
		// the next test's relay finds one that belongs elsewhere. A killed
		// relay's walsender may hold its slot a little longer: end it.
		ctx := context.Background()
		deadline := time.Now().Add(15 * time.Second)
		for {
			_, _ = pool.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = current_database() AND active_pid IS NOT NULL`)
			_, _ = pool.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database() AND NOT active`)
			var left int
			err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&left)
			if err == nil && left == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("could not drop the slots of this test's database (%d left, %v)", left, err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return e
}

// relayProc is one running outboxrelay process.
type relayProc struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
	err  error
}

// syncBuffer collects a relay's output while the test reads it.
type syncBuffer = harness.SyncBuffer

func (e *env) args(extra ...string) []string {
	return append([]string{"run", "--pg-url", e.url, "--brokers", strings.Join(e.kafka.ListenAddrs(), ","),
		"--status-interval", "200ms", "--retry-backoff-max", "1s", "--log-level", "debug", "--http-addr", "127.0.0.1:0"}, extra...)
}

// start runs the binary with the env's connection flags plus extra.
func (e *env) start(extra ...string) *relayProc {
	e.t.Helper()
	return e.startRaw(e.args(extra...)...)
}

func (e *env) startRaw(args ...string) *relayProc {
	e.t.Helper()
	p := &relayProc{cmd: exec.Command(binary, args...), logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	// Races are reported, not fatal, so that one inside sarama's transaction
	// manager does not end the run; checkRaces fails the test for any race
	// in outboxrelay's own code. No exit delay.
	p.cmd.Env = append(append(os.Environ(), e.relayEnv...), "GORACE=halt_on_error=0 atexit_sleep_ms=0")
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	e.t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		checkRaces(e.t, p.logs.String())
		if e.t.Failed() {
			e.t.Logf("relay pid %d logs:\n%s", p.cmd.Process.Pid, p.logs.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *relayProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("relay did not exit within %v; logs:\n%s", timeout, p.logs.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *relayProc) signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

func (p *relayProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitLog waits until the relay's log contains s.
func (p *relayProc) waitLog(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	waitUntil(t, timeout, "log line "+s, func() bool { return strings.Contains(p.logs.String(), s) })
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitStreaming waits until a walsender holds slot.
func (e *env) waitStreaming(slot string) {
	e.t.Helper()
	waitUntil(e.t, 30*time.Second, "a walsender to stream from slot "+slot, func() bool {
		var streaming bool
		err := e.pool.QueryRow(context.Background(), harness.SlotStreamingSQL, slot).Scan(&streaming)
		return err == nil && streaming
	})
}

func (e *env) lsn(sql string, args ...any) uint64 {
	e.t.Helper()
	var s *string
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		e.t.Fatal(err)
	}
	if s == nil {
		return 0
	}
	var hi, lo uint64
	if _, err := fmt.Sscanf(*s, "%X/%X", &hi, &lo); err != nil {
		e.t.Fatal(err)
	}
	return hi<<32 | lo
}

func (e *env) confirmed(slot string) uint64 {
	return e.lsn("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot)
}

func (e *env) currentWAL() uint64 { return e.lsn("SELECT pg_current_wal_insert_lsn()::text") }

// event is one outbox row a writer committed.
type event struct {
	id, atype, aid string
	table          string
	deleted        bool // by its own transaction (an insert-and-delete writer)
	seq            int64
	payload        string
}

// writer writes events through concurrent transactions and remembers which
// committed and which rolled back.
type writer struct {
	e         *env
	mu        sync.Mutex
	committed []event
	rolled    map[string]bool
	unknown   map[string]bool // COMMIT sent, answer lost: may or may not be committed
	aggs      int
	types     []string
	pace      time.Duration // pause between one worker's transactions
	// tables are the outbox tables written to, one drawn per event
	// (default: outbox); pinned keeps each aggregate in one of them.
	tables []string
	pinned bool
}

func newWriter(e *env, aggs int) *writer {
	return &writer{e: e, rolled: map[string]bool{}, unknown: map[string]bool{}, aggs: aggs, types: []string{"Order", "Customer", "Invoice"}}
}

// tx writes one transaction of n events on random aggregates. Each event
// takes the aggregate's row lock to draw its sequence number, so per-aggregate
// sequence order is commit order. When del, the events are deleted in the
// same transaction (the insert-and-delete writer).
func (w *writer) tx(ctx context.Context, rng *rand.Rand, n int, del, rollback bool) error {
	tx, err := w.e.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var evs []event
	aids := make([]string, n)
	for i := range aids {
		aids[i] = fmt.Sprintf("agg-%d", rng.IntN(w.aggs))
	}
	sort.Strings(aids) // one lock order for all writers: no deadlocks
	for _, aid := range aids {
		var seq int64
		if err := tx.QueryRow(ctx, `INSERT INTO aggregates (id, seq) VALUES ($1, 1)
			ON CONFLICT (id) DO UPDATE SET seq = aggregates.seq + 1 RETURNING seq`, aid).Scan(&seq); err != nil {
			return err
		}
		ev := event{atype: w.types[len(aid)%len(w.types)], aid: aid, seq: seq, table: "outbox"}
		switch {
		case w.pinned:
			ev.table = w.tables[len(aid)%len(w.tables)]
		case len(w.tables) > 0:
			ev.table = w.tables[rng.IntN(len(w.tables))]
		}
		ev.payload = fmt.Sprintf(`{"aggregate": "%s", "seq": %d, "pad": "%s"}`, aid, seq, strings.Repeat("x", rng.IntN(64)))
		if err := tx.QueryRow(ctx, `INSERT INTO `+ev.table+` (id, aggregatetype, aggregateid, type, payload)
			VALUES (gen_random_uuid(), $1, $2, 'Changed', $3) RETURNING id::text, payload::text`, ev.atype, aid, ev.payload).Scan(&ev.id, &ev.payload); err != nil {
			return err
		}
		if ev.deleted = del; del {
			if _, err := tx.Exec(ctx, `DELETE FROM `+ev.table+` WHERE id = $1`, ev.id); err != nil {
				return err
			}
		}
		evs = append(evs, ev)
	}
	if rollback {
		w.mu.Lock()
		for _, ev := range evs {
			w.rolled[ev.id] = true
		}
		w.mu.Unlock()
		return tx.Rollback(ctx)
	}
	if err := tx.Commit(ctx); err != nil {
		w.mu.Lock()
		for _, ev := range evs {
			w.unknown[ev.id] = true
		}
		w.mu.Unlock()
		return err
	}
	w.mu.Lock()
	w.committed = append(w.committed, evs...)
	w.mu.Unlock()
	return nil
}

// run writes txs transactions from each of workers goroutines: 1 to 5 events
// each, every tenth rolled back, half of them insert-and-delete.
func (w *writer) run(ctx context.Context, workers, txs int) error {
	errc := make(chan error, workers)
	for i := range workers {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			for range txs {
				time.Sleep(w.pace)
				if err := w.tx(ctx, rng, 1+rng.IntN(5), rng.IntN(2) == 0, rng.IntN(10) == 0); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	var first error
	for range workers {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// runUntil writes from workers goroutines until ctx ends, retrying
// transactions that fail while PostgreSQL restarts.
func (w *writer) runUntil(ctx context.Context, workers int) error {
	errc := make(chan error, workers)
	for i := range workers {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			for ctx.Err() == nil {
				time.Sleep(w.pace)
				if err := w.tx(ctx, rng, 1+rng.IntN(5), rng.IntN(2) == 0, rng.IntN(10) == 0); err != nil && ctx.Err() == nil {
					time.Sleep(100 * time.Millisecond) // the server restarts: a failed transaction is not committed
				}
			}
			errc <- nil
		}()
	}
	for range workers {
		<-errc
	}
	return nil
}

func (w *writer) events() []event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]event(nil), w.committed...)
}

func topics(types []string) []string {
	var out []string
	for _, t := range types {
		out = append(out, "outbox.event."+t)
	}
	return out
}

// readTopics reads the topics until done holds (nil: for the whole timeout).
func (e *env) readTopics(names []string, done func([]*kgo.Record) bool, timeout time.Duration) []*kgo.Record {
	e.t.Helper()
	recs, err := harness.ReadAll(context.Background(), e.kafka.ListenAddrs(), names, done, timeout)
	if err != nil {
		e.t.Fatal(err)
	}
	return recs
}

// readAllOf reads until every event the writer committed has arrived at least
// once, or timeout.
func (e *env) readAllOf(w *writer, timeout time.Duration) []*kgo.Record {
	e.t.Helper()
	return e.readAllOfWith(w, timeout)
}

// readAllOfWith is readAllOf with client options, such as read_committed.
func (e *env) readAllOfWith(w *writer, timeout time.Duration, opts ...kgo.Opt) []*kgo.Record {
	e.t.Helper()
	want := map[string]bool{}
	for _, ev := range w.events() {
		want[ev.id] = true
	}
	recs, err := harness.ReadAll(context.Background(), e.kafka.ListenAddrs(), allTopics, func(recs []*kgo.Record) bool {
		got := map[string]bool{}
		for _, r := range recs {
			if id := header(r, "id"); want[id] {
				got[id] = true
			}
		}
		return len(got) == len(want)
	}, timeout, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return recs
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// verify checks the at-least-once and ordering guarantees: every committed
// event arrived with the right topic, key, value and id header; nothing rolled
// back arrived; per aggregate, first deliveries are in sequence order.
// It returns the number of duplicate deliveries.
func (w *writer) verify(t *testing.T, recs []*kgo.Record) int {
	t.Helper()
	want := map[string]event{}
	for _, ev := range w.events() {
		want[ev.id] = ev
	}
	seen := map[string]int{}
	deliveries := map[string]int{} // every id, ambiguous commits included
	lastSeq := map[string]int64{}
	partOf := map[string]int32{}
	for _, r := range recs {
		id := header(r, "id")
		deliveries[id]++
		if w.rolled[id] {
			t.Fatalf("event %s from a rolled-back transaction reached Kafka", id)
		}
		ev, ok := want[id]
		if !ok && w.unknown[id] {
			continue // its transaction's COMMIT outcome was lost with the server
		}
		if !ok {
			t.Fatalf("unexpected record id=%q topic=%s key=%s value=%s", id, r.Topic, r.Key, r.Value)
		}
		seen[id]++
		if seen[id] > 1 {
			continue
		}
		if r.Topic != "outbox.event."+ev.atype || string(r.Key) != ev.aid || string(r.Value) != ev.payload {
			t.Fatalf("event %s arrived as topic=%s key=%s value=%s; want topic=outbox.event.%s key=%s value=%s", id, r.Topic, r.Key, r.Value, ev.atype, ev.aid, ev.payload)
		}
		if p, ok := partOf[ev.aid]; ok && p != r.Partition {
			t.Fatalf("aggregate %s is on partitions %d and %d", ev.aid, p, r.Partition)
		}
		partOf[ev.aid] = r.Partition
		if ev.seq <= lastSeq[ev.aid] {
			t.Fatalf("aggregate %s: event seq %d first delivered after seq %d (commit order broken)", ev.aid, ev.seq, lastSeq[ev.aid])
		}
		lastSeq[ev.aid] = ev.seq
	}
	missing := 0
	for id := range want {
		if seen[id] == 0 {
			missing++
		}
	}
	if missing > 0 {
		var ids []string
		for id := range want {
			if seen[id] == 0 && len(ids) < 5 {
				ids = append(ids, id)
			}
		}
		t.Fatalf("%d of %d committed events never reached Kafka; some: %s", missing, len(want), w.e.describe(ids))
	}
	dups := 0
	for _, n := range deliveries {
		dups += n - 1
	}
	return dups
}

var commitRow = regexp.MustCompile(`^COMMIT`)
var insertID = regexp.MustCompile(`^table \w+\.outbox: INSERT: id\[uuid\]:'([0-9a-f-]+)'`)

// committedThrough returns the ids of outbox events in transactions whose
// commit ends at or before lsn, read from the independent test_decoding slot
// "audit" (whose COMMIT rows carry the transaction's end LSN).
func (e *env) committedThrough(lsn uint64) []string {
	e.t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT lsn::text, data FROM pg_logical_slot_peek_changes('audit', NULL, NULL)`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out, pending []string
	for rows.Next() {
		var l, data string
		if err := rows.Scan(&l, &data); err != nil {
			e.t.Fatal(err)
		}
		if m := insertID.FindStringSubmatch(data); m != nil {
			pending = append(pending, m[1])
			continue
		}
		if commitRow.MatchString(data) {
			var hi, lo uint64
			fmt.Sscanf(l, "%X/%X", &hi, &lo)
			if hi<<32|lo <= lsn {
				out = append(out, pending...)
			}
			pending = nil
		}
		if strings.HasPrefix(data, "BEGIN") {
			pending = nil
		}
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func exec1(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// describe locates events in the audit slot: their transaction's end LSN.
func (e *env) describe(ids []string) string {
	rows, err := e.pool.Query(context.Background(), `SELECT lsn::text, data FROM pg_logical_slot_peek_changes('audit', NULL, NULL)`)
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var out []string
	var pending []string
	for rows.Next() {
		var l, data string
		_ = rows.Scan(&l, &data)
		if m := insertID.FindStringSubmatch(data); m != nil && want[m[1]] {
			pending = append(pending, m[1]+"@"+l)
		}
		if strings.HasPrefix(data, "COMMIT") {
			for _, p := range pending {
				out = append(out, p+" commit-end "+l)
			}
			pending = nil
		}
	}
	return strings.Join(out, "; ")
}

func randFor(t *testing.T) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(len(t.Name())), uint64(time.Now().UnixNano())))
}

// checkRaces fails the test for a data race report whose racing accesses
// involve outboxrelay's code. A race wholly inside sarama's transaction
// manager (IBM/sarama#2913: lastError read under one lock, written under
// another, on the transactional error path) is only logged.
func checkRaces(t *testing.T, logs string) {
	t.Helper()
	for _, report := range strings.Split(logs, "WARNING: DATA RACE")[1:] {
		accesses, _, _ := strings.Cut(report, "created at:")
		if strings.Contains(accesses, "github.com/outboxrelay/outboxrelay/") {
			t.Errorf("data race in outboxrelay:%s", report)
			continue
		}
		t.Logf("a data race inside a dependency was reported (sarama's transaction manager: IBM/sarama#2913)")
	}
}

// serverVersion is the server's server_version_num.
func (e *env) serverVersion(t *testing.T) int {
	t.Helper()
	var v int
	if err := e.pool.QueryRow(t.Context(), "SELECT current_setting('server_version_num')::int").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}
