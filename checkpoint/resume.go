package checkpoint

// Resume is the exactly-once half of the accounting. It follows the
// transactions the slot replays, tells which of their events a checkpoint
// read at start already covers, and gives, for each event sent and each
// transaction end, the checkpoint that holds once that is in Kafka:
//
//   - a transaction whose commit record starts before the checkpoint's
//     EndLSN is delivered whole and skipped;
//   - the transaction at PartialCommitLSN has its first PartialEvents events
//     delivered: they are skipped, the rest sent;
//   - every event sent carries the position "every transaction up to the
//     last complete one, plus this many events of the current one";
//   - a transaction that sent events ends with the position of its end.
//
// Transactions are replayed identically from a slot, so skipping by count is
// exact. A Resume is used by one goroutine, the replication reader.
type Resume struct {
	from      Position // the checkpoint read at start; zero when there is none
	pos       Position // this source's identity (Slot, SystemID, Timeline)
	lastEnd   uint64   // end of the last complete transaction
	commitLSN uint64   // the current transaction's commit record
	seen      int      // events of the current transaction read, skipped ones included
	skipLeft  int      // events still to skip; -1: the whole transaction
	sent      int      // events of the current transaction sent
}

// NewResume starts exactly-once accounting for the source identified by
// identity (its Slot, SystemID and Timeline), resuming after from, the
// checkpoint read from Kafka (the zero Position when there is none).
func NewResume(identity, from Position) *Resume {
	identity.EndLSN, identity.PartialCommitLSN, identity.PartialEvents = 0, 0, 0
	return &Resume{from: from, pos: identity, lastEnd: from.EndLSN}
}

// Begin starts the transaction whose commit record starts at commitLSN.
func (r *Resume) Begin(commitLSN uint64) {
	r.commitLSN, r.seen, r.sent = commitLSN, 0, 0
	r.skipLeft = r.from.Skip(commitLSN)
}

// Delivered reads the next event of the transaction and reports whether the
// checkpoint covers it: then it must not be sent again.
func (r *Resume) Delivered() bool {
	r.seen++
	if r.skipLeft < 0 {
		return true
	}
	if r.skipLeft > 0 {
		r.skipLeft--
		return true
	}
	return false
}

// Send records that the event just read is sent and returns the checkpoint
// value to commit with it: it holds once this event is in Kafka.
func (r *Resume) Send() []byte {
	p := r.pos
	p.EndLSN, p.PartialCommitLSN, p.PartialEvents = r.lastEnd, r.commitLSN, r.seen
	r.sent++
	return p.Encode()
}

// Commit ends the transaction at end. It returns the checkpoint value of the
// transaction boundary when the transaction sent events, nil otherwise.
func (r *Resume) Commit(end uint64) []byte {
	r.lastEnd = end
	if r.sent == 0 {
		return nil
	}
	p := r.pos
	p.EndLSN = end
	return p.Encode()
}
