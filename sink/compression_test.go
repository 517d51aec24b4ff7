package sink

import (
	"fmt"
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/router"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestCompressionValidate(t *testing.T) {
	tests := []struct {
		codec   string
		level   int
		version string
		errs    []string // each must appear; none: valid
	}{
		{codec: ""},
		{codec: "none"},
		{codec: "NONE"},
		{codec: "gzip"},
		{codec: "gzip", level: 1},
		{codec: "gzip", level: 9},
		{codec: "snappy"},
		{codec: "lz4"},
		{codec: "zstd"},
		{codec: "zstd", level: 22},
		{codec: "zstd", level: -5},
		{codec: "zstd", level: -131072},
		{codec: "brotli", errs: []string{`kafka-compression: "brotli" is not one of none, gzip, snappy, lz4, zstd`}},
		{codec: "gzip", level: 10, errs: []string{"10 is outside gzip's levels 1 to 9"}},
		{codec: "gzip", level: -1, errs: []string{"-1 is outside gzip's levels 1 to 9"}},
		{codec: "zstd", level: 23, errs: []string{"23 is outside zstd's levels -131072 to 22"}},
		{codec: "lz4", level: 9, errs: []string{"lz4 has no levels"}},
		{codec: "snappy", level: 1, errs: []string{"snappy has no levels"}},
		{codec: "none", level: 1, errs: []string{"none has no levels"}},
		{codec: "zstd", version: "2.0.0", errs: []string{"zstd needs kafka-version 2.1.0 or later, not 2.0.0"}},
		{codec: "zstd", level: 30, version: "1.1.0", errs: []string{"outside zstd's levels", "zstd needs kafka-version 2.1.0"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%d/%s", tc.codec, tc.level, tc.version), func(t *testing.T) {
			c := DefaultConfig()
			c.Brokers = []string{"k:9092"}
			c.Compression, c.CompressionLevel = tc.codec, tc.level
			if tc.version != "" {
				c.Version = tc.version
			}
			c.Retries = 0 // reported together with the compression problems
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), "kafka-retries") {
				t.Fatalf("Validate() = %v; want every problem, kafka-retries among them", err)
			}
			msg := err.Error()
			if len(tc.errs) == 0 && strings.Contains(msg, "compression") {
				t.Fatalf("Validate() = %v; want no compression problem", err)
			}
			for _, want := range tc.errs {
				if !strings.Contains(msg, want) {
					t.Errorf("Validate() = %v; want %q", err, want)
				}
			}
		})
	}
}

// Kafka's codec numbers, as record batch attributes carry them.
var codecNumbers = map[string]uint8{"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

// Every codec reaches Kafka as compressed record batches that an independent
// client (franz-go) decompresses, in both delivery modes, with the
// dead-letter, checkpoint and origin records compressed alike.
func TestCompressedBatchesReadBack(t *testing.T) {
	for _, codec := range Codecs {
		for _, mode := range []string{"at-least-once", "exactly-once"} {
			t.Run(codec+"/"+mode, func(t *testing.T) {
				t.Parallel()
				kc := startKafka(t, kfake.SeedTopics(3, "t"), kfake.SeedTopics(1, "dlq"))
				cfg := DefaultConfig()
				cfg.Brokers = kc.ListenAddrs()
				cfg.Compression = codec
				cfg.CheckpointTopic, cfg.CheckpointKey = "cp", "slot"
				if codec == "zstd" {
					cfg.CompressionLevel = 3
				}
				if mode == "exactly-once" {
					cfg.TransactionalID = "tx-" + t.Name()
				} else {
					cfg.DLQTopic = "dlq"
				}
				produceCompressed(t, cfg)
				want := codecNumbers[codec]
				checkCodec(t, consumeAll(t, cfg.Brokers, "t", 200), want, 200)
				if mode == "exactly-once" {
					checkCodec(t, consumeAll(t, cfg.Brokers, "cp", 1), want, 1)
					return
				}
				dead := consumeAll(t, cfg.Brokers, "dlq", 1)
				checkCodec(t, dead, want, 1)
				if err := WriteRecord(t.Context(), cfg, OriginKey("slot"), []byte("origin")); err != nil {
					t.Fatal(err)
				}
				checkCodec(t, consumeAll(t, cfg.Brokers, "cp", 1), want, 1)
			})
		}
	}
}

// produceCompressed sends 200 compressible events to t (and, outside
// exactly-once mode, one that goes to the dead-letter topic) and waits for
// every acknowledgement.
func produceCompressed(t *testing.T, cfg Config) {
	t.Helper()
	var acks ackLog
	s, ended := runSink(t, cfg, acks.add)
	if cfg.TransactionalID != "" {
		if _, _, err := s.ReadCheckpoint(); err != nil {
			t.Fatal(err)
		}
	}
	n := 200
	for i := range n {
		value := fmt.Sprintf(`{"orderId":%d,"status":"CREATED","lines":[{"sku":"A-1","qty":1},{"sku":"A-1","qty":1}]}`, i)
		s.Send(Message{Record: router.Record{Topic: "t", Key: []byte(fmt.Sprintf("order-%d", i%7)), Value: []byte(value), Partition: -1, EventID: fmt.Sprint(i)},
			Ack: i, Checkpoint: []byte(fmt.Sprintf(`{"events":%d}`, i+1))})
	}
	if cfg.DLQTopic != "" {
		s.Send(Message{Record: router.Record{Topic: "t", Key: []byte("k"), Value: []byte("bad"), Partition: 9, EventID: "bad"}, Ack: n})
		n++
	}
	waitFor(t, func() bool { return acks.len() == n })
	if done, err := ended(); done {
		t.Fatalf("Run ended: %v", err)
	}
}

func checkCodec(t *testing.T, recs map[int32][]*kgo.Record, codec uint8, n int) {
	t.Helper()
	got := 0
	for _, rs := range recs {
		for _, r := range rs {
			got++
			if c := r.Attrs.CompressionType(); c != codec {
				t.Fatalf("record %s/%d@%d came in a batch of codec %d, want %d", r.Topic, r.Partition, r.Offset, c, codec)
			}
			if len(r.Value) == 0 {
				t.Fatalf("record %s/%d@%d has no value after decompression", r.Topic, r.Partition, r.Offset)
			}
		}
	}
	if got != n {
		t.Fatalf("read %d records, want %d", got, n)
	}
}
