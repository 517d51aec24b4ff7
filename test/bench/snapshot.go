package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
)

// snapshotResult is the initial snapshot scenario's outcome.
type snapshotResult struct {
	Kept        int     `json:"rows_kept_before_start"`
	Concurrent  int     `json:"events_written_during"`
	Delivered   int     `json:"records_delivered"`
	Missing     int     `json:"missing"`
	Duplicated  int     `json:"duplicated"`
	SnapshotSec float64 `json:"snapshot_seconds"`
	TotalSec    float64 `json:"seconds_to_deliver_all"`
	PeakRSSMiB  float64 `json:"peak_rss_mib"`
	Leg         string  `json:"leg"`
	Broker      string  `json:"broker"`
}

// snapshotScenario keeps n rows in the outbox, then starts the relay with
// --snapshot initial while writers keep committing (kept rows throughout,
// insert-and-delete events once the slot exists), and reads every record
// back by id: nothing may be missing, and the hand-off from the exported
// snapshot to the stream may repeat nothing.
func (b *bench) snapshotScenario(ctx context.Context, n int, leg string) (snapshotResult, error) {
	r := snapshotResult{Leg: leg}
	url, pool, err := b.prepare(ctx)
	if err != nil {
		return r, err
	}
	defer b.dropSlots(ctx, pool)
	fmt.Fprintf(os.Stderr, "  keeping %d rows ...\n", n)
	if err := keepRows(ctx, pool, n); err != nil {
		return r, err
	}
	r.Kept = n
	slot, suffix := b.slot("snapshot"), fmt.Sprintf("s%d", b.seq)
	wctx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	w := &concurrentWriter{pool: pool}
	var writers sync.WaitGroup
	logPath := filepath.Join(b.logDir, "relay-"+suffix+".log")
	writers.Go(func() { w.run(wctx, false, "") })
	writers.Go(func() { w.run(wctx, true, logPath) })
	time.Sleep(300 * time.Millisecond)
	began := time.Now()
	p, err := b.startRelay(url, slot, suffix, "--snapshot", "initial", "--log-level", "info")
	if err != nil {
		return r, err
	}
	s := startSampler(p.cmd.Process.Pid, 100*time.Millisecond)
	took, err := waitSnapshot(ctx, logPath, 20*time.Minute)
	if err != nil {
		s.finish()
		_, _, _ = p.stop()
		return r, err
	}
	r.SnapshotSec = took.Seconds()
	time.Sleep(time.Second) // writers go on past the hand-off
	stopWriters()
	writers.Wait()
	want, err := expectedIDs(ctx, pool, w.deleted())
	if err != nil {
		return r, err
	}
	r.Concurrent = len(want) - n
	seen, total, err := b.readIDs(ctx, "bench."+suffix+".Order", want, 3*time.Minute)
	r.TotalSec = time.Since(began).Seconds()
	u := s.finish()
	rss, _, stopErr := p.stop()
	r.PeakRSSMiB = max(u.MaxRSSMiB, rss)
	if err = errors.Join(err, stopErr); err != nil {
		return r, err
	}
	r.Delivered, r.Duplicated = total, total-len(seen)
	for id := range want {
		if seen[id] == 0 {
			r.Missing++
		}
	}
	return r, nil
}

// keepRows commits n kept rows, 10,000 per transaction, from 4 sessions.
func keepRows(ctx context.Context, pool *pgxpool.Pool, n int) error {
	const perTx = 10_000
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			for {
				lo := int(next.Add(perTx)) - perTx
				if lo >= n || ctx.Err() != nil {
					return
				}
				if _, err := pool.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
					SELECT gen_random_uuid(), 'Order', 'agg-' || (k % 1000), 'OrderCreated', jsonb_build_object('orderId', k, 'customer', 'customer-' || (k % 977), 'lines', 3)
					FROM generate_series($1::int, $2::int - 1) k`, lo, min(lo+perTx, n)); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// concurrentWriter commits one event per transaction until stopped: kept
// rows, or insert-and-delete events from the moment the relay logged the
// slot's creation (one committed before its consistent point is in no
// snapshot and no slot).
type concurrentWriter struct {
	pool *pgxpool.Pool
	mu   sync.Mutex
	dels []string
}

func (w *concurrentWriter) run(ctx context.Context, del bool, relayLog string) {
	for del && ctx.Err() == nil {
		if b, _ := os.ReadFile(relayLog); strings.Contains(string(b), "created replication slot") {
			break
		}
		time.Sleep(time.Millisecond)
	}
	sql := `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (gen_random_uuid(), 'Order', 'live-' || $1::int % 100, 'OrderCreated', '{"live": true}') RETURNING id::text`
	for k := 0; ctx.Err() == nil; k++ {
		if !del {
			_, _ = w.pool.Exec(ctx, sql, k) // an uncertain outcome is settled by reading the table
			continue
		}
		tx, err := w.pool.Begin(ctx)
		if err != nil {
			return
		}
		var id string
		if tx.QueryRow(ctx, sql, k).Scan(&id) == nil && func() error { _, err := tx.Exec(ctx, "DELETE FROM outbox WHERE id = $1", id); return err }() == nil && tx.Commit(ctx) == nil {
			w.mu.Lock()
			w.dels = append(w.dels, id)
			w.mu.Unlock()
		}
		_ = tx.Rollback(context.WithoutCancel(ctx))
	}
}

func (w *concurrentWriter) deleted() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.dels...)
}

// expectedIDs is every row in the table plus the insert-and-delete events.
func expectedIDs(ctx context.Context, pool *pgxpool.Pool, dels []string) (map[string]bool, error) {
	want := make(map[string]bool, len(dels))
	rows, err := pool.Query(ctx, "SELECT id::text FROM outbox")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		want[id] = true
	}
	for _, id := range dels {
		want[id] = true
	}
	return want, rows.Err()
}

// waitSnapshot waits for the relay's log to say the snapshot completed and
// returns how long it said it took.
func waitSnapshot(ctx context.Context, logPath string, timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		f, err := os.Open(logPath)
		if err == nil {
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				line := sc.Text()
				if i := strings.Index(line, "took="); i >= 0 && strings.Contains(line, "initial snapshot complete") {
					f.Close()
					return time.ParseDuration(strings.Fields(line[i+5:])[0])
				}
				if strings.Contains(line, "level=ERROR") {
					f.Close()
					return 0, fmt.Errorf("the relay failed: %s", line)
				}
			}
			f.Close()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return 0, fmt.Errorf("no completed snapshot within %v (log %s)", timeout, logPath)
}

// readIDs reads the topic until every wanted id arrived (or timeout) and
// counts each id's deliveries, keeping only the ids.
func (b *bench) readIDs(ctx context.Context, topic string, want map[string]bool, timeout time.Duration) (map[string]int, int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.kafka.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return nil, 0, err
	}
	defer cl.Close()
	seen := make(map[string]int, len(want))
	total, found := 0, 0
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for found < len(want) {
		fs := cl.PollFetches(rctx)
		if rctx.Err() != nil {
			return seen, total, fmt.Errorf("read %d of %d events within %v", found, len(want), timeout)
		}
		fs.EachRecord(func(r *kgo.Record) {
			total++
			for _, h := range r.Headers {
				if h.Key == "id" {
					id := string(h.Value)
					if seen[id]++; seen[id] == 1 && want[id] {
						found++
					}
				}
			}
		})
	}
	for { // late duplicates: read until a quiet second
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			for _, h := range r.Headers {
				if h.Key == "id" {
					seen[string(h.Value)]++
				}
			}
		})
		if total += n; n == 0 {
			return seen, total, nil
		}
	}
}

// printSnapshot prints the snapshot scenario's outcome.
func printSnapshot(rs []snapshotResult) {
	if len(rs) == 0 {
		return
	}
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "initial snapshot\tleg\tbroker\trows kept\twritten during\tdelivered\tmissing\tduplicated\tsnapshot s\tall delivered s\tpeak RSS MiB\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t\n", r.Leg, r.Broker, r.Kept, r.Concurrent, r.Delivered, r.Missing, r.Duplicated, r.SnapshotSec, r.TotalSec, r.PeakRSSMiB)
	}
	tw.Flush()
}
