package e2e

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

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

func pgxConnect(t *testing.T, url string) (*pgx.Conn, error) {
	t.Helper()
	return pgx.Connect(t.Context(), url)
}

// newAdmin is an independent (franz-go) admin client for the env's broker.
func newAdmin(e *env) (*kadm.Client, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kafka.ListenAddrs()...))
	if err != nil {
		return nil, err
	}
	return kadm.NewClient(cl), nil
}
