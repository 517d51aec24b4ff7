// Package replication reads the inserts into one or more outbox tables from
// PostgreSQL through a pgoutput logical replication slot.
//
// It is the only package that talks to PostgreSQL. It checks the database's
// prerequisites (Preflight), creates or reuses the publication and the slot
// (Setup), and streams (Stream.Run): one goroutine reads the replication
// connection, hands each insert into the outbox table to a Handler, and sends
// every Standby Status Update. The position it confirms comes from a
// Progress (the checkpoint tracker): the end LSN of the newest transaction
// whose events Kafka has acknowledged with nothing unacknowledged before it,
// or, when nothing at all is in flight, the server's last keepalive position,
// so that a quiet outbox never pins WAL.
//
// The stream is opened with proto_version 1 and no streaming of in-progress
// transactions, so only committed transactions arrive, whole and in commit
// order.
package replication

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Config configures preflight, setup and streaming.
type Config struct {
	// ConnString is a PostgreSQL URL or keyword/value string. The replication
	// connection adds replication=database itself.
	ConnString string
	// Tables are the outbox tables, each "schema.table" or "table" (schema
	// public). One publication and one slot cover them all; their inserts
	// arrive in commit order across the tables.
	Tables []string
	// Slot is the logical replication slot; created with pgoutput if missing.
	Slot string
	// Publication is created FOR TABLE Tables WITH (publish = 'insert') if
	// missing; an existing one must include every table.
	Publication string
	// Columns are the outbox columns the router needs; preflight checks that
	// every table has them.
	Columns []string
	// StatusInterval is how often a status update is sent when the
	// confirmable position moved; one is sent at least every 10 intervals.
	// A short interval keeps the slot close behind Kafka, so a crash sends
	// little again and the slot retains little WAL; a status update costs
	// the walsender next to nothing.
	StatusInterval time.Duration
	// DrainTimeout bounds how long a stopping stream waits for the open
	// transaction's end and for Kafka's acknowledgements.
	DrainTimeout time.Duration
	// Heartbeat asks pgoutput for logical decoding messages (PostgreSQL 14+),
	// which carry the heartbeats a Monitor emits.
	Heartbeat bool
	// SlotFailover creates the slot as a failover slot (PostgreSQL 17+),
	// which a standby with sync_replication_slots keeps a copy of, and
	// makes the preflight check the primary's side of that.
	SlotFailover bool
	// DeferSlot leaves a missing slot to OpenForSnapshot (Setup creates
	// only the publication): a relay that reads an initial snapshot creates
	// its slot with an exported snapshot.
	DeferSlot bool
}

// DefaultConfig returns the defaults: public.outbox, slot and publication
// "outboxrelay", a status update every 100ms while the position moves.
func DefaultConfig() Config {
	return Config{
		Tables:         []string{"public.outbox"},
		Slot:           "outboxrelay",
		Publication:    "outboxrelay",
		StatusInterval: 100 * time.Millisecond,
		DrainTimeout:   10 * time.Second,
	}
}

var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.ConnString == "" {
		errs = append(errs, errors.New("pg-url is required (for example postgres://user@host:5432/db)"))
	} else if _, err := pgconn.ParseConfig(c.ConnString); err != nil {
		errs = append(errs, fmt.Errorf("pg-url: %w", err))
	}
	if err := ValidateTables(c.Tables); err != nil {
		errs = append(errs, err)
	}
	if !slotName.MatchString(c.Slot) {
		errs = append(errs, fmt.Errorf("slot %q: PostgreSQL slot names are 1-63 characters of a-z, 0-9 and _", c.Slot))
	}
	if c.Publication == "" || len(c.Publication) > 63 {
		errs = append(errs, fmt.Errorf("publication %q: must be 1-63 characters", c.Publication))
	}
	if c.StatusInterval <= 0 {
		errs = append(errs, fmt.Errorf("status-interval %v must be positive", c.StatusInterval))
	}
	if c.DrainTimeout <= 0 {
		errs = append(errs, fmt.Errorf("shutdown-timeout %v must be positive", c.DrainTimeout))
	}
	return errors.Join(errs...)
}

// SplitTable splits "schema.table" (default schema public). Names are taken
// as written, case-sensitively; quote nothing.
func SplitTable(t string) (schema, table string, err error) {
	schema, table = "public", t
	if i := strings.IndexByte(t, '.'); i >= 0 {
		schema, table = t[:i], t[i+1:]
	}
	if schema == "" || table == "" || strings.ContainsAny(table, `."`) || strings.Contains(schema, `"`) {
		return "", "", fmt.Errorf("table %q: want schema.table or table", t)
	}
	return schema, table, nil
}

// QuoteIdent quotes an SQL identifier (a column or table name) as written.
func QuoteIdent(s string) string { return quoteIdent(s) }

func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

func quoteLiteral(s string) string {
	return `'` + strings.ReplaceAll(s, `'`, `''`) + `'`
}

// ValidateTables reports every malformed or repeated table name at once.
func ValidateTables(tables []string) error {
	if len(tables) == 0 {
		return errors.New("table: name at least one outbox table")
	}
	var errs []error
	seen := make(map[string]bool, len(tables))
	for _, t := range tables {
		schema, table, err := SplitTable(t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if key := schema + "." + table; seen[key] {
			errs = append(errs, fmt.Errorf("table %q is listed twice", t))
		} else {
			seen[key] = true
		}
	}
	return errors.Join(errs...)
}

// QualifiedTable is a table name ("schema.table" or "table") as a quoted
// SQL identifier, "schema"."table".
func QualifiedTable(t string) string {
	schema, table, _ := SplitTable(t)
	return quoteIdent(schema) + "." + quoteIdent(table)
}

// QualifiedTables lists the tables as quoted SQL identifiers, comma-separated.
func (c Config) QualifiedTables() string {
	q := make([]string, len(c.Tables))
	for i, t := range c.Tables {
		q[i] = QualifiedTable(t)
	}
	return strings.Join(q, ", ")
}

// TableName is the i-th table as schema.table.
func (c Config) TableName(i int) string {
	schema, table, _ := SplitTable(c.Tables[i])
	return schema + "." + table
}
