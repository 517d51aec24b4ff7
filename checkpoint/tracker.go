// Package checkpoint decides which replication position is safe to confirm.
//
// A Tracker follows every transaction the relay has read, in commit order,
// and every event of those transactions that is still waiting for Kafka's
// acknowledgement. Its confirmable position is the highest of:
//
//   - the end LSN of the newest transaction that has all of its events, and
//     all events of every earlier transaction, acknowledged;
//   - while nothing at all is in flight, the server position of a keepalive
//     that arrived while nothing was in flight either: everything the server
//     sent before it is in Kafka, and whatever it sends later ends beyond it,
//     so a quiet outbox never pins WAL;
//   - the highest position it reported before: it never goes back.
//
// Confirming that position to PostgreSQL can never skip an event that Kafka
// has not stored. The exactly-once half of the accounting, which events a
// checkpoint in Kafka already covers, is Resume.
//
// The Tracker also bounds what is in flight (events and bytes), which is the
// relay's memory bound: the reader asks Full before reading more and waits on
// Notify while it is.
//
// An initial snapshot is one more transaction at the front: the rows read
// from the snapshot the slot exported at its creation end at the slot's
// consistent point, where streaming starts. Between BeginSnapshot and
// EndSnapshot the stream reader sees Full, so no streamed event overtakes a
// snapshot row, and nothing beyond the consistent point is confirmed before
// every snapshot row is acknowledged.
//
// The package imports neither the PostgreSQL nor the Kafka driver; positions
// are plain uint64 LSNs.
package checkpoint

import (
	"fmt"
	"sync"
)

// Limits bounds what may be in flight at once. A zero field means no bound on
// that dimension.
type Limits struct {
	// MaxEvents is the most events read but not yet acknowledged.
	MaxEvents int
	// MaxBytes is the most payload bytes (key, value and headers) read but
	// not yet acknowledged. One event larger than MaxBytes is still admitted
	// when nothing else is in flight, so a large event cannot wedge the relay.
	MaxBytes int64
}

// Ticket identifies one in-flight event. It is handed to the sink with the
// event and given back to Ack exactly once.
type Ticket struct {
	tx   *txn
	size int64
}

type txn struct {
	pending   int    // events not acknowledged yet
	end       uint64 // transaction end LSN, valid once committed
	committed bool
}

// Tracker is safe for concurrent use: the replication reader calls Begin, Add
// and Commit while the sink's acknowledgement goroutine calls Ack.
type Tracker struct {
	limits Limits

	mu        sync.Mutex
	queue     []*txn // transactions in commit order, oldest first
	head      int    // index of the oldest live transaction in queue
	open      *txn   // the transaction being read, if any
	confirmed uint64 // end of the acknowledged prefix of transactions
	floor     uint64 // a keepalive's server position, reached while idle
	reported  uint64 // the highest position Confirmable returned
	events    int
	bytes     int64
	// snapshot is set from BeginSnapshot to EndSnapshot: the snapshot
	// reader owns the open transaction, the stream reader waits.
	snapshot bool

	notify chan struct{}
	room   chan struct{} // the snapshot reader's Notify
}

// NewTracker returns a Tracker whose confirmable position starts at start,
// normally the slot's confirmed_flush_lsn: it never reports anything lower.
func NewTracker(start uint64, limits Limits) *Tracker {
	return &Tracker{limits: limits, confirmed: start, reported: start, notify: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

// BeginSnapshot opens the initial snapshot's transaction, before the stream
// reader has begun one; the snapshot reader then calls Add for each row,
// WaitRoom between rows, and EndSnapshot. Until then Full holds the stream
// reader back.
func (t *Tracker) BeginSnapshot() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.queue) > t.head || t.open != nil {
		return fmt.Errorf("beginning the snapshot: streamed transactions are in flight already")
	}
	t.open = &txn{}
	t.queue = append(t.queue, t.open)
	t.snapshot = true
	return nil
}

// EndSnapshot commits the snapshot's transaction at end, the position where
// streaming starts (the slot's consistent point or confirmed position), and
// lets the stream reader go on.
func (t *Tracker) EndSnapshot(end uint64) error {
	t.mu.Lock()
	if !t.snapshot {
		t.mu.Unlock()
		return fmt.Errorf("ending the snapshot: none was begun")
	}
	t.snapshot = false
	t.mu.Unlock()
	err := t.Commit(end)
	t.signal()
	return err
}

// WaitRoom waits until the in-flight bound leaves room for one more
// snapshot row, or done closes.
func (t *Tracker) WaitRoom(done <-chan struct{}) {
	for t.overLimit() {
		select {
		case <-done:
			return
		case <-t.room:
		}
	}
}

// Begin opens a transaction; the events added until Commit belong to it.
func (t *Tracker) Begin() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open != nil {
		return fmt.Errorf("beginning a transaction: the previous one was not committed")
	}
	t.open = &txn{}
	t.queue = append(t.queue, t.open)
	return nil
}

// Add registers one event of the open transaction with its size in bytes.
func (t *Tracker) Add(size int64) (Ticket, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open == nil {
		return Ticket{}, fmt.Errorf("adding an event: no transaction is open")
	}
	t.open.pending++
	t.events++
	t.bytes += size
	return Ticket{tx: t.open, size: size}, nil
}

// Commit closes the open transaction at its end LSN (the Commit message's
// TransactionEndLSN, never the commit record's start).
func (t *Tracker) Commit(end uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open == nil {
		return fmt.Errorf("committing a transaction: none is open")
	}
	t.open.end = end
	t.open.committed = true
	t.open = nil
	t.advance()
	return nil
}

// Ack records Kafka's acknowledgement of one event.
func (t *Tracker) Ack(tk Ticket) {
	t.mu.Lock()
	tk.tx.pending--
	t.events--
	t.bytes -= tk.size
	t.advance()
	t.mu.Unlock()
	t.signal()
	select {
	case t.room <- struct{}{}:
	default:
	}
}

// advance pops fully acknowledged transactions from the front of the queue.
// It is called with mu held.
func (t *Tracker) advance() {
	for t.head < len(t.queue) {
		front := t.queue[t.head]
		if !front.committed || front.pending > 0 {
			break
		}
		if front.end > t.confirmed {
			t.confirmed = front.end
		}
		t.queue[t.head] = nil
		t.head++
	}
	if t.head == len(t.queue) {
		t.queue, t.head = t.queue[:0], 0
	} else if t.head > 1024 && t.head*2 > len(t.queue) {
		n := copy(t.queue, t.queue[t.head:])
		clear(t.queue[n:])
		t.queue, t.head = t.queue[:n], 0
	}
}

func (t *Tracker) signal() {
	select {
	case t.notify <- struct{}{}:
	default:
	}
}

// Keepalive records a server keepalive's WAL position. If nothing is in
// flight (no open transaction, no unacknowledged event), everything the
// server sent before it has been delivered, and the position may be
// confirmed while nothing is in flight.
func (t *Tracker) Keepalive(serverEnd uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.idle() {
		t.floor = max(t.floor, serverEnd)
	}
}

// Confirmable returns the highest LSN that is safe to confirm, and whether
// nothing at all is in flight (no open transaction, no unacknowledged event).
// It never returns less than it returned before.
func (t *Tracker) Confirmable() (lsn uint64, idle bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	idle = t.idle()
	lsn = max(t.confirmed, t.reported)
	if idle {
		lsn = max(lsn, t.floor)
	}
	t.reported = lsn
	return lsn, idle
}

// idle reports whether nothing is in flight; called with mu held. An open
// transaction is in the queue from Begin on.
func (t *Tracker) idle() bool { return t.head == len(t.queue) }

// Full reports whether the in-flight bound is reached; the reader must wait on
// Notify before reading more events.
func (t *Tracker) Full() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.snapshot || t.overLimitLocked()
}

func (t *Tracker) overLimit() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.overLimitLocked()
}

func (t *Tracker) overLimitLocked() bool {
	if t.events == 0 {
		return false
	}
	return (t.limits.MaxEvents > 0 && t.events >= t.limits.MaxEvents) ||
		(t.limits.MaxBytes > 0 && t.bytes >= t.limits.MaxBytes)
}

// InFlight returns the number of unacknowledged events and their bytes.
func (t *Tracker) InFlight() (events int, bytes int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.events, t.bytes
}

// Notify returns a channel that receives a value after acknowledgements; it
// has one reader, the replication loop, and coalesces signals.
func (t *Tracker) Notify() <-chan struct{} { return t.notify }
