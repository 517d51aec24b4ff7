package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/router"
)

// rowsDDL is an outbox table with a column of most types an outbox holds,
// and a generated column, which pgoutput does not publish.
const rowsDDL = `CREATE TABLE typed (
  id uuid PRIMARY KEY, aggregatetype text, aggregateid text, type varchar(40), payload jsonb,
  created_at timestamptz NOT NULL DEFAULT now(), ts3 timestamptz(3), lts timestamp, d date, tm time, iv interval,
  n numeric, n2 numeric(10,2), i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision, ok boolean,
  raw bytea, js json, tags text[], addr inet, ch char(5),
  half bigint GENERATED ALWAYS AS (i8 / 2) STORED);
CREATE PUBLICATION typed FOR TABLE typed WITH (publish = 'insert');`

// rowsInserts are rows with awkward values, NULLs included.
const rowsInserts = `INSERT INTO typed (id, aggregatetype, aggregateid, type, payload, created_at, ts3, lts, d, tm, iv, n, n2, i2, i4, i8, f4, f8, ok, raw, js, tags, addr, ch) VALUES
 ('9f3a6d4e-1b2c-4d5e-8f90-a1b2c3d4e5f6', 'Order', 'o-1', 'Created', '{"b": 1, "a": [1, 2.50, "x"], "s": "é\u00e9\"\\"}',
  '2026-03-01 12:34:56.789012+02', '2026-03-01 12:34:56.7891+00', '2026-03-01 12:34:56.5', '2026-03-01', '23:59:59.999999', '1 day 02:03:04.5',
  123456789012345678901234567890.123456789, 12.5, -32768, 2147483647, -9223372036854775808, 3.14159274, 0.1, true,
  '\x00ff10'::bytea, '{"b":1,  "a" : 2}', '{a,"b c",NULL}', '192.168.0.1/24', 'ab'),
 ('00000000-0000-0000-0000-000000000001', 'Customer', 'c-1', 'Deleted', NULL,
  '1999-12-31 23:59:59+00', NULL, NULL, NULL, NULL, NULL, 'NaN', NULL, NULL, NULL, NULL, '-Infinity', 1e300, false,
  ''::bytea, NULL, '{}', NULL, NULL),
 ('00000000-0000-0000-0000-000000000002', 'Order', 'o-2', 'Changed', '"just a string"',
  '2026-03-01 00:00:00+00', '0001-01-01 00:00:00+00', '2026-03-01 00:00:00', 'infinity', '00:00', '-1 mons', 0, -0.01, 1, 1, 1, 1.5e-10, 2.2250738585072014e-308, NULL,
  'text with spaces'::bytea, 'null', NULL, '::1', 'abcde');`

// TestRowsReadAsStreamed reads rows kept in the table with
// replication.ReadRows and checks that every value is the bytes pgoutput
// sent for the same row, and that both route to the same record.
func TestRowsReadAsStreamed(t *testing.T) {
	e := newEnv(t) // its cleanup drops the test's slots
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := e.pool.Exec(ctx, rowsDDL); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `SELECT pg_create_logical_replication_slot('typed', 'pgoutput')`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, rowsInserts); err != nil {
		t.Fatal(err)
	}
	url := e.url
	const rows = 3
	streamedCols, streamed := streamInserts(ctx, t, url, rows)

	cols, err := replication.TableColumns(ctx, url, "public.typed")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(cols), names(streamedCols); got != want {
		t.Fatalf("TableColumns = %s, pgoutput announced %s", got, want)
	}
	var read [][][]byte
	q := replication.RowsQuery{Table: "public.typed", Columns: strings.Split(names(cols), ","), OrderBy: "ctid", Batch: 2}
	err = replication.ReadRows(ctx, url, q, func(values [][]byte) error {
		read = append(read, replication.CloneValues(values))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(read) != rows {
		t.Fatalf("read %d rows, want %d", len(read), rows)
	}
	for i := range rows {
		for j, c := range cols {
			if a, b := streamed[i][j], read[i][j]; !bytes.Equal(a, b) || (a == nil) != (b == nil) {
				t.Errorf("row %d column %s: streamed %s, read %s", i, c.Name, show(a), show(b))
			}
		}
	}
	compareRoutes(t, cols, streamed, read)
}

// compareRoutes routes the streamed and the read rows through two router
// set-ups (every column in headers; every column in an envelope) and
// compares the records.
func compareRoutes(t *testing.T, cols []replication.Column, streamed, read [][][]byte) {
	t.Helper()
	rc := make([]router.Column, len(cols))
	var headers, envelope []string
	for i, c := range cols {
		rc[i] = router.Column{Name: c.Name, TypeOID: c.TypeOID, TypMod: c.TypMod, NotNull: c.NotNull}
		headers = append(headers, c.Name+":header:h_"+c.Name)
		if c.Name != "payload" {
			envelope = append(envelope, c.Name+":envelope")
		}
	}
	for _, placements := range []string{strings.Join(headers, ","), strings.Join(envelope, ",")} {
		cfg := router.DefaultConfig()
		cfg.ExpandJSONPayload = true
		var err error
		if cfg.Additional, err = router.ParsePlacements(placements); err != nil {
			t.Fatal(err)
		}
		rt, err := router.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		plan, err := rt.Compile(rc)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		for i := range streamed {
			a, errA := plan.Route(streamed[i], now)
			b, errB := plan.Route(read[i], now)
			if fmt.Sprint(errA) != fmt.Sprint(errB) || fmt.Sprintf("%+q", a) != fmt.Sprintf("%+q", b) {
				t.Errorf("row %d routes differently:\nstreamed %+q (%v)\nread     %+q (%v)", i, a, errA, b, errB)
			}
		}
	}
}

// streamInserts streams from the slot until n inserts arrived and returns
// the announced columns and the inserts' values.
func streamInserts(ctx context.Context, t *testing.T, url string, n int) ([]replication.Column, [][][]byte) {
	t.Helper()
	cfg := replication.DefaultConfig()
	cfg.ConnString, cfg.Tables, cfg.Slot, cfg.Publication = url, []string{"public.typed"}, "typed", "typed"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := replication.Open(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	h := &collect{want: n, done: stop}
	err = s.Run(runCtx, nil, h, idle{lsn: s.StartLSN()})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("streaming: %v", err)
	}
	if len(h.rows) != n {
		t.Fatalf("streamed %d inserts, want %d", len(h.rows), n)
	}
	return h.cols, h.rows
}

// collect keeps the inserts a stream delivers.
type collect struct {
	want int
	done func()
	cols []replication.Column
	rows [][][]byte
}

func (c *collect) Relation(_ int, cols []replication.Column) error { c.cols = cols; return nil }
func (c *collect) Unpublished(int, string) error                   { return nil }
func (c *collect) Begin(replication.Begin) error                   { return nil }
func (c *collect) Commit(replication.Commit) error                 { return nil }
func (c *collect) Heartbeat(time.Time) error                       { return nil }
func (c *collect) Insert(ins replication.Insert) error {
	c.rows = append(c.rows, replication.CloneValues(ins.Values))
	if len(c.rows) == c.want {
		c.done()
	}
	return nil
}

// idle is a Progress with nothing in flight that confirms nothing new.
type idle struct{ lsn uint64 }

func (idle) Keepalive(uint64)              {}
func (p idle) Confirmable() (uint64, bool) { return p.lsn, true }
func (idle) Full() bool                    { return false }
func (idle) Notify() <-chan struct{}       { return nil }

func names(cols []replication.Column) string {
	var out []string
	for _, c := range cols {
		out = append(out, c.Name)
	}
	return strings.Join(out, ",")
}

func show(v []byte) string {
	if v == nil {
		return "NULL"
	}
	return fmt.Sprintf("%q", v)
}

// TestRowsSnapshotAndErrors checks that rows are read as of an imported
// snapshot (a row inserted after it is not read, nor counted), that Count
// and CountBy see what Each reads, and that a refused query names the field
// at fault before any row is read.
func TestRowsSnapshotAndErrors(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	for i := range 5 {
		if _, err := e.pool.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (gen_random_uuid(), $1, $2, 'T', '{}')`,
			[]string{"Order", "Customer"}[i%2], fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	exporter, err := e.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer exporter.Rollback(context.Background())
	var snap string
	if err := exporter.QueryRow(ctx, `SELECT pg_export_snapshot()`).Scan(&snap); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type) VALUES (gen_random_uuid(), 'Order', 'late', 'T')`); err != nil {
		t.Fatal(err)
	}
	q := replication.RowsQuery{Table: "outbox", Columns: []string{"aggregateid", "aggregatetype"}, Where: "aggregatetype = $1", Args: []any{"Order"},
		OrderBy: "aggregateid", Snapshot: snap, Batch: 1}
	r, err := replication.OpenRows(ctx, e.url, q)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	n, err := r.Count(ctx)
	if err != nil || n != 3 {
		t.Fatalf("Count = %d, %v; want 3", n, err)
	}
	groups, err := r.CountBy(ctx, "aggregatetype")
	if err != nil || len(groups) != 1 || string(groups[0].Value) != "Order" || groups[0].Rows != 3 {
		t.Fatalf("CountBy = %+v, %v; want Order: 3", groups, err)
	}
	var got []string
	if err := r.Each(ctx, func(v [][]byte) error { got = append(got, string(v[0])); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "0,2,4" {
		t.Fatalf("read %v, want 0,2,4 (the row inserted after the snapshot excluded)", got)
	}
	for _, c := range []struct {
		q     replication.RowsQuery
		field string
	}{
		{replication.RowsQuery{Table: "nope", Columns: []string{"id"}}, "Table"},
		{replication.RowsQuery{Table: "outbox", Columns: []string{"nope"}}, "Columns"},
		{replication.RowsQuery{Table: "outbox", Columns: []string{"id"}, Where: "nope > 1"}, "Where"},
		{replication.RowsQuery{Table: "outbox", Columns: []string{"id"}, Where: "true; DELETE FROM outbox"}, "Where"},
		{replication.RowsQuery{Table: "outbox", Columns: []string{"id"}, OrderBy: "nope"}, "OrderBy"},
		{replication.RowsQuery{Table: "outbox", Columns: []string{"id"}, OrderBy: "ctid; DELETE FROM outbox"}, "OrderBy"},
		{replication.RowsQuery{Table: "outbox", Columns: []string{"id"}, Snapshot: "00000003-0000001B-1"}, "Snapshot"},
	} {
		// The simple protocol asked for in the URL is not used: it would
		// run a second statement.
		for _, url := range []string{e.url, e.url + "&default_query_exec_mode=simple_protocol"} {
			r, err := replication.OpenRows(ctx, url, c.q)
			var qe *replication.QueryError
			if !errors.As(err, &qe) || qe.Field != c.field {
				t.Errorf("OpenRows(%+v) = %v, want a QueryError on %s", c.q, err, c.field)
			}
			if err == nil {
				r.Close(ctx)
			}
		}
	}
	var left int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&left); err != nil || left != 6 {
		t.Fatalf("outbox holds %d rows (%v), want 6", left, err)
	}
}
