package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/replication"
)

// Snapshot configures an initial snapshot: the rows already in the outbox
// tables are produced, exactly like inserts, before the first streamed
// event. When the session creates the slot, the rows are read in the
// snapshot the slot exported at its consistent point, so the hand-off
// neither loses nor repeats a row. When the slot exists (a snapshot that
// was interrupted), they are read again in a fresh snapshot, limited to the
// rows the exported snapshot saw (Visible): those sent before the
// interruption arrive twice (at least once), the rest once, in order.
type Snapshot struct {
	// Begun is called, before any row is read, with the description of
	// the snapshot the slot exported and the slot's consistent point: the
	// caller records them for Resume. Until it returns nil no row is read.
	Begun func(ctx context.Context, visible string, consistentPoint uint64) error
	// Resume is called when the slot existed, once the session holds it,
	// with the slot's confirmed position: it says whether a snapshot is
	// still due (one was begun and did not complete) and the description
	// Begun recorded (empty when none was: every row of the fresh snapshot
	// is then read, and rows committed since the slot's position arrive
	// twice, the second time in commit order).
	Resume func(ctx context.Context, slotPosition uint64) (visible string, due bool, err error)
	// OrderBy orders each table's rows (replication.RowsQuery.OrderBy).
	OrderBy string
	// Done is called once Kafka has acknowledged every row, with their
	// number: the caller records that the snapshot is complete. Until it
	// returns nil, a new session reads the rows again.
	Done func(ctx context.Context, rows int64) error
}

// SnapshotProgress is an initial snapshot's state, for logs and metrics.
type SnapshotProgress struct {
	Table string // the table being read
	// Rows is how many rows of Table the snapshot holds, Read how many of
	// them were handed to Kafka.
	Rows, Read int64
	// Sent and Acked count the rows of every table handed to Kafka and
	// acknowledged by it.
	Sent, Acked int64
	Done        bool
}

// snapshotReader feeds the rows of one snapshot through the handler as the
// tracker's first transaction.
type snapshotReader struct {
	cfg      Config
	held     *replication.HeldSnapshot
	exported bool   // held is the snapshot the slot exported
	visible  string // resuming: the exported snapshot's description
	h        *handler
	tracker  *checkpoint.Tracker
	end      uint64 // the slot's position where streaming starts
	obs      Observer
	log      *slog.Logger
	sent     atomic.Int64
	acked    atomic.Int64
}

// openSnapshot opens the stream. When it creates the slot it holds the
// snapshot the slot exported, and records it; else, once the stream holds
// the slot (so a relay waiting for the slot never reads rows), it asks
// whether a snapshot is still due and takes a fresh one if so. No snapshot
// due: held is nil.
func openSnapshot(ctx context.Context, cfg Config, log *slog.Logger) (_ *replication.Stream, _ *snapshotReader, err error) {
	connString := cfg.Replication.ConnString
	var held *replication.HeldSnapshot
	stream, exported, err := replication.OpenForSnapshot(ctx, cfg.Replication, log, func(ctx context.Context, name string) (err error) {
		held, err = replication.HoldSnapshot(ctx, connString, name)
		return err
	})
	if err != nil {
		if held != nil {
			held.Close(context.WithoutCancel(ctx))
		}
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			if held != nil {
				held.Close(context.WithoutCancel(ctx))
			}
			stream.Close(context.WithoutCancel(ctx))
		}
	}()
	snap := &snapshotReader{cfg: cfg, exported: exported, end: stream.StartLSN(), log: log}
	if exported {
		if err := cfg.Snapshot.Begun(ctx, held.Visible, stream.StartLSN()); err != nil {
			return nil, nil, fmt.Errorf("recording the initial snapshot: %w", err)
		}
		snap.held = held
		return stream, snap, nil
	}
	visible, due, err := cfg.Snapshot.Resume(ctx, stream.StartLSN())
	if err != nil || !due {
		return stream, nil, err
	}
	resuming(cfg, visible, log)
	if held, err = replication.HoldSnapshot(ctx, connString, ""); err != nil {
		return nil, nil, err
	}
	snap.held, snap.visible = held, visible
	return stream, snap, nil
}

// resuming says what reading an interrupted snapshot again delivers twice.
func resuming(cfg Config, visible string, log *slog.Logger) {
	if visible != "" {
		log.Warn("resuming an interrupted initial snapshot: its rows are read again, limited to those the slot's snapshot saw; "+
			"rows sent before the interruption are delivered again (at least once)", "slot", cfg.Replication.Slot)
		return
	}
	log.Warn("resuming an initial snapshot interrupted before it was recorded: every row is read again in a fresh snapshot; "+
		"rows committed since the slot's position are delivered by it and again by the stream (at least once)", "slot", cfg.Replication.Slot)
}

// run reads every table's rows until read ends (a stop request), ends the
// snapshot's transaction at the stream's start, waits for Kafka's
// acknowledgements until acks ends and calls Done. A snapshot stopped
// before its last row ends its transaction all the same (it confirms
// nothing beyond where the slot was, and lets the stream drain what was
// sent) and is read again by the next session; one that failed keeps it
// open, so nothing streamed is confirmed while the session ends.
func (s *snapshotReader) run(read, acks context.Context) error {
	began := time.Now()
	err := s.read(read)
	s.held.Close(context.WithoutCancel(acks))
	if err != nil && read.Err() == nil {
		return err
	}
	if endErr := s.tracker.EndSnapshot(s.end); err == nil {
		err = endErr
	}
	if err != nil {
		return err
	}
	if err := s.waitAcked(acks); err != nil {
		return err
	}
	if err := s.cfg.Snapshot.Done(acks, s.sent.Load()); err != nil {
		return fmt.Errorf("recording that the initial snapshot is complete: %w", err)
	}
	s.obs.Snapshot(SnapshotProgress{Sent: s.sent.Load(), Acked: s.acked.Load(), Done: true})
	s.log.Info("initial snapshot complete", "rows", s.sent.Load(), "tables", len(s.cfg.Replication.Tables), "took", time.Since(began).Round(time.Millisecond).String())
	return nil
}

// read reads every table's rows.
func (s *snapshotReader) read(ctx context.Context) error {
	for i, table := range s.cfg.Replication.Tables {
		if err := s.table(ctx, i, table); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reading the initial snapshot of %s: %w", table, err)
		}
	}
	return nil
}

// table reads one table's rows.
func (s *snapshotReader) table(ctx context.Context, i int, table string) error {
	cols, err := replication.TableColumns(ctx, s.cfg.Replication.ConnString, table)
	if err != nil {
		return err
	}
	if err := s.h.Relation(i, cols); err != nil {
		return err
	}
	names := make([]string, len(cols))
	for j, c := range cols {
		names[j] = c.Name
	}
	q := replication.RowsQuery{Table: table, Columns: names, Snapshot: s.held.Name, OrderBy: s.cfg.Snapshot.OrderBy}
	if s.visible != "" {
		q.Where, q.Args = replication.VisibleIn(s.visible)
	}
	rows, err := replication.OpenRows(ctx, s.cfg.Replication.ConnString, q)
	var qe *replication.QueryError
	if errors.As(err, &qe) {
		return Permanent(fmt.Errorf("%w (the table's definition, or SnapshotOrderBy)", err))
	}
	if err != nil {
		return err
	}
	defer rows.Close(context.WithoutCancel(ctx))
	p := SnapshotProgress{Table: table}
	if p.Rows, err = rows.Count(ctx); err != nil {
		return err
	}
	s.log.Info("initial snapshot: reading", "table", table, "rows", p.Rows)
	last := time.Now()
	err = rows.Each(ctx, func(values [][]byte) error {
		s.tracker.WaitRoom(ctx.Done())
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.h.snapshotRow(i, values); err != nil {
			return err
		}
		p.Read++
		s.sent.Add(1)
		if time.Since(last) >= snapshotLogEvery {
			last = time.Now()
			s.progress(p, true)
		}
		return nil
	})
	s.progress(p, false)
	return err
}

// snapshotLogEvery is how often a long snapshot logs its progress.
const snapshotLogEvery = 5 * time.Second

func (s *snapshotReader) progress(p SnapshotProgress, log bool) {
	p.Sent, p.Acked = s.sent.Load(), s.acked.Load()
	s.obs.Snapshot(p)
	if log {
		s.log.Info("initial snapshot: progress", "table", p.Table, "read", p.Read, "of", p.Rows, "sent", p.Sent, "acknowledged", p.Acked)
	}
}

// waitAcked waits until Kafka has acknowledged every row sent.
func (s *snapshotReader) waitAcked(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for s.acked.Load() < s.sent.Load() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// snapshotRow routes one row read from the snapshot and hands it to the
// producer, exactly as an insert of it would be; values are copied, for
// the reader reuses them.
func (h *handler) snapshotRow(table int, values [][]byte) error {
	now := time.Now()
	return h.route(replication.Insert{Table: table, Values: replication.CloneValues(values), ReceivedAt: now, CommitTime: now, SentAt: now}, true)
}
