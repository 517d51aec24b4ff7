package replication

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Problem is one unmet prerequisite and the statement or setting that fixes
// it.
type Problem struct {
	What string
	Fix  string
}

// PreflightError lists every unmet prerequisite found, so that one run tells
// an operator everything to fix.
type PreflightError struct {
	Problems []Problem
}

func (e *PreflightError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "the database is not ready for outboxrelay (%d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	b.WriteString("):")
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  - %s\n    fix: %s", p.What, strings.ReplaceAll(p.Fix, "\n", "\n         "))
	}
	return b.String()
}

// State is what preflight learned about the database.
type State struct {
	ServerVersion      int
	PublicationExists  bool
	SlotExists         bool
	SlotConfirmedFlush uint64
}

// Preflight checks everything the relay needs before it touches anything:
// wal_level, the REPLICATION attribute, the table and its columns, the
// publication (if it exists, it must publish inserts of the table) and the
// slot (if it exists, it must be a pgoutput slot of this database that is not
// lost). Unmet prerequisites come back together as a *PreflightError; any
// other error means the checks could not run.
func Preflight(ctx context.Context, cfg Config) (State, error) {
	conn, err := connectSQL(ctx, cfg.ConnString)
	if err != nil {
		return State{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	c := checker{cfg: cfg, conn: conn}
	c.run(ctx)
	if c.err != nil {
		return State{}, fmt.Errorf("running preflight checks: %w", c.err)
	}
	if len(c.problems) > 0 {
		return c.state, &PreflightError{Problems: c.problems}
	}
	return c.state, nil
}

func connectSQL(ctx context.Context, connString string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	return conn, nil
}

type checker struct {
	cfg      Config
	conn     *pgx.Conn
	state    State
	problems []Problem
	err      error
}

func (c *checker) add(what, fix string) {
	c.problems = append(c.problems, Problem{What: what, Fix: fix})
}

func (c *checker) query(ctx context.Context, sql string, args []any, dest ...any) bool {
	if c.err != nil {
		return false
	}
	err := c.conn.QueryRow(ctx, sql, args...).Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		return false
	}
	if err != nil {
		c.err = err
		return false
	}
	return true
}

func (c *checker) run(ctx context.Context) {
	c.query(ctx, "SELECT current_setting('server_version_num')::int", nil, &c.state.ServerVersion)
	if c.err == nil && c.state.ServerVersion < 130000 {
		c.add(fmt.Sprintf("PostgreSQL %d is too old", c.state.ServerVersion/10000), "upgrade to PostgreSQL 13 or newer")
		return
	}
	c.walLevel(ctx)
	c.role(ctx)
	tableOwned := c.table(ctx)
	c.publication(ctx, tableOwned)
	c.slot(ctx)
}

func (c *checker) walLevel(ctx context.Context) {
	var level string
	if c.query(ctx, "SELECT current_setting('wal_level')", nil, &level) && level != "logical" {
		c.add(fmt.Sprintf("wal_level is %q; logical decoding needs \"logical\"", level),
			"ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL")
	}
}

func (c *checker) role(ctx context.Context) {
	var user string
	var super, repl bool
	if c.query(ctx, "SELECT current_user, rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user", nil, &user, &super, &repl) && !super && !repl {
		c.add(fmt.Sprintf("role %q has no REPLICATION attribute", user),
			fmt.Sprintf("ALTER ROLE %s WITH REPLICATION;", quoteIdent(user)))
	}
}

// table checks the table and its columns and reports whether the current
// user may create a publication for it.
func (c *checker) table(ctx context.Context) bool {
	schema, table, _ := SplitTable(c.cfg.Table)
	var oid uint32
	var owned bool
	if !c.query(ctx, `SELECT c.oid, pg_has_role(c.relowner, 'USAGE')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, []any{schema, table}, &oid, &owned) {
		if c.err == nil {
			c.add(fmt.Sprintf("table %s does not exist", c.cfg.qualifiedTable()), OutboxDDL(c.cfg.qualifiedTable()))
		}
		return false
	}
	var have []string
	if c.query(ctx, `SELECT coalesce(array_agg(attname::text), '{}') FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, []any{oid}, &have) {
		for _, col := range c.cfg.Columns {
			found := false
			for _, h := range have {
				found = found || h == col
			}
			if !found {
				c.add(fmt.Sprintf("table %s has no column %q", c.cfg.qualifiedTable(), col),
					fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s; (or set the matching --field-* flag)", c.cfg.qualifiedTable(), quoteIdent(col), suggestedType(col)))
			}
		}
	}
	return owned
}

func suggestedType(col string) string {
	switch col {
	case "id":
		return "uuid"
	case "payload":
		return "jsonb"
	}
	return "text"
}

func (c *checker) publication(ctx context.Context, tableOwned bool) {
	schema, table, _ := SplitTable(c.cfg.Table)
	var insert bool
	if !c.query(ctx, "SELECT pubinsert FROM pg_publication WHERE pubname = $1", []any{c.cfg.Publication}, &insert) {
		if c.err == nil && !tableOwned {
			var super bool
			c.query(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user", nil, &super)
			if !super {
				c.add(fmt.Sprintf("publication %q does not exist and the current role does not own %s, so it cannot create it", c.cfg.Publication, c.cfg.qualifiedTable()),
					"run as the table owner: "+PublicationDDL(c.cfg))
			}
		}
		return
	}
	c.state.PublicationExists = true
	if !insert {
		c.add(fmt.Sprintf("publication %q does not publish inserts", c.cfg.Publication),
			fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert');", quoteIdent(c.cfg.Publication)))
	}
	var covered bool
	if c.query(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)",
		[]any{c.cfg.Publication, schema, table}, &covered) && !covered {
		c.add(fmt.Sprintf("publication %q does not include %s", c.cfg.Publication, c.cfg.qualifiedTable()),
			fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s;", quoteIdent(c.cfg.Publication), c.cfg.qualifiedTable()))
	}
}

func (c *checker) slot(ctx context.Context) {
	var plugin, walStatus string
	var slotType, db *string
	var confirmed *string
	if !c.query(ctx, `SELECT slot_type, coalesce(plugin, ''), database, coalesce(wal_status, ''), confirmed_flush_lsn::text
		FROM pg_replication_slots WHERE slot_name = $1`, []any{c.cfg.Slot}, &slotType, &plugin, &db, &walStatus, &confirmed) {
		var free int
		if c.query(ctx, "SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)", nil, &free) && free <= 0 {
			c.add("no free replication slot (max_replication_slots is used up)",
				"drop an unused slot (SELECT pg_drop_replication_slot('name')) or raise max_replication_slots and restart PostgreSQL")
		}
		return
	}
	c.state.SlotExists = true
	var current string
	c.query(ctx, "SELECT current_database()", nil, &current)
	switch {
	case slotType == nil || *slotType != "logical":
		c.add(fmt.Sprintf("slot %q is a physical slot", c.cfg.Slot), "choose another --slot name")
	case plugin != "pgoutput":
		c.add(fmt.Sprintf("slot %q uses plugin %q, not pgoutput", c.cfg.Slot, plugin),
			fmt.Sprintf("choose another --slot, or drop it if nothing uses it: SELECT pg_drop_replication_slot(%s);", quoteLiteral(c.cfg.Slot)))
	case db == nil || *db != current:
		c.add(fmt.Sprintf("slot %q belongs to database %q, not %q", c.cfg.Slot, deref(db), current), "connect to that database or choose another --slot")
	case walStatus == "lost":
		c.add(fmt.Sprintf("slot %q is lost: PostgreSQL removed WAL it still needed (max_slot_wal_keep_size), so events in that WAL can no longer be read", c.cfg.Slot),
			fmt.Sprintf("SELECT pg_drop_replication_slot(%s); then restart outboxrelay to create a new slot, and replay from the outbox table if your writer keeps rows", quoteLiteral(c.cfg.Slot)))
	}
	if confirmed != nil {
		if lsn, err := parseLSN(*confirmed); err == nil {
			c.state.SlotConfirmedFlush = lsn
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// OutboxDDL is the recommended outbox table definition.
func OutboxDDL(table string) string {
	return fmt.Sprintf(`CREATE TABLE %s (
  id            uuid        PRIMARY KEY,
  aggregatetype text        NOT NULL,
  aggregateid   text        NOT NULL,
  type          text        NOT NULL,
  payload       jsonb,
  created_at    timestamptz NOT NULL DEFAULT now()
);`, table)
}

// PublicationDDL is the statement Setup runs for a missing publication.
func PublicationDDL(cfg Config) string {
	return fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert');", quoteIdent(cfg.Publication), cfg.qualifiedTable())
}
