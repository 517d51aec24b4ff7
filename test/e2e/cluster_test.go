package e2e

import (
	"context"
	"testing"

	"github.com/outboxrelay/outboxrelay/test/harness"
)

// newCluster starts a cluster of the test's own, for tests that restart it or
// need other settings.
func newCluster(t *testing.T, opts ...harness.PostgresOptions) *harness.Postgres {
	t.Helper()
	var o harness.PostgresOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	pg, err := harness.StartPostgres(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	return pg
}
