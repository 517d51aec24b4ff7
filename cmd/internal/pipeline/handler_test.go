package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/router"
	"github.com/outboxrelay/outboxrelay/sink"
)

// fakeProducer records what the handler hands to Kafka; ack acknowledges
// the i-th message as the sink's acknowledgement callback would.
type fakeProducer struct {
	msgs       []sink.Message
	boundaries [][]byte
}

func (f *fakeProducer) Send(m sink.Message) {
	m.Headers = append([]router.Header(nil), m.Headers...) // Send may not keep them
	f.msgs = append(f.msgs, m)
}
func (f *fakeProducer) Boundary(b []byte) { f.boundaries = append(f.boundaries, b) }

type nopObserver struct{ heartbeats int }

func (*nopObserver) Streaming(string, Readings)                    {}
func (*nopObserver) Stopped(uint64)                                {}
func (*nopObserver) Acked(string, time.Time, time.Time, time.Time) {}
func (o *nopObserver) Heartbeat(time.Time)                         { o.heartbeats++ }
func (*nopObserver) Snapshot(SnapshotProgress)                     {}

var outboxColumns = []replication.Column{
	{Name: "id", TypeOID: 25, TypMod: -1}, {Name: "aggregatetype", TypeOID: 25, TypMod: -1},
	{Name: "aggregateid", TypeOID: 25, TypMod: -1}, {Name: "type", TypeOID: 25, TypMod: -1},
	{Name: "payload", TypeOID: 3802, TypMod: -1},
}

type fixture struct {
	h       *handler
	p       *fakeProducer
	tracker *checkpoint.Tracker
}

func newFixture(t *testing.T, cfg Config, rcfg router.Config) fixture {
	t.Helper()
	rt, err := router.New(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &fakeProducer{}
	tr := checkpoint.NewTracker(10, checkpoint.Limits{})
	if len(cfg.Replication.Tables) == 0 {
		cfg.Replication.Tables = []string{"public.outbox"}
	}
	cfg.Columns = [][]replication.Column{outboxColumns}
	h := newHandler(tr, p, rt, cfg, &nopObserver{}, slog.New(slog.DiscardHandler))
	if err := h.Relation(0, outboxColumns); err != nil {
		t.Fatal(err)
	}
	return fixture{h: h, p: p, tracker: tr}
}

// tx feeds one transaction whose commit record is at lsn: an insert per
// (id, route value) pair.
func (f fixture) tx(t *testing.T, lsn uint64, rows ...[2]string) error {
	t.Helper()
	if err := f.h.Begin(replication.Begin{FinalLSN: lsn}); err != nil {
		t.Fatal(err)
	}
	for i, r := range rows {
		ins := replication.Insert{WALStart: lsn - uint64(len(rows)-i), ReceivedAt: time.Unix(1, 0),
			Values: [][]byte{[]byte(r[0]), []byte(r[1]), []byte("agg-" + r[0]), []byte("Created"), []byte(`{"n": 1}`)}}
		if r[1] == "<null>" {
			ins.Values[1] = nil
		}
		if err := f.h.Insert(ins); err != nil {
			return err
		}
	}
	return f.h.Commit(replication.Commit{CommitLSN: lsn, EndLSN: lsn + 8})
}

func (f fixture) ackAll() {
	for _, m := range f.p.msgs {
		f.tracker.Ack(m.Ack.(*ackInfo).ticket)
	}
}

func TestHandlerRoutesAndConfirmsOnlyAcknowledged(t *testing.T) {
	f := newFixture(t, Config{}, router.DefaultConfig())
	if err := f.tx(t, 100, [2]string{"e1", "Order"}, [2]string{"e2", "Customer"}); err != nil {
		t.Fatal(err)
	}
	if len(f.p.msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(f.p.msgs))
	}
	m := f.p.msgs[0]
	if m.Topic != "outbox.event.Order" || string(m.Key) != "agg-e1" || string(m.Value) != `{"n": 1}` ||
		len(m.Headers) != 1 || m.Headers[0].Key != "id" || string(m.Headers[0].Value) != "e1" || m.Partition != -1 {
		t.Fatalf("message %+v", m)
	}
	if lsn, idle := f.tracker.Confirmable(); lsn != 10 || idle {
		t.Fatalf("before Kafka acknowledged: confirmable %d, idle %v; want the start, 10", lsn, idle)
	}
	f.ackAll()
	if lsn, idle := f.tracker.Confirmable(); lsn != 108 || !idle {
		t.Fatalf("after the acknowledgements: confirmable %d, idle %v; want the commit's end, 108", lsn, idle)
	}
}

func TestHandlerBadEvent(t *testing.T) {
	f := newFixture(t, Config{}, router.DefaultConfig())
	err := f.tx(t, 100, [2]string{"e1", "Order"}, [2]string{"e2", "<null>"})
	if !BadEvent(err) || Retryable(err) || !strings.Contains(err.Error(), "at WAL position 0/63") {
		t.Fatalf("err = %v: want a bad event, not retryable, naming its WAL position", err)
	}
	if lsn, _ := f.tracker.Confirmable(); lsn != 10 {
		t.Fatalf("confirmable %d after a bad event, want the start", lsn)
	}

	cfg := Config{}
	cfg.Kafka.DLQTopic = "dead"
	f = newFixture(t, cfg, router.DefaultConfig())
	if err := f.tx(t, 100, [2]string{"e1", "<null>"}); err != nil {
		t.Fatal(err)
	}
	m := f.p.msgs[0]
	if m.Topic != "dead" || string(m.Key) != "agg-e1" || !hasHeader(m, sink.HeaderDLQReason, "route-by column") {
		t.Fatalf("dead letter %+v", m)
	}
}

func hasHeader(m sink.Message, key, contains string) bool {
	for _, h := range m.Headers {
		if h.Key == key && strings.Contains(string(h.Value), contains) {
			return true
		}
	}
	return false
}

func TestHandlerRefusesAnUnusableTable(t *testing.T) {
	f := newFixture(t, Config{}, router.DefaultConfig())
	err := f.h.Relation(0, outboxColumns[:3])
	if err == nil || Retryable(err) || !strings.Contains(err.Error(), `column "payload"`) {
		t.Fatalf("err = %v, want a permanent error about the missing column", err)
	}
	h := newHandler(f.tracker, f.p, f.h.router, Config{Replication: replication.Config{Tables: []string{"public.outbox"}}}, &nopObserver{}, slog.New(slog.DiscardHandler))
	if err := h.Insert(replication.Insert{WALStart: 7}); err == nil || !strings.Contains(err.Error(), "before the table's definition") {
		t.Fatalf("insert before Relation: %v", err)
	}
}

// Exactly-once: resuming after a checkpoint skips what it covers, sends the
// rest with checkpoints, and closes each transaction that sent events with
// a boundary.
func TestHandlerResumesAfterTheCheckpoint(t *testing.T) {
	f := newFixture(t, Config{}, router.DefaultConfig())
	identity := checkpoint.Position{Slot: "s", SystemID: "1", Timeline: 1}
	from := identity
	from.EndLSN, from.PartialCommitLSN, from.PartialEvents = 108, 200, 1
	f.h.resume = checkpoint.NewResume(identity, from)
	if err := f.tx(t, 100, [2]string{"a", "T"}); err != nil {
		t.Fatal(err)
	}
	if err := f.tx(t, 200, [2]string{"b1", "T"}, [2]string{"b2", "T"}, [2]string{"b3", "T"}); err != nil {
		t.Fatal(err)
	}
	var sent []string
	for _, m := range f.p.msgs {
		sent = append(sent, m.EventID+"@"+string(m.Checkpoint))
	}
	want := []string{
		`b2@{"slot":"s","end_lsn":108,"partial_commit_lsn":200,"partial_events":2,"system_id":"1","timeline":1}`,
		`b3@{"slot":"s","end_lsn":108,"partial_commit_lsn":200,"partial_events":3,"system_id":"1","timeline":1}`,
	}
	if fmt.Sprint(sent) != fmt.Sprint(want) {
		t.Fatalf("sent %v\nwant %v", sent, want)
	}
	if len(f.p.boundaries) != 1 || string(f.p.boundaries[0]) != `{"slot":"s","end_lsn":208,"system_id":"1","timeline":1}` {
		t.Fatalf("boundaries %q", f.p.boundaries)
	}
}

func TestHeartbeatsReachTheObserver(t *testing.T) {
	obs := &nopObserver{}
	h := &handler{obs: obs}
	if err := h.Heartbeat(time.Now()); err != nil || obs.heartbeats != 1 {
		t.Fatalf("Heartbeat: %v, %d observed", err, obs.heartbeats)
	}
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err       error
		retryable bool
	}{
		{errors.New("connection reset"), true},
		{fmt.Errorf("receiving: %w", context.DeadlineExceeded), true},
		{&sink.ProduceError{Err: errors.New("broker not available")}, true},
		{fmt.Errorf("streaming: %w", replication.ErrSlotGone), false},
		{Permanent(errors.New("checkpoint of another source")), false},
		{fmt.Errorf("%w: topic", router.ErrRoute), false},
		{&sink.ProduceError{Err: sink.ErrTopicMissing}, false},
		{&UndeliveredError{Events: 1}, true},
	} {
		if got := Retryable(tc.err); got != tc.retryable {
			t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.retryable)
		}
	}
}

// Each table is routed through its own definition: the same options, its
// own column order.
func TestHandlerSeveralTables(t *testing.T) {
	f := newFixture(t, Config{Replication: replication.Config{Tables: []string{"public.outbox", "tenant.outbox"}}}, router.DefaultConfig())
	reordered := []replication.Column{outboxColumns[4], outboxColumns[3], outboxColumns[2], outboxColumns[1], outboxColumns[0]}
	if err := f.h.Relation(1, reordered); err != nil {
		t.Fatal(err)
	}
	if err := f.h.Begin(replication.Begin{FinalLSN: 100}); err != nil {
		t.Fatal(err)
	}
	rows := []replication.Insert{
		{Table: 1, Values: [][]byte{[]byte(`{"t": 1}`), []byte("Created"), []byte("agg-1"), []byte("Customer"), []byte("e1")}},
		{Table: 0, Values: [][]byte{[]byte("e2"), []byte("Order"), []byte("agg-2"), []byte("Created"), []byte(`{"t": 0}`)}},
	}
	for _, ins := range rows {
		if err := f.h.Insert(ins); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.h.Commit(replication.Commit{EndLSN: 108}); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%s %s %s | %s %s %s", f.p.msgs[0].Topic, f.p.msgs[0].Key, f.p.msgs[0].Value, f.p.msgs[1].Topic, f.p.msgs[1].Key, f.p.msgs[1].Value)
	if want := `outbox.event.Customer agg-1 {"t": 1} | outbox.event.Order agg-2 {"t": 0}`; got != want {
		t.Fatalf("records %q, want %q", got, want)
	}
	if lsn, _ := f.tracker.Confirmable(); lsn != 10 {
		t.Fatalf("confirmable %d before the acknowledgements", lsn)
	}
	f.ackAll()
	if lsn, _ := f.tracker.Confirmable(); lsn != 108 {
		t.Fatalf("confirmable %d after the acknowledgements, want 108", lsn)
	}
}

func TestHandlerInsertBeforeDefinition(t *testing.T) {
	f := newFixture(t, Config{Replication: replication.Config{Tables: []string{"public.outbox", "b.outbox"}}}, router.DefaultConfig())
	err := f.h.Insert(replication.Insert{Table: 1, Values: [][]byte{[]byte("x")}})
	if err == nil || !strings.Contains(err.Error(), "b.outbox") {
		t.Fatalf("err = %v; want one naming the table", err)
	}
}

// OnUpdate behaves as Debezium's table.op.invalid.behavior.
func TestHandlerOnUpdate(t *testing.T) {
	for _, tc := range []struct {
		on      OnUpdate
		op      string
		level   string
		stopped bool
	}{
		{on: "", op: "UPDATE", level: "WARN"},
		{on: OnUpdateWarn, op: "UPDATE", level: "WARN"},
		{on: OnUpdateError, op: "UPDATE", level: "ERROR"},
		{on: OnUpdateFatal, op: "UPDATE", stopped: true},
		{on: OnUpdateFatal, op: "TRUNCATE", level: "WARN"},
	} {
		t.Run(string(tc.on)+"/"+tc.op, func(t *testing.T) {
			var logs strings.Builder
			f := newFixture(t, Config{OnUpdate: tc.on}, router.DefaultConfig())
			f.h.log = slog.New(slog.NewTextHandler(&logs, nil))
			err := f.h.Unpublished(0, tc.op)
			if tc.stopped {
				if !errors.Is(err, ErrUpdate) || Retryable(err) || !strings.Contains(err.Error(), "public.outbox") {
					t.Fatalf("err = %v; want ErrUpdate naming the table, not retryable", err)
				}
				return
			}
			if err != nil || !strings.Contains(logs.String(), "level="+tc.level) || !strings.Contains(logs.String(), "table=public.outbox") {
				t.Fatalf("err = %v, logs %q; want a %s naming the table", err, logs.String(), tc.level)
			}
		})
	}
}

func TestParseOnUpdate(t *testing.T) {
	for in, want := range map[string]OnUpdate{"": OnUpdateWarn, "warn": OnUpdateWarn, "error": OnUpdateError, "fatal": OnUpdateFatal} {
		if got, err := ParseOnUpdate(in); err != nil || got != want {
			t.Errorf("ParseOnUpdate(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseOnUpdate("ignore"); err == nil || !strings.Contains(err.Error(), "warn, error or fatal") {
		t.Errorf("ParseOnUpdate(ignore) = %v", err)
	}
}
