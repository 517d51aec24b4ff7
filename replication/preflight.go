package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Status grades one check.
type Status string

// Check outcomes.
const (
	Pass Status = "pass"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Result is one check: what was checked, what was found, and for a warning
// or failure the statement or setting that fixes it.
type Result struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

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

// State is what the checks learned about the database.
type State struct {
	ServerVersion int
	// InRecovery is true on a standby.
	InRecovery        bool
	PublicationExists bool
	SlotExists        bool
	// Columns of each outbox table (in Config.Tables order), in column
	// order; nil for a table that does not exist.
	Columns [][]Column
	Results []Result
}

// Failed returns the failed checks as a *PreflightError, or nil.
func (st State) Failed() error {
	var pe PreflightError
	for _, r := range st.Results {
		if r.Status == Fail {
			pe.Problems = append(pe.Problems, Problem{What: r.Detail, Fix: r.Fix})
		}
	}
	if len(pe.Problems) == 0 {
		return nil
	}
	return &pe
}

// Preflight checks everything the relay needs before it touches anything:
// wal_level, the REPLICATION attribute, the table and its columns, the
// publication (if it exists, it must publish inserts of the table) and the
// slot (if it exists, it must be a pgoutput slot of this database that is not
// lost). Unmet prerequisites come back together as a *PreflightError; any
// other error means the checks could not run.
func Preflight(ctx context.Context, cfg Config) (State, error) {
	st, err := Inspect(ctx, cfg)
	if err != nil {
		return st, err
	}
	return st, st.Failed()
}

// Inspect runs every check and returns all results, passing ones included.
// The error is set only when the checks could not run.
func Inspect(ctx context.Context, cfg Config) (State, error) {
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
	return c.state, nil
}

func connectSQL(ctx context.Context, connString string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", leadWithCause(err))
	}
	return conn, nil
}

// leadWithCause reorders a failed connection's attempts so that the one that
// tells the cause comes first. pgconn tries a server more than once (with
// sslmode=prefer, TLS and then plain; every address of a host) and joins the
// errors in the order tried, so a wrong password came after "tls error:
// server refused TLS connection", which reads as the cause. The lead is the
// last attempt the server answered with an error (authentication, a missing
// database, no permission), else the last attempt. The error still unwraps
// to every attempt's, a *pgconn.PgError included.
func leadWithCause(err error) error {
	var joined interface{ Unwrap() []error }
	for e := err; e != nil; e = errors.Unwrap(e) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			joined = j
			break
		}
	}
	if joined == nil {
		return err
	}
	attempts := joined.Unwrap()
	if len(attempts) < 2 {
		return err
	}
	lead := len(attempts) - 1
	for i := len(attempts) - 1; i >= 0; i-- {
		var pgErr *pgconn.PgError
		if errors.As(attempts[i], &pgErr) {
			lead = i
			break
		}
	}
	return &attemptsError{err: err, lead: attempts[lead], attempts: attempts}
}

// attemptsError is a connection failure whose message leads with the attempt
// that tells the cause, followed by the other attempts.
type attemptsError struct {
	err      error // as pgconn returned it
	lead     error
	attempts []error
}

func (e *attemptsError) Error() string {
	var b strings.Builder
	b.WriteString(e.lead.Error())
	for _, a := range e.attempts {
		if a != e.lead {
			fmt.Fprintf(&b, "\n\t(also tried: %v)", a)
		}
	}
	var ce *pgconn.ConnectError
	if errors.As(e.err, &ce) && ce.Config != nil {
		return fmt.Sprintf("failed to connect to `user=%s database=%s`: %s", ce.Config.User, ce.Config.Database, b.String())
	}
	return b.String()
}

func (e *attemptsError) Unwrap() error { return e.err }

type checker struct {
	cfg   Config
	conn  *pgx.Conn
	state State
	err   error
	// partitioned holds the tables that are partitioned: pgoutput names
	// their partitions unless the publication publishes via the root.
	partitioned map[string]bool
}

func (c *checker) result(check string, st Status, detail, fix string) {
	c.state.Results = append(c.state.Results, Result{Check: check, Status: st, Detail: detail, Fix: fix})
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
	var version string
	c.query(ctx, "SELECT current_setting('server_version_num')::int, current_setting('server_version')", nil, &c.state.ServerVersion, &version)
	if c.err != nil {
		return
	}
	if c.state.ServerVersion < 130000 {
		c.result("server version", Fail, fmt.Sprintf("PostgreSQL %s is unsupported: outboxrelay supports PostgreSQL 13 to 18", version), "upgrade to PostgreSQL 13 or newer")
		return
	}
	c.result("server version", Pass, "PostgreSQL "+version, "")
	if c.cfg.Heartbeat && c.state.ServerVersion < 140000 {
		c.result("heartbeat", Fail, "heartbeats need pgoutput messages, which PostgreSQL 14 introduced", "upgrade, or run without heartbeats (Config.Heartbeat)")
	}
	if !c.recovery(ctx) {
		return
	}
	c.walLevel(ctx)
	c.capacity(ctx)
	c.role(ctx)
	tablesOwned := c.tables(ctx)
	c.publication(ctx, tablesOwned)
	c.walKeep(ctx)
	c.slot(ctx)
	c.failover(ctx)
}

func (c *checker) walLevel(ctx context.Context) {
	var level string
	if !c.query(ctx, "SELECT current_setting('wal_level')", nil, &level) {
		return
	}
	if level != "logical" {
		c.result("wal_level", Fail, fmt.Sprintf("wal_level is %q; logical decoding needs \"logical\"", level),
			"ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL")
		return
	}
	c.result("wal_level", Pass, "logical", "")
}

func (c *checker) capacity(ctx context.Context) {
	var slots, usedSlots, senders, usedSenders int
	var haveSlot bool
	if !c.query(ctx, `SELECT current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots),
		current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_replication),
		EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1)`, []any{c.cfg.Slot}, &slots, &usedSlots, &senders, &usedSenders, &haveSlot) {
		return
	}
	// Only a slot still to be created needs a free one.
	st, fix, detail := Pass, "", fmt.Sprintf("%d of max_replication_slots=%d in use", usedSlots, slots)
	if haveSlot {
		detail += fmt.Sprintf(", %s among them", c.cfg.Slot)
	} else if usedSlots >= slots {
		st, fix = Fail, "drop an unused slot (outboxrelay slot list shows them) or raise max_replication_slots and restart PostgreSQL"
	}
	c.result("replication slots", st, detail, fix)
	st, fix = Pass, ""
	if usedSenders >= senders {
		st, fix = Fail, "raise max_wal_senders and restart PostgreSQL"
	}
	c.result("wal senders", st, fmt.Sprintf("%d of max_wal_senders=%d in use", usedSenders, senders), fix)
}

func (c *checker) role(ctx context.Context) {
	var user string
	var super, repl, rds bool
	// Amazon RDS and Aurora grant replication through membership in
	// rds_replication, not the REPLICATION attribute.
	if !c.query(ctx, `SELECT current_user, rolsuper, rolreplication,
		EXISTS (SELECT FROM pg_roles r WHERE r.rolname = 'rds_replication' AND pg_has_role(current_user, r.oid, 'MEMBER'))
		FROM pg_roles WHERE rolname = current_user`, nil, &user, &super, &repl, &rds) {
		return
	}
	if !super && !repl && !rds {
		c.result("replication privilege", Fail, fmt.Sprintf("role %q has no REPLICATION attribute", user),
			fmt.Sprintf("ALTER ROLE %s WITH REPLICATION; (on Amazon RDS and Aurora: GRANT rds_replication TO %s;)", quoteIdent(user), quoteIdent(user)))
		return
	}
	how := "has the REPLICATION attribute"
	switch {
	case super:
		how = "is a superuser"
	case !repl:
		how = "is a member of rds_replication"
	}
	c.result("replication privilege", Pass, fmt.Sprintf("role %q may replicate: it %s", user, how), "")
}

// tables checks every table and its columns and reports whether the
// current user owns them all (and so may create a publication for them).
func (c *checker) tables(ctx context.Context) bool {
	c.state.Columns = make([][]Column, len(c.cfg.Tables))
	owned := true
	for i, t := range c.cfg.Tables {
		var ok bool
		c.state.Columns[i], ok = c.table(ctx, t)
		owned = owned && ok
		if c.err != nil {
			return false
		}
	}
	return owned
}

// table checks one table and its columns, returning them and whether the
// current user owns it.
func (c *checker) table(ctx context.Context, t string) ([]Column, bool) {
	schema, table, _ := SplitTable(t)
	qt := QualifiedTable(t)
	var oid uint32
	var owned, partitioned bool
	if !c.query(ctx, `SELECT c.oid, pg_has_role(c.relowner, 'USAGE'), c.relkind = 'p'
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, []any{schema, table}, &oid, &owned, &partitioned) {
		if c.err == nil {
			c.result("outbox table", Fail, fmt.Sprintf("table %s does not exist", qt), OutboxDDL(qt))
		}
		return nil, false
	}
	if partitioned {
		if c.partitioned == nil {
			c.partitioned = map[string]bool{}
		}
		c.partitioned[t] = true
	}
	cols, err := c.columns(ctx, oid)
	if err != nil {
		c.err = err
		return nil, false
	}
	missing := 0
	for _, want := range c.cfg.Columns {
		if !slices.ContainsFunc(cols, func(col Column) bool { return col.Name == want }) {
			missing++
			c.result("outbox table", Fail, fmt.Sprintf("table %s has no column %q", qt, want),
				fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s; (or name another column in the router's Field* settings)", qt, quoteIdent(want), suggestedType(want)))
		}
	}
	if missing == 0 {
		c.result("outbox table", Pass, fmt.Sprintf("%s has the columns %s", qt, strings.Join(c.cfg.Columns, ", ")), "")
	}
	return cols, owned
}

// columns reads a table's columns in order.
func (c *checker) columns(ctx context.Context, oid uint32) ([]Column, error) {
	rows, err := c.conn.Query(ctx, `SELECT attname::text, atttypid, atttypmod, attnotnull FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, oid)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Column, error) {
		var col Column
		err := row.Scan(&col.Name, &col.TypeOID, &col.TypMod, &col.NotNull)
		return col, err
	})
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

func (c *checker) publication(ctx context.Context, tablesOwned bool) {
	pub := c.cfg.Publication
	var insert, viaRoot bool
	if !c.query(ctx, "SELECT pubinsert, pubviaroot FROM pg_publication WHERE pubname = $1", []any{pub}, &insert, &viaRoot) {
		if c.err == nil {
			c.missingPublication(ctx, tablesOwned)
		}
		return
	}
	c.state.PublicationExists = true
	if !insert {
		c.result("publication", Fail, fmt.Sprintf("publication %q does not publish inserts", pub),
			fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert');", quoteIdent(pub)))
	}
	for _, t := range c.cfg.Tables {
		schema, table, _ := SplitTable(t)
		if c.partitioned[t] && !viaRoot {
			c.result("publication", Fail, fmt.Sprintf("publication %q publishes the partitions of %s under their own names (publish_via_partition_root is off): the relay would not recognize their inserts", pub, QualifiedTable(t)),
				fmt.Sprintf("ALTER PUBLICATION %s SET (publish_via_partition_root = true);", quoteIdent(pub)))
			continue
		}
		var covered bool
		if !c.query(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)",
			[]any{pub, schema, table}, &covered) {
			return
		}
		switch {
		case !covered:
			c.result("publication", Fail, fmt.Sprintf("publication %q does not include %s", pub, QualifiedTable(t)),
				fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s;", quoteIdent(pub), QualifiedTable(t)))
		case insert:
			c.result("publication", Pass, fmt.Sprintf("publication %q publishes inserts of %s", pub, QualifiedTable(t)), "")
		}
	}
}

// missingPublication reports whether run can create the publication.
func (c *checker) missingPublication(ctx context.Context, tablesOwned bool) {
	pub := c.cfg.Publication
	if c.state.InRecovery {
		c.standbyPublication()
		return
	}
	var super, create bool
	var user, db string
	c.query(ctx, `SELECT rolsuper, current_user, current_database(), has_database_privilege(current_database(), 'CREATE')
		FROM pg_roles WHERE rolname = current_user`, nil, &super, &user, &db, &create)
	if !tablesOwned && !super {
		c.result("publication", Fail, fmt.Sprintf("publication %q does not exist and the current role does not own %s, so it cannot create it", pub, c.cfg.QualifiedTables()),
			"run as the tables' owner: "+PublicationDDL(c.cfg))
		return
	}
	if !create {
		// CREATE PUBLICATION needs CREATE on the database besides
		// owning the table.
		c.result("publication", Fail, fmt.Sprintf("publication %q does not exist and role %q lacks the CREATE privilege on database %q, which creating it needs", pub, user, db),
			fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s; (or create the publication as a role that has it: %s)", quoteIdent(db), quoteIdent(user), PublicationDDL(c.cfg)))
		return
	}
	c.result("publication", Pass, fmt.Sprintf("publication %q does not exist yet; outboxrelay run creates it: %s", pub, PublicationDDL(c.cfg)), "")
}

func (c *checker) walKeep(ctx context.Context) {
	var keep string
	if !c.query(ctx, "SELECT current_setting('max_slot_wal_keep_size')", nil, &keep) {
		return
	}
	if keep == "-1" {
		c.result("max_slot_wal_keep_size", Warn, "unset: an abandoned slot keeps WAL until the disk is full",
			"ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf(); (size it to the outage you want to survive)")
		return
	}
	c.result("max_slot_wal_keep_size", Pass, keep, "")
}

func (c *checker) slot(ctx context.Context) {
	var plugin, walStatus string
	var slotType, db *string
	var active, synced bool
	var retained *int64
	slot := c.cfg.Slot
	// synced exists from PostgreSQL 17; through to_jsonb older servers read
	// it as absent.
	if !c.query(ctx, `SELECT slot_type, coalesce(plugin, ''), database, coalesce(wal_status, ''), active,
		pg_wal_lsn_diff(`+currentLSN+`, restart_lsn)::bigint, coalesce((to_jsonb(s)->>'synced')::bool, false)
		FROM pg_replication_slots s WHERE slot_name = $1`, []any{slot}, &slotType, &plugin, &db, &walStatus, &active, &retained, &synced) {
		if c.err == nil && c.state.InRecovery {
			c.result("slot", Pass, fmt.Sprintf("slot %q does not exist yet; outboxrelay run creates it on this standby (events are captured from then on); %s", slot, standbyHint), "")
		} else if c.err == nil {
			c.result("slot", Pass, fmt.Sprintf("slot %q does not exist yet; outboxrelay run creates it (events are captured from then on)", slot), "")
		}
		return
	}
	c.state.SlotExists = true
	var current string
	c.query(ctx, "SELECT current_database()", nil, &current)
	switch {
	case slotType == nil || *slotType != "logical":
		c.result("slot", Fail, fmt.Sprintf("slot %q is a physical slot", slot), "choose another slot name (Config.Slot)")
	case plugin != "pgoutput":
		c.result("slot", Fail, fmt.Sprintf("slot %q uses plugin %q, not pgoutput", slot, plugin),
			fmt.Sprintf("choose another slot (Config.Slot), or drop it if nothing uses it: SELECT pg_drop_replication_slot(%s);", quoteLiteral(slot)))
	case db == nil || *db != current:
		c.result("slot", Fail, fmt.Sprintf("slot %q belongs to database %q, not %q", slot, deref(db), current), "connect to that database or choose another slot (Config.Slot)")
	case synced && c.state.InRecovery:
		c.result("slot", Fail, fmt.Sprintf("slot %q on this standby is a synchronized copy of the primary's failover slot, which cannot be decoded from before a promotion", slot),
			"decode on the primary, or give the relay on this standby a slot name of its own (Config.Slot)")
	case walStatus == "lost":
		c.result("slot", Fail, fmt.Sprintf("slot %q is lost: PostgreSQL removed WAL it still needed (max_slot_wal_keep_size), so events in that WAL can no longer be read", slot),
			fmt.Sprintf("SELECT pg_drop_replication_slot(%s); then restart outboxrelay to create a new slot, and replay from the outbox table if your writer keeps rows", quoteLiteral(slot)))
	case !active && retained != nil && *retained > retainedAttention:
		c.result("slot", Warn, fmt.Sprintf("slot %q is inactive and retains %s of WAL", slot, HumanBytes(*retained)),
			"start outboxrelay on it, or drop it if nothing will: outboxrelay slot drop "+slot)
	default:
		state := "inactive"
		if active {
			state = "active"
		}
		c.result("slot", Pass, fmt.Sprintf("slot %q is a pgoutput slot of this database, %s, wal_status %s", slot, state, walStatus), "")
	}
}

// HumanBytes prints a byte count with a binary unit.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
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
	return fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert', publish_via_partition_root = true);", quoteIdent(cfg.Publication), cfg.QualifiedTables())
}
