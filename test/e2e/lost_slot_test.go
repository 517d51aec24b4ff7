package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
)

// A slot invalidated by max_slot_wal_keep_size is refused with what happened
// and what to do, by run, check and slot list alike.
func TestLostSlot(t *testing.T) {
	pg := newCluster(t, harness.PostgresOptions{Settings: map[string]string{"max_slot_wal_keep_size": "1MB", "max_wal_size": "32MB", "min_wal_size": "32MB"}})
	e := newEnvOn(t, pg)
	exec1(t, e.pool, `CREATE PUBLICATION outboxrelay FOR TABLE outbox WITH (publish = 'insert')`)
	exec1(t, e.pool, `SELECT pg_create_logical_replication_slot('outboxrelay', 'pgoutput')`)
	exec1(t, e.pool, `SELECT pg_drop_replication_slot('audit')`) // it would be lost too; not needed here
	waitUntil(t, 30*time.Second, "the slot to be lost", func() bool {
		for range 3 {
			exec1(t, e.pool, `INSERT INTO other (note) SELECT repeat('x', 1000) FROM generate_series(1, 1000)`)
			exec1(t, e.pool, `SELECT pg_switch_wal()`)
		}
		exec1(t, e.pool, `CHECKPOINT`)
		var status string
		_ = e.pool.QueryRow(context.Background(), `SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'outboxrelay'`).Scan(&status)
		return status == "lost"
	})

	code, out := runBinary(t, nil, e.args()...)
	if code != 3 || !strings.Contains(out, `slot "outboxrelay" is lost`) || !strings.Contains(out, "pg_drop_replication_slot") {
		t.Fatalf("run on a lost slot: exit %d:\n%s", code, out)
	}
	if code, out := e.admin(t, "check"); code != 1 || !strings.Contains(out, "FAIL  slot") || !strings.Contains(out, "is lost") {
		t.Fatalf("check on a lost slot: exit %d:\n%s", code, out)
	}
	if code, out := e.admin(t, "slot", "list"); code != 0 || !strings.Contains(out, "LOST") {
		t.Fatalf("slot list with a lost slot: exit %d:\n%s", code, out)
	}
}
