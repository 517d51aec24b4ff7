package pipeline

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/router"
	"github.com/outboxrelay/outboxrelay/sink"
)

// producer is what the handler needs of the sink. Send and Boundary must not
// block on Kafka.
type producer interface {
	Send(sink.Message)
	Boundary(checkpoint []byte)
}

// handler routes each insert and hands it to the producer; it runs on the
// replication goroutine.
type handler struct {
	tracker  *checkpoint.Tracker
	sink     producer
	router   *router.Router
	tables   []string
	plans    []*router.Plan     // per table, from its last Relation
	notNull  []map[string]bool  // per table: its NOT NULL columns, for the json-schema format
	resume   *checkpoint.Resume // exactly-once mode only
	obs      Observer
	dlqTopic string // dead-letter topic; empty: a bad event stops the session
	onUpdate OnUpdate
	tracing  *tracing
	log      *slog.Logger
}

func newHandler(tr *checkpoint.Tracker, p producer, rt *router.Router, cfg Config, obs Observer, log *slog.Logger) *handler {
	tables := cfg.Replication.Tables
	notNull := make([]map[string]bool, len(tables))
	for i := range tables {
		notNull[i] = map[string]bool{}
		if i < len(cfg.Columns) {
			for _, c := range cfg.Columns[i] {
				notNull[i][c.Name] = c.NotNull
			}
		}
	}
	return &handler{tracker: tr, sink: p, router: rt, tables: tables, plans: make([]*router.Plan, len(tables)), notNull: notNull,
		obs: obs, dlqTopic: cfg.Kafka.DLQTopic, onUpdate: cfg.OnUpdate, tracing: newTracing(nil, log), log: log}
}

// ackInfo travels with each message to the acknowledgement callback.
type ackInfo struct {
	ticket       checkpoint.Ticket
	topic        string
	sent, commit time.Time
	decoded      time.Time // the walsender's send time, on the commit's clock
	snapshot     bool      // a row of the initial snapshot
	// The producer span (tracing.go), nil when none is recorded, and where
	// Kafka stored the event.
	span      *pendingSpan
	partition int32
	offset    int64
	placed    bool
}

func (h *handler) Heartbeat(sent time.Time) error {
	h.obs.Heartbeat(sent)
	return nil
}

func (h *handler) Relation(table int, cols []replication.Column) error {
	rc := make([]router.Column, len(cols))
	for i, c := range cols {
		rc[i] = router.Column{Name: c.Name, TypeOID: c.TypeOID, TypMod: c.TypMod, NotNull: h.notNull[table][c.Name]}
	}
	plan, err := h.router.Compile(rc)
	if err != nil {
		return Permanent(fmt.Errorf("reading the definition of outbox table %s: %w", h.tables[table], err))
	}
	h.plans[table] = plan
	return nil
}

func (h *handler) Begin(b replication.Begin) error {
	if h.resume != nil {
		h.resume.Begin(b.FinalLSN)
	}
	return h.tracker.Begin()
}

func (h *handler) Commit(c replication.Commit) error {
	if h.resume != nil {
		if boundary := h.resume.Commit(c.EndLSN); boundary != nil {
			h.sink.Boundary(boundary)
		}
	}
	return h.tracker.Commit(c.EndLSN)
}

func (h *handler) Insert(ins replication.Insert) error { return h.route(ins, false) }

// route routes one insert, or one row of the initial snapshot, and hands
// it to the producer.
func (h *handler) route(ins replication.Insert, snapshot bool) error {
	plan := h.plans[ins.Table]
	if plan == nil {
		return fmt.Errorf("insert into %s at %s before the table's definition", h.tables[ins.Table], replication.FormatLSN(ins.WALStart))
	}
	if h.resume != nil && h.resume.Delivered() {
		return nil // in Kafka already, by the checkpoint
	}
	now := ins.ReceivedAt
	rec, err := plan.Route(ins.Values, now)
	if err != nil && h.dlqTopic != "" {
		rec = h.deadLetter(plan, ins, err)
	} else if err != nil {
		return fmt.Errorf("%w (an insert into %s at WAL position %s; nothing from this transaction on was confirmed)", err, h.tables[ins.Table], replication.FormatLSN(ins.WALStart))
	}
	tk, err := h.tracker.Add(rec.Size())
	if err != nil {
		return err
	}
	ack := &ackInfo{ticket: tk, topic: rec.Topic, sent: now, commit: ins.CommitTime, decoded: ins.SentAt, snapshot: snapshot}
	msg := sink.Message{Record: rec, Ack: ack}
	if h.resume != nil {
		msg.Checkpoint = h.resume.Send()
	}
	h.tracing.start(&msg, ack)
	h.sink.Send(msg)
	return nil
}

// deadLetter is the record for a row that cannot be routed.
func (h *handler) deadLetter(plan *router.Plan, ins replication.Insert, reason error) router.Record {
	rec := DeadLetter(plan, ins.Values, h.dlqTopic, reason)
	h.log.Warn("sending an event that cannot be routed to the dead-letter topic", "event_id", rec.EventID, "dlq_topic", h.dlqTopic, "reason", reason.Error())
	return rec
}

// DeadLetter is the dead-letter record for a row (values as plan routes
// them) that cannot be routed: its key and payload as best they decode,
// the reason and the event id in headers.
func DeadLetter(plan *router.Plan, values [][]byte, topic string, reason error) router.Record {
	id, key, payload := plan.Describe(values)
	return router.Record{
		Topic: topic, Key: key, Value: payload, Partition: -1, Timestamp: time.Now(), EventID: id,
		Headers: []router.Header{
			{Key: "id", Value: []byte(id)},
			{Key: sink.HeaderDLQReason, Value: []byte(reason.Error())},
			{Key: sink.HeaderDLQEventID, Value: []byte(id)},
		},
	}
}

// Unpublished applies OnUpdate to an UPDATE of an outbox table (Debezium's
// table.op.invalid.behavior); a TRUNCATE is only ever warned about.
func (h *handler) Unpublished(table int, op string) error {
	attrs := []any{"op", op, "table", h.tables[table]}
	switch {
	case op != "UPDATE":
		h.log.Warn("ignoring a change of an outbox table that is not an insert: only inserts are published", attrs...)
	case h.onUpdate == OnUpdateFatal:
		return Permanent(fmt.Errorf("%w: an UPDATE of outbox table %s arrived and OnUpdate is %q; "+
			"outbox rows are written once: stop the writer that updates them, then restart with OnUpdate %q or %q to pass over it (it is never published)",
			ErrUpdate, h.tables[table], OnUpdateFatal, OnUpdateWarn, OnUpdateError))
	case h.onUpdate == OnUpdateError:
		h.log.Error("ignoring an UPDATE of an outbox table: outbox rows are written once, only inserts are published", attrs...)
	default:
		h.log.Warn("ignoring an UPDATE of an outbox table: outbox rows are written once, only inserts are published", attrs...)
	}
	return nil
}
