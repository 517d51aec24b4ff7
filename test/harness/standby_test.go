package harness

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// connectTo opens a connection to p's postgres database for the test.
func connectTo(t *testing.T, p *Postgres) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), p.URL("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// waitFor polls query on conn until it selects true, for up to 30 seconds.
func waitFor(t *testing.T, conn *pgx.Conn, what, query string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := waitTrue(ctx, conn, query); err != nil {
		t.Fatalf("waiting until %s: %v", what, err)
	}
}

// logOnFailure logs p's server log should the test fail, before p is
// stopped and its directory removed.
func logOnFailure(t *testing.T, p *Postgres) {
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(p.LogFile())
			t.Logf("%s:\n%s", p.LogFile(), log)
		}
	})
}

// startPrimary starts a cluster of the major under test, checking that it
// is the one $OUTBOXRELAY_PG_MAJOR asks for, and returns it with its major.
func startPrimary(t *testing.T) (*Postgres, int) {
	t.Helper()
	primary, err := StartPostgres(t.Context(), PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { primary.Stop() })
	var version int
	if err := connectTo(t, primary).QueryRow(t.Context(), `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if want, _ := requestedMajor(); want != 0 && version/10000 != want {
		t.Fatalf("server version %d; %s asks for %d", version, PGMajorEnv, want)
	}
	t.Logf("PostgreSQL %d", version)
	return primary, version / 10000
}

// A standby made without pg_basebackup streams the primary's writes through
// its slot, refuses writes of its own, and takes over when promoted after
// the primary crashed.
func TestStandbyStreamsAndTakesOverWhenPromoted(t *testing.T) {
	primary, _ := startPrimary(t)
	pconn := connectTo(t, primary)
	mustExec(t, pconn, `CREATE TABLE t (n int)`)
	mustExec(t, pconn, `INSERT INTO t VALUES (1)`)
	standby, err := primary.StartStandby(t.Context(), StandbyOptions{SlotName: "standby"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Stop() })
	var active bool
	if err := pconn.QueryRow(t.Context(), `SELECT active FROM pg_replication_slots WHERE slot_name = 'standby'`).Scan(&active); err != nil || !active {
		t.Errorf("the standby's slot: active %v, %v", active, err)
	}
	mustExec(t, pconn, `INSERT INTO t VALUES (2)`)
	sconn := connectTo(t, standby)
	waitFor(t, sconn, "the standby has the primary's second row", `SELECT count(*) = 2 FROM t`)
	if _, err := sconn.Exec(t.Context(), `INSERT INTO t VALUES (0)`); err == nil {
		t.Fatal("the standby accepted a write before its promotion")
	}

	if err := primary.StopImmediate(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := standby.Promote(t.Context()); err != nil {
		t.Fatal(err)
	}
	promoted := connectTo(t, standby)
	mustExec(t, promoted, `INSERT INTO t VALUES (3)`)
	var rows []int
	if err := promoted.QueryRow(t.Context(), `SELECT array_agg(n ORDER BY n) FROM t WHERE NOT pg_is_in_recovery()`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[0] != 1 || rows[1] != 2 || rows[2] != 3 {
		t.Errorf("the promoted standby has rows %v, want [1 2 3] out of recovery", rows)
	}
}

// On 17 and later, a standby whose primary_conninfo names a database
// synchronizes the primary's failover logical slots, so that a relay can go
// on from the promoted standby.
func TestStandbySyncsFailoverSlots(t *testing.T) {
	primary, major := startPrimary(t)
	if major < 17 {
		t.Skipf("PostgreSQL %d has no failover slots (17+)", major)
	}
	pconn := connectTo(t, primary)
	standby, err := primary.StartStandby(t.Context(), StandbyOptions{SlotName: "standby", Settings: map[string]string{
		"sync_replication_slots": "on", "hot_standby_feedback": "on",
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Stop() })
	logOnFailure(t, standby)
	mustExec(t, pconn, `SELECT pg_create_logical_replication_slot('relay', 'pgoutput', false, false, true)`)
	sconn := connectTo(t, standby)
	// The standby keeps a synchronized copy only once the primary's slot
	// needs no older catalog rows than the standby has: a consumer's
	// progress, past a snapshot of the running transactions, brings that.
	deadline := time.Now().Add(30 * time.Second)
	for synced := false; !synced; {
		if time.Now().After(deadline) {
			t.Fatal("the standby has no synchronized copy of slot relay after 30 s")
		}
		mustExec(t, pconn, `SELECT pg_log_standby_snapshot()`)
		mustExec(t, pconn, `SELECT pg_replication_slot_advance('relay', pg_current_wal_lsn())`)
		time.Sleep(200 * time.Millisecond)
		if err := sconn.QueryRow(t.Context(), `SELECT EXISTS (SELECT FROM pg_replication_slots
			WHERE slot_name = 'relay' AND synced AND NOT temporary AND failover)`).Scan(&synced); err != nil {
			t.Fatal(err)
		}
	}
}
