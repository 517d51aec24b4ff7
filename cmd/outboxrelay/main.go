// Command outboxrelay relays a PostgreSQL outbox table to Kafka through
// logical replication, producing the records Debezium's Outbox Event Router
// would, and confirms a position to PostgreSQL only after Kafka has
// acknowledged every event up to it.
//
// Exit codes: 0 clean stop, 1 runtime failure, 2 usage or configuration
// error, 3 database prerequisites not met.
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
)

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
	if err != nil {
		fmt.Fprintf(os.Stderr, "outboxrelay: %v\n", err)
		code := exitFailure
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		os.Exit(code)
	}
}
