package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Position is the exactly-once checkpoint, written in the same Kafka
// transaction as the events it covers: every PostgreSQL transaction ending at
// or before EndLSN, plus the first PartialEvents events of the transaction
// whose commit record is at PartialCommitLSN (a transaction larger than one
// Kafka transaction). SystemID and Timeline name the database it came from,
// so a checkpoint is never applied to another one (a restored backup, or a
// failover without a synchronized slot).
type Position struct {
	Slot             string `json:"slot"`
	EndLSN           uint64 `json:"end_lsn"`
	PartialCommitLSN uint64 `json:"partial_commit_lsn,omitempty"`
	PartialEvents    int    `json:"partial_events,omitempty"`
	SystemID         string `json:"system_id"`
	Timeline         int32  `json:"timeline"`
	// Standby is set when the stream that wrote the checkpoint decoded on
	// a standby: its positions are that server's own WAL, also past a
	// promotion it streamed through (Timeline is the one it started on).
	Standby bool `json:"standby,omitempty"`
}

// Skip tells how many leading events of the transaction whose commit record
// starts at commitLSN are already delivered: all of them (-1) when the whole
// transaction is covered, or a count. Transactions are replayed identically,
// so skipping that many is exact.
func (p Position) Skip(commitLSN uint64) int {
	if commitLSN < p.EndLSN {
		return -1 // its commit record starts, so it ends, at or before EndLSN
	}
	if p.PartialEvents > 0 && commitLSN == p.PartialCommitLSN {
		return p.PartialEvents
	}
	return 0
}

// Encode is the record value written to the checkpoint topic.
func (p Position) Encode() []byte {
	b, _ := json.Marshal(p) // a struct of plain fields always marshals
	return b
}

// DecodePosition reads a checkpoint record value, rejecting incomplete ones.
func DecodePosition(b []byte) (Position, error) {
	var p Position
	if err := json.Unmarshal(b, &p); err != nil {
		return Position{}, fmt.Errorf("decoding checkpoint: %w", err)
	}
	var errs []error
	if p.Slot == "" {
		errs = append(errs, errors.New("no slot"))
	}
	if p.SystemID == "" {
		errs = append(errs, errors.New("no system identifier"))
	}
	if p.Timeline <= 0 {
		errs = append(errs, errors.New("no timeline"))
	}
	if err := errors.Join(errs...); err != nil {
		return Position{}, fmt.Errorf("decoding checkpoint %s: %w", b, err)
	}
	return p, nil
}

// ErrOtherSource means a checkpoint was written for another database: its
// positions mean nothing here.
var ErrOtherSource = errors.New("the checkpoint belongs to another database")

// Source is the database streamed from now, as far as a checkpoint's
// positions are concerned.
type Source struct {
	SystemID string
	Timeline int32
	// History is where this server left each earlier timeline (its
	// timeline history file); WAL below a switch point is shared with the
	// server that stayed on that timeline.
	History []TimelineSwitch
	// SlotSynced is true when the slot is a copy synchronized from a
	// primary (PostgreSQL 17+ failover slots), which a promotion keeps.
	SlotSynced bool
}

// TimelineSwitch is one line of a timeline history: the server left
// Timeline at the WAL position End, the first position of the next one.
type TimelineSwitch struct {
	Timeline int32
	End      uint64
}

// Check tells whether a checkpoint's positions hold on src. They do on the
// timeline the checkpoint was written on, and after a genuine promotion of
// the same database system, with the checkpoint's timeline an ancestor of
// the current one: when the slot is a synchronized copy of the old
// primary's failover slot and everything the checkpoint covers lies below
// the point where this server left that timeline (WAL there is the same on
// both servers), or when the checkpoint was written while decoding on this
// standby from a slot of its own. Anything else (a restored backup, another
// cluster, a standby that never received what was delivered, a slot made by
// hand) is ErrOtherSource.
func (p Position) Check(src Source) error {
	if p.SystemID != src.SystemID {
		return fmt.Errorf("%w: it was written for database system %s, this is %s (another cluster)", ErrOtherSource, p.SystemID, src.SystemID)
	}
	if p.Timeline == src.Timeline {
		return nil
	}
	end, ok := src.switchFrom(p.Timeline)
	if !ok || p.Timeline > src.Timeline {
		return fmt.Errorf("%w: it was written on timeline %d, which is not in the history of this server's timeline %d (a restored backup or a diverged server)", ErrOtherSource, p.Timeline, src.Timeline)
	}
	if p.Standby && !src.SlotSynced {
		// Decoded on a standby from a slot of its own: the positions are
		// this server's WAL, whichever timeline it was on.
		return nil
	}
	if covered := p.covers(); covered > end {
		return fmt.Errorf("%w: it covers WAL up to %s on timeline %d, but this server left that timeline at %s: events were delivered that this server never received, and resuming would skip its own events at those positions (a standby that lagged, or a restored backup)",
			ErrOtherSource, formatLSN(covered), p.Timeline, formatLSN(end))
	}
	if !src.SlotSynced {
		return fmt.Errorf("%w: the server moved from timeline %d to %d and the slot is not a synchronized copy of the old primary's failover slot (a restored backup, or a slot made by hand), so its position cannot be trusted to match the checkpoint", ErrOtherSource, p.Timeline, src.Timeline)
	}
	return nil
}

// switchFrom returns where src left timeline tl.
func (src Source) switchFrom(tl int32) (uint64, bool) {
	for _, s := range src.History {
		if s.Timeline == tl {
			return s.End, true
		}
	}
	return 0, false
}

// covers is the highest WAL position the checkpoint says something about:
// the end of its last whole transaction, or the commit record of a
// transaction it covers in part.
func (p Position) covers() uint64 {
	if p.PartialEvents > 0 && p.PartialCommitLSN >= p.EndLSN {
		return p.PartialCommitLSN + 1
	}
	return p.EndLSN
}

// formatLSN writes a WAL position as PostgreSQL does.
func formatLSN(lsn uint64) string { return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn)) }
