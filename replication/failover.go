package replication

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Failover slots (PostgreSQL 17+) survive a promotion: the primary marks
// the slot failover, a standby with sync_replication_slots keeps a synced
// copy, and synchronized_standby_slots holds logical consumers back until
// the standbys have the WAL, so that nothing the relay delivered can vanish
// with the old primary. These checks tell an operator which piece is
// missing and the setting that adds it. They never print primary_conninfo,
// which may hold a password.

// failover checks the primary's side when Config.SlotFailover is set.
func (c *checker) failover(ctx context.Context) {
	if !c.cfg.SlotFailover {
		return
	}
	if c.state.ServerVersion < 170000 {
		c.result("failover slot", Fail, "failover slots need PostgreSQL 17 or newer", "upgrade, or run without them (Config.SlotFailover)")
		return
	}
	if c.state.InRecovery {
		c.result("failover slot", Fail, "this server is a standby, where a slot cannot be a failover slot", "run without failover slots on a standby (Config.SlotFailover); the slot is kept if this standby is promoted")
		return
	}
	var standbys string
	if !c.query(ctx, "SELECT current_setting('synchronized_standby_slots')", nil, &standbys) {
		return
	}
	c.standbySlots(ctx, standbys)
	var exists, failover bool
	if !c.query(ctx, "SELECT true, failover FROM pg_replication_slots WHERE slot_name = $1", []any{c.cfg.Slot}, &exists, &failover) {
		if c.err == nil {
			c.result("failover slot", Pass, fmt.Sprintf("slot %q will be created as a failover slot", c.cfg.Slot), "")
		}
		return
	}
	if !failover {
		c.result("failover slot", Fail, fmt.Sprintf("slot %q exists but is not a failover slot: a promoted standby will not have it", c.cfg.Slot),
			fmt.Sprintf("in a replication connection (psql \"dbname=... replication=database\"): ALTER_REPLICATION_SLOT %s ( FAILOVER true );", quoteIdent(c.cfg.Slot)))
		return
	}
	c.result("failover slot", Pass, fmt.Sprintf("slot %q is a failover slot", c.cfg.Slot), "")
}

// standbySlots checks synchronized_standby_slots: set, and naming physical
// slots that exist.
func (c *checker) standbySlots(ctx context.Context, setting string) {
	names := splitSetting(setting)
	if len(names) == 0 {
		c.result("synchronized_standby_slots", Warn,
			"empty: the relay may deliver and confirm changes no standby has received yet; after a failover they never happened on the new primary",
			"ALTER SYSTEM SET synchronized_standby_slots = '<the standby's physical slot>'; SELECT pg_reload_conf();")
		return
	}
	var missing []string
	for _, n := range names {
		var ok bool
		if !c.query(ctx, "SELECT true FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'physical'", []any{n}, &ok) {
			if c.err != nil {
				return
			}
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		c.result("synchronized_standby_slots", Fail, fmt.Sprintf("names %s, which are not physical slots here: logical decoding waits for them forever", strings.Join(missing, ", ")),
			"SELECT pg_create_physical_replication_slot('<name>'); and set it as the standby's primary_slot_name, or correct synchronized_standby_slots")
		return
	}
	c.result("synchronized_standby_slots", Pass, "the relay waits for "+strings.Join(names, ", ")+" before it receives a change", "")
}

func splitSetting(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// InspectStandby checks a physical standby of the primary cfg names for
// what keeps the relay's failover slot usable after a promotion: it is a
// standby, sync_replication_slots and hot_standby_feedback are on, it
// streams through a physical slot, primary_conninfo names a database, and
// its copy of the slot is synced and not behind the primary's.
func InspectStandby(ctx context.Context, cfg Config, standbyConnString string) ([]Result, error) {
	primary, err := connectSQL(ctx, cfg.ConnString)
	if err != nil {
		return nil, err
	}
	defer primary.Close(context.WithoutCancel(ctx))
	conn, err := connectSQL(ctx, standbyConnString)
	if err != nil {
		return nil, fmt.Errorf("connecting to the standby: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	c := standbyChecker{checker: checker{cfg: cfg, conn: conn}, primary: primary}
	c.run(ctx)
	if c.err != nil {
		return nil, fmt.Errorf("checking the standby: %w", c.err)
	}
	return c.state.Results, nil
}

type standbyChecker struct {
	checker
	primary *pgx.Conn
}

func (c *standbyChecker) run(ctx context.Context) {
	var recovery bool
	var version int
	if !c.query(ctx, "SELECT pg_is_in_recovery(), current_setting('server_version_num')::int", nil, &recovery, &version) {
		return
	}
	if !recovery {
		c.result("standby", Fail, "the server is not a standby (pg_is_in_recovery() is false)", "point the standby URL at a hot standby of the primary")
		return
	}
	if version < 170000 {
		c.result("standby", Fail, "a standby keeps failover slots from PostgreSQL 17 on", "upgrade the standby")
		return
	}
	c.result("standby", Pass, "a hot standby", "")
	c.setting(ctx, "sync_replication_slots", "on", "it keeps no copy of the primary's failover slots")
	c.setting(ctx, "hot_standby_feedback", "on", "the primary may remove catalog rows the slot's copy still needs")
	c.primarySlot(ctx)
	c.conninfo(ctx)
	c.slotCopy(ctx)
}

// setting checks that a boolean setting of the standby is on.
func (c *standbyChecker) setting(ctx context.Context, name, want, otherwise string) {
	var v string
	if !c.query(ctx, "SELECT current_setting($1)", []any{name}, &v) {
		return
	}
	if v != want {
		c.result(name, Fail, fmt.Sprintf("%s on the standby: %s", v, otherwise),
			fmt.Sprintf("on the standby: ALTER SYSTEM SET %s = %s; SELECT pg_reload_conf();", name, want))
		return
	}
	c.result(name, Pass, want, "")
}

func (c *standbyChecker) primarySlot(ctx context.Context) {
	var slot string
	if !c.query(ctx, "SELECT current_setting('primary_slot_name')", nil, &slot) {
		return
	}
	if slot == "" {
		c.result("primary_slot_name", Fail, "empty: the standby streams without a physical slot, so synchronized_standby_slots cannot name it and slot sync is refused",
			"on the primary: SELECT pg_create_physical_replication_slot('standby1'); on the standby: ALTER SYSTEM SET primary_slot_name = 'standby1'; SELECT pg_reload_conf();")
		return
	}
	c.result("primary_slot_name", Pass, slot, "")
}

// conninfo checks that primary_conninfo names a database, which slot sync
// needs; the value itself is never shown (it may hold a password).
func (c *standbyChecker) conninfo(ctx context.Context) {
	var info string
	if !c.query(ctx, "SELECT current_setting('primary_conninfo')", nil, &info) {
		return
	}
	if !strings.Contains(info, "dbname=") {
		c.result("primary_conninfo", Fail, "names no database (dbname): the slot sync worker cannot connect (value not shown)",
			"on the standby: add dbname=<the relay's database> to primary_conninfo and reload")
		return
	}
	c.result("primary_conninfo", Pass, "names a database (value not shown)", "")
}

// slotCopy compares the standby's copy of the slot with the primary's.
func (c *standbyChecker) slotCopy(ctx context.Context) {
	slot := c.cfg.Slot
	var synced bool
	var lsn string
	if !c.query(ctx, "SELECT synced, coalesce(confirmed_flush_lsn::text, '') FROM pg_replication_slots WHERE slot_name = $1", []any{slot}, &synced, &lsn) {
		if c.err == nil {
			c.result("slot copy", Fail, fmt.Sprintf("the standby has no copy of slot %q: a promotion now would lose it", slot),
				"make the slot a failover slot on the primary (--slot-failover) and wait for the sync worker; SELECT pg_log_standby_snapshot(); on the primary speeds the first sync")
		}
		return
	}
	if !synced {
		c.result("slot copy", Fail, fmt.Sprintf("the standby's slot %q is its own, not a synced copy of the primary's", slot),
			"drop it on the standby; the sync worker then creates the synced copy")
		return
	}
	if lsn == "" {
		c.result("slot copy", Warn, fmt.Sprintf("synced copy of %q, with no confirmed position yet", slot),
			"wait for the sync worker's next round (a few seconds)")
		return
	}
	var behind *int64
	err := c.primary.QueryRow(ctx, "SELECT pg_wal_lsn_diff(confirmed_flush_lsn, $2::pg_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1", slot, lsn).Scan(&behind)
	if errors.Is(err, pgx.ErrNoRows) {
		c.result("slot copy", Fail, fmt.Sprintf("the standby holds slot %q but the primary does not: it is not a copy of this primary's slot", slot),
			"check that --pg-url names the standby's primary")
		return
	}
	if err != nil {
		c.err = err
		return
	}
	if behind != nil && *behind > 0 {
		c.result("slot copy", Warn, fmt.Sprintf("synced, %s behind the primary's: after a promotion now the relay would send that part again", HumanBytes(*behind)),
			"normal for a moment after a confirmation; if it persists, check the sync worker in the standby's log")
		return
	}
	c.result("slot copy", Pass, fmt.Sprintf("synced copy of %q, at the primary's position", slot), "")
}
