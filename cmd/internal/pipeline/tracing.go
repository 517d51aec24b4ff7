package pipeline

import (
	"context"
	"encoding/hex"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/outboxrelay/outboxrelay/router"
	"github.com/outboxrelay/outboxrelay/sink"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// tracing continues the trace context stored with each event: it warns
// about contexts the router dropped and, with a tracer, records one producer
// span per event that carries a context, child of that context, from the
// moment the event is handed to the sink to Kafka's acknowledgement. The
// record's traceparent then names the producer span, as OpenTelemetry's
// Kafka instrumentation does.
type tracing struct {
	tracer trace.Tracer // nil: no spans
	log    *slog.Logger

	mu   sync.Mutex
	open map[*ackInfo]struct{} // spans started and not yet ended

	// Warnings about dropped contexts: the first at once, then at most one
	// a minute with the count; touched only by the replication goroutine.
	dropped     int
	lastWarning time.Time
}

// droppedWarningEvery bounds the warnings about dropped trace contexts.
const droppedWarningEvery = time.Minute

func newTracing(tracer trace.Tracer, log *slog.Logger) *tracing {
	return &tracing{tracer: tracer, log: log, open: map[*ackInfo]struct{}{}}
}

// start runs on the replication goroutine just before msg goes to the sink.
func (t *tracing) start(msg *sink.Message, ack *ackInfo) {
	if msg.Trace.Dropped != "" {
		t.warnDropped(msg.EventID, msg.Trace.Dropped)
	}
	if t.tracer == nil || msg.Trace.Parent == nil {
		return
	}
	parent, ok := spanContext(msg.Trace)
	if !ok {
		return
	}
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("send"),
		semconv.MessagingDestinationName(msg.Topic),
		semconv.MessagingMessageBodySize(len(msg.Value)),
	}
	if msg.Key != nil {
		attrs = append(attrs, semconv.MessagingKafkaMessageKey(string(msg.Key)))
	}
	if msg.EventID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(msg.EventID))
	}
	if msg.Value == nil {
		attrs = append(attrs, semconv.MessagingKafkaMessageTombstone(true))
	}
	_, span := t.tracer.Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "send "+msg.Topic,
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	setTraceParent(msg.Headers, span.SpanContext())
	ack.span = span
	t.mu.Lock()
	t.open[ack] = struct{}{}
	t.mu.Unlock()
}

// acked ends the event's span, on the sink's acknowledgement goroutine.
func (t *tracing) acked(ack *ackInfo) {
	if ack.span == nil {
		return
	}
	t.mu.Lock()
	delete(t.open, ack)
	t.mu.Unlock()
	if ack.placed {
		ack.span.SetAttributes(semconv.MessagingDestinationPartitionID(strconv.Itoa(int(ack.partition))), semconv.MessagingKafkaOffset(int(ack.offset)))
	}
	ack.span.End()
}

// abandon ends, as errors, the spans of events Kafka did not acknowledge
// before the session ended; the next session sends those events again.
func (t *tracing) abandon() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for ack := range t.open {
		ack.span.SetStatus(codes.Error, "not acknowledged by Kafka before the session ended; the event is sent again from the slot")
		ack.span.End()
	}
	clear(t.open)
}

func (t *tracing) warnDropped(eventID, reason string) {
	t.dropped++
	now := time.Now()
	if !t.lastWarning.IsZero() && now.Sub(t.lastWarning) < droppedWarningEvery {
		return
	}
	t.log.Warn("left an invalid trace context out of a record; the event is delivered without it",
		"event_id", eventID, "reason", reason, "dropped_since_last_warning", t.dropped)
	t.dropped, t.lastWarning = 0, now
}

// Placed records where Kafka stored the event (sink.PlacedAck).
func (a *ackInfo) Placed(partition int32, offset int64) {
	a.partition, a.offset, a.placed = partition, offset, true
}

// spanContext reads a traceparent the router validated, and its tracestate.
func spanContext(tc router.TraceContext) (trace.SpanContext, bool) {
	p := tc.Parent
	var cfg trace.SpanContextConfig
	if _, err := hex.Decode(cfg.TraceID[:], p[3:35]); err != nil {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(cfg.SpanID[:], p[36:52]); err != nil {
		return trace.SpanContext{}, false
	}
	var flags [1]byte
	if _, err := hex.Decode(flags[:], p[53:55]); err != nil {
		return trace.SpanContext{}, false
	}
	cfg.TraceFlags = trace.TraceFlags(flags[0]) & trace.FlagsSampled
	if tc.State != nil {
		cfg.TraceState, _ = trace.ParseTraceState(string(tc.State))
	}
	cfg.Remote = true
	sc := trace.NewSpanContext(cfg)
	return sc, sc.IsValid()
}

// setTraceParent points the record's traceparent header at sc.
func setTraceParent(hs []router.Header, sc trace.SpanContext) {
	for i := range hs {
		if hs[i].Key == router.HeaderTraceParent {
			hs[i].Value = traceParent(sc)
			return
		}
	}
}

// traceParent writes sc as a version 00 traceparent.
func traceParent(sc trace.SpanContext) []byte {
	b := make([]byte, 55)
	copy(b, "00-")
	tid, sid := sc.TraceID(), sc.SpanID()
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{byte(sc.TraceFlags())})
	return b
}
