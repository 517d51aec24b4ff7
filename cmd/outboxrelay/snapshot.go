package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/outboxrelay/outboxrelay/cmd/internal/pipeline"
	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/sink"
)

// An initial snapshot (--snapshot initial) is read by the session that
// creates the slot. Whether it completed is recorded in Kafka, in the
// checkpoint topic under snapshotKey, beside the origin record: "pending" is
// written before the slot is created, "complete" once Kafka has
// acknowledged every row. A relay that finds the slot and a pending record
// was interrupted during the snapshot and reads the rows again; one that
// finds the slot and no record (it was created without --snapshot initial)
// reads none, like Debezium with stored offsets.

// snapshotKey is the checkpoint topic's key of a slot's snapshot record.
func snapshotKey(slot string) string { return "snapshot/" + slot }

// snapshotRecord is the snapshot record's value.
type snapshotRecord struct {
	Slot   string   `json:"slot"`
	Tables []string `json:"tables"`
	State  string   `json:"state"` // pending or complete
	// Visible and ConsistentPoint describe the snapshot the slot exported,
	// recorded before its first row is sent: a resumed snapshot reads the
	// rows it saw.
	Visible         string    `json:"snapshot,omitempty"`
	ConsistentPoint string    `json:"consistent_point,omitempty"`
	Rows            int64     `json:"rows,omitempty"`
	RecordedAt      time.Time `json:"recorded_at"`
}

const (
	snapshotPending  = "pending"
	snapshotComplete = "complete"
)

// planSnapshot decides, before Setup, whether sessions read an initial
// snapshot: always when the slot is missing (the pending record is written
// first), and when it exists only if a pending record says an earlier
// snapshot did not complete.
func (r *relay) planSnapshot(ctx context.Context, slotExists bool) error {
	if r.opts.snapshot != "initial" {
		return nil
	}
	if !slotExists {
		r.opts.repl.DeferSlot = true
		r.snapshotDue.Store(true)
		return r.writeSnapshotRecord(ctx, snapshotRecord{State: snapshotPending})
	}
	raw, found, err := readUntil(ctx, r, "whether the initial snapshot of the existing slot completed", func() ([]byte, bool, error) {
		return sink.ReadRecord(ctx, r.opts.kafka, snapshotKey(r.opts.repl.Slot))
	})
	if err != nil || !found {
		return err
	}
	var rec snapshotRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return fmt.Errorf("reading the snapshot record of slot %s in %s: %w", r.opts.repl.Slot, r.opts.kafka.CheckpointTopic, err)
	}
	if rec.State != snapshotComplete {
		r.log.Warn("the initial snapshot of this slot did not complete: reading it again", "slot", r.opts.repl.Slot, "begun", rec.RecordedAt.Format(time.RFC3339))
		r.snapshotDue.Store(true)
		r.snapshotVisible = rec.Visible
	}
	return nil
}

// snapshotConfig is the session's snapshot configuration, nil when no
// snapshot is due.
func (r *relay) snapshotConfig() *pipeline.Snapshot {
	if !r.snapshotDue.Load() {
		return nil
	}
	begun := func(ctx context.Context, visible string, at uint64) error {
		r.snapshotVisible = visible
		return r.writeSnapshotRecord(ctx, snapshotRecord{State: snapshotPending, Visible: visible, ConsistentPoint: replication.FormatLSN(at)})
	}
	return &pipeline.Snapshot{OrderBy: r.opts.snapshotOrderBy, Visible: r.snapshotVisible, Begun: begun, Done: func(ctx context.Context, rows int64) error {
		if err := r.writeSnapshotRecord(ctx, snapshotRecord{State: snapshotComplete, Rows: rows}); err != nil {
			return err
		}
		r.snapshotDue.Store(false)
		return nil
	}}
}

// writeSnapshotRecord writes the slot's snapshot record, waiting while
// Kafka cannot take it.
func (r *relay) writeSnapshotRecord(ctx context.Context, rec snapshotRecord) error {
	rec.Slot, rec.Tables, rec.RecordedAt = r.opts.repl.Slot, r.opts.repl.Tables, time.Now().UTC()
	value, _ := json.Marshal(rec)
	_, _, err := readUntil(ctx, r, "recording the initial snapshot's state", func() ([]byte, bool, error) {
		return nil, false, sink.WriteRecord(ctx, r.opts.kafka, snapshotKey(r.opts.repl.Slot), value)
	})
	if err != nil {
		return fmt.Errorf("recording that the initial snapshot is %s in %s: %w", rec.State, r.opts.kafka.CheckpointTopic, err)
	}
	return nil
}

// readUntil runs fn until Kafka answers it: a permanent error (ACLs, a
// topic that cannot be created) is returned, a passing one is retried with
// backoff until ctx ends.
func readUntil(ctx context.Context, r *relay, what string, fn func() ([]byte, bool, error)) ([]byte, bool, error) {
	for delay := 500 * time.Millisecond; ; delay = min(delay*2, r.opts.backoffMax) {
		raw, found, err := fn()
		if err == nil || sink.IsPermanent(err) {
			return raw, found, err
		}
		r.log.Warn("waiting for Kafka: "+what, "topic", r.opts.kafka.CheckpointTopic, "err", err.Error(), "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return nil, false, errors.Join(ctx.Err(), err)
		case <-time.After(delay):
		}
	}
}

// snapshotting checks --snapshot and what goes with it.
func (o *runOptions) snapshotting() []error {
	switch o.snapshot {
	case "never", "":
		if o.snapshotOrderBy != "" {
			return []error{errors.New("snapshot-order-by is set but snapshot is never; use --snapshot=initial")}
		}
	case "initial":
		if o.delivery == "exactly-once" {
			return []error{errors.New("snapshot initial is at-least-once: it cannot be combined with delivery exactly-once; " +
				"run the snapshot at least once first (or outboxrelay replay), then switch delivery")}
		}
	default:
		return []error{fmt.Errorf("snapshot %q: want initial or never", o.snapshot)}
	}
	return nil
}
