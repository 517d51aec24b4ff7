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
	plan     *router.Plan
	notNull  map[string]bool    // the table's NOT NULL columns, for the json-schema format
	resume   *checkpoint.Resume // exactly-once mode only
	obs      Observer
	dlqTopic string // dead-letter topic; empty: a bad event stops the session
	tracing  *tracing
	log      *slog.Logger
}

func newHandler(tr *checkpoint.Tracker, p producer, rt *router.Router, cfg Config, obs Observer, log *slog.Logger) *handler {
	notNull := make(map[string]bool, len(cfg.Columns))
	for _, c := range cfg.Columns {
		notNull[c.Name] = c.NotNull
	}
	return &handler{tracker: tr, sink: p, router: rt, notNull: notNull, obs: obs, dlqTopic: cfg.Kafka.DLQTopic, tracing: newTracing(nil, log), log: log}
}

// ackInfo travels with each message to the acknowledgement callback.
type ackInfo struct {
	ticket       checkpoint.Ticket
	topic        string
	sent, commit time.Time
	decoded      time.Time // the walsender's send time, on the commit's clock
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

func (h *handler) Relation(cols []replication.Column) error {
	rc := make([]router.Column, len(cols))
	for i, c := range cols {
		rc[i] = router.Column{Name: c.Name, TypeOID: c.TypeOID, TypMod: c.TypMod, NotNull: h.notNull[c.Name]}
	}
	plan, err := h.router.Compile(rc)
	if err != nil {
		return Permanent(fmt.Errorf("reading the outbox table's definition: %w", err))
	}
	h.plan = plan
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

func (h *handler) Insert(ins replication.Insert) error {
	if h.plan == nil {
		return fmt.Errorf("insert at %s before the table's definition", replication.FormatLSN(ins.WALStart))
	}
	if h.resume != nil && h.resume.Delivered() {
		return nil // in Kafka already, by the checkpoint
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
	ack := &ackInfo{ticket: tk, topic: rec.Topic, sent: now, commit: ins.CommitTime, decoded: ins.SentAt}
	msg := sink.Message{Record: rec, Ack: ack}
	if h.resume != nil {
		msg.Checkpoint = h.resume.Send()
	}
	h.tracing.start(&msg, ack)
	h.sink.Send(msg)
	return nil
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
