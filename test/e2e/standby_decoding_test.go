package e2e

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/outboxrelay/outboxrelay/test/harness"
)

// The relay decodes on a hot standby (PostgreSQL 16+): check explains what
// it needs, the relay creates its slot there on its first start and streams
// from it on every restart, and when the standby is promoted (its primary
// killed under a steady write load) the relay goes on from the same slot:
// every event the promoted server holds is delivered, in per-key order of
// first delivery, and in exactly-once mode without a duplicate.
func TestDecodingOnStandby(t *testing.T) {
	for _, mode := range deliveryModes() {
		t.Run(mode, func(t *testing.T) { decodingOnStandby(t, mode) })
	}
}

func decodingOnStandby(t *testing.T, mode string) {
	ctx := t.Context()
	pg, e := newPrimaryEnv(t)
	exec1(t, e.pool, `CREATE TABLE ledger (id uuid PRIMARY KEY, aid text NOT NULL, n int NOT NULL)`)
	standby, err := pg.StartStandby(ctx, harness.StandbyOptions{SlotName: "standby1", Settings: map[string]string{"hot_standby_feedback": "on"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Stop() })
	db := dbName(e.url)
	standbyURL := standby.URL("postgres", db)
	if version := e.serverVersion(t); version < 160000 {
		code, out := runBinary(t, nil, "check", "--pg-url", standbyURL)
		wantLines(t, "check on a standby of PostgreSQL "+fmt.Sprint(version/10000), code, 1, out,
			"FAIL\tstandby\tthis server is a standby, and logical decoding on a standby needs PostgreSQL 16 or newer")
		t.Skipf("PostgreSQL %d cannot decode on a standby (16+); run with OUTBOXRELAY_PG_MAJOR=16, 17 or 18", version/10000)
	}
	sconn, err := pgx.Connect(ctx, standbyURL)
	if err != nil {
		t.Fatal(err)
	}
	defer sconn.Close(context.WithoutCancel(ctx))

	code, out := runBinary(t, nil, "check", "--pg-url", standbyURL)
	wantLines(t, "check on a standby without the publication", code, 1, out,
		"FAIL\tpublication\tpublication \"outboxrelay\" does not exist, and this server is a standby, which cannot create it",
		"PASS\thot_standby_feedback\ton", "PASS\tprimary_slot_name\tstandby1")
	if code, out := e.admin(t, "publication", "create"); code != 0 {
		t.Fatalf("publication create on the primary: %d %s", code, out)
	}
	waitUntil(t, 30*time.Second, "the publication on the standby", func() bool {
		var n int
		return sconn.QueryRow(ctx, `SELECT count(*) FROM pg_publication WHERE pubname = 'outboxrelay'`).Scan(&n) == nil && n == 1
	})
	code, out = runBinary(t, nil, "check", "--pg-url", standbyURL)
	wantLines(t, "check on a complete standby", code, 0, out, "PASS\tstandby\tthis server is a hot standby",
		"outboxrelay run creates it on this standby", "pg_log_standby_snapshot()")
	t.Logf("check on a standby:\n%s", out)

	// First start: the slot is created on the standby, which waits for a
	// snapshot of the primary's running transactions.
	both := fmt.Sprintf("postgres://postgres@%s:%d,%s:%d/%s?target_session_attrs=read-write&connect_timeout=2", pg.Host, pg.Port, standby.Host, standby.Port, db)
	p := e.start("--pg-url", standbyURL, "--delivery", mode)
	p.waitLog(t, "creating the replication slot on a standby", 30*time.Second)
	waitStandbyStreaming(t, e, sconn)
	load := startLedgerLoad(t, both) // events are captured from the slot's creation on
	time.Sleep(time.Second)
	// Every restart streams from the standby's slot.
	p.signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("clean stop: exit code %d:\n%s", code, p.logs.String())
	}
	p = e.start("--pg-url", standbyURL, "--delivery", mode)
	waitStandbyStreaming(t, e, sconn)
	time.Sleep(2 * time.Second)

	died, promoted, written := failOver(t, pg, standby, load)
	held := ledgerOf(t, sconn)
	recs := readLedgerHeld(t, e, held, mode)
	if dups := checkFailoverDelivery(t, held, recs, load.committedAfter(promoted), died, p); mode == "exactly-once" && dups > 0 {
		t.Errorf("%d duplicates read with read_committed in exactly-once mode; relay logs:\n%s", dups, p.logs.String())
	}
	t.Logf("events written (commit acknowledged): %d; held by the promoted standby: %d; records read: %d; promoted %v after the death",
		written, len(held), len(recs), promoted.Sub(died).Round(time.Millisecond))
	// A restart after the promotion resumes from the same slot.
	p.signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("clean stop after the promotion: exit code %d:\n%s", code, p.logs.String())
	}
	p = e.start("--pg-url", standbyURL, "--delivery", mode)
	waitStandbyStreaming(t, e, sconn)
	p.signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("restart after the promotion: exit code %d:\n%s", code, p.logs.String())
	}
	if err := pg.Restart(ctx, "fast"); err != nil { // for the clean-up, which drops its slots
		t.Fatal(err)
	}
	if _, err := sconn.Exec(ctx, `SELECT pg_drop_replication_slot('outboxrelay')`); err != nil {
		t.Fatal(err)
	}
}

// waitStandbyStreaming waits until a relay streams from its slot on the
// standby, logging snapshots of the running transactions on the primary so
// that creating the slot there need not wait for the next one.
func waitStandbyStreaming(t *testing.T, e *env, sconn *pgx.Conn) {
	t.Helper()
	waitUntil(t, 60*time.Second, "the relay streaming from the standby", func() bool {
		_, _ = e.pool.Exec(t.Context(), `SELECT pg_log_standby_snapshot()`) // fails once the primary is gone
		var streaming bool
		err := sconn.QueryRow(t.Context(), harness.SlotStreamingSQL, "outboxrelay").Scan(&streaming)
		return err == nil && streaming
	})
}
