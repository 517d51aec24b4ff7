package pipeline

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/router"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const (
	storedParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	storedState  = "rojo=00f067aa0ba902b7"
	// unsampledParent's flags say the application did not sample the trace.
	unsampledParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
)

var tracedColumns = append(append([]replication.Column(nil), outboxColumns...),
	replication.Column{Name: "traceparent", TypeOID: 25, TypMod: -1}, replication.Column{Name: "tracestate", TypeOID: 25, TypMod: -1})

// tracedHandler is a handler whose table has trace columns, with spans
// recorded in memory when recorder is set.
func tracedHandler(t *testing.T, recorder *tracetest.SpanRecorder, log *slog.Logger) (*handler, *fakeProducer) {
	t.Helper()
	rt, err := router.New(router.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	p := &fakeProducer{}
	h := newHandler(checkpoint.NewTracker(10, checkpoint.Limits{}), p, rt, Config{Columns: [][]replication.Column{tracedColumns}, Replication: replication.Config{Tables: []string{"public.outbox"}}}, &nopObserver{}, log)
	if recorder != nil {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder), sdktrace.WithIDGenerator(NewSpanIDs()))
		h.tracing = newTracing(tp.Tracer("test"), log)
	}
	if err := h.Relation(0, tracedColumns); err != nil {
		t.Fatal(err)
	}
	if err := h.Begin(replication.Begin{FinalLSN: 100}); err != nil {
		t.Fatal(err)
	}
	return h, p
}

func insertTraced(t *testing.T, h *handler, id, parent string) {
	t.Helper()
	vals := [][]byte{[]byte(id), []byte("Order"), []byte("agg-" + id), []byte("Created"), []byte(`{}`), nil, []byte(storedState)}
	if parent != "" {
		vals[5] = []byte(parent)
	}
	if err := h.Insert(replication.Insert{WALStart: 99, ReceivedAt: time.Unix(1, 0), Values: vals}); err != nil {
		t.Fatal(err)
	}
}

func header(m []router.Header, key string) string {
	for _, h := range m {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return "<none>"
}

func TestProducerSpanPerTracedEvent(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	h, p := tracedHandler(t, rec, slog.New(slog.DiscardHandler))
	insertTraced(t, h, "1", storedParent)
	insertTraced(t, h, "2", "")
	insertTraced(t, h, "3", storedParent)
	insertTraced(t, h, "4", unsampledParent)
	if len(rec.Started()) != 0 {
		t.Fatalf("%d spans started on the replication goroutine", len(rec.Started()))
	}
	first := p.msgs[0].Ack.(*ackInfo)
	first.Placed(4, 77)
	h.tracing.acked(first)
	h.tracing.acked(p.msgs[1].Ack.(*ackInfo)) // no context, no span
	h.tracing.acked(p.msgs[3].Ack.(*ackInfo)) // not sampled, no span
	h.tracing.close()
	ended := rec.Ended()
	if len(ended) != 2 {
		t.Fatalf("%d spans ended, want 2", len(ended))
	}
	for i, s := range ended {
		if s.SpanKind() != trace.SpanKindProducer || s.Name() != "send outbox.event.Order" {
			t.Errorf("span %d: kind %v, name %q", i, s.SpanKind(), s.Name())
		}
		if got := s.Parent().TraceID().String() + "-" + s.Parent().SpanID().String(); got != storedParent[3:52] {
			t.Errorf("span %d: parent %s, want the stored context %s", i, got, storedParent[3:52])
		}
		if s.SpanContext().TraceState().String() != storedState {
			t.Errorf("span %d: trace state %q", i, s.SpanContext().TraceState())
		}
		msg := p.msgs[2*i]
		want := "00-" + s.SpanContext().TraceID().String() + "-" + s.SpanContext().SpanID().String() + "-01"
		if got := header(msg.Headers, "traceparent"); got != want {
			t.Errorf("span %d: record traceparent %s, want the producer span's %s", i, got, want)
		}
		if got := header(msg.Headers, "tracestate"); got != storedState {
			t.Errorf("span %d: record tracestate %q", i, got)
		}
	}
	attrs := map[attribute.Key]string{}
	for _, a := range ended[0].Attributes() {
		attrs[a.Key] = a.Value.Emit()
	}
	for k, v := range map[attribute.Key]string{"messaging.system": "kafka", "messaging.destination.name": "outbox.event.Order",
		"messaging.kafka.message.key": "agg-1", "messaging.message.id": "1", "messaging.destination.partition.id": "4",
		"messaging.kafka.offset": "77", "messaging.operation.type": "send"} {
		if attrs[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, attrs[k], v)
		}
	}
	if ended[0].Status().Code == codes.Error || ended[1].Status().Code != codes.Error {
		t.Errorf("statuses %v, %v: want the acknowledged span ok and the abandoned one an error", ended[0].Status(), ended[1].Status())
	}
	if got := header(p.msgs[1].Headers, "traceparent"); got != "<none>" {
		t.Errorf("an event without a context got traceparent %q", got)
	}
	if got := header(p.msgs[3].Headers, "traceparent"); got[:36] != unsampledParent[:36] || got[36:52] == unsampledParent[36:52] || got[52:] != "-00" {
		t.Errorf("an unsampled context became traceparent %q, want its trace with a new span id, not sampled", got)
	}
}

func TestStoredContextPassesThroughWithoutTracer(t *testing.T) {
	var logs bytes.Buffer
	h, p := tracedHandler(t, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	insertTraced(t, h, "1", storedParent)
	insertTraced(t, h, "2", "00-bad")
	insertTraced(t, h, "3", "00-bad")
	if got := header(p.msgs[0].Headers, "traceparent"); got != storedParent {
		t.Errorf("traceparent %q, want the stored one", got)
	}
	if got := header(p.msgs[1].Headers, "traceparent"); got != "<none>" {
		t.Errorf("an invalid traceparent reached the record: %q", got)
	}
	if n := strings.Count(logs.String(), "left an invalid trace context out"); n != 1 {
		t.Errorf("%d warnings for two dropped contexts in a minute, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "event_id=2") {
		t.Errorf("the warning does not name the event:\n%s", logs.String())
	}
}

// BenchmarkProducerSpan is the relay's cost per traced event: routing with
// trace columns, the span's start and its end into a batch processor whose
// exporter discards the spans.
func BenchmarkProducerSpan(b *testing.B) {
	for _, traced := range []bool{false, true} {
		b.Run(map[bool]string{false: "no tracer", true: "tracer"}[traced], func(b *testing.B) {
			t := &testing.T{}
			h, p := tracedHandler(t, nil, slog.New(slog.DiscardHandler))
			if traced {
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter(), sdktrace.WithMaxQueueSize(16384), sdktrace.WithMaxExportBatchSize(2048)),
					sdktrace.WithIDGenerator(NewSpanIDs()))
				defer func() { _ = tp.Shutdown(b.Context()) }()
				h.tracing = newTracing(tp.Tracer("bench"), slog.New(slog.DiscardHandler))
				defer h.tracing.close()
			}
			vals := [][]byte{[]byte("1"), []byte("Order"), []byte("agg-1"), []byte("Created"), []byte(`{}`), []byte(storedParent), []byte(storedState)}
			ins := replication.Insert{WALStart: 99, ReceivedAt: time.Unix(1, 0), Values: vals}
			b.ReportAllocs()
			for b.Loop() {
				if err := h.Insert(ins); err != nil {
					b.Fatal(err)
				}
				ack := p.msgs[0].Ack.(*ackInfo)
				ack.Placed(0, 1)
				h.tracing.acked(ack)
				h.tracker.Ack(ack.ticket)
				p.msgs = p.msgs[:0]
			}
		})
	}
}
