package e2e

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

const traceColumnsDDL = `ALTER TABLE outbox ADD COLUMN traceparent text, ADD COLUMN tracestate text, ADD COLUMN tracingspancontext text`

// insertTraced writes one event with the given trace columns ("" is NULL).
func insertTraced(t *testing.T, e *env, id, parent, state, spanContext string) {
	t.Helper()
	null := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, traceparent, tracestate, tracingspancontext)
		VALUES ($1, 'Order', 'o-1', 'Created', '{}', $2, $3, $4)`, id, null(parent), null(state), null(spanContext))
}

func headerKeys(r *kgo.Record) []string {
	var keys []string
	for _, h := range r.Headers {
		keys = append(keys, h.Key)
	}
	return keys
}

// The trace context stored with an event reaches the record as W3C
// headers, from plain columns or from Debezium's span-context column as
// its Quarkus outbox extension writes it; the plain form wins when a row has
// both; an invalid one is left out with a warning and the event delivered.
func TestTraceContextBecomesHeaders(t *testing.T) {
	e := newEnv(t)
	exec1(t, e.pool, traceColumnsDDL)
	const (
		tp1 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		tp2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		ts  = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
	)
	// Properties.store: a date comment, '=' escaped in values; here with a
	// line continuation and a \u escape as well.
	quarkus := "#Tue Dec 01 10:00:00 UTC 2026\r\ntraceparent=" + tp2[:20] + "\\\r\n    " + tp2[20:] + "\r\ntracestate=rojo\\=00f067aa0ba902b7,congo\\u003dt61rcWkgMzE\r\n"
	cases := []struct {
		id, parent, state, spanContext string
		want                           []string // traceparent, tracestate ("" none)
	}{
		{"00000000-0000-0000-0000-000000000001", tp1, ts, "", []string{tp1, ts}},
		{"00000000-0000-0000-0000-000000000002", "", "", quarkus, []string{tp2, ts}},
		{"00000000-0000-0000-0000-000000000003", tp1, "", quarkus, []string{tp1, ""}},
		{"00000000-0000-0000-0000-000000000004", "00-not-a-traceparent", ts, "", []string{"", ""}},
		{"00000000-0000-0000-0000-000000000005", "", "", "", []string{"", ""}},
	}
	p := e.start()
	e.waitStreaming("outboxrelay")
	for _, c := range cases {
		insertTraced(t, e, c.id, c.parent, c.state, c.spanContext)
	}
	recs := e.readTopics([]string{"outbox.event.Order"}, func(r []*kgo.Record) bool { return len(r) >= len(cases) }, 15*time.Second)
	if len(recs) != len(cases) {
		t.Fatalf("%d records, want %d", len(recs), len(cases))
	}
	for i, c := range cases {
		r := recs[i]
		if got := header(r, "id"); got != c.id {
			t.Fatalf("record %d is event %s, want %s", i, got, c.id)
		}
		if got := []string{header(r, "traceparent"), header(r, "tracestate")}; got[0] != c.want[0] || got[1] != c.want[1] {
			t.Errorf("event %s: traceparent %q, tracestate %q; want %q", c.id, got[0], got[1], c.want)
		}
		if keys := headerKeys(r); c.want[0] != "" && keys[0] != "traceparent" {
			t.Errorf("event %s: headers %v, want traceparent first as Debezium writes it", c.id, keys)
		}
	}
	p.waitLog(t, "left an invalid trace context out of a record", 5*time.Second)
	if !strings.Contains(p.logs.String(), "event_id=00000000-0000-0000-0000-000000000004") {
		t.Errorf("the warning does not name the event")
	}
}

// otlpReceiver is an OTLP/HTTP trace endpoint that keeps every span.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	res   []string // service.name of each span's resource
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	req := &coltrace.ExportTraceServiceRequest{}
	if err == nil {
		err = proto.Unmarshal(raw, req)
	}
	if r.URL.Path != "/v1/traces" || err != nil {
		http.Error(w, fmt.Sprintf("path %s: %v", r.URL.Path, err), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.ResourceSpans {
		name := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				name = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				o.spans = append(o.spans, s)
				o.res = append(o.res, name)
			}
		}
	}
	o.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (o *otlpReceiver) received() ([]*tracepb.Span, []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*tracepb.Span(nil), o.spans...), append([]string(nil), o.res...)
}

func spanAttr(s *tracepb.Span, key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			if v := a.GetValue(); v.GetStringValue() != "" {
				return v.GetStringValue()
			}
			return fmt.Sprint(a.GetValue().GetIntValue())
		}
	}
	return ""
}

// With an OTLP endpoint in the standard variables, the relay exports one
// producer span per event that carries a context, child of the stored
// context, and the record's traceparent names that span; events without a
// context get none. A clean stop flushes the spans.
func TestProducerSpansOverOTLP(t *testing.T) {
	e := newEnv(t)
	exec1(t, e.pool, traceColumnsDDL)
	recv := &otlpReceiver{}
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	e.relayEnv = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + srv.URL, "OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_SERVICE_NAME=relay-under-test"}
	p := e.start()
	e.waitStreaming("outboxrelay")
	parents := map[string]string{} // event id -> stored traceparent
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("00000000-0000-0000-0000-00000000000%d", i)
		parents[id] = fmt.Sprintf("00-4bf92f3577b34da6a3ce929d0e0e473%d-00f067aa0ba902b%d-01", i, i)
		insertTraced(t, e, id, parents[id], "rojo=1", "")
	}
	insertTraced(t, e, "00000000-0000-0000-0000-000000000009", "", "", "")
	recs := e.readTopics([]string{"outbox.event.Order"}, func(r []*kgo.Record) bool { return len(r) >= 4 }, 15*time.Second)
	waitUntil(t, 10*time.Second, "3 spans exported", func() bool { s, _ := recv.received(); return len(s) >= 3 })
	p.signal(syscall.SIGTERM)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	spans, services := recv.received()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want one per event with a stored context (3)", len(spans))
	}
	bySpanID := map[string]*tracepb.Span{}
	for i, s := range spans {
		bySpanID[hex.EncodeToString(s.SpanId)] = s
		if services[i] != "relay-under-test" {
			t.Errorf("span %d: service.name %q", i, services[i])
		}
	}
	for _, r := range recs {
		id, tp := header(r, "id"), header(r, "traceparent")
		stored, traced := parents[id]
		if !traced {
			if tp != "" {
				t.Errorf("event %s without a context got traceparent %q", id, tp)
			}
			continue
		}
		parts := strings.Split(tp, "-")
		if len(parts) != 4 || parts[1] != stored[3:35] || parts[3] != "01" {
			t.Fatalf("event %s: record traceparent %q, want the stored trace %s, sampled", id, tp, stored[3:35])
		}
		s := bySpanID[parts[2]]
		if s == nil {
			t.Fatalf("event %s: the record's traceparent %s names no exported span", id, tp)
		}
		if hex.EncodeToString(s.TraceId) != stored[3:35] || hex.EncodeToString(s.ParentSpanId) != stored[36:52] {
			t.Errorf("event %s: span trace %x parent %x, want the stored %s", id, s.TraceId, s.ParentSpanId, stored)
		}
		if s.Kind != tracepb.Span_SPAN_KIND_PRODUCER || s.Name != "send outbox.event.Order" || s.TraceState != "rojo=1" {
			t.Errorf("event %s: span kind %v name %q trace state %q", id, s.Kind, s.Name, s.TraceState)
		}
		for k, want := range map[string]string{"messaging.system": "kafka", "messaging.destination.name": "outbox.event.Order",
			"messaging.kafka.message.key": "o-1", "messaging.message.id": id,
			"messaging.destination.partition.id": fmt.Sprint(r.Partition), "messaging.kafka.offset": fmt.Sprint(r.Offset)} {
			if got := spanAttr(s, k); got != want {
				t.Errorf("event %s: %s = %q, want %q", id, k, got, want)
			}
		}
		if s.EndTimeUnixNano < s.StartTimeUnixNano || s.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("event %s: span from %d to %d, status %v", id, s.StartTimeUnixNano, s.EndTimeUnixNano, s.Status)
		}
	}
}

// An OpenTelemetry setting the relay cannot honour stops it at start with
// the variable named, before it touches the database.
func TestUnsupportedOTLPProtocolIsRefused(t *testing.T) {
	code, out := runBinary(t, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"},
		"run", "--pg-url", "postgres://relay@127.0.0.1:1/db", "--brokers", "127.0.0.1:1", "--http-addr", "")
	if code != 2 || !strings.Contains(out, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc") || !strings.Contains(out, "4318") {
		t.Fatalf("exit code %d, want 2 naming the variable:\n%s", code, out)
	}
}
