// Package pipeline runs one relay session: it holds the replication slot,
// routes each outbox insert into a record, hands it to Kafka, and confirms a
// position to PostgreSQL only once Kafka has acknowledged every event up to
// it.
//
// The parts are the project's packages: replication reads the slot, router
// turns a row into a record, sink produces it, and checkpoint owns every rule
// about which position may be confirmed (Tracker) and, in exactly-once mode,
// which events a checkpoint in Kafka already covers (Resume). This package
// only connects them and decides, once, which errors a new session may
// overcome (Retryable). It never waits on Kafka on the replication
// goroutine.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/router"
	"github.com/outboxrelay/outboxrelay/sink"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
)

// Config is what a session needs; the caller validated each part.
type Config struct {
	Replication replication.Config
	Kafka       sink.Config
	Limits      checkpoint.Limits
	// Columns are each outbox table's columns (in Replication.Tables
	// order) as the preflight read them from the catalog: pgoutput's
	// Relation message lacks their nullability, which the json-schema
	// format states.
	Columns [][]replication.Column
	// OnUpdate is what an UPDATE of an outbox table does, which arrives
	// only when the publication publishes updates (Debezium's
	// table.op.invalid.behavior); the zero value is OnUpdateWarn.
	OnUpdate OnUpdate
	// Snapshot, when set, reads the rows already in the tables before
	// streaming (an initial snapshot, or the whole of an interrupted one).
	Snapshot *Snapshot
	// Tracer, when set, records a producer span for each event that carries
	// a trace context (tracing.go); nil records none. Its provider must use
	// the SpanIDs generator.
	Tracer trace.Tracer
	// AcceptNewSource starts exactly-once delivery over when the checkpoint
	// was written for another database system or timeline, instead of
	// refusing to resume.
	AcceptNewSource bool
}

// OnUpdate is what an UPDATE of an outbox table does. It is never
// published in any case.
type OnUpdate string

// The OnUpdate choices, as Debezium's table.op.invalid.behavior names them.
const (
	// OnUpdateWarn logs a warning and goes on (the default).
	OnUpdateWarn OnUpdate = "warn"
	// OnUpdateError logs an error and goes on.
	OnUpdateError OnUpdate = "error"
	// OnUpdateFatal stops the relay with ErrUpdate; nothing from the
	// update's transaction on is confirmed.
	OnUpdateFatal OnUpdate = "fatal"
)

// ParseOnUpdate checks an OnUpdate choice; empty is OnUpdateWarn.
func ParseOnUpdate(s string) (OnUpdate, error) {
	switch o := OnUpdate(s); o {
	case "":
		return OnUpdateWarn, nil
	case OnUpdateWarn, OnUpdateError, OnUpdateFatal:
		return o, nil
	}
	return "", fmt.Errorf("OnUpdate %q: want warn, error or fatal", s)
}

// Observer receives a session's events for metrics and readiness. Its
// methods must not block.
type Observer interface {
	// Streaming is called once the session holds the slot and streams;
	// the readings stay valid until Stopped.
	Streaming(slot string, r Readings)
	// Stopped is called when the session ends, with the last position
	// confirmed to PostgreSQL.
	Stopped(confirmed uint64)
	// Acked is called for every event Kafka acknowledged, on the sink's
	// acknowledgement goroutine.
	Acked(topic string, sent, commit, decoded time.Time)
	// Heartbeat is called for every heartbeat message read from the slot.
	Heartbeat(sent time.Time)
	// Snapshot reports an initial snapshot's progress.
	Snapshot(SnapshotProgress)
}

// Readings are a streaming session's live figures; safe to call from any
// goroutine.
type Readings struct {
	InFlight    func() (events int, bytes int64)
	Confirmed   func() uint64
	Received    func() (lsn, bytes uint64)
	ProduceWait func() time.Time // when the oldest unanswered produce request was sent
}

// Session runs one connection to Kafka and one replication connection until
// stop is done (a clean stop: it drains and returns nil, or an
// *UndeliveredError when Kafka did not acknowledge everything in time) or an
// error ends it. hard cancels everything at once. In every case nothing
// beyond what Kafka acknowledged has been confirmed.
func Session(stop, hard context.Context, cfg Config, rt *router.Router, obs Observer, log *slog.Logger) error {
	// The slot first: holding it is the leader lock. Only its holder opens
	// the producer, so in exactly-once mode a standby waiting for the slot
	// never fences the active relay's transactional producer.
	stream, snap, err := open(hard, cfg, log)
	if err != nil {
		return err
	}
	defer stream.Close(context.WithoutCancel(hard))
	tracker := checkpoint.NewTracker(stream.StartLSN(), cfg.Limits)
	if snap != nil {
		defer snap.held.Close(context.WithoutCancel(hard))
		snap.tracker, snap.obs = tracker, obs
	}
	spans := newTracing(cfg.Tracer, log)
	defer spans.close()
	snk, err := sink.Open(cfg.Kafka, log, func(a any) {
		ack := a.(*ackInfo)
		spans.acked(ack)
		tracker.Ack(ack.ticket)
		if ack.snapshot {
			snap.acked.Add(1)
		}
		obs.Acked(ack.topic, ack.sent, ack.commit, ack.decoded)
	})
	if err != nil {
		return err
	}
	defer snk.Close()
	h := newHandler(tracker, snk, rt, cfg, obs, log)
	if snap != nil {
		snap.h = h
		if err := tracker.BeginSnapshot(); err != nil {
			return err
		}
	}
	h.tracing = spans
	if cfg.Kafka.TransactionalID != "" {
		if h.resume, err = resume(cfg, snk, stream, log); err != nil {
			return err
		}
	}
	log.Info("streaming", "slot", cfg.Replication.Slot, "from", replication.FormatLSN(stream.StartLSN()), "tables", cfg.Replication.Tables)
	obs.Streaming(cfg.Replication.Slot, Readings{InFlight: tracker.InFlight, Confirmed: stream.Confirmed, Received: stream.Received, ProduceWait: snk.OldestRequest})
	defer func() { obs.Stopped(stream.Confirmed()) }()
	return run(stop, hard, stream, snk, h, tracker, snap, log)
}

// open opens the stream, and with Snapshot set the snapshot to read first
// (nil when there is none).
func open(ctx context.Context, cfg Config, log *slog.Logger) (*replication.Stream, *snapshotReader, error) {
	if cfg.Snapshot == nil {
		stream, err := replication.Open(ctx, cfg.Replication, log)
		return stream, nil, err
	}
	return openSnapshot(ctx, cfg, log)
}

// run streams and produces side by side until both end; an initial
// snapshot is read beside them, the stream waiting for it.
func run(stop, hard context.Context, stream *replication.Stream, snk *sink.Sink, h *handler, tracker *checkpoint.Tracker, snap *snapshotReader, log *slog.Logger) error {
	g, gctx := errgroup.WithContext(hard)
	sinkCtx, stopSink := context.WithCancel(gctx)
	defer stopSink()
	if snap != nil {
		// A stop request ends the snapshot, unfinished: its rows are read
		// again by the next session.
		snapCtx, stopSnap := context.WithCancel(gctx)
		defer stopSnap()
		defer context.AfterFunc(stop, stopSnap)()
		g.Go(func() error {
			err := snap.run(snapCtx, gctx)
			if stop.Err() != nil && errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		})
	}
	g.Go(func() error {
		defer stopSink() // after a clean drain nothing is left to produce
		return stream.Run(gctx, stop.Done(), h, tracker)
	})
	g.Go(func() error { return snk.Run(sinkCtx) })
	err := g.Wait()
	stopping := stop.Err() != nil
	if err != nil && !(stopping && errors.Is(err, context.Canceled)) {
		return err
	}
	log.Info("confirmed", "lsn", replication.FormatLSN(stream.Confirmed()))
	if events, bytes := tracker.InFlight(); stopping && events > 0 {
		return &UndeliveredError{Events: events, Bytes: bytes}
	}
	return err
}

// resume reads this slot's checkpoint from Kafka and returns the
// exactly-once accounting that skips what it covers.
func resume(cfg Config, snk *sink.Sink, stream *replication.Stream, log *slog.Logger) (*checkpoint.Resume, error) {
	slot, topic := cfg.Replication.Slot, cfg.Kafka.CheckpointTopic
	identity := checkpoint.Position{Slot: slot, SystemID: stream.SystemID(), Timeline: stream.Timeline(), Standby: stream.Standby()}
	raw, found, err := snk.ReadCheckpoint()
	if err != nil {
		return nil, err
	}
	if !found {
		log.Info("exactly-once: no checkpoint yet", "topic", topic, "slot", slot)
		return checkpoint.NewResume(identity, checkpoint.Position{}), nil
	}
	pos, err := checkpoint.DecodePosition(raw)
	if err != nil {
		return nil, Permanent(fmt.Errorf("reading the checkpoint of slot %s from %s: %w", slot, topic, err))
	}
	if err := pos.Check(sourceOf(stream)); err != nil {
		if !cfg.AcceptNewSource {
			return nil, Permanent(fmt.Errorf("refusing to resume: %w; its positions mean nothing here and applying them could skip or repeat events. "+
				"If this database is the right source, restart with AcceptNewSource (events are then delivered from the slot's position, at least once at the switch)", err))
		}
		log.Warn("exactly-once: starting over on a new source", "reason", err.Error())
		return checkpoint.NewResume(identity, checkpoint.Position{}), nil
	}
	if pos.Timeline != stream.Timeline() {
		log.Info("exactly-once: the checkpoint's positions hold on this promoted server", "checkpoint_timeline", pos.Timeline, "timeline", stream.Timeline())
	}
	log.Info("exactly-once: resuming after the checkpoint", "end_lsn", replication.FormatLSN(pos.EndLSN), "partial_events", pos.PartialEvents)
	return checkpoint.NewResume(identity, pos), nil
}

// sourceOf describes the database stream reads from for the checkpoint's
// rules.
func sourceOf(stream *replication.Stream) checkpoint.Source {
	src := checkpoint.Source{SystemID: stream.SystemID(), Timeline: stream.Timeline(), SlotSynced: stream.SlotSynced()}
	for _, s := range stream.History() {
		src.History = append(src.History, checkpoint.TimelineSwitch{Timeline: s.Timeline, End: s.End})
	}
	return src
}
