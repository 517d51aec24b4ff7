package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/router"
	"github.com/outboxrelay/outboxrelay/sink"
	"golang.org/x/sync/errgroup"
)

// relay wires replication, routing, the checkpoint tracker and the sink, and
// restarts the stream from the slot whenever a session fails for a reason
// that may pass (a database restart, a Kafka outage, a slot held elsewhere).
type relay struct {
	opts    runOptions
	log     *slog.Logger
	router  *router.Router
	metrics *metrics
	// notNull holds the outbox table's NOT NULL columns as the preflight
	// read them: pgoutput's Relation message does not carry nullability,
	// which the json-schema format states.
	notNull map[string]bool
	// waiting is set once "waiting for the replication slot" is logged at
	// info, until a session streams or fails otherwise: later attempts are
	// logged at debug.
	waiting bool
}

func newRelay(opts runOptions, log *slog.Logger) (*relay, error) {
	rt, err := router.New(opts.route)
	if err != nil {
		return nil, usageError(err)
	}
	return &relay{opts: opts, log: log, router: rt, metrics: newMetrics()}, nil
}

// errPermanent marks an error that a reconnection cannot fix.
var errPermanent = errors.New("permanent")

type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() []error { return []error{e.err, errPermanent} }

func permanent(err error) bool {
	var pe *sink.ProduceError
	return errors.Is(err, errPermanent) || errors.Is(err, replication.ErrSlotGone) ||
		errors.Is(err, router.ErrRoute) || (errors.As(err, &pe) && pe.Permanent())
}

// Run binds the HTTP address, checks and prepares the database, then
// streams until ctx is canceled (a clean stop: it returns nil) or a
// permanent error occurs.
func (r *relay) Run(ctx context.Context) error {
	// The port first: a taken one must stop the relay before it creates a
	// publication or a slot.
	if r.opts.httpAddr != "" {
		httpCtx, stopHTTP := context.WithCancel(ctx)
		wait, err := serveHTTP(httpCtx, r.opts.httpAddr, r.metrics.handler(r.opts.pprof), r.log)
		if err != nil {
			stopHTTP()
			return err
		}
		defer func() { stopHTTP(); _ = wait() }()
	}
	if err := preflightColumns(ctx, r.opts); err != nil {
		return err
	}
	st, err := replication.Preflight(ctx, r.opts.repl)
	if err != nil {
		var pf *replication.PreflightError
		if errors.As(err, &pf) {
			return &exitError{code: exitPreflight, err: err}
		}
		return err
	}
	r.notNull = map[string]bool{}
	for _, c := range st.Columns {
		r.notNull[c.Name] = c.NotNull
	}
	if err := replication.Setup(ctx, r.opts.repl, st, r.log); err != nil {
		return err
	}
	watchCtx, stopWatching := context.WithCancel(ctx)
	var watchers sync.WaitGroup
	watchers.Go(func() { r.monitor(watchCtx) })
	watchers.Go(func() { r.watchProduce(watchCtx) })
	defer func() { stopWatching(); watchers.Wait() }()
	// hard is canceled only if a stop takes far longer than the drain allows;
	// a stop request itself lets the session drain.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stopHard := context.AfterFunc(ctx, func() {
		r.metrics.setNotReady("stopping")
		r.log.Info("stop requested: finishing the current transaction and waiting for Kafka's acknowledgements", "timeout", r.opts.repl.DrainTimeout.String())
		time.AfterFunc(r.opts.repl.DrainTimeout+3*time.Second, cancelHard)
	})
	defer stopHard()

	delay := 100 * time.Millisecond
	for {
		began := time.Now()
		err := r.session(ctx, hard)
		if ctx.Err() != nil {
			return r.stopped(err)
		}
		var pe *sink.ProduceError
		if errors.As(err, &pe) {
			r.metrics.produceErrors.Add(1)
		}
		if badEvent(err) {
			return r.halt(ctx, withAdvice(err))
		}
		if permanent(err) {
			r.metrics.setNotReady("stopped: " + err.Error())
			return withAdvice(err)
		}
		if time.Since(began) > time.Minute {
			delay = 100 * time.Millisecond
		}
		r.retrying(err, delay)
		select {
		case <-ctx.Done():
			r.log.Info("stopped")
			return nil
		case <-time.After(delay):
		}
		delay = min(r.opts.backoffMax, delay*2)
		delay += time.Duration(rand.Int64N(int64(delay)/5 + 1)) // jitter keeps standbys apart
	}
}

// retrying records a session that ended for a reason that may pass. Finding
// the slot held by another relay is a standby's normal state, not a
// failure: it is ready (able to take over), counted apart from reconnects,
// and logged at info once, then at debug.
func (r *relay) retrying(err error, delay time.Duration) {
	var inUse *replication.SlotInUseError
	if !errors.As(err, &inUse) {
		r.waiting = false
		r.metrics.reconnects.Add(1)
		r.metrics.setNotReady("reconnecting: " + err.Error())
		r.log.Warn("reconnecting", "reason", err.Error(), "retry_in", delay.String())
		return
	}
	r.metrics.slotWaits.Add(1)
	r.metrics.setReady(fmt.Sprintf("standby: waiting for the replication slot %s, held by walsender PID %d", inUse.Slot, inUse.PID))
	level := slog.LevelDebug
	if !r.waiting {
		r.waiting, level = true, slog.LevelInfo
	}
	r.log.Log(context.Background(), level, "waiting for the replication slot", "slot", inUse.Slot, "held_by_pid", inUse.PID, "retry_in", delay.String())
}

// stopped ends Run after a stop request. A session that stopped before
// Kafka acknowledged everything it read ends the process with
// exitUndelivered, after saying how many events are left.
func (r *relay) stopped(err error) error {
	var nd *undeliveredError
	if errors.As(err, &nd) {
		r.log.Warn("stopped before Kafka acknowledged every event; they were not confirmed, stay in the replication slot and are sent again after a restart",
			"unacknowledged_events", nd.events, "unacknowledged_bytes", nd.bytes, "shutdown_timeout", r.opts.repl.DrainTimeout.String(), "exit_code", exitUndelivered)
		return exitCode(exitUndelivered)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("stopping: %w", err)
	}
	r.log.Info("stopped")
	return nil
}

// undeliveredError ends a session that was asked to stop while Kafka had not
// acknowledged every event it read (--shutdown-timeout passed).
type undeliveredError struct {
	events int
	bytes  int64
}

func (e *undeliveredError) Error() string {
	return fmt.Sprintf("stopped with %d events (%d bytes) not acknowledged by Kafka", e.events, e.bytes)
}

// badEvent reports an event that cannot be routed or that Kafka refuses.
func badEvent(err error) bool {
	var pe *sink.ProduceError
	return errors.Is(err, router.ErrRoute) || (errors.As(err, &pe) && pe.Permanent())
}

// halt is --on-bad-event=fail: the stream is closed, so nothing from the bad
// event on is confirmed; the process stays up, not ready, until stopped, and
// then exits with the error. It is logged once.
func (r *relay) halt(ctx context.Context, err error) error {
	r.metrics.setNotReady("halted on a bad event: " + err.Error())
	r.log.Error("halted on a bad event; nothing from it on is confirmed. Fix the cause and restart, or run with --on-bad-event=dlq", "err", err.Error())
	<-ctx.Done()
	return err
}

// withAdvice adds what an operator can do about a permanent error.
func withAdvice(err error) error {
	const kept = "the event was not confirmed: it stays in the replication slot and is sent again when outboxrelay restarts"
	var pe *sink.ProduceError
	switch {
	case errors.Is(err, router.ErrRoute):
		return fmt.Errorf("%w\n%s; correct the routing flags (--route-by-field, --route-topic-replacement, ...) to route it", err, kept)
	case errors.Is(err, sink.ErrTopicMissing):
		return fmt.Errorf("%w\n%s; create the topic or run with --create-topics=true", err, kept)
	case errors.Is(err, sink.ErrPartitionOutOfRange):
		return fmt.Errorf("%w\n%s; the event's partition placement (--fields-additional-placement ...:partition) names a partition the topic lacks: add partitions to the topic, or run with --on-bad-event=dlq to dead-letter the event", err, kept)
	case errors.As(err, &pe):
		return fmt.Errorf("%w\n%s; Kafka refuses it as it is: raise --kafka-max-message-bytes together with the broker's message.max.bytes for a large event, or fix the topic's ACLs", err, kept)
	}
	return err
}

// session runs one connection to Kafka and one replication connection. It
// returns nil after a clean stop, or the error that ended it; in both cases
// nothing beyond what Kafka acknowledged has been confirmed.
func (r *relay) session(stop, hard context.Context) error {
	// The slot first: holding it is the leader lock. Only its holder opens
	// the producer, so in exactly-once mode a standby waiting for the slot
	// never fences the active relay's transactional producer.
	stream, err := replication.Open(hard, r.opts.repl, r.log)
	if err != nil {
		return err
	}
	defer stream.Close(context.WithoutCancel(hard))
	tracker := checkpoint.NewTracker(stream.StartLSN(), r.opts.limits)
	snk, err := sink.Open(r.opts.kafka, r.log, func(a any) {
		ack := a.(*ackInfo)
		tracker.Ack(ack.ticket)
		r.metrics.acked(ack.topic, ack.sent, ack.commit, ack.decoded)
	})
	if err != nil {
		return err
	}
	defer snk.Close()
	h := &handler{tracker: tracker, sink: snk, router: r.router, notNull: r.notNull, metrics: r.metrics, dlqTopic: r.opts.kafka.DLQTopic, log: r.log}
	if r.opts.kafka.TransactionalID != "" {
		if err := r.exactlyOnce(h, snk, stream); err != nil {
			return err
		}
	}
	r.log.Info("streaming", "slot", r.opts.repl.Slot, "from", replication.FormatLSN(stream.StartLSN()), "table", r.opts.repl.Table)
	r.waiting = false
	inFlight, confirmed, received, produceWait := tracker.InFlight, stream.Confirmed, stream.Received, snk.OldestRequest
	r.metrics.inFlight.Store(&inFlight)
	r.metrics.confirmed.Store(&confirmed)
	r.metrics.received.Store(&received)
	r.metrics.produceWait.Store(&produceWait)
	r.metrics.slotHeld.Store(true)
	r.metrics.setReady("streaming from slot " + r.opts.repl.Slot)
	defer func() {
		// What was in flight is no longer: it is sent again by the next
		// session, from the slot.
		last := stream.Confirmed()
		final := func() uint64 { return last }
		r.metrics.confirmed.Store(&final)
		r.metrics.inFlight.Store(nil)
		r.metrics.received.Store(nil)
		r.metrics.produceWait.Store(nil)
		r.metrics.slotHeld.Store(false)
		r.metrics.setNotReady("not streaming")
	}()

	g, gctx := errgroup.WithContext(hard)
	sinkCtx, stopSink := context.WithCancel(gctx)
	defer stopSink()
	g.Go(func() error {
		defer stopSink() // after a clean drain nothing is left to produce
		return stream.Run(gctx, stop.Done(), h, tracker)
	})
	g.Go(func() error { return snk.Run(sinkCtx) })
	err = g.Wait()
	stopping := stop.Err() != nil
	if err != nil && !(stopping && errors.Is(err, context.Canceled)) {
		return err
	}
	r.log.Info("confirmed", "lsn", replication.FormatLSN(stream.Confirmed()))
	if events, bytes := tracker.InFlight(); stopping && events > 0 {
		return &undeliveredError{events: events, bytes: bytes}
	}
	return err
}

// exactlyOnce reads this slot's checkpoint from Kafka and sets the handler up
// to skip what it covers and to checkpoint what it sends.
func (r *relay) exactlyOnce(h *handler, snk *sink.Sink, stream *replication.Stream) error {
	h.exactly = true
	h.pos = checkpoint.Position{Slot: r.opts.repl.Slot, SystemID: stream.SystemID(), Timeline: stream.Timeline()}
	raw, found, err := snk.ReadCheckpoint()
	if err != nil {
		return err
	}
	if !found {
		r.log.Info("exactly-once: no checkpoint yet", "topic", r.opts.kafka.CheckpointTopic, "slot", r.opts.repl.Slot)
		return nil
	}
	pos, err := checkpoint.DecodePosition(raw)
	if err != nil {
		return &permanentError{fmt.Errorf("reading the checkpoint of slot %s from %s: %w", r.opts.repl.Slot, r.opts.kafka.CheckpointTopic, err)}
	}
	if err := pos.Check(stream.SystemID(), stream.Timeline()); err != nil {
		if !r.opts.acceptNew {
			return &permanentError{fmt.Errorf("refusing to resume: %w; its positions mean nothing here and applying them could skip or repeat events. "+
				"If this database is the right source, restart with --accept-new-source (events are then delivered from the slot's position, at least once at the switch)", err)}
		}
		r.log.Warn("exactly-once: starting over on a new source", "reason", err.Error())
		return nil
	}
	h.skip = pos
	h.lastEnd = pos.EndLSN
	r.log.Info("exactly-once: resuming after the checkpoint", "end_lsn", replication.FormatLSN(pos.EndLSN), "partial_events", pos.PartialEvents)
	return nil
}

// monitor reads the slot's WAL figures every 10 seconds, applies the stall
// rule every second, and emits heartbeats when they are on, until ctx ends.
func (r *relay) monitor(ctx context.Context) {
	mon := replication.NewMonitor(r.opts.repl.ConnString, r.opts.repl.Slot)
	defer mon.Close(ctx)
	stats := time.NewTicker(10 * time.Second)
	defer stats.Stop()
	stalls := time.NewTicker(stallCheckInterval)
	defer stalls.Stop()
	sw := &stallWatch{log: r.log, metrics: r.metrics}
	var beat <-chan time.Time
	if r.opts.heartbeat > 0 {
		t := time.NewTicker(r.opts.heartbeat)
		defer t.Stop()
		beat = t.C
	}
	readStats := func() {
		st, err := mon.Stats(ctx)
		if err != nil {
			r.log.Debug("reading slot statistics", "err", err.Error())
			return
		}
		if st.Lag != nil {
			r.metrics.slotLag.Store(*st.Lag)
		}
		if st.Retained != nil {
			r.metrics.slotRetained.Store(*st.Retained)
		}
	}
	readStats()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stats.C:
			readStats()
		case now := <-stalls.C:
			sw.check(ctx, mon, now)
		case <-beat:
			if err := mon.EmitHeartbeat(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("emitting a heartbeat", "err", err.Error())
			}
		}
	}
}

// handler routes each insert and hands it to the sink; it runs on the
// replication goroutine and never waits on Kafka.
type handler struct {
	tracker *checkpoint.Tracker
	sink    *sink.Sink
	router  *router.Router
	notNull map[string]bool // the table's NOT NULL columns, for the json-schema format
	plan    *router.Plan
	metrics *metrics

	// Exactly-once mode: skip is the checkpoint read at start, pos carries
	// the database's identity, lastEnd the end of the last complete
	// transaction, and the rest the transaction being read.
	exactly   bool
	skip      checkpoint.Position
	pos       checkpoint.Position
	lastEnd   uint64
	commitLSN uint64
	seen      int // events of this transaction read, skipped ones included
	skipLeft  int // -1: skip the whole transaction
	sent      int // events of this transaction sent

	dlqTopic string // --on-bad-event=dlq
	log      *slog.Logger

	headers []sink.Header // scratch for Insert
}

// deadLetter is the record for a row that cannot be routed.
func (h *handler) deadLetter(ins replication.Insert, reason error) router.Record {
	id, key, payload := h.plan.Describe(ins.Values)
	h.log.Warn("sending an event that cannot be routed to the dead-letter topic", "event_id", id, "dlq_topic", h.dlqTopic, "reason", reason.Error())
	return router.Record{
		Topic: h.dlqTopic, Key: key, Value: payload, Partition: -1, Timestamp: time.Now(), EventID: id,
		Headers: []router.Header{
			{Key: "id", Value: []byte(id)},
			{Key: sink.HeaderDLQReason, Value: []byte(reason.Error())},
			{Key: sink.HeaderDLQEventID, Value: []byte(id)},
		},
	}
}

// ackInfo travels with each message to the acknowledgement callback.
type ackInfo struct {
	ticket       checkpoint.Ticket
	topic        string
	sent, commit time.Time
	decoded      time.Time // the walsender's send time, on the commit's clock
}

func (h *handler) Heartbeat(sent time.Time) error {
	h.metrics.heartbeat(sent)
	return nil
}

func (h *handler) Relation(cols []replication.Column) error {
	rc := make([]router.Column, len(cols))
	for i, c := range cols {
		rc[i] = router.Column{Name: c.Name, TypeOID: c.TypeOID, TypMod: c.TypMod, NotNull: h.notNull[c.Name]}
	}
	plan, err := h.router.Compile(rc)
	if err != nil {
		return &permanentError{fmt.Errorf("reading the outbox table's definition: %w", err)}
	}
	h.plan = plan
	return nil
}

func (h *handler) Begin(b replication.Begin) error {
	if h.exactly {
		h.commitLSN, h.seen, h.sent = b.FinalLSN, 0, 0
		h.skipLeft = h.skip.Skip(b.FinalLSN)
	}
	return h.tracker.Begin()
}

func (h *handler) Commit(c replication.Commit) error {
	if h.exactly {
		h.lastEnd = c.EndLSN
		if h.sent > 0 {
			p := h.pos
			p.EndLSN = c.EndLSN
			h.sink.Boundary(p.Encode())
		}
	}
	return h.tracker.Commit(c.EndLSN)
}

func (h *handler) Insert(ins replication.Insert) error {
	if h.plan == nil {
		return fmt.Errorf("insert at %s before the table's definition", replication.FormatLSN(ins.WALStart))
	}
	if h.exactly {
		h.seen++
		if h.skipLeft < 0 {
			return nil // delivered before: the whole transaction is in Kafka
		}
		if h.skipLeft > 0 {
			h.skipLeft--
			return nil
		}
	}
	now := ins.ReceivedAt
	rec, err := h.plan.Route(ins.Values, now)
	if err != nil && h.dlqTopic != "" {
		rec = h.deadLetter(ins, err)
	} else if err != nil {
		return fmt.Errorf("%w (at WAL position %s; nothing from this transaction on was confirmed)", err, replication.FormatLSN(ins.WALStart))
	}
	tk, err := h.tracker.Add(rec.Size())
	if err != nil {
		return err
	}
	msg := sink.Message{
		Topic: rec.Topic, Key: rec.Key, Value: rec.Value, Partition: rec.Partition,
		Timestamp: rec.Timestamp, EventID: rec.EventID,
		Ack: &ackInfo{ticket: tk, topic: rec.Topic, sent: now, commit: ins.CommitTime, decoded: ins.SentAt},
	}
	if len(rec.Headers) > 0 {
		h.headers = h.headers[:0] // Send does not keep them
		for _, hd := range rec.Headers {
			h.headers = append(h.headers, sink.Header{Key: hd.Key, Value: hd.Value})
		}
		msg.Headers = h.headers
	}
	if h.exactly {
		p := h.pos
		p.EndLSN, p.PartialCommitLSN, p.PartialEvents = h.lastEnd, h.commitLSN, h.seen
		msg.Checkpoint = p.Encode()
		h.sent++
	}
	h.sink.Send(msg)
	return nil
}
