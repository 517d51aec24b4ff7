// Command outboxrelay relays a PostgreSQL outbox table to Kafka through
// logical replication, producing the records Debezium's Outbox Event Router
// would, and confirms a position to PostgreSQL only after Kafka has
// acknowledged every event up to it.
//
// Exit codes: 0 clean stop, 1 runtime failure, 2 usage or configuration
// error (a taken --http-addr included), 3 database prerequisites not met,
// 4 stopped on request before Kafka acknowledged every event read (they
// were not confirmed and are delivered again after a restart; for replay:
// before every selected row was sent and acknowledged).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitFailure   = 1
	exitUsage     = 2
	exitPreflight = 3
	// exitUndelivered: a stop request (SIGTERM, SIGINT) ended the relay
	// after --shutdown-timeout with events Kafka had not acknowledged. They
	// were not confirmed, so a restart delivers them; the WARN before the
	// exit says how many. Distinct from 0 so that an operator notices a stop
	// that did not drain, and from 1 because nothing failed.
	exitUndelivered = 4
)

// exitCode ends the process with a code; what happened was logged already.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit code %d", int(c)) }

// exitError carries the process exit code with the error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(err error) error { return &exitError{code: exitUsage, err: err} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	var quiet exitCode
	if err != nil && !errors.As(err, &quiet) {
		fmt.Fprintf(os.Stderr, "outboxrelay: %s\n", forPeople(err.Error()))
	}
	os.Exit(exitStatus(err))
}

// exitStatus is the process exit code for what a command returned.
func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	var quiet exitCode
	if errors.As(err, &quiet) {
		return int(quiet)
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFailure
}
