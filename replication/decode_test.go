package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgoutput protocol version 1 message builders.
type msg []byte

func (m msg) u8(v byte) msg    { return append(m, v) }
func (m msg) u16(v uint16) msg { return binary.BigEndian.AppendUint16(m, v) }
func (m msg) u32(v uint32) msg { return binary.BigEndian.AppendUint32(m, v) }
func (m msg) u64(v uint64) msg { return binary.BigEndian.AppendUint64(m, v) }
func (m msg) str(s string) msg { return append(append(m, s...), 0) }

func beginMsg(final uint64, xid uint32) []byte {
	return msg{'B'}.u64(final).u64(0).u32(xid)
}

func commitMsg(commit, end uint64) []byte {
	return msg{'C'}.u8(0).u64(commit).u64(end).u64(0)
}

func relationMsg(id uint32, ns, name string, cols ...string) []byte {
	m := msg{'R'}.u32(id).str(ns).str(name).u8('d').u16(uint16(len(cols)))
	for _, c := range cols {
		m = m.u8(0).str(c).u32(25).u32(0xffffffff)
	}
	return m
}

// insertMsg encodes values: "<null>" is NULL.
func insertMsg(rel uint32, values ...string) []byte {
	m := msg{'I'}.u32(rel).u8('N').u16(uint16(len(values)))
	for _, v := range values {
		if v == "<null>" {
			m = m.u8('n')
			continue
		}
		m = m.u8('t').u32(uint32(len(v)))
		m = append(m, v...)
	}
	return m
}

func deleteMsg(rel uint32) []byte {
	return msg{'D'}.u32(rel).u8('K').u16(1).u8('t').u32(1).u8('1')
}

func updateMsg(rel uint32) []byte {
	return msg{'U'}.u32(rel).u8('N').u16(1).u8('t').u32(1).u8('1')
}

type recorder struct {
	calls   []string
	cols    [][]Column
	tables  []int // of each insert
	rows    [][][]byte
	begins  []Begin
	commits []Commit
	fail    error
}

func (r *recorder) Relation(t int, c []Column) error {
	r.calls = append(r.calls, fmt.Sprintf("relation:%d", t))
	r.cols = append(r.cols, c)
	return r.fail
}
func (r *recorder) Begin(b Begin) error {
	r.calls = append(r.calls, "begin")
	r.begins = append(r.begins, b)
	return nil
}
func (r *recorder) Insert(i Insert) error {
	r.calls = append(r.calls, "insert")
	r.tables = append(r.tables, i.Table)
	r.rows = append(r.rows, i.Values)
	return nil
}
func (r *recorder) Heartbeat(sent time.Time) error {
	r.calls = append(r.calls, "heartbeat")
	return nil
}
func (r *recorder) Unpublished(t int, op string) error {
	r.calls = append(r.calls, fmt.Sprintf("%s:%d", op, t))
	return nil
}

func (r *recorder) Commit(c Commit) error {
	r.calls = append(r.calls, "commit:"+FormatLSN(c.EndLSN))
	r.commits = append(r.commits, c)
	return nil
}

func testStream() *Stream {
	return &Stream{cfg: DefaultConfig(), log: slog.New(slog.NewTextHandler(io.Discard, nil)), dec: NewDecoder("public.outbox")}
}

func feed(s *Stream, h Handler, msgs ...[]byte) error {
	for _, m := range msgs {
		if err := s.decode(pglogrepl.XLogData{WALData: m}, h); err != nil {
			return err
		}
	}
	return nil
}

func TestDecodeKeepsOnlyOutboxInserts(t *testing.T) {
	s, rec := testStream(), &recorder{}
	err := feed(s, rec,
		beginMsg(0x100, 7),
		relationMsg(1, "public", "other", "id"),
		insertMsg(1, "x"),
		relationMsg(2, "public", "outbox", "id", "aggregatetype", "payload"),
		insertMsg(2, "e1", "Order", `{"a":1}`),
		insertMsg(2, "e2", "Order", "<null>"),
		insertMsg(2, "e3", "Order", ""),
		deleteMsg(2),
		updateMsg(2),
		commitMsg(0x100, 0x128),
		relationMsg(3, "audit", "outbox", "id"), // same name, other schema
		beginMsg(0x200, 8), insertMsg(3, "no"), commitMsg(0x200, 0x228),
	)
	if err != nil {
		t.Fatal(err)
	}
	want := "begin relation:0 insert insert insert UPDATE:0 commit:0/128 begin commit:0/228"
	if got := strings.Join(rec.calls, " "); got != want {
		t.Fatalf("calls %q, want %q", got, want)
	}
	if rec.cols[0][2].Name != "payload" || rec.cols[0][2].TypeOID != 25 {
		t.Fatalf("columns %+v", rec.cols[0])
	}
	if string(rec.rows[0][2]) != `{"a":1}` || rec.rows[1][2] != nil || rec.rows[2][2] == nil || len(rec.rows[2][2]) != 0 {
		t.Fatalf("values: NULL must be nil and '' must be empty, got %q", rec.rows)
	}
	if s.inTx {
		t.Fatal("stream still in a transaction after COMMIT")
	}
}

func TestDecodeSeveralTables(t *testing.T) {
	s, rec := testStream(), &recorder{}
	s.dec = NewDecoder("tenant_a.outbox", "tenant_b.outbox", "events")
	err := feed(s, rec,
		relationMsg(7, "tenant_b", "outbox", "id", "aggregatetype"),
		relationMsg(9, "public", "events", "aggregatetype", "id"),
		relationMsg(8, "tenant_c", "outbox", "id"), // not listed
		beginMsg(0x100, 7),
		insertMsg(9, "Order", "e1"),
		insertMsg(8, "no"),
		insertMsg(7, "e2", "Order"),
		updateMsg(7),
		relationMsg(5, "tenant_a", "outbox", "id"),
		insertMsg(5, "e3"),
		commitMsg(0x100, 0x128),
	)
	if err != nil {
		t.Fatal(err)
	}
	want := "relation:1 relation:2 begin insert insert UPDATE:1 relation:0 insert commit:0/128"
	if got := strings.Join(rec.calls, " "); got != want {
		t.Fatalf("calls %q, want %q", got, want)
	}
	if fmt.Sprint(rec.tables) != "[2 1 0]" || string(rec.rows[0][1]) != "e1" || string(rec.rows[1][0]) != "e2" || string(rec.rows[2][0]) != "e3" {
		t.Fatalf("inserts: tables %v rows %q", rec.tables, rec.rows)
	}
}

func TestDecodeFollowsRenames(t *testing.T) {
	s, rec := testStream(), &recorder{}
	err := feed(s, rec,
		relationMsg(2, "public", "outbox", "id"),
		relationMsg(2, "public", "outbox_old", "id"), // renamed away
		beginMsg(1, 1), insertMsg(2, "gone"), commitMsg(1, 2),
	)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.rows) != 0 {
		t.Fatalf("insert into a renamed table was delivered: %q", rec.rows)
	}
}

func TestDecodePropagatesHandlerErrors(t *testing.T) {
	s, rec := testStream(), &recorder{fail: errors.New("boom")}
	if err := feed(s, rec, relationMsg(2, "public", "outbox", "id")); err == nil || err.Error() != "boom" {
		t.Fatalf("err = %v", err)
	}
}

// FuzzDecode feeds arbitrary pgoutput messages after a valid relation: the
// decoder must return an error or deliver well-formed rows, never panic.
func FuzzDecode(f *testing.F) {
	for _, seed := range [][]byte{
		beginMsg(1, 2), commitMsg(1, 2), insertMsg(2, "a", "<null>", ""), deleteMsg(2), updateMsg(2),
		relationMsg(2, "public", "outbox", "id", "x"), {'I'}, {'R', 0, 0}, {'T', 0, 0, 0, 1, 0, 0, 0, 0, 2},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, rec := testStream(), &recorder{}
		if err := feed(s, rec, relationMsg(2, "public", "outbox", "id", "x")); err != nil {
			t.Fatal(err)
		}
		_ = s.decode(pglogrepl.XLogData{WALData: data}, rec)
	})
}

func TestSplitTable(t *testing.T) {
	for in, want := range map[string]string{
		"outbox": "public|outbox", "app.outbox": "app|outbox", "App.Outbox": "App|Outbox",
		"": "err", ".x": "err", "a.": "err", "a.b.c": "err", `a."b"`: "err",
	} {
		s, tb, err := SplitTable(in)
		got := s + "|" + tb
		if err != nil {
			got = "err"
		}
		if got != want {
			t.Errorf("SplitTable(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLSNRoundTrip(t *testing.T) {
	for _, s := range []string{"0/0", "0/1930100", "16/B374D848", "FFFFFFFF/FFFFFFFF"} {
		v, err := parseLSN(s)
		if err != nil || FormatLSN(v) != s {
			t.Errorf("parseLSN(%q) = %X, %v; formats back as %q", s, v, err, FormatLSN(v))
		}
	}
	for _, s := range []string{"", "12", "x/1", "1/x", "100000000/0"} {
		if _, err := parseLSN(s); err == nil {
			t.Errorf("parseLSN(%q): want error", s)
		}
	}
}

func TestClassifyStartError(t *testing.T) {
	err := classifyStartError("s", &pgconn.PgError{Code: "55006", Message: `replication slot "s" is active for PID 4242`})
	var inUse *SlotInUseError
	if !errors.As(err, &inUse) || inUse.PID != 4242 {
		t.Fatalf("55006: %v", err)
	}
	for _, code := range []string{"42704", "55000"} {
		if err := classifyStartError("s", &pgconn.PgError{Code: code}); !errors.Is(err, ErrSlotGone) {
			t.Errorf("%s: %v, want ErrSlotGone", code, err)
		}
	}
	other := errors.New("network")
	if classifyStartError("s", other) != other {
		t.Error("unrelated errors must pass through")
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{ConnString: "postgres://h/db?sslmode=bogus", Tables: []string{"a.b.c", "x.y", "public.y", "y"}, Slot: "Has-Dash", StatusInterval: 0, DrainTimeout: -time.Second}
	err := c.Validate()
	for _, w := range []string{"pg-url", "a.b.c", `table "y" is listed twice`, "Has-Dash", "publication", "status-interval", "shutdown-timeout"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate() = %v; want it to mention %q", err, w)
		}
	}
	d := DefaultConfig()
	d.ConnString = "postgres://u@h:5432/db"
	if err := d.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

// deploy/outbox.sql (mounted by docker-compose.yaml) must hold the same DDL
// that preflight recommends.
func TestDeployedDDLMatchesRecommendation(t *testing.T) {
	b, err := os.ReadFile("../deploy/outbox.sql")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), OutboxDDL("public.outbox")) {
		t.Fatalf("deploy/outbox.sql does not contain:\n%s", OutboxDDL("public.outbox"))
	}
}

func messageMsg(prefix, content string) []byte {
	m := msg{'M'}.u8(0).u64(0x500).str(prefix).u32(uint32(len(content)))
	return append(m, content...)
}

func TestDecodeHeartbeats(t *testing.T) {
	s, rec := testStream(), &recorder{}
	err := feed(s, rec,
		messageMsg(HeartbeatPrefix, "1700000000000000000"),
		messageMsg("someone.else", "1700000000000000000"),
		messageMsg(HeartbeatPrefix, "not a number"),
	)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rec.calls, " "); got != "heartbeat" {
		t.Fatalf("calls %q, want one heartbeat", got)
	}
}

// beginCommitAt encodes a Begin and a Commit with a commit time of us
// microseconds after 2000-01-01.
func beginCommitAt(final, end uint64, xid uint32, us int64) (begin, commit []byte) {
	return msg{'B'}.u64(final).u64(uint64(us)).u32(xid), msg{'C'}.u8(0).u64(final).u64(end).u64(uint64(us))
}

// checkAgainstPglogrepl decodes one message both ways: where pglogrepl
// decodes a Begin or Commit, the stream must hand the handler the same
// values, and where pglogrepl refuses it, the stream must refuse it too.
func checkAgainstPglogrepl(t *testing.T, data []byte) {
	t.Helper()
	s, rec := testStream(), &recorder{}
	got := s.decode(pglogrepl.XLogData{WALData: data}, rec)
	want, err := pglogrepl.Parse(data)
	if err != nil {
		if got == nil && len(rec.begins)+len(rec.commits) > 0 {
			t.Fatalf("%x: pglogrepl refuses it (%v) but the stream decoded it", data, err)
		}
		return
	}
	// pglogrepl's nanosecond arithmetic wraps for times past 2262; compare
	// times only where it does not.
	sameTime := func(a, b time.Time) bool {
		if a.Before(time.Date(2250, 1, 1, 0, 0, 0, 0, time.UTC)) && a.After(time.Date(1750, 1, 1, 0, 0, 0, 0, time.UTC)) {
			return a.Equal(b)
		}
		return true
	}
	switch m := want.(type) {
	case *pglogrepl.BeginMessage:
		if got != nil || len(rec.begins) != 1 {
			t.Fatalf("%x: err = %v, begins = %d", data, got, len(rec.begins))
		}
		b := rec.begins[0]
		if b.Xid != m.Xid || b.FinalLSN != uint64(m.FinalLSN) || !sameTime(b.CommitTime, m.CommitTime) || !s.inTx || !s.dec.commitTime.Equal(b.CommitTime) {
			t.Fatalf("%x: decoded %+v, pglogrepl %+v", data, b, m)
		}
	case *pglogrepl.CommitMessage:
		if got != nil || len(rec.commits) != 1 {
			t.Fatalf("%x: err = %v, commits = %d", data, got, len(rec.commits))
		}
		c := rec.commits[0]
		if c.CommitLSN != uint64(m.CommitLSN) || c.EndLSN != uint64(m.TransactionEndLSN) || !sameTime(c.CommitTime, m.CommitTime) || s.inTx {
			t.Fatalf("%x: decoded %+v, pglogrepl %+v", data, c, m)
		}
	}
}

func TestDecodeBeginCommitLikePglogrepl(t *testing.T) {
	now := time.Date(2026, 11, 23, 21, 30, 15, 123456000, time.UTC)
	y2k := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		final, end uint64
		xid        uint32
		us         int64
	}{
		{"recent", 0x1_6B3A_9F28, 0x1_6B3A_9F58, 7412, now.Sub(y2k).Microseconds()},
		{"epoch", 0, 0, 0, 0},
		{"before 2000", 1, 2, 1, -86_400_000_000},
		{"largest values", ^uint64(0), ^uint64(0), ^uint32(0), 7_000_000_000_000_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			begin, commit := beginCommitAt(tc.final, tc.end, tc.xid, tc.us)
			checkAgainstPglogrepl(t, begin)
			checkAgainstPglogrepl(t, commit)
			checkAgainstPglogrepl(t, append(begin, 0xff)) // longer than needed: trailing bytes ignored, as pglogrepl does
			checkAgainstPglogrepl(t, begin[:len(begin)-1])
			checkAgainstPglogrepl(t, commit[:len(commit)-1])
		})
	}
	s, rec := testStream(), &recorder{}
	begin, _ := beginCommitAt(1, 2, 3, now.Sub(y2k).Microseconds())
	if err := feed(s, rec, begin); err != nil || !rec.begins[0].CommitTime.Equal(now) {
		t.Fatalf("err = %v, commit time %v, want %v", err, rec.begins[0].CommitTime, now)
	}
}

// FuzzDecodeBeginCommit checks the stream's own Begin and Commit decoding
// against pglogrepl's on arbitrary input.
func FuzzDecodeBeginCommit(f *testing.F) {
	begin, commit := beginCommitAt(0x16B3A9F28, 0x16B3A9F58, 7412, 817_000_000_000_000)
	f.Add(begin)
	f.Add(commit)
	f.Add([]byte{'B'})
	f.Add([]byte{'C', 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 0 && (data[0] == 'B' || data[0] == 'C') {
			checkAgainstPglogrepl(t, data)
		}
	})
}

// A transaction's Begin and Commit cost no allocation; an insert costs two
// (one copy of the row, one slice of column values).
func TestDecodeAllocations(t *testing.T) {
	s, rec := testStream(), &nopHandler{}
	if err := feed(s, rec, relationMsg(2, "public", "outbox", "id", "aggregatetype", "aggregateid", "payload")); err != nil {
		t.Fatal(err)
	}
	begin, commit := beginCommitAt(1, 2, 3, 4)
	ins := insertMsg(2, "7c1f3e2a-1b7e-4a55-9d0e-3f4b2a1c9e77", "Order", "agg-17", `{"orderId": 17}`)
	for _, tc := range []struct {
		name string
		data []byte
		want float64
	}{{"begin", begin, 0}, {"commit", commit, 0}, {"insert", ins, 2}} {
		xld := pglogrepl.XLogData{WALData: tc.data}
		if got := testing.AllocsPerRun(100, func() { _ = s.decode(xld, rec) }); got != tc.want {
			t.Errorf("%s: %v allocations, want %v", tc.name, got, tc.want)
		}
	}
}

func BenchmarkDecodeTransaction(b *testing.B) {
	s, rec := testStream(), &nopHandler{}
	if err := feed(s, rec, relationMsg(2, "public", "outbox", "id", "aggregatetype", "aggregateid", "payload")); err != nil {
		b.Fatal(err)
	}
	begin, commit := beginCommitAt(1, 2, 3, 4)
	msgs := []pglogrepl.XLogData{{WALData: begin}, {WALData: insertMsg(2, "7c1f3e2a-1b7e-4a55-9d0e-3f4b2a1c9e77", "Order", "agg-17", `{"orderId": 17, "note": "`+strings.Repeat("x", 150)+`"}`)}, {WALData: commit}}
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range msgs {
			if err := s.decode(m, rec); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// nopHandler accepts everything and keeps nothing.
type nopHandler struct{}

func (nopHandler) Relation(int, []Column) error  { return nil }
func (nopHandler) Unpublished(int, string) error { return nil }
func (nopHandler) Begin(Begin) error             { return nil }
func (nopHandler) Insert(Insert) error           { return nil }
func (nopHandler) Commit(Commit) error           { return nil }
func (nopHandler) Heartbeat(time.Time) error     { return nil }
