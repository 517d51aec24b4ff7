package replication

import (
	"context"
	"fmt"
)

// Decoding on a hot standby (PostgreSQL 16+) takes load off the primary.
// The standby cannot write: the publication must come from the primary,
// and creating the slot waits until the primary logs a snapshot of its
// running transactions (every 15 s while it is busy, at once with
// SELECT pg_log_standby_snapshot()). hot_standby_feedback keeps the primary
// from removing catalog rows the slot needs; without it the slot is
// invalidated by a conflict and its events are lost to the relay.

// standbyHint is what check and the logs say about creating a slot on a
// standby.
const standbyHint = "creating it waits for the primary to log a snapshot of its running transactions: every 15 s while the primary is busy, at once after SELECT pg_log_standby_snapshot(); on the primary"

// recovery checks the standby's side when the server is in recovery, and
// reports whether the remaining checks apply.
func (c *checker) recovery(ctx context.Context) bool {
	if !c.query(ctx, "SELECT pg_is_in_recovery()", nil, &c.state.InRecovery) || !c.state.InRecovery {
		return c.err == nil
	}
	if c.state.ServerVersion < 160000 {
		c.result("standby", Fail, "this server is a standby, and logical decoding on a standby needs PostgreSQL 16 or newer",
			"point the PostgreSQL URL (Config.ConnString) at the primary, or upgrade to PostgreSQL 16+")
		return false
	}
	c.result("standby", Pass, "this server is a hot standby: the relay decodes here, and keeps decoding from the same slot if it is promoted", "")
	var feedback, primarySlot string
	if !c.query(ctx, "SELECT current_setting('hot_standby_feedback'), current_setting('primary_slot_name')", nil, &feedback, &primarySlot) {
		return false
	}
	if feedback != "on" {
		c.result("hot_standby_feedback", Fail, "off on this standby: the primary may remove catalog rows the slot needs, and the slot is then invalidated (events after it are lost to the relay)",
			"on the standby: ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf();")
	} else {
		c.result("hot_standby_feedback", Pass, "on", "")
	}
	if primarySlot == "" {
		c.result("primary_slot_name", Warn, "empty: without a physical slot on the primary, the primary may remove WAL this standby (and the relay's slot) still needs, and hot_standby_feedback is lost while the standby is disconnected",
			"on the primary: SELECT pg_create_physical_replication_slot('standby1'); on the standby: ALTER SYSTEM SET primary_slot_name = 'standby1'; SELECT pg_reload_conf();")
	} else {
		c.result("primary_slot_name", Pass, primarySlot, "")
	}
	return true
}

// standbyPublication reports a publication missing on a standby, which
// cannot create it.
func (c *checker) standbyPublication() {
	c.result("publication", Fail, fmt.Sprintf("publication %q does not exist, and this server is a standby, which cannot create it", c.cfg.Publication),
		"on the primary: "+PublicationDDL(c.cfg)+" (or outboxrelay publication create with the primary's URL)")
}
