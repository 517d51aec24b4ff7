package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync/atomic"
	"text/tabwriter"

	"github.com/jackc/pgx/v5/pgxpool"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// The tracing variants, drained in this order in every round.
var tracingVariants = []struct{ name, db string }{
	{"a: no trace columns, no OTLP", "plain"},
	{"b: trace columns, no OTLP", "traced"},
	{"c: trace columns, OTLP", "traced"},
}

// traceColumns gives every event a traceparent (a random trace, sampled)
// and a tracestate.
const traceColumns = `ALTER TABLE outbox
  ADD COLUMN traceparent text DEFAULT '00-' || md5(random()::text) || '-' || substr(md5(random()::text), 1, 16) || '-01',
  ADD COLUMN tracestate text DEFAULT 'rojo=00f067aa0ba902b7'`

// tracing measures what trace contexts cost: the same number of events
// (100 per transaction) written to a table without trace columns and to one
// with them, then drained round after round in the order a, b, c: (a) no
// trace columns, (b) trace columns and no OpenTelemetry configured (the
// headers only), (c) the same with OTEL_EXPORTER_OTLP_ENDPOINT pointing at
// an OTLP/HTTP receiver in this process, which counts the spans.
func (b *bench) tracing(ctx context.Context, n, rounds int, leg string) ([]result, error) {
	const perTx = 100
	txs := (n + perTx - 1) / perTx
	events := txs * perTx
	dbs := map[string]tracingDB{}
	defer func() {
		for _, db := range dbs {
			_, _ = db.pool.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database() AND NOT active")
			db.pool.Close()
		}
	}()
	for _, kind := range []string{"plain", "traced"} {
		db, err := b.tracingDB(ctx, kind, rounds, txs, perTx)
		if err != nil {
			return nil, err
		}
		dbs[kind] = db
	}
	recv, stop, err := startOTLPReceiver()
	if err != nil {
		return nil, err
	}
	defer stop()
	var rs []result
	for round := range rounds {
		for i, v := range tracingVariants {
			db := dbs[v.db]
			if i == 2 {
				b.relayEnv = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.url}
			}
			spans0 := recv.spans.Load()
			suffix := fmt.Sprintf("t%d-%d-%d", b.seq, round, i)
			d, err := b.drainWithRelay(ctx, db.url, db.pool, tracingSlot(i, round), suffix, db.end, events)
			b.relayEnv = nil
			if err != nil {
				return nil, fmt.Errorf("draining %s: %w", v.name, err)
			}
			per100k := func(v float64) float64 { return v / float64(events) * 100_000 }
			rs = append(rs, result{Scenario: "tracing, 100 events/tx", Leg: leg, Events: events, Seconds: d.seconds,
				EventsPerSec: float64(events) / d.seconds, CPUPer100k: per100k(d.cpu), BrokerCPUPer100k: per100k(d.benchCPU),
				PeakRSSMiB: d.rssMiB, Tracing: v.name, Spans: recv.spans.Load() - spans0})
		}
	}
	return rs, nil
}

type tracingDB struct {
	url  string
	pool *pgxpool.Pool
	end  string
}

func tracingSlot(variant, round int) string { return fmt.Sprintf("trace%d_%d", variant, round) }

// tracingDB makes a database of the kind with a slot per round and variant
// that drains it, all at one point, and writes the backlog.
func (b *bench) tracingDB(ctx context.Context, kind string, rounds, txs, perTx int) (tracingDB, error) {
	b.seq++
	url, err := b.pg.CreateDatabase(ctx, fmt.Sprintf("bench_%d", b.seq))
	if err != nil {
		return tracingDB{}, err
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return tracingDB{}, err
	}
	db := tracingDB{url: url, pool: pool}
	ddl := schema
	if kind == "traced" {
		ddl += ";" + traceColumns
	}
	if _, err := pool.Exec(ctx, ddl); err != nil {
		pool.Close()
		return tracingDB{}, fmt.Errorf("creating the schema: %w", err)
	}
	for i, v := range tracingVariants {
		for round := range rounds {
			if v.db != kind {
				continue
			}
			if _, err := pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", tracingSlot(i, round)); err != nil {
				pool.Close()
				return tracingDB{}, fmt.Errorf("creating a slot: %w", err)
			}
		}
	}
	fmt.Fprintf(os.Stderr, "  writing %d events (%s) ...\n", txs*perTx, kind)
	if err := writeParallel(ctx, pool, txs, perTx, smallPad); err != nil {
		pool.Close()
		return tracingDB{}, err
	}
	if db.end, err = flushBacklog(ctx, pool); err != nil {
		pool.Close()
		return tracingDB{}, err
	}
	return db, nil
}

// otlpReceiver is an OTLP/HTTP trace endpoint on loopback that counts the
// spans it receives, as a collector would take them.
type otlpReceiver struct {
	url   string
	spans atomic.Int64
}

func startOTLPReceiver() (*otlpReceiver, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	o := &otlpReceiver{url: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: o}
	go func() { _ = srv.Serve(ln) }()
	return o, func() { _ = srv.Close() }, nil
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(r.Body)
	req := &coltrace.ExportTraceServiceRequest{}
	if err == nil {
		err = proto.Unmarshal(raw, req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			o.spans.Add(int64(len(ss.Spans)))
		}
	}
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// printTracing prints the tracing scenario's rows, each variant's rounds
// in the order they ran, and each variant's median.
func printTracing(rs []result) {
	if len(rs) == 0 {
		return
	}
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "variant\tleg\tbroker\tevents\tevents/s\trelay CPU s/100k\tpeak RSS MiB\tspans received\t")
	byVariant := map[string][]float64{}
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.0f\t%.2f\t%.1f\t%d\t\n", r.Tracing, r.Leg, r.Broker, r.Events, r.EventsPerSec, r.CPUPer100k, r.PeakRSSMiB, r.Spans)
		byVariant[r.Tracing] = append(byVariant[r.Tracing], r.EventsPerSec)
	}
	for _, v := range tracingVariants {
		if eps := byVariant[v.name]; len(eps) > 0 {
			slices.Sort(eps)
			fmt.Fprintf(tw, "%s: median\t\t\t\t%.0f\t\t\t\t\n", v.name, eps[len(eps)/2])
		}
	}
	tw.Flush()
}
