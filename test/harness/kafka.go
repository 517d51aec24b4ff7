package harness

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// StartKafka starts an in-process Kafka-protocol broker on loopback with
// three partitions per auto-sized topic unless opts say otherwise.
func StartKafka(opts ...kfake.Opt) (*kfake.Cluster, error) {
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.DefaultNumPartitions(3)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("starting the Kafka-protocol test broker: %w", err)
	}
	return c, nil
}

// ReadAll reads every record of topics from the start with franz-go, an
// independent client, until done returns true for what was read so far or
// timeout passes; a nil done reads for the whole timeout. opts add client
// options, such as SASL.
func ReadAll(ctx context.Context, brokers []string, topics []string, done func([]*kgo.Record) bool, timeout time.Duration, opts ...kgo.Opt) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("starting the Kafka test consumer: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var out []*kgo.Record
	for done == nil || !done(out) {
		// Fetch errors (a topic not created yet) are retried by polling again.
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		out = append(out, fs.Records()...)
	}
	return out, nil
}

// Count is a ReadAll condition: at least n records.
func Count(n int) func([]*kgo.Record) bool {
	return func(r []*kgo.Record) bool { return len(r) >= n }
}
