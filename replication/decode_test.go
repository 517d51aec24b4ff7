package replication

import (
	"encoding/binary"
	"errors"
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
	calls []string
	cols  [][]Column
	rows  [][][]byte
	fail  error
}

func (r *recorder) Relation(c []Column) error {
	r.calls = append(r.calls, "relation")
	r.cols = append(r.cols, c)
	return r.fail
}
func (r *recorder) Begin(b Begin) error {
	r.calls = append(r.calls, "begin")
	return nil
}
func (r *recorder) Insert(i Insert) error {
	r.calls = append(r.calls, "insert")
	r.rows = append(r.rows, i.Values)
	return nil
}
func (r *recorder) Heartbeat(sent time.Time) error {
	r.calls = append(r.calls, "heartbeat")
	return nil
}

func (r *recorder) Commit(c Commit) error {
	r.calls = append(r.calls, "commit:"+FormatLSN(c.EndLSN))
	return nil
}

func testStream() *Stream {
	return &Stream{cfg: DefaultConfig(), log: slog.New(slog.NewTextHandler(io.Discard, nil)), schema: "public", table: "outbox"}
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
	want := "begin relation insert insert insert commit:0/128 begin commit:0/228"
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
	c := Config{ConnString: "postgres://h/db?sslmode=bogus", Table: "a.b.c", Slot: "Has-Dash", StatusInterval: 0, DrainTimeout: -time.Second}
	err := c.Validate()
	for _, w := range []string{"pg-url", "a.b.c", "Has-Dash", "publication", "status-interval", "shutdown-timeout"} {
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
