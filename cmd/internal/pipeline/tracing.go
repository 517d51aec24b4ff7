package pipeline

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outboxrelay/outboxrelay/router"
	"github.com/outboxrelay/outboxrelay/sink"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// tracing continues the trace context stored with each event. It warns
// about contexts the router dropped and, with a tracer, records one producer
// span per event that carries a context: a child of that context, from the
// moment the event is handed to the sink to Kafka's acknowledgement. The
// record's traceparent then names the producer span, as OpenTelemetry's
// Kafka instrumentation does.
//
// Neither the replication goroutine nor the sink's feeder does any span
// work: the first draws the span's id and writes the header, the second
// notes the acknowledgement and passes it on; the span is created and ended
// with those times on tracing's own goroutine (run). The span follows the
// stored context's sampling decision, which the header carries.
type tracing struct {
	tracer trace.Tracer // nil: no spans
	log    *slog.Logger
	rng    *rand.ChaCha8 // span ids; replication goroutine only

	mu     sync.Mutex
	open   map[*ackInfo]struct{} // spans handed to the sink and not acknowledged
	closed bool
	// done carries acknowledged (and, at the end, abandoned) spans to run;
	// a span that finds it full is dropped, as the SDK drops a span its
	// queue has no room for.
	done    chan *ackInfo
	stopped chan struct{}
	lost    atomic.Int64 // spans dropped for want of room in done

	// Warnings about dropped contexts: the first at once, then at most one
	// a minute with the count; replication goroutine only.
	dropped     int
	lastWarning time.Time
}

const (
	droppedWarningEvery = time.Minute
	lostWarningEvery    = 10 * time.Second
	// spanQueue bounds the spans acknowledged and not yet handed to the SDK.
	spanQueue = 8192
)

// pendingSpan is what travels with an event whose span is recorded.
type pendingSpan struct {
	parent     trace.SpanContext
	id         trace.SpanID
	start, end time.Time
	key        string // copied: the record's key is not kept past the acknowledgement
	keyed      bool
	eventID    string
	abandoned  bool
}

func newTracing(tracer trace.Tracer, log *slog.Logger) *tracing {
	t := &tracing{tracer: tracer, log: log, stopped: make(chan struct{})}
	if tracer == nil {
		close(t.stopped)
		return t
	}
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], rand.Uint64())
	binary.LittleEndian.PutUint64(seed[8:], rand.Uint64())
	t.rng = rand.NewChaCha8(seed)
	t.open = map[*ackInfo]struct{}{}
	t.done = make(chan *ackInfo, spanQueue)
	go t.run()
	return t
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
	var id trace.SpanID
	for id == (trace.SpanID{}) {
		binary.LittleEndian.PutUint64(id[:], t.rng.Uint64())
	}
	setTraceParent(msg.Headers, parent.TraceID(), id, parent.TraceFlags())
	if !parent.IsSampled() {
		return // not recorded: the header alone continues the trace, as the SDK's non-recording span would
	}
	ack.span = &pendingSpan{parent: parent, id: id, start: time.Now(), key: string(msg.Key), eventID: msg.EventID, keyed: msg.Key != nil}
	t.mu.Lock()
	t.open[ack] = struct{}{}
	t.mu.Unlock()
}

// acked passes the event's span on to be recorded; on the sink's
// acknowledgement goroutine.
func (t *tracing) acked(ack *ackInfo) {
	if ack.span == nil {
		return
	}
	ack.span.end = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	delete(t.open, ack)
	select {
	case t.done <- ack:
	default:
		t.lost.Add(1)
	}
}

// close ends, as errors, the spans of events Kafka did not acknowledge
// before the session ended (the next session sends those events again),
// then records what is queued and stops run. The sink must be closed.
func (t *tracing) close() {
	if t.tracer == nil {
		return
	}
	t.mu.Lock()
	now := time.Now()
	for ack := range t.open {
		ack.span.end, ack.span.abandoned = now, true
		select {
		case t.done <- ack:
		default:
			t.lost.Add(1)
		}
	}
	clear(t.open)
	t.closed = true
	t.mu.Unlock()
	close(t.done)
	<-t.stopped
}

// run records the spans handed to it, and warns about spans dropped
// because the exporter did not keep up, at most every lostWarningEvery.
func (t *tracing) run() {
	defer close(t.stopped)
	tick := time.NewTicker(lostWarningEvery)
	defer tick.Stop()
	defer t.warnLost()
	for {
		select {
		case ack, ok := <-t.done:
			if !ok {
				return
			}
			t.record(ack)
		case <-tick.C:
			t.warnLost()
		}
	}
}

func (t *tracing) warnLost() {
	if n := t.lost.Swap(0); n > 0 {
		t.log.Warn("dropped producer spans: the span exporter did not keep up (delivery is never slowed for spans)", "spans", n,
			"hint", "raise OTEL_BSP_MAX_QUEUE_SIZE, or sample fewer traces in the application")
	}
}

func (t *tracing) record(ack *ackInfo) {
	s := ack.span
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("send"),
		semconv.MessagingDestinationName(ack.topic),
		{}, {}, {}, {}, // room for the ones below
	}[:4]
	if s.keyed {
		attrs = append(attrs, semconv.MessagingKafkaMessageKey(s.key))
	}
	if s.eventID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(s.eventID))
	}
	if ack.placed {
		attrs = append(attrs, semconv.MessagingDestinationPartitionID(strconv.Itoa(int(ack.partition))), semconv.MessagingKafkaOffset(int(ack.offset)))
	}
	ctx := withSpanID(trace.ContextWithRemoteSpanContext(context.Background(), s.parent), s.id)
	_, span := t.tracer.Start(ctx, "send "+ack.topic, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithTimestamp(s.start), trace.WithAttributes(attrs...))
	if s.abandoned {
		span.SetStatus(codes.Error, "not acknowledged by Kafka before the session ended; the event is sent again from the slot")
	}
	span.End(trace.WithTimestamp(s.end))
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
	var flags [1]byte
	if _, err := hex.Decode(cfg.TraceID[:], p[3:35]); err != nil {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(cfg.SpanID[:], p[36:52]); err != nil {
		return trace.SpanContext{}, false
	}
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

// setTraceParent points the record's traceparent header at the producer
// span: a version 00 traceparent of the trace, the span and the flags.
func setTraceParent(hs []router.Header, tid trace.TraceID, sid trace.SpanID, flags trace.TraceFlags) {
	for i := range hs {
		if hs[i].Key != router.HeaderTraceParent {
			continue
		}
		b := make([]byte, 55)
		copy(b, "00-")
		hex.Encode(b[3:35], tid[:])
		b[35] = '-'
		hex.Encode(b[36:52], sid[:])
		b[52] = '-'
		hex.Encode(b[53:55], []byte{byte(flags)})
		hs[i].Value = b
		return
	}
}

// spanIDKey is the context key of a span id drawn before the span starts.
type spanIDKey struct{}

func withSpanID(ctx context.Context, id trace.SpanID) context.Context {
	return context.WithValue(ctx, spanIDKey{}, id)
}

// SpanIDs is the tracer provider's ID generator the sessions' spans need
// (the SDK's WithIDGenerator): it gives a producer span the id its record's
// traceparent already names, and random ids otherwise.
type SpanIDs struct {
	mu  sync.Mutex
	rng *rand.ChaCha8
}

// NewSpanIDs returns a generator seeded at random.
func NewSpanIDs() *SpanIDs {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], rand.Uint64())
	binary.LittleEndian.PutUint64(seed[8:], rand.Uint64())
	return &SpanIDs{rng: rand.NewChaCha8(seed)}
}

// NewIDs returns a new trace id and span id.
func (g *SpanIDs) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	var tid trace.TraceID
	g.mu.Lock()
	for tid == (trace.TraceID{}) {
		binary.LittleEndian.PutUint64(tid[:8], g.rng.Uint64())
		binary.LittleEndian.PutUint64(tid[8:], g.rng.Uint64())
	}
	g.mu.Unlock()
	return tid, g.NewSpanID(ctx, tid)
}

// NewSpanID returns the span id drawn for ctx's span, or a new one.
func (g *SpanIDs) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	if id, ok := ctx.Value(spanIDKey{}).(trace.SpanID); ok {
		return id
	}
	var id trace.SpanID
	g.mu.Lock()
	defer g.mu.Unlock()
	for id == (trace.SpanID{}) {
		binary.LittleEndian.PutUint64(id[:], g.rng.Uint64())
	}
	return id
}
