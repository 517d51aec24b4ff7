package main

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kgo"
)

// compression commits n events, 100 per transaction, after creating one
// slot per codec at the same point; then the relay drains the backlog once
// per codec, each into its own topic, whose record batches are read back to
// count their bytes as the broker holds them.
func (b *bench) compression(ctx context.Context, n int, codecs []string, leg string) ([]result, error) {
	url, pool, err := b.prepare(ctx)
	if err != nil {
		return nil, err
	}
	defer b.dropSlots(ctx, pool)
	for _, c := range codecs {
		if _, err := pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", b.slot("codec"+c)); err != nil {
			return nil, fmt.Errorf("creating the slot of %s: %w", c, err)
		}
	}
	const perTx = 100
	txs := (n + perTx - 1) / perTx
	events := txs * perTx
	fmt.Fprintf(os.Stderr, "  writing %d events ...\n", events)
	if err := writeParallel(ctx, pool, txs, perTx, smallPad); err != nil {
		return nil, err
	}
	end, err := flushBacklog(ctx, pool)
	if err != nil {
		return nil, err
	}
	var rs []result
	for _, c := range codecs {
		suffix := fmt.Sprintf("c%d-%s", b.seq, c)
		d, err := b.drainWithRelay(ctx, url, pool, b.slot("codec"+c), suffix, end, events, "--kafka-compression", c)
		if err != nil {
			return nil, fmt.Errorf("draining with %s: %w", c, err)
		}
		batch, plain, err := b.batchBytes(ctx, "bench."+suffix+".Order", events)
		if err != nil {
			return nil, fmt.Errorf("reading the %s batches: %w", c, err)
		}
		per100k := func(v float64) float64 { return v / float64(events) * 100_000 }
		rs = append(rs, result{Scenario: "compression, 100 events/tx", Leg: leg, Events: events, Seconds: d.seconds,
			EventsPerSec: float64(events) / d.seconds, CPUPer100k: per100k(d.cpu), BrokerCPUPer100k: per100k(d.benchCPU),
			PeakRSSMiB: d.rssMiB, Codec: c, BatchBytesPerEvent: float64(batch) / float64(events),
			UncompressedBytesPerEv: float64(plain) / float64(events)})
	}
	return rs, nil
}

// batchBytes reads the topic's events and returns the bytes of its record
// batches as fetched (compressed, as the producer sent them) and
// uncompressed.
func (b *bench) batchBytes(ctx context.Context, topic string, events int) (batch, plain int64, err error) {
	var h batchCounter
	recs, err := harness.ReadAll(ctx, b.kafka.ListenAddrs(), []string{topic}, harness.Count(events), 2*time.Minute, kgo.WithHooks(&h))
	if err != nil {
		return 0, 0, err
	}
	if len(recs) != events {
		return 0, 0, fmt.Errorf("read %d records, want %d", len(recs), events)
	}
	return h.compressed.Load(), h.uncompressed.Load(), nil
}

// batchCounter sums the fetched batches' sizes.
type batchCounter struct{ compressed, uncompressed atomic.Int64 }

func (h *batchCounter) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	h.compressed.Add(int64(m.CompressedBytes))
	h.uncompressed.Add(int64(m.UncompressedBytes))
}

// printCompression prints the compression scenario's rows.
func printCompression(rs []result) {
	if len(rs) == 0 {
		return
	}
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "codec\tleg\tbroker\tevents\tevents/s\trelay CPU s/100k\tbroker CPU s/100k\tbatch bytes/event\tuncompressed bytes/event\tratio\tpeak RSS MiB\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.0f\t%.2f\t%.2f\t%.1f\t%.1f\t%.2f\t%.1f\t\n", r.Codec, r.Leg, r.Broker, r.Events, r.EventsPerSec,
			r.CPUPer100k, r.BrokerCPUPer100k, r.BatchBytesPerEvent, r.UncompressedBytesPerEv, r.UncompressedBytesPerEv/r.BatchBytesPerEvent, r.PeakRSSMiB)
	}
	tw.Flush()
}
