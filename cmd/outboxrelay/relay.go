package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outboxrelay/outboxrelay/cmd/internal/pipeline"
	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/router"
	"github.com/outboxrelay/outboxrelay/sink"
	"go.opentelemetry.io/otel/trace"
)

// relay wires replication, routing, the checkpoint tracker and the sink, and
// restarts the stream from the slot whenever a session fails for a reason
// that may pass (a database restart, a Kafka outage, a slot held elsewhere).
type relay struct {
	opts    runOptions
	log     *slog.Logger
	router  *router.Router
	metrics *metrics
	// columns are each outbox table's columns as the preflight read them.
	columns [][]replication.Column
	// originDone is set once this process recorded that it delivers from
	// the slot (recordOrigin).
	originDone bool
	// snapshotDue is set while an initial snapshot is to be read (it is
	// cleared once Kafka holds every row and the record says so).
	snapshotDue atomic.Bool
	// tracer records producer spans; nil when OpenTelemetry is not
	// configured.
	tracer trace.Tracer
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
	return &relay{opts: opts, log: log, router: rt, metrics: newMetrics(opts.repl.Slot)}, nil
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
	tracer, stopTracing, err := startTracing(ctx, os.LookupEnv, r.log)
	if err != nil {
		return usageError(err)
	}
	defer stopTracing() // after the sessions: flushes the last spans
	r.tracer = tracer
	if err := r.prepare(ctx); err != nil {
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
	return r.sessions(ctx, hard)
}

// prepare checks the database (exit code 3 for an unmet prerequisite) and
// creates what is missing: the publication, the slot.
func (r *relay) prepare(ctx context.Context) error {
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
	r.columns = st.Columns
	if !st.SlotExists {
		if err := r.checkOrigin(ctx); err != nil || ctx.Err() != nil {
			return err
		}
	}
	if r.opts.snapshot == "initial" && !st.SlotExists && st.InRecovery {
		return &exitError{code: exitPreflight, err: errors.New("--snapshot initial creates the slot with an exported snapshot, which a standby cannot export: " +
			"start the relay against the primary once (it creates the slot and reads the snapshot), or run with --snapshot never")}
	}
	if err := r.planSnapshot(ctx, st.SlotExists); err != nil || ctx.Err() != nil {
		return err
	}
	return replication.Setup(ctx, r.opts.repl, st, r.log)
}

// sessions runs sessions until ctx is canceled or pipeline.Retryable says
// stop, with capped, jittered backoff between them.
func (r *relay) sessions(ctx, hard context.Context) error {
	delay := 100 * time.Millisecond
	for {
		began := time.Now()
		err := r.session(ctx, hard)
		if ctx.Err() != nil {
			return r.stopped(err)
		}
		if done, err := r.ended(ctx, err); done {
			return err
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

// ended applies the one retry-or-stop rule to the error that ended a
// session: done is set when the relay stops (halted on a bad event, or a
// permanent error), with the error to exit with.
func (r *relay) ended(ctx context.Context, err error) (done bool, exit error) {
	var pe *sink.ProduceError
	if errors.As(err, &pe) {
		r.metrics.produceErrors.Inc()
	}
	if pipeline.BadEvent(err) {
		return true, r.halt(ctx, withAdvice(err))
	}
	if !pipeline.Retryable(err) {
		r.metrics.setNotReady("stopped: " + forPeople(err.Error()))
		return true, withAdvice(err)
	}
	return false, nil
}

// retrying records a session that ended for a reason that may pass. Finding
// the slot held by another relay is a standby's normal state, not a
// failure: it is ready (able to take over), counted apart from reconnects,
// and logged at info once, then at debug.
func (r *relay) retrying(err error, delay time.Duration) {
	var inUse *replication.SlotInUseError
	if !errors.As(err, &inUse) {
		r.waiting = false
		r.metrics.reconnects.Inc()
		r.metrics.setNotReady("reconnecting: " + err.Error())
		r.log.Warn("reconnecting", "reason", err.Error(), "retry_in", delay.String())
		return
	}
	r.metrics.slotWaits.Inc()
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
	var nd *pipeline.UndeliveredError
	if errors.As(err, &nd) {
		r.log.Warn("stopped before Kafka acknowledged every event; they were not confirmed, stay in the replication slot and are sent again after a restart",
			"unacknowledged_events", nd.Events, "unacknowledged_bytes", nd.Bytes, "shutdown_timeout", r.opts.repl.DrainTimeout.String(), "exit_code", exitUndelivered)
		return exitCode(exitUndelivered)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("stopping: %w", err)
	}
	r.log.Info("stopped")
	return nil
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

// session runs one pipeline session with the relay's configuration.
func (r *relay) session(stop, hard context.Context) error {
	if err := r.recordOrigin(hard); err != nil {
		return err
	}
	cfg := pipeline.Config{Replication: r.opts.repl, Kafka: r.opts.kafka, Limits: r.opts.limits, Columns: r.columns, AcceptNewSource: r.opts.acceptNew, Tracer: r.tracer}
	cfg.OnUpdate, _ = pipeline.ParseOnUpdate(r.opts.onUpdate)
	cfg.Snapshot = r.snapshotConfig()
	return pipeline.Session(stop, hard, cfg, r.router, observer{r}, r.log)
}

// observer reports a session's events to the metrics and readiness.
type observer struct{ r *relay }

func (o observer) Streaming(slot string, rd pipeline.Readings) {
	m := o.r.metrics
	o.r.waiting = false
	m.inFlight.Store(&rd.InFlight)
	m.confirmed.Store(&rd.Confirmed)
	m.received.Store(&rd.Received)
	m.produceWait.Store(&rd.ProduceWait)
	m.slotHeld.Store(true)
	m.setReady("streaming from slot " + slot)
}

// Stopped drops the session's readings: what was in flight is no longer,
// it is sent again by the next session, from the slot.
func (o observer) Stopped(confirmed uint64) {
	m := o.r.metrics
	final := func() uint64 { return confirmed }
	m.confirmed.Store(&final)
	m.inFlight.Store(nil)
	m.received.Store(nil)
	m.produceWait.Store(nil)
	m.slotHeld.Store(false)
	m.setNotReady("not streaming")
}

func (o observer) Acked(topic string, sent, commit, decoded time.Time) {
	o.r.metrics.acked(topic, sent, commit, decoded)
}

func (o observer) Heartbeat(sent time.Time) { o.r.metrics.heartbeat(sent) }

func (o observer) Snapshot(p pipeline.SnapshotProgress) { o.r.metrics.snapshot(p) }

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
