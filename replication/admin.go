package replication

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// SlotInfo describes one logical replication slot for operators.
type SlotInfo struct {
	Name      string `json:"name"`
	Plugin    string `json:"plugin"`
	Database  string `json:"database"`
	Active    bool   `json:"active"`
	ActivePID *int   `json:"active_pid"`
	Confirmed string `json:"confirmed_flush_lsn"`
	Restart   string `json:"restart_lsn"`
	Retained  *int64 `json:"retained_wal_bytes"`
	Lag       *int64 `json:"lag_bytes"`
	WALStatus string `json:"wal_status"`
	SafeWAL   *int64 `json:"safe_wal_size"`
	Attention string `json:"attention,omitempty"`
	Failover  bool   `json:"failover"`
	// Synced is set on a standby's copy of a failover slot that PostgreSQL
	// keeps in step with the primary's (17+).
	Synced    bool `json:"synced"`
	TwoPhase  bool `json:"two_phase"`
	Temporary bool `json:"temporary"`
	// Invalidation says why PostgreSQL invalidated the slot (17+:
	// invalidation_reason; 16: "rows removed" when conflicting), empty when
	// it is valid.
	Invalidation string `json:"invalidation_reason,omitempty"`
	// InactiveSince is when the slot was last released (17+), empty while
	// it is active or on older servers.
	InactiveSince string `json:"inactive_since,omitempty"`
}

// slotColumns are the pg_replication_slots expressions of the columns that
// differ between majors: failover, synced, two_phase, the invalidation
// reason and inactive_since, as SQL that every supported version accepts.
func slotColumns(version int) string {
	cols := []string{"false", "false", "false", "''", "''"}
	if version >= 140000 {
		cols[2] = "two_phase"
	}
	if version >= 160000 {
		cols[3] = "CASE WHEN conflicting THEN 'rows removed' ELSE '' END"
	}
	if version >= 170000 {
		cols[0], cols[1] = "failover", "synced"
		cols[3] = "coalesce(invalidation_reason, '')"
		cols[4] = "coalesce(to_char(inactive_since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')"
	}
	return strings.Join(cols, ", ")
}

// ErrNoSlot means the named slot does not exist.
var ErrNoSlot = errors.New("replication slot does not exist")

// retainedAttention is how much WAL an inactive slot may keep before it is
// flagged.
const retainedAttention = 64 << 20

// ListSlots returns every logical slot with its WAL retention, flagging
// inactive slots that retain WAL and lost slots.
func ListSlots(ctx context.Context, connString string) ([]SlotInfo, error) {
	return querySlots(ctx, connString, "")
}

// GetSlot returns one logical slot, or ErrNoSlot.
func GetSlot(ctx context.Context, connString, name string) (SlotInfo, error) {
	slots, err := querySlots(ctx, connString, name)
	if err != nil {
		return SlotInfo{}, err
	}
	if len(slots) == 0 {
		return SlotInfo{}, fmt.Errorf("%w: %q (outboxrelay slot list shows the slots there are)", ErrNoSlot, name)
	}
	return slots[0], nil
}

func querySlots(ctx context.Context, connString, name string) ([]SlotInfo, error) {
	conn, err := connectSQL(ctx, connString)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return nil, fmt.Errorf("reading the server version: %w", err)
	}
	rows, err := conn.Query(ctx, `SELECT slot_name::text, coalesce(plugin::text, ''), coalesce(database::text, ''), active, active_pid,
		coalesce(confirmed_flush_lsn::text, ''), coalesce(restart_lsn::text, ''),
		pg_wal_lsn_diff(`+currentLSN+`, restart_lsn)::bigint,
		pg_wal_lsn_diff(`+currentLSN+`, confirmed_flush_lsn)::bigint,
		coalesce(wal_status, ''), safe_wal_size, temporary, `+slotColumns(version)+`
		FROM pg_replication_slots WHERE slot_type = 'logical' AND ($1 = '' OR slot_name = $1) ORDER BY slot_name`, name)
	if err != nil {
		return nil, fmt.Errorf("listing replication slots: %w", err)
	}
	slots, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SlotInfo, error) {
		var s SlotInfo
		err := r.Scan(&s.Name, &s.Plugin, &s.Database, &s.Active, &s.ActivePID, &s.Confirmed, &s.Restart,
			&s.Retained, &s.Lag, &s.WALStatus, &s.SafeWAL, &s.Temporary, &s.Failover, &s.Synced, &s.TwoPhase, &s.Invalidation, &s.InactiveSince)
		switch {
		case s.WALStatus == "lost":
			s.Attention = "LOST: its WAL was removed; drop and recreate it"
		case s.Invalidation != "":
			s.Attention = "INVALIDATED (" + s.Invalidation + "): drop and recreate it"
		case !s.Active && s.Retained != nil && *s.Retained > retainedAttention:
			s.Attention = "inactive and retaining WAL"
		}
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing replication slots: %w", err)
	}
	return slots, nil
}

// CreateSlot creates a pgoutput slot and returns its consistent point.
// Failover slots (synchronized to standbys) need PostgreSQL 17.
func CreateSlot(ctx context.Context, connString, name string, failover bool) (string, error) {
	if !slotName.MatchString(name) {
		return "", fmt.Errorf("slot %q: PostgreSQL slot names are 1-63 characters of a-z, 0-9 and _", name)
	}
	conn, err := connectSQL(ctx, connString)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sql := "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')"
	if failover {
		var version int
		var text string
		if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, current_setting('server_version')").Scan(&version, &text); err != nil {
			return "", fmt.Errorf("reading the server version: %w", err)
		}
		if version < 170000 {
			return "", fmt.Errorf("a failover slot needs PostgreSQL 17 or newer; this server is %s", text)
		}
		sql = "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
	}
	var lsn string
	if err := conn.QueryRow(ctx, sql, name).Scan(&lsn); err != nil {
		if isCode(err, "42710") {
			return "", fmt.Errorf("creating slot %q: it already exists", name)
		}
		return "", fmt.Errorf("creating slot %q: %w", name, err)
	}
	return lsn, nil
}

// DropSlot drops a slot. An active slot is refused unless force, which
// terminates the walsender holding it first.
func DropSlot(ctx context.Context, connString, name string, force bool) error {
	conn, err := connectSQL(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for attempt := 0; ; attempt++ {
		var active bool
		var pid *int
		err := conn.QueryRow(ctx, "SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1", name).Scan(&active, &pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %q", ErrNoSlot, name)
		}
		if err != nil {
			return fmt.Errorf("reading slot %q: %w", name, err)
		}
		if active && !force {
			return &SlotActiveError{Slot: name, PID: *pid}
		}
		if active {
			if attempt > 50 {
				return fmt.Errorf("slot %q is still active after terminating its walsender", name)
			}
			if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", *pid); err != nil {
				return fmt.Errorf("terminating walsender %d: %w", *pid, err)
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		_, err = conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", name)
		if isCode(err, "55006") && force && attempt <= 50 {
			continue // a relay reconnected in between
		}
		if err != nil {
			return fmt.Errorf("dropping slot %q: %w", name, err)
		}
		return nil
	}
}

// Pending is what a slot holds for the outbox tables, read without
// consuming.
type Pending struct {
	Slot  string   `json:"slot"`
	Upto  string   `json:"upto_lsn,omitempty"`
	Count int      `json:"outbox_events"`
	First []Peeked `json:"first"`
}

// Peeked is one outbox insert waiting in the slot, its columns in table
// order.
type Peeked struct {
	CommitEnd string         `json:"commit_end_lsn"`
	Table     string         `json:"table"`
	Columns   []PeekedColumn `json:"columns"`
}

// PeekedColumn is one column value as text; Value is nil for NULL.
type PeekedColumn struct {
	Name  string  `json:"name"`
	Value *string `json:"value"`
}

// PeekSlot counts the outbox inserts in transactions the slot would deliver
// that commit before upto (0: all), and returns the first limit of them. It
// decodes with pgoutput exactly as the relay does and consumes nothing. The
// slot must not be in use.
func PeekSlot(ctx context.Context, cfg Config, upto uint64, limit int) (Pending, error) {
	conn, err := connectSQL(ctx, cfg.ConnString)
	if err != nil {
		return Pending{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var uptoArg any
	p := Pending{Slot: cfg.Slot, First: []Peeked{}}
	if upto != 0 {
		uptoArg = FormatLSN(upto)
		p.Upto = FormatLSN(upto)
	}
	rows, err := conn.Query(ctx, `SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::pg_lsn, NULL, 'proto_version', '1', 'publication_names', $3)`,
		cfg.Slot, uptoArg, quoteIdent(cfg.Publication))
	if err != nil {
		return Pending{}, peekError(cfg.Slot, err)
	}
	defer rows.Close()
	dec := NewDecoder(cfg.Tables...)
	col := &collector{limit: limit, pending: &p, tables: cfg.Tables, cols: make([][]Column, len(cfg.Tables))}
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return Pending{}, peekError(cfg.Slot, err)
		}
		m, err := dec.Decode(0, time.Time{}, data)
		if err != nil {
			return Pending{}, err
		}
		if err := m.Deliver(col); err != nil {
			return Pending{}, err
		}
	}
	if err := rows.Err(); err != nil {
		return Pending{}, peekError(cfg.Slot, err)
	}
	return p, nil
}

func peekError(slot string, err error) error {
	switch {
	case isCode(err, "55006"):
		return fmt.Errorf("slot %q is in use: stop the relay streaming from it first (peeking needs the slot): %w", slot, err)
	case isCode(err, "42704"):
		return fmt.Errorf("%w: %q", ErrNoSlot, slot)
	}
	return fmt.Errorf("reading slot %q: %w", slot, err)
}

// collector counts outbox inserts and keeps the first few.
type collector struct {
	limit   int
	pending *Pending
	tables  []string
	cols    [][]Column // per table
	tx      []Peeked
}

func (c *collector) Relation(t int, cols []Column) error { c.cols[t] = cols; return nil }
func (c *collector) Begin(Begin) error                   { c.tx = c.tx[:0]; return nil }
func (c *collector) Heartbeat(time.Time) error           { return nil }
func (c *collector) Unpublished(int, string) error       { return nil }

func (c *collector) Insert(ins Insert) error {
	c.pending.Count++
	if len(c.pending.First)+len(c.tx) >= c.limit {
		return nil
	}
	row := Peeked{Table: c.tables[ins.Table]}
	cols := c.cols[ins.Table]
	for i, v := range ins.Values {
		if i >= len(cols) {
			break
		}
		pc := PeekedColumn{Name: cols[i].Name}
		if v != nil {
			s := string(v)
			pc.Value = &s
		}
		row.Columns = append(row.Columns, pc)
	}
	c.tx = append(c.tx, row)
	return nil
}

func (c *collector) Commit(cm Commit) error {
	for _, r := range c.tx {
		r.CommitEnd = FormatLSN(cm.EndLSN)
		c.pending.First = append(c.pending.First, r)
	}
	return nil
}

// ResolveLSN parses "X/Y", or "current" for the server's current WAL position.
func ResolveLSN(ctx context.Context, connString, s string) (uint64, error) {
	if s != "current" {
		lsn, err := parseLSN(s)
		if err != nil {
			return 0, fmt.Errorf("%q: want an LSN such as 16/B374D848, or current", s)
		}
		return lsn, nil
	}
	conn, err := connectSQL(ctx, connString)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var cur string
	if err := conn.QueryRow(ctx, "SELECT "+currentLSN+"::text").Scan(&cur); err != nil {
		return 0, fmt.Errorf("reading the current WAL position: %w", err)
	}
	return parseLSN(cur)
}

// AdvanceSlot moves a slot's confirmed position forward to lsn, skipping
// every transaction that commits before it, and returns the new position.
func AdvanceSlot(ctx context.Context, connString, name string, lsn uint64) (string, error) {
	conn, err := connectSQL(ctx, connString)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var end string
	err = conn.QueryRow(ctx, "SELECT end_lsn::text FROM pg_replication_slot_advance($1, $2::pg_lsn)", name, FormatLSN(lsn)).Scan(&end)
	if err != nil {
		return "", peekError(name, err)
	}
	return end, nil
}

// PublicationInfo describes one publication.
type PublicationInfo struct {
	Name       string   `json:"name"`
	AllTables  bool     `json:"all_tables"`
	Operations []string `json:"operations"`
	Tables     []string `json:"tables"`
}

// ListPublications returns the publications of the database, or only name.
func ListPublications(ctx context.Context, connString, name string) ([]PublicationInfo, error) {
	conn, err := connectSQL(ctx, connString)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT p.pubname::text, p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate,
		coalesce((SELECT array_agg(format('%I.%I', t.schemaname, t.tablename) ORDER BY 1) FROM pg_publication_tables t WHERE t.pubname = p.pubname), '{}')
		FROM pg_publication p WHERE $1 = '' OR p.pubname = $1 ORDER BY 1`, name)
	if err != nil {
		return nil, fmt.Errorf("listing publications: %w", err)
	}
	pubs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (PublicationInfo, error) {
		var p PublicationInfo
		var ins, upd, del, trunc bool
		err := r.Scan(&p.Name, &p.AllTables, &ins, &upd, &del, &trunc, &p.Tables)
		for op, on := range map[string]bool{"insert": ins, "update": upd, "delete": del, "truncate": trunc} {
			if on {
				p.Operations = append(p.Operations, op)
			}
		}
		sortOps(p.Operations)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing publications: %w", err)
	}
	if name != "" && len(pubs) == 0 {
		return nil, fmt.Errorf("publication %q does not exist", name)
	}
	return pubs, nil
}

func sortOps(ops []string) {
	order := map[string]int{"insert": 0, "update": 1, "delete": 2, "truncate": 3}
	for i := 1; i < len(ops); i++ {
		for j := i; j > 0 && order[ops[j]] < order[ops[j-1]]; j-- {
			ops[j], ops[j-1] = ops[j-1], ops[j]
		}
	}
}

// CreatePublication creates the publication for the outbox table, inserts
// only.
func CreatePublication(ctx context.Context, cfg Config) error {
	conn, err := connectSQL(ctx, cfg.ConnString)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, PublicationDDL(cfg)); err != nil {
		if isCode(err, "42710") {
			return fmt.Errorf("creating publication %q: it already exists (outboxrelay publication show %s)", cfg.Publication, cfg.Publication)
		}
		return fmt.Errorf("creating publication %q: %w", cfg.Publication, err)
	}
	return nil
}

// DropPublication drops a publication.
func DropPublication(ctx context.Context, connString, name string) error {
	conn, err := connectSQL(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "DROP PUBLICATION "+quoteIdent(name)); err != nil {
		if isCode(err, "42704") {
			return fmt.Errorf("publication %q does not exist", name)
		}
		return fmt.Errorf("dropping publication %q: %w", name, err)
	}
	return nil
}

// WriterExample is an insert-and-delete outbox writer in SQL.
func WriterExample(table string) string {
	return strings.ReplaceAll(`-- Write the event in the transaction that changes the aggregate, then delete
-- it: the row never stays in the table, but the insert is in the WAL and the
-- relay publishes it. Deletes are never published.
BEGIN;
UPDATE orders SET status = 'shipped' WHERE id = 'order-1';
INSERT INTO TABLE (id, aggregatetype, aggregateid, type, payload)
  VALUES ('6f1c2e9a-3b7d-4f0e-9a51-0c8e4d2b7a13', 'Order', 'order-1', 'OrderShipped',
          '{"orderId": "order-1", "carrier": "DHL"}');
DELETE FROM TABLE WHERE id = '6f1c2e9a-3b7d-4f0e-9a51-0c8e4d2b7a13';
COMMIT;`, "TABLE", table)
}

// SlotActiveError is DropSlot's refusal to drop a slot a walsender holds
// when not told to end that connection.
type SlotActiveError struct {
	Slot string
	PID  int
}

func (e *SlotActiveError) Error() string {
	return fmt.Sprintf("slot %q is active (walsender PID %d): stop the relay using it, or force the drop to terminate that connection", e.Slot, e.PID)
}
