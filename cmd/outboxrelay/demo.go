//go:build demo

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
)

func newDemoCmd(logs *logOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Run the relay end to end on a throwaway PostgreSQL and an embedded Kafka-protocol broker",
		Long: `Starts a throwaway PostgreSQL cluster (needs the PostgreSQL server package) and an
embedded Kafka-protocol broker, creates an outbox table, writes sample events the
insert-and-delete way, relays them, prints what arrived on each topic and the
slot's confirmed position, then removes everything it created.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("log-level") && os.Getenv(envName("log-level")) == "" {
				logs.level = "warn"
			}
			log, err := logs.logger(os.Stderr)
			if err != nil {
				return err
			}
			return runDemo(cmd.Context(), cmd.OutOrStdout(), func(o *runOptions) (*relay, error) { return newRelay(*o, log) })
		},
	}
}

var demoEvents = []struct{ atype, aid, typ, payload string }{
	{"Order", "order-1", "OrderCreated", `{"orderId": "order-1", "total": 42.5}`},
	{"Order", "order-2", "OrderCreated", `{"orderId": "order-2", "total": 7}`},
	{"Customer", "cust-9", "CustomerRenamed", `{"customerId": "cust-9", "name": "Ada"}`},
	{"Order", "order-1", "OrderShipped", `{"orderId": "order-1", "carrier": "DHL"}`},
}

func runDemo(ctx context.Context, out io.Writer, mk func(*runOptions) (*relay, error)) (err error) {
	fmt.Fprintln(out, "starting a throwaway PostgreSQL cluster ...")
	pg, err := harness.StartPostgres(ctx, harness.PostgresOptions{})
	if err != nil {
		return fmt.Errorf("starting PostgreSQL for the demo: %w", err)
	}
	defer func() { err = errors.Join(err, pg.Stop()) }()
	kc, err := harness.StartKafka()
	if err != nil {
		return err
	}
	defer kc.Close()
	url := pg.URL("postgres", "postgres")
	fmt.Fprintf(out, "PostgreSQL at 127.0.0.1:%d (wal_level=logical), Kafka-protocol broker at %s\n", pg.Port, kc.ListenAddrs()[0])

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connecting to the demo database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, replication.OutboxDDL("public.outbox")+`CREATE TABLE orders (id text PRIMARY KEY, status text);`); err != nil {
		return fmt.Errorf("creating the demo tables: %w", err)
	}

	opts := defaultRunOptions()
	opts.repl.ConnString = url
	opts.kafka.Brokers = kc.ListenAddrs()
	opts.httpAddr = ""
	if err := opts.finish(); err != nil {
		return err
	}
	r, err := mk(&opts)
	if err != nil {
		return err
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	defer stopRelay()
	var g errgroup.Group
	g.Go(func() error { return r.Run(relayCtx) })
	defer func() {
		stopRelay()
		err = errors.Join(err, g.Wait())
	}()

	if err := waitForSlot(ctx, conn, opts.repl.Slot); err != nil {
		return err
	}
	fmt.Fprintln(out, "writing 4 events, each inserted and deleted in the transaction that changes the order:")
	for _, e := range demoEvents {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return fmt.Errorf("writing a demo event: %w", err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO orders VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET status = excluded.status`, e.aid, e.typ)
		if err == nil {
			var id string
			err = tx.QueryRow(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (gen_random_uuid(), $1, $2, $3, $4) RETURNING id::text`,
				e.atype, e.aid, e.typ, e.payload).Scan(&id)
			if err == nil {
				_, err = tx.Exec(ctx, `DELETE FROM outbox WHERE id = $1`, id)
			}
		}
		if err == nil {
			err = tx.Commit(ctx)
		}
		if err != nil {
			return fmt.Errorf("writing a demo event: %w", err)
		}
		fmt.Fprintf(out, "  %-8s %-8s %s\n", e.atype, e.aid, e.typ)
	}

	recs, err := harness.ReadAll(ctx, kc.ListenAddrs(), []string{"outbox.event.Order", "outbox.event.Customer"}, harness.Count(len(demoEvents)), 30*time.Second)
	if err != nil {
		return fmt.Errorf("reading the demo topics: %w", err)
	}
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Topic > recs[j].Topic })
	fmt.Fprintf(out, "\n%d records arrived (read back with franz-go, an independent Kafka client):\n", len(recs))
	for _, rec := range recs {
		id := ""
		for _, h := range rec.Headers {
			if h.Key == "id" {
				id = string(h.Value)
			}
		}
		fmt.Fprintf(out, "  topic=%s partition=%d offset=%d key=%s id=%s\n    value=%s\n", rec.Topic, rec.Partition, rec.Offset, rec.Key, id, rec.Value)
	}
	if len(recs) != len(demoEvents) {
		return fmt.Errorf("the demo expected %d records and read %d", len(demoEvents), len(recs))
	}
	var left int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&left); err != nil {
		return fmt.Errorf("counting outbox rows: %w", err)
	}
	time.Sleep(2 * opts.repl.StatusInterval)
	var confirmed, current string
	if err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text FROM pg_replication_slots WHERE slot_name = $1`, opts.repl.Slot).Scan(&confirmed, &current); err != nil {
		return fmt.Errorf("reading the slot: %w", err)
	}
	fmt.Fprintf(out, "\nrows left in the outbox table: %d; slot %q confirmed_flush_lsn=%s (server WAL at %s)\n", left, opts.repl.Slot, confirmed, current)
	fmt.Fprintln(out, "stopping the relay and removing the throwaway cluster")
	return nil
}

func waitForSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		// A slot is active too while a plain backend creates it; only a
		// walsender holding it means the relay is streaming.
		var streaming bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_replication_slots s
			JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1)`, slot).Scan(&streaming)
		if err == nil && streaming {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the relay did not start streaming from slot %q within 30s", slot)
}

// demoCommand is the demo subcommand: built only with -tags demo, so that
// the relay users deploy links no test code (the throwaway PostgreSQL and
// the embedded broker live in test/harness).
func demoCommand(logs *logOptions) *cobra.Command { return newDemoCmd(logs) }
