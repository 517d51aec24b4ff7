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

// Check compares a checkpoint with the database streamed from now.
func (p Position) Check(systemID string, timeline int32) error {
	if p.SystemID != systemID {
		return fmt.Errorf("%w: it was written for database system %s, this is %s (a restored backup or another cluster)", ErrOtherSource, p.SystemID, systemID)
	}
	if p.Timeline != timeline {
		return fmt.Errorf("%w: it was written on timeline %d, the server is on timeline %d (a failover or point-in-time recovery)", ErrOtherSource, p.Timeline, timeline)
	}
	return nil
}
