package replication

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Reading rows kept in the outbox table, for a replay or an initial
// snapshot: the values come out exactly as pgoutput would send the same row.
//
// pgoutput writes each value with its type's output function under the
// walsender's settings. Rows opens an ordinary SQL connection with the
// settings Open gives the replication connection (DateStyle ISO, MDY;
// TimeZone UTC; bytea_output hex; extra_float_digits 3) and reads every
// value in text format through a cursor, so the same output functions run
// under the same settings: a row read here routes to the record the same
// row streamed routes to (TestRowsReadAsStreamed in test/e2e).

// DefaultRowsBatch is how many rows one FETCH reads when RowsQuery.Batch is 0.
const DefaultRowsBatch = 1000

// RowsQuery says which rows of a table to read and in which order.
type RowsQuery struct {
	// Table is "schema.table" or "table" (see SplitTable).
	Table string
	// Columns are the columns to read, in this order; each row has one
	// value per column. TableColumns returns them as pgoutput announces
	// the table.
	Columns []string
	// Where, when set, is an SQL condition rows must meet (ANDed with
	// nothing else: it is the whole WHERE clause, in parentheses). It runs
	// as the connection's role inside the READ ONLY transaction; it may
	// refer to Args as $1, $2, ...
	Where string
	// Args are Where's parameters.
	Args []any
	// OrderBy is the ORDER BY list, SQL as written, e.g.
	// `"created_at", ctid`. Empty: ctid, the rows' physical order, which
	// is deterministic within the transaction's snapshot and, in a table
	// whose rows are never deleted or updated, the order they were
	// inserted in; once VACUUM has freed space that later inserts reuse,
	// it is not. A timestamp column set at insert, then ctid, follows the
	// insertion order more closely.
	OrderBy string
	// Snapshot, when set, is a snapshot exported by another session
	// (pg_export_snapshot, or a replication slot created with
	// EXPORT_SNAPSHOT) that the reading transaction imports: the rows are
	// read as of that snapshot. The exporting transaction must still be
	// open when the rows are opened.
	Snapshot string
	// Batch is how many rows one FETCH reads (memory is bounded by one
	// batch); 0 means DefaultRowsBatch.
	Batch int
}

// Validate reports every problem at once, naming the RowsQuery fields.
func (q RowsQuery) Validate() error {
	var errs []error
	if _, _, err := SplitTable(q.Table); err != nil {
		errs = append(errs, fmt.Errorf("RowsQuery.Table: %w", err))
	}
	if len(q.Columns) == 0 {
		errs = append(errs, errors.New("RowsQuery.Columns: at least one column is required"))
	}
	for _, c := range q.Columns {
		if c == "" {
			errs = append(errs, errors.New("RowsQuery.Columns: a column name is empty"))
		}
	}
	if q.Where == "" && len(q.Args) > 0 {
		errs = append(errs, errors.New("RowsQuery.Args: parameters given without RowsQuery.Where"))
	}
	if q.Batch < 0 {
		errs = append(errs, fmt.Errorf("RowsQuery.Batch: %d is negative", q.Batch))
	}
	return errors.Join(errs...)
}

// QueryError is an error the server gave for one part of a RowsQuery: Field
// names the RowsQuery field at fault ("Table", "Columns", "Where",
// "OrderBy" or "Snapshot"), so that a caller can name its own flag.
type QueryError struct {
	Field string
	Err   error
}

func (e *QueryError) Error() string { return fmt.Sprintf("RowsQuery.%s: %v", e.Field, e.Err) }
func (e *QueryError) Unwrap() error { return e.Err }

// Rows is an open read of a table: one connection, in one REPEATABLE READ
// READ ONLY transaction, with a cursor declared over the query. Count and
// CountBy see the same snapshot as Each. A Rows is not safe for concurrent
// use; Close it. While it is open its transaction holds back the cleanup of
// rows deleted after its snapshot, as any open transaction does.
type Rows struct {
	conn  *pgx.Conn
	q     RowsQuery
	from  string // FROM ... WHERE ..., shared by the cursor and the counts
	batch int
}

// OpenRows connects, begins the transaction (importing q.Snapshot when
// set) and declares the cursor. A query the server refuses fails here, as
// a *QueryError naming the field at fault, before any row is read.
func OpenRows(ctx context.Context, connString string, q RowsQuery) (*Rows, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	conn, err := connectRows(ctx, connString)
	if err != nil {
		return nil, err
	}
	r := &Rows{conn: conn, q: q, batch: q.Batch}
	if r.batch == 0 {
		r.batch = DefaultRowsBatch
	}
	if err := r.begin(ctx); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return r, nil
}

// connectRows opens the SQL connection with the replication connection's
// output settings (see Open).
func connectRows(ctx context.Context, connString string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("parsing pg-url: %w", err)
	}
	for k, v := range outputSettings() {
		cfg.RuntimeParams[k] = v
	}
	// A snapshot's transaction waits idle while Kafka is slow or another
	// table is read, for as long as that takes: a server-wide idle or
	// statement timeout must not end it.
	cfg.RuntimeParams["idle_in_transaction_session_timeout"] = "0"
	cfg.RuntimeParams["statement_timeout"] = "0"
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "outboxrelay"
	}
	// The extended protocol, whatever the connection string asks: it
	// takes one statement only, so a Where cannot append another (the
	// simple protocol would run "true; COMMIT; DELETE ..."), and the
	// unnamed statement leaves no cache behind.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeDescribeExec
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", leadWithCause(err))
	}
	return conn, nil
}

// outputSettings are the settings under which pgoutput formats values on
// the replication connection; the router depends on them.
func outputSettings() map[string]string {
	return map[string]string{
		"DateStyle":          "ISO, MDY",
		"TimeZone":           "UTC",
		"bytea_output":       "hex",
		"extra_float_digits": "3",
	}
}

const rowsCursor = "outboxrelay_rows"

func (r *Rows) begin(ctx context.Context) error {
	if _, err := r.conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return fmt.Errorf("beginning the read-only transaction: %w", err)
	}
	if r.q.Snapshot != "" {
		if _, err := r.conn.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(r.q.Snapshot)); err != nil {
			return &QueryError{Field: "Snapshot", Err: fmt.Errorf("importing snapshot %q: %w", r.q.Snapshot, err)}
		}
	}
	schema, table, _ := SplitTable(r.q.Table)
	cols := make([]string, len(r.q.Columns))
	for i, c := range r.q.Columns {
		cols[i] = quoteIdent(c)
	}
	list := strings.Join(cols, ", ")
	r.from = " FROM " + quoteIdent(schema) + "." + quoteIdent(table)
	// The table and columns alone first, so that an error there is not
	// blamed on Where or OrderBy.
	if err := r.probe(ctx, "SELECT "+list+r.from+" LIMIT 0", nil, "Columns"); err != nil {
		return err
	}
	if r.q.Where != "" {
		// The newline ends a -- comment in Where before the parenthesis.
		r.from += " WHERE (" + r.q.Where + "\n)"
		if err := r.probe(ctx, "SELECT "+list+r.from+" LIMIT 0", r.q.Args, "Where"); err != nil {
			return err
		}
	}
	order := r.q.OrderBy
	if order == "" {
		order = "ctid"
	}
	sql := "DECLARE " + rowsCursor + " NO SCROLL CURSOR FOR SELECT " + list + r.from + " ORDER BY " + order + "\n"
	if err := r.statement(ctx, sql, r.q.Args); err != nil {
		return &QueryError{Field: "OrderBy", Err: fmt.Errorf("declaring the cursor over %s: %w", r.q.Table, err)}
	}
	return nil
}

// statement runs one statement through Query, which, unlike Exec without
// arguments, never falls back to the simple protocol.
func (r *Rows) statement(ctx context.Context, sql string, args []any) error {
	rows, err := r.conn.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}

// probe runs sql and blames field for a refusal (which also ends the
// transaction: OpenRows then fails). "Columns" is reported as "Table" when
// the table itself is missing.
func (r *Rows) probe(ctx context.Context, sql string, args []any, field string) error {
	if err := r.statement(ctx, sql, args); err != nil {
		if field == "Columns" && isCode(err, "42P01") { // undefined_table
			field = "Table"
		}
		return &QueryError{Field: field, Err: fmt.Errorf("reading %s: %w", r.q.Table, err)}
	}
	return nil
}

// Count returns how many rows the query selects, in the same snapshot as
// Each reads them.
func (r *Rows) Count(ctx context.Context) (int64, error) {
	var n int64
	if err := r.conn.QueryRow(ctx, "SELECT count(*)"+r.from, r.q.Args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting the rows of %s: %w", r.q.Table, err)
	}
	return n, nil
}

// GroupCount is how many selected rows hold one value of a column.
type GroupCount struct {
	// Value is the column's value in text format, as pgoutput sends it; nil
	// is NULL.
	Value []byte
	Rows  int64
}

// CountBy counts the selected rows per value of column (in the same
// snapshot as Each), largest group first.
func (r *Rows) CountBy(ctx context.Context, column string) ([]GroupCount, error) {
	sql := "SELECT " + quoteIdent(column) + ", count(*)" + r.from + " GROUP BY 1 ORDER BY 2 DESC, 1"
	args := append([]any{pgx.QueryResultFormats{pgx.TextFormatCode, pgx.TextFormatCode}}, r.q.Args...)
	rows, err := r.conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("counting the rows of %s by %q: %w", r.q.Table, column, err)
	}
	defer rows.Close()
	var out []GroupCount
	for rows.Next() {
		v := rows.RawValues()
		n, err := strconv.ParseInt(string(v[1]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("counting the rows of %s by %q: %w", r.q.Table, column, err)
		}
		g := GroupCount{Rows: n}
		if v[0] != nil {
			g.Value = append([]byte{}, v[0]...)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("counting the rows of %s by %q: %w", r.q.Table, column, err)
	}
	return out, nil
}

// Each reads the rows in order, a batch at a time, and calls fn for each
// with one text-format value per column, nil for NULL: the bytes pgoutput
// sends for the same row. values and the slices in it are reused after fn
// returns: copy what must outlive the call. Each stops at the first error
// fn returns (returned as it is) or when ctx ends; it may be called once.
func (r *Rows) Each(ctx context.Context, fn func(values [][]byte) error) error {
	fetch := "FETCH FORWARD " + strconv.Itoa(r.batch) + " FROM " + rowsCursor
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.fetch(ctx, fetch, fn)
		if err != nil {
			return err
		}
		if n < r.batch {
			return nil
		}
	}
}

// fetch reads one batch, in text format.
func (r *Rows) fetch(ctx context.Context, sql string, fn func([][]byte) error) (int, error) {
	res := r.conn.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil)
	n := 0
	for res.NextRow() {
		n++
		if err := fn(res.Values()); err != nil {
			res.Close()
			return n, err
		}
	}
	if _, err := res.Close(); err != nil {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		return n, fmt.Errorf("reading the rows of %s: %w", r.q.Table, err)
	}
	return n, nil
}

// Close ends the transaction and closes the connection.
func (r *Rows) Close(ctx context.Context) error {
	return r.conn.Close(ctx)
}

// ReadRows reads the rows q selects on its own connection and calls fn for
// each, as Each does: OpenRows, Each, Close.
func ReadRows(ctx context.Context, connString string, q RowsQuery, fn func(values [][]byte) error) error {
	r, err := OpenRows(ctx, connString, q)
	if err != nil {
		return err
	}
	defer r.Close(context.WithoutCancel(ctx))
	return r.Each(ctx, fn)
}

// TableColumns returns the table's columns as pgoutput announces them in
// its Relation message: in order, without dropped or generated columns,
// with their NOT NULL constraints. Select these (RowsQuery.Columns) to read
// rows whose values line up with streamed ones.
func TableColumns(ctx context.Context, connString, table string) ([]Column, error) {
	schema, name, err := SplitTable(table)
	if err != nil {
		return nil, err
	}
	conn, err := connectSQL(ctx, connString)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT a.attname::text, a.atttypid, a.atttypmod, a.attnotnull
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
		  AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		ORDER BY a.attnum`, schema, name)
	if err != nil {
		return nil, fmt.Errorf("reading the columns of %s: %w", table, err)
	}
	cols, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Column, error) {
		var c Column
		err := row.Scan(&c.Name, &c.TypeOID, &c.TypMod, &c.NotNull)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the columns of %s: %w", table, err)
	}
	if len(cols) == 0 {
		return nil, &QueryError{Field: "Table", Err: fmt.Errorf("table %s does not exist", quoteIdent(schema)+"."+quoteIdent(name))}
	}
	return cols, nil
}

// CloneValues copies a row's values (as Each or a stream's Insert hands
// them) into one allocation, keeping NULL (nil) apart from empty; appending
// to one value never overwrites the next.
func CloneValues(values [][]byte) [][]byte {
	n := 0
	for _, v := range values {
		n += len(v)
	}
	buf := make([]byte, 0, n)
	out := make([][]byte, len(values))
	for i, v := range values {
		if v != nil {
			buf = append(buf, v...)
			out[i] = buf[len(buf)-len(v) : len(buf) : len(buf)]
		}
	}
	return out
}
