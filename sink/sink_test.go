package sink

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/outboxrelay/outboxrelay/router"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Kafka's own murmur2 vectors (clients/src/test/.../utils/UtilsTest.java).
func TestPartitionerMatchesJavaMurmur2(t *testing.T) {
	vectors := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	p := newPartitioner("t")
	for key, murmur := range vectors {
		for _, n := range []int32{1, 3, 7, 12, 100} {
			want := (murmur & 0x7fffffff) % n
			got, err := p.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key), Metadata: &envelope{partition: -1}}, n)
			if err != nil || got != want {
				t.Errorf("Partition(%q, %d) = %d, %v; want %d (Java client placement)", key, n, got, err, want)
			}
		}
	}
	got, err := p.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder("abc"), Metadata: &envelope{partition: 5}}, 7)
	if err != nil || got != 5 {
		t.Errorf("explicit partition: got %d, %v; want 5", got, err)
	}
	if _, err := p.Partition(&sarama.ProducerMessage{Metadata: &envelope{partition: 9, eventID: "e1"}}, 7); err == nil || !strings.Contains(err.Error(), "e1") {
		t.Errorf("partition beyond the topic: err = %v, want an error naming the event", err)
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.Brokers = []string{"nohost"}
	c.TopicPartitions = 0
	c.TopicReplicationFactor = -3
	c.Retries = 0
	c.Version = "banana"
	err := c.Validate()
	for _, want := range []string{"has no port", "topic-partitions", "topic-replication-factor", "kafka-retries"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
	c = DefaultConfig()
	c.Brokers = []string{"k:9092"}
	c.Version = "banana"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "kafka-version") {
		t.Errorf("bad version: Validate() = %v", err)
	}
	c.Version = "2.8.0"
	if err := c.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

func startKafka(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.DefaultNumPartitions(3)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

type ackLog struct {
	mu   sync.Mutex
	acks []any
}

func (a *ackLog) add(v any) { a.mu.Lock(); a.acks = append(a.acks, v); a.mu.Unlock() }
func (a *ackLog) len() int  { a.mu.Lock(); defer a.mu.Unlock(); return len(a.acks) }

func TestSinkProducesAndAcks(t *testing.T) {
	kc := startKafka(t)
	cfg := DefaultConfig()
	cfg.Brokers = kc.ListenAddrs()
	var acks ackLog
	s, err := Open(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), acks.add)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	ts := time.UnixMilli(1700000000000)
	for i := range 20 {
		s.Send(Message{Record: router.Record{Topic: "outbox.event.Order", Key: []byte("agg-1"), Value: []byte(`{"n":` + string(rune('a'+i)) + `}`), Headers: []router.Header{{Key: "id", Value: []byte{byte('a' + i)}}}, Partition: -1, Timestamp: ts}, Ack: i})
	}
	s.Send(Message{Record: router.Record{Topic: "outbox.event.Order", Key: []byte("agg-2"), Value: nil, Partition: 2}, Ack: 20})
	waitFor(t, func() bool { return acks.len() == 21 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	next := 0
	for _, a := range acks.acks {
		if a == 20 {
			continue // the other key's partition may be acknowledged at any point
		}
		if a != next {
			t.Fatalf("acks %v: acks of one key must come in order", acks.acks)
		}
		next++
	}

	recs := consume(t, kc.ListenAddrs(), "outbox.event.Order", 21)
	wantPart := mustPartition(t, "agg-1", 3)
	for i, r := range recs[:20] {
		if r.Partition != wantPart || string(r.Key) != "agg-1" || r.Timestamp.UnixMilli() != ts.UnixMilli() {
			t.Fatalf("record %d: partition %d key %q ts %v; want partition %d", i, r.Partition, r.Key, r.Timestamp, wantPart)
		}
		if len(r.Headers) != 1 || r.Headers[0].Key != "id" || r.Headers[0].Value[0] != byte('a'+i) {
			t.Fatalf("record %d headers %v", i, r.Headers)
		}
	}
	if last := recs[20]; last.Partition != 2 || last.Value != nil {
		t.Fatalf("tombstone with explicit partition: partition %d value %q (nil %v)", last.Partition, last.Value, last.Value == nil)
	}
}

func TestSinkErrorAfterRetriesEndsRun(t *testing.T) {
	kc := startKafka(t, kfake.SeedTopics(1, "t"))
	kc.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	cfg := DefaultConfig()
	cfg.Brokers = kc.ListenAddrs()
	cfg.Retries = 2
	cfg.RetryBackoffMax = 10 * time.Millisecond
	var acks ackLog
	s, err := Open(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), acks.add)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Send(Message{Record: router.Record{Topic: "t", Key: []byte("k"), Value: []byte("v"), Partition: -1, EventID: "ev-9"}, Ack: 1})
	err = s.Run(t.Context())
	var pe *ProduceError
	if !errors.As(err, &pe) || pe.EventID != "ev-9" || pe.Topic != "t" || pe.Permanent() {
		t.Fatalf("Run() = %v; want a transient ProduceError for ev-9", err)
	}
	if acks.len() != 0 {
		t.Fatal("a failed event was acknowledged")
	}
}

func TestSinkMissingTopicWithoutCreation(t *testing.T) {
	kc := startKafka(t)
	cfg := DefaultConfig()
	cfg.Brokers = kc.ListenAddrs()
	cfg.CreateTopics = false
	s, err := Open(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(any) {})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Send(Message{Record: router.Record{Topic: "absent", Partition: -1, EventID: "ev-1"}})
	err = s.Run(t.Context())
	var pe *ProduceError
	if !errors.As(err, &pe) || !pe.Permanent() || !errors.Is(err, ErrTopicMissing) {
		t.Fatalf("Run() = %v; want a permanent ErrTopicMissing", err)
	}
}

func mustPartition(t *testing.T, key string, n int32) int32 {
	p, err := newPartitioner("x").Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key), Metadata: &envelope{partition: -1}}, n)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func consume(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	// Records of several partitions interleave; put partition 2 last for the test above.
	var first, rest []*kgo.Record
	for _, recs := range consumeAll(t, brokers, topic, n) {
		for _, r := range recs {
			if r.Partition == 2 && string(r.Key) == "agg-2" {
				rest = append(rest, r)
			} else {
				first = append(first, r)
			}
		}
	}
	return append(first, rest...)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func encoded(t *testing.T, e sarama.Encoder) []byte {
	t.Helper()
	if e == nil {
		return nil
	}
	b, err := e.Encode()
	if err != nil || len(b) != e.Length() {
		t.Fatalf("Encode = %q, %v; Length %d", b, err, e.Length())
	}
	return b
}

func TestSendBuildsTheProducerMessage(t *testing.T) {
	s := &Sink{queue: make(chan item, 1), hdrKeys: map[string][]byte{}}
	hdrs := []router.Header{{Key: "id", Value: []byte("e1")}, {Key: "eventType", Value: []byte("OrderCreated")}, {Key: "traceparent", Value: []byte("00-ab")}}
	ts := time.UnixMilli(1700000000000)
	for _, tc := range []struct {
		name       string
		key, value []byte
		headers    []router.Header
	}{
		{"key, value, three headers", []byte("agg-1"), []byte(`{"a":1}`), hdrs},
		{"no key, tombstone", nil, nil, nil},
		{"empty key and value are not null", []byte{}, []byte{}, hdrs[:1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]router.Header(nil), tc.headers...)
			s.Send(Message{Record: router.Record{Topic: "t", Key: tc.key, Value: tc.value, Headers: in, Partition: 4, Timestamp: ts, EventID: "e1"}, Ack: 7, Checkpoint: []byte("cp")})
			for i := range in {
				in[i] = router.Header{Key: "reused", Value: []byte("by the caller")} // Send must not keep them
			}
			pm := (<-s.queue).msg
			if (pm.Key == nil) != (tc.key == nil) || string(encoded(t, pm.Key)) != string(tc.key) {
				t.Fatalf("key %v, want %q", pm.Key, tc.key)
			}
			if (pm.Value == nil) != (tc.value == nil) || string(encoded(t, pm.Value)) != string(tc.value) {
				t.Fatalf("value %v, want %q", pm.Value, tc.value)
			}
			if len(pm.Headers) != len(tc.headers) {
				t.Fatalf("%d headers, want %d", len(pm.Headers), len(tc.headers))
			}
			for i, h := range pm.Headers {
				if string(h.Key) != tc.headers[i].Key || string(h.Value) != string(tc.headers[i].Value) {
					t.Fatalf("header %d = %s: %s, want %s", i, h.Key, h.Value, tc.headers[i].Key)
				}
			}
			env := pm.Metadata.(*envelope)
			if pm.Topic != "t" || !pm.Timestamp.Equal(ts) || env.ack != 7 || env.partition != 4 || env.eventID != "e1" || string(env.checkpoint) != "cp" {
				t.Fatalf("message %+v envelope %+v", pm, env)
			}
		})
	}
}

// A message with up to two headers costs Send one allocation.
func TestSendAllocatesOnce(t *testing.T) {
	s := &Sink{queue: make(chan item, 1), hdrKeys: map[string][]byte{}}
	m := Message{Record: router.Record{Topic: "t", Key: []byte("agg-1"), Value: []byte(`{"a":1}`), Headers: []router.Header{{Key: "id", Value: []byte("e1")}}, Partition: -1}, Ack: 1}
	if got := testing.AllocsPerRun(100, func() { s.Send(m); <-s.queue }); got != 1 {
		t.Fatalf("%v allocations per Send, want 1", got)
	}
}
