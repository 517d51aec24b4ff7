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

// planSnapshot runs before Setup. When the slot is missing, the session
// creates it with an exported snapshot (DeferSlot), and the pending record
// is written first, so that a relay killed at any later moment finds it.
// Whether a snapshot is due on an existing slot is decided by each session
// once it holds the slot (resumeSnapshot): a standby that waited while
// another relay read the snapshot reads nothing.
func (r *relay) planSnapshot(ctx context.Context, slotExists bool) error {
	if r.opts.snapshot != "initial" {
		return nil
	}
	r.snapshotDue.Store(true)
	if slotExists {
		return nil
	}
	r.opts.repl.DeferSlot = true
	return r.writeSnapshotRecord(ctx, snapshotRecord{State: snapshotPending})
}

// snapshotConfig is the session's snapshot configuration, nil once no
// snapshot can be due.
func (r *relay) snapshotConfig() *pipeline.Snapshot {
	if !r.snapshotDue.Load() {
		return nil
	}
	begun := func(ctx context.Context, visible string, at uint64) error {
		return r.writeSnapshotRecord(ctx, snapshotRecord{State: snapshotPending, Visible: visible, ConsistentPoint: replication.FormatLSN(at)})
	}
	done := func(ctx context.Context, rows int64) error {
		if err := r.writeSnapshotRecord(ctx, snapshotRecord{State: snapshotComplete, Rows: rows}); err != nil {
			return err
		}
		r.snapshotDue.Store(false)
		return nil
	}
	return &pipeline.Snapshot{OrderBy: r.opts.snapshotOrderBy, Begun: begun, Resume: r.resumeSnapshot, Done: done}
}

// resumeSnapshot reads the slot's snapshot record once the session holds
// the slot: a snapshot is due only when one was begun and did not
// complete. A slot confirmed beyond the recorded consistent point proves
// the snapshot complete (nothing beyond it is confirmed before every row
// is acknowledged), whatever the record says: the record is corrected.
func (r *relay) resumeSnapshot(ctx context.Context, slotPosition uint64) (string, bool, error) {
	slot := r.opts.repl.Slot
	raw, found, err := sink.ReadRecord(ctx, r.opts.kafka, snapshotKey(slot))
	if err != nil {
		return "", false, fmt.Errorf("reading whether the initial snapshot of slot %s completed: %w", slot, err)
	}
	var rec snapshotRecord
	if found {
		if err := json.Unmarshal(raw, &rec); err != nil {
			return "", false, fmt.Errorf("reading the snapshot record of slot %s in %s: %w", slot, r.opts.kafka.CheckpointTopic, err)
		}
	}
	if !found || rec.State == snapshotComplete {
		r.snapshotDue.Store(false) // a slot made without a snapshot, or one that completed
		return "", false, nil
	}
	if at, err := replication.ParseLSN(rec.ConsistentPoint); err == nil && slotPosition > at {
		r.snapshotDue.Store(false)
		return "", false, r.writeSnapshotRecord(ctx, snapshotRecord{State: snapshotComplete})
	}
	r.log.Warn("the initial snapshot of this slot did not complete: reading it again", "slot", slot, "begun", rec.RecordedAt.Format(time.RFC3339))
	return rec.Visible, true, nil
}

// writeSnapshotRecord writes the slot's snapshot record, waiting while
// Kafka cannot take it.
func (r *relay) writeSnapshotRecord(ctx context.Context, rec snapshotRecord) error {
	rec.Slot, rec.Tables, rec.RecordedAt = r.opts.repl.Slot, r.opts.repl.Tables, time.Now().UTC()
	value, _ := json.Marshal(rec)
	_, _, err := untilKafka(ctx, r, "recording the initial snapshot's state", func() ([]byte, bool, error) {
		return nil, false, sink.WriteRecord(ctx, r.opts.kafka, snapshotKey(r.opts.repl.Slot), value)
	})
	if err != nil {
		return fmt.Errorf("recording that the initial snapshot is %s in %s: %w", rec.State, r.opts.kafka.CheckpointTopic, err)
	}
	return nil
}

// untilKafka runs fn until Kafka answers it: a permanent error (ACLs, a
// topic that cannot be created) is returned, a passing one is retried with
// backoff until ctx ends.
func untilKafka(ctx context.Context, r *relay, what string, fn func() ([]byte, bool, error)) ([]byte, bool, error) {
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
