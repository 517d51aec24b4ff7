package pipeline

import (
	"errors"
	"fmt"

	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/router"
	"github.com/outboxrelay/outboxrelay/sink"
)

// errPermanent marks an error that a new session cannot overcome.
var errPermanent = errors.New("permanent")

type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() []error { return []error{e.err, errPermanent} }

// ErrUpdate stops a relay whose OnUpdate is fatal at an UPDATE of an outbox
// table.
var ErrUpdate = errors.New("an outbox row was updated")

// Permanent marks err as one a new session cannot overcome.
func Permanent(err error) error { return &permanentError{err} }

// Retryable is the one rule for ending a session: it reports whether a new
// session, from the slot, may succeed where this one failed (a database
// restart, a Kafka outage, a slot held by another relay). It is false for a
// bad event (BadEvent), a slot that is gone, and what a reconnection cannot
// change (an unusable table definition, a checkpoint of another source).
func Retryable(err error) bool {
	return !errors.Is(err, errPermanent) && !errors.Is(err, replication.ErrSlotGone) && !BadEvent(err)
}

// BadEvent reports an error about one event: it cannot be routed, or Kafka
// refuses it as it is. Such an error is never retryable; nothing from the
// event on was confirmed.
func BadEvent(err error) bool {
	var pe *sink.ProduceError
	return errors.Is(err, router.ErrRoute) || (errors.As(err, &pe) && pe.Permanent())
}

// UndeliveredError ends a session that was asked to stop while Kafka had not
// acknowledged every event it read (the drain timeout passed). Those events
// were not confirmed: they stay in the slot.
type UndeliveredError struct {
	Events int
	Bytes  int64
}

func (e *UndeliveredError) Error() string {
	return fmt.Sprintf("stopped with %d events (%d bytes) not acknowledged by Kafka", e.Events, e.Bytes)
}
