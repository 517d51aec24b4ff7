package replication

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// An initial snapshot reads the rows already in the outbox tables before
// streaming. When the relay creates its slot, it creates it on the
// replication connection with an exported snapshot: that snapshot sees
// exactly the transactions committed before the slot's consistent point,
// where streaming begins, so rows read in it and inserts streamed from the
// slot neither overlap nor leave a gap. The exported snapshot lives until
// the connection runs its next command, so it is imported (OpenRows with
// RowsQuery.Snapshot) before streaming starts on that same connection; the
// importing transaction keeps it for as long as the rows take to read.

// OpenForSnapshot is Open for a relay that reads the tables' rows first.
// When the slot is missing it creates it with an exported snapshot and calls
// imp with the snapshot's name before streaming starts; imp must import it
// (and keep its transaction open) before it returns. exported reports
// whether that happened: when the slot existed already (or another relay
// created it meanwhile), imp is not called and no snapshot matches the
// slot's position.
func OpenForSnapshot(ctx context.Context, cfg Config, log *slog.Logger, imp func(ctx context.Context, snapshot string) error) (s *Stream, exported bool, err error) {
	conn, err := connectReplication(ctx, cfg)
	if err != nil {
		return nil, false, err
	}
	exported, err = createExported(ctx, conn, cfg, log, imp)
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, false, err
	}
	s, err = start(ctx, conn, cfg, log)
	return s, exported, err
}

// createExported creates the slot with an exported snapshot unless it
// exists, and hands the snapshot to imp.
func createExported(ctx context.Context, conn *pgconn.PgConn, cfg Config, log *slog.Logger, imp func(context.Context, string) error) (bool, error) {
	res, err := conn.Exec(ctx, "SELECT 1 FROM pg_replication_slots WHERE slot_name = "+quoteLiteral(cfg.Slot)).ReadAll()
	if err != nil {
		return false, fmt.Errorf("looking for slot %q: %w", cfg.Slot, err)
	}
	if len(res) > 0 && len(res[0].Rows) > 0 {
		return false, nil
	}
	created, err := createSlotExporting(ctx, conn, cfg)
	switch {
	case isCode(err, "42710"): // duplicate_object: another relay created it meanwhile
		return false, nil
	case err != nil:
		return false, fmt.Errorf("creating replication slot %q with an exported snapshot: %w", cfg.Slot, err)
	}
	log.Info("created replication slot with an exported snapshot", "slot", cfg.Slot, "plugin", "pgoutput",
		"consistent_point", created.ConsistentPoint, "snapshot", created.SnapshotName, "failover", cfg.SlotFailover)
	if err := imp(ctx, created.SnapshotName); err != nil {
		return false, fmt.Errorf("importing the snapshot of slot %q: %w", cfg.Slot, err)
	}
	return true, nil
}

// createSlotExporting runs CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT; a
// failover slot (PostgreSQL 17+) takes the options syntax.
func createSlotExporting(ctx context.Context, conn *pgconn.PgConn, cfg Config) (pglogrepl.CreateReplicationSlotResult, error) {
	if cfg.SlotFailover {
		sql := fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)", quoteIdent(cfg.Slot))
		return pglogrepl.ParseCreateReplicationSlot(conn.Exec(ctx, sql))
	}
	return pglogrepl.CreateReplicationSlot(ctx, conn, cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
}

// HeldSnapshot keeps one snapshot open, in a REPEATABLE READ READ ONLY
// transaction of its own, and exports it again under Name, which any number
// of OpenRows (RowsQuery.Snapshot) may import while it is held: every
// table is read as of the same moment over two connections at a time,
// however many tables there are.
type HeldSnapshot struct {
	Name string
	// Visible describes the snapshot as pg_current_snapshot() prints it
	// (xmin:xmax:xip,...): VisibleIn turns it into a condition that selects,
	// in any later snapshot, the rows this one sees.
	Visible string
	conn    *pgconn.PgConn
}

// HoldSnapshot imports the exported snapshot imported, or takes a fresh
// one when imported is empty, and holds it until Close.
func HoldSnapshot(ctx context.Context, connString, imported string) (*HeldSnapshot, error) {
	conn, err := connectRows(ctx, connString)
	if err != nil {
		return nil, err
	}
	h := &HeldSnapshot{conn: conn.PgConn()}
	sql := "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
	if imported != "" {
		sql += "; SET TRANSACTION SNAPSHOT " + quoteLiteral(imported)
	}
	res, err := h.conn.Exec(ctx, sql+"; SELECT pg_export_snapshot(), pg_current_snapshot()::text").ReadAll()
	if err == nil && (len(res) == 0 || len(res[len(res)-1].Rows) != 1) {
		err = fmt.Errorf("pg_export_snapshot returned no row")
	}
	if err != nil {
		h.conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("holding the snapshot %q: %w", imported, err)
	}
	row := res[len(res)-1].Rows[0]
	h.Name, h.Visible = string(row[0]), string(row[1])
	return h, nil
}

// Close ends the transaction that holds the snapshot.
func (h *HeldSnapshot) Close(ctx context.Context) error { return h.conn.Close(ctx) }

// VisibleIn returns a condition on a table's rows (RowsQuery.Where and
// Args) that holds for the rows whose inserting transaction the snapshot
// visible (HeldSnapshot.Visible) sees as committed. Read in a later
// snapshot, these are the rows the earlier one held that are still there:
// an interrupted initial snapshot resumes with exactly the rows the slot's
// exported snapshot saw, none committed after the slot's consistent point
// (the stream delivers those, in commit order).
//
// A row's xmin is a 32-bit transaction id; it is widened to the xid8 with
// the same low 32 bits that is at most the reading transaction's own xmax
// (every committed xmin is below it), which is exact for every transaction
// less than 2^32 transactions older than the read, across wraparounds of
// the 32-bit counter. A row updated since keeps its place only if the
// update's transaction is visible to the earlier snapshot, which it is not:
// such a row is left out (outbox rows are written once; see --on-update).
func VisibleIn(visible string) (where string, args []any) {
	return `pg_visible_in_snapshot((pg_snapshot_xmax(pg_current_snapshot())::text::bigint
		- ((pg_snapshot_xmax(pg_current_snapshot())::text::bigint - xmin::text::bigint) & 4294967295))::text::xid8, $1::pg_snapshot)`, []any{visible}
}
