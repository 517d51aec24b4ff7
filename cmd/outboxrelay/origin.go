package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/sink"
)

// A relay that has delivered from a slot records that in Kafka (the origin
// record, sink.OriginKey, in the checkpoint topic), outside PostgreSQL. When
// the slot is missing at a later start, as on a promoted standby without a
// synchronized copy, creating a fresh slot would silently skip every event
// committed since the old slot's last confirmation: the relay refuses,
// unless --accept-new-source says that is intended. A genuinely first start
// finds no record and creates the slot.

// origin is the origin record's value.
type origin struct {
	Slot       string    `json:"slot"`
	Tables     []string  `json:"tables"`
	RecordedAt time.Time `json:"recorded_at"`
}

// checkOrigin runs when the slot is missing: it refuses to create a fresh
// one where this relay has delivered before. While Kafka cannot answer it
// waits, for it cannot tell.
func (r *relay) checkOrigin(ctx context.Context) error {
	slot, topic := r.opts.repl.Slot, r.opts.kafka.CheckpointTopic
	for delay := 500 * time.Millisecond; ; delay = min(delay*2, r.opts.backoffMax) {
		raw, found, err := sink.ReadRecord(ctx, r.opts.kafka, sink.OriginKey(slot))
		switch {
		case err == nil && !found:
			return nil
		case err == nil:
			// Another relay of the pair may have created the slot (and
			// written the record) meanwhile: then nothing was lost.
			if _, serr := replication.GetSlot(ctx, r.opts.repl.ConnString, slot); serr == nil {
				return nil
			}
			return r.lostSlot(raw)
		case sink.IsPermanent(err):
			r.log.Warn("cannot read the origin record; a lost slot would be recreated without notice", "topic", topic, "err", err.Error())
			return nil
		}
		r.log.Warn("waiting for Kafka to tell whether this relay delivered from the missing slot before", "slot", slot, "topic", topic, "err", err.Error(), "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
}

// lostSlot refuses, or with --accept-new-source warns about, a fresh slot
// where this relay has delivered before.
func (r *relay) lostSlot(raw []byte) error {
	var o origin
	_ = json.Unmarshal(raw, &o) // an unreadable record still proves delivery
	slot, topic := r.opts.repl.Slot, r.opts.kafka.CheckpointTopic
	if r.opts.acceptNew {
		r.log.Warn("creating a new slot where this relay delivered before (--accept-new-source): events committed since the old slot's last confirmation are not delivered",
			"slot", slot, "recorded_at", o.RecordedAt.Format(time.RFC3339))
		return nil
	}
	return &exitError{code: exitPreflight, err: fmt.Errorf("slot %q does not exist on this server, but this relay has delivered from it before (%s records it, %s): "+
		"a new slot would start at the current WAL position and skip every event committed since the old slot's last confirmation, "+
		"as after a failover to a standby without a synchronized copy of the slot.\n"+
		"Restore the slot if you can (failover slots, PostgreSQL 17+: --slot-failover and a synchronized standby, docs/high-availability.md); "+
		"if skipping those events is acceptable (nothing was written meanwhile, or the writer replays them), restart with --accept-new-source",
		slot, topic, o.RecordedAt.Format(time.RFC3339))}
}

// recordOrigin writes the origin record once per process, before the first
// session streams. A Kafka that cannot take it now fails the session (it is
// retried); one that refuses it for good (ACLs) is warned about once.
func (r *relay) recordOrigin(ctx context.Context) error {
	if r.originDone {
		return nil
	}
	value, _ := json.Marshal(origin{Slot: r.opts.repl.Slot, Tables: r.opts.repl.Tables, RecordedAt: time.Now().UTC()})
	err := sink.WriteRecord(ctx, r.opts.kafka, sink.OriginKey(r.opts.repl.Slot), value)
	if err != nil && !sink.IsPermanent(err) {
		return fmt.Errorf("recording that this relay delivers from slot %s: %w", r.opts.repl.Slot, err)
	}
	if err != nil {
		r.log.Warn("cannot write the origin record; after a failover a lost slot would be recreated without notice", "topic", r.opts.kafka.CheckpointTopic, "err", err.Error())
	}
	r.originDone = true
	return nil
}
