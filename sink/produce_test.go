package sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/outboxrelay/outboxrelay/router"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestNextSequenceWraps(t *testing.T) {
	for _, tc := range []struct {
		seq  int32
		n    int
		want int32
	}{
		{0, 1, 1},
		{0, 10000, 10000},
		{math.MaxInt32 - 5, 5, math.MaxInt32},
		{math.MaxInt32 - 5, 6, 0},
		{math.MaxInt32, 1, 0},
		{math.MaxInt32 - 1, 10, 8},
	} {
		if got := nextSequence(tc.seq, tc.n); got != tc.want {
			t.Errorf("nextSequence(%d, %d) = %d, want %d", tc.seq, tc.n, got, tc.want)
		}
	}
}

// runSink opens a Sink on cfg and runs it until the test ends. ended
// reports whether Run has returned, and with what.
func runSink(t *testing.T, cfg Config, onAck AckFunc) (s *Sink, ended func() (bool, error)) {
	t.Helper()
	s, err := Open(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), onAck)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	var runErr error
	go func() { runErr = s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	return s, func() (bool, error) {
		select {
		case <-done:
			return true, runErr
		default:
			return false, nil
		}
	}
}

// consumeAll reads n records of topic with an independent client, keyed by
// partition in log order.
func consumeAll(t *testing.T, brokers []string, topic string, n int) map[int32][]*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out := map[int32][]*kgo.Record{}
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", got, n)
		}
		fs.EachRecord(func(r *kgo.Record) {
			out[r.Partition] = append(out[r.Partition], r)
			got++
		})
	}
	// Nothing beyond n: a duplicate would show here.
	ctx2, cancel2 := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel2()
	if extra := cl.PollFetches(ctx2).Records(); len(extra) > 0 {
		t.Fatalf("%d records beyond the %d sent, first %s", len(extra), n, extra[0].Value)
	}
	return out
}

// checkKeyOrder fails unless every key's records are its sent values, in
// order, once each.
func checkKeyOrder(t *testing.T, parts map[int32][]*kgo.Record, sent map[string][]string) {
	t.Helper()
	got := map[string][]string{}
	for _, recs := range parts {
		for _, r := range recs {
			got[string(r.Key)] = append(got[string(r.Key)], string(r.Value))
		}
	}
	for k, want := range sent {
		if !slices.Equal(got[k], want) {
			t.Fatalf("key %s: got %d records %v..., want %d in order", k, len(got[k]), got[k][:min(5, len(got[k]))], len(want))
		}
	}
}

// Batches that fail in every way a broker can fail them, including after it
// stored them, are resent until stored: every record arrives once, each key
// in order, and every acknowledgement comes once.
func TestProducerResendsWithoutLossOrDuplicates(t *testing.T) {
	kc := startKafka(t, kfake.NumBrokers(3), kfake.SeedTopics(6, "t"))
	var produces atomic.Int64
	every := func(n int64) func(kmsg.Request) bool {
		return func(kmsg.Request) bool { return produces.Add(1)%n == 0 }
	}
	faults := []kfake.Fault{
		// Stored, then answered as timed out: the resend must not store it again.
		{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.RequestTimedOut, Count: 8, When: every(5)},
		// Stored, then answered with an error after append.
		{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicasAfterAppend, Count: 4, When: every(7)},
		// Refused before storing.
		{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: 6, When: every(3)},
		{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.LeaderNotAvailable, Count: 3, When: every(11)},
	}
	var handles []*kfake.FaultHandle
	for _, f := range faults {
		handles = append(handles, kc.Fault(f))
	}
	// Some connections drop with the request unanswered.
	var drops atomic.Int64
	kc.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		if produces.Load()%13 == 0 && drops.Add(1) <= 4 {
			return nil, errors.New("dropped"), true
		}
		return nil, nil, false
	})

	cfg := DefaultConfig()
	cfg.Brokers = kc.ListenAddrs()
	cfg.RetryBackoffMax = 20 * time.Millisecond
	acked := make([]atomic.Int32, 4000)
	s, ended := runSink(t, cfg, func(a any) { acked[a.(int)].Add(1) })

	sent := map[string][]string{}
	for i := range acked {
		key := fmt.Sprintf("agg-%d", i%37)
		val := fmt.Sprintf("%s/%d", key, i)
		sent[key] = append(sent[key], val)
		s.Send(Message{Record: router.Record{Topic: "t", Key: []byte(key), Value: []byte(val), Partition: -1, EventID: val}, Ack: i})
		if i%500 == 0 {
			// Leadership moves while batches are in flight.
			p := int32(i/500) % 6
			_ = kc.MoveTopicPartition("t", p, (kc.LeaderFor("t", p)+1)%3)
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(t, func() bool {
		if over, err := ended(); over {
			t.Fatalf("Run ended: %v", err)
		}
		for i := range acked {
			if acked[i].Load() == 0 {
				return false
			}
		}
		return true
	})
	checkKeyOrder(t, consumeAll(t, kc.ListenAddrs(), "t", len(acked)), sent)
	for i := range acked {
		if n := acked[i].Load(); n != 1 {
			t.Fatalf("event %d acknowledged %d times", i, n)
		}
	}
	if drops.Load() == 0 {
		t.Fatal("no connection was dropped: the test did not exercise resends after a lost answer")
	}
	for i, h := range handles {
		if h.Hits() == 0 {
			t.Fatalf("fault %s never struck: the test did not exercise it", faults[i].Err.Message)
		}
	}
}

// A batch the broker refuses for good is split: every record but the one at
// fault is stored, in order, and the producer's sequence numbers go on
// without a gap. With a dead-letter topic the refused record goes there;
// without one, Run ends naming it and nothing after it is acknowledged.
func TestProducerRefusedRecordInBatch(t *testing.T) {
	for _, dlq := range []bool{false, true} {
		t.Run(fmt.Sprintf("dlq=%v", dlq), func(t *testing.T) {
			kc := startKafka(t, kfake.SeedTopics(1, "dlq"))
			adm := kadm.NewClient(mustClient(t, kc))
			limit := "2000"
			if _, err := adm.CreateTopic(t.Context(), 1, 1, map[string]*string{"max.message.bytes": &limit}, "t"); err != nil {
				t.Fatal(err)
			}
			cfg := DefaultConfig()
			cfg.Brokers = kc.ListenAddrs()
			if dlq {
				cfg.DLQTopic = "dlq"
			}
			var acks ackLog
			s, err := Open(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), acks.add)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// Queued before Run, so that they go in one batch.
			var sent []string
			for i := range 7 {
				val := fmt.Sprintf("v%d", i)
				if i == 3 {
					val = string(make([]byte, 3000))
				}
				sent = append(sent, val)
				s.Send(Message{Record: router.Record{Topic: "t", Key: []byte("k"), Value: []byte(val), Partition: -1, EventID: fmt.Sprintf("ev-%d", i)}, Ack: i})
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			if !dlq {
				err := <-done
				var pe *ProduceError
				if !errors.As(err, &pe) || pe.EventID != "ev-3" || !pe.Permanent() {
					t.Fatalf("Run() = %v; want a permanent ProduceError for ev-3", err)
				}
				if got := acks.acks; !slices.Equal(got, []any{0, 1, 2}) {
					t.Fatalf("acknowledged %v; want the three events before the refused one", got)
				}
				recs := consumeAll(t, kc.ListenAddrs(), "t", 3)[0]
				for i, r := range recs {
					if string(r.Value) != sent[i] {
						t.Fatalf("record %d = %q, want %q", i, r.Value, sent[i])
					}
				}
				return
			}
			// After the split, later batches must still line up with the
			// broker's sequence numbers.
			for i := 7; i < 20; i++ {
				val := fmt.Sprintf("v%d", i)
				sent = append(sent, val)
				s.Send(Message{Record: router.Record{Topic: "t", Key: []byte("k"), Value: []byte(val), Partition: -1, EventID: fmt.Sprintf("ev-%d", i)}, Ack: i})
			}
			waitFor(t, func() bool { return acks.len() == 20 })
			want := slices.Delete(slices.Clone(sent), 3, 4)
			recs := consumeAll(t, kc.ListenAddrs(), "t", len(want))[0]
			for i, r := range recs {
				if string(r.Value) != want[i] {
					t.Fatalf("record %d = %q, want %q", i, r.Value, want[i])
				}
			}
			dead := consumeAll(t, kc.ListenAddrs(), "dlq", 1)[0]
			if h := headerValue(dead[0], HeaderDLQEventID); h != "ev-3" || dead[0].Value != nil {
				t.Fatalf("dead letter for %q with %d value bytes; want ev-3 without its payload", h, len(dead[0].Value))
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
		})
	}
}

func mustClient(t *testing.T, kc *kfake.Cluster) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func headerValue(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func TestProduceVersion(t *testing.T) {
	for _, tc := range []struct {
		kafka sarama.KafkaVersion
		want  int16
	}{
		{sarama.V0_11_0_0, 3}, {sarama.V1_1_0_0, 5}, {sarama.V2_0_0_0, 6}, {sarama.V2_3_0_0, 7},
		{sarama.V2_4_0_0, 8}, {sarama.V2_8_0_0, 9}, {sarama.V3_6_0_0, 9}, {sarama.V3_7_0_0, 10}, {sarama.V4_0_0_0, 10},
	} {
		if got := produceVersion(tc.kafka); got != tc.want {
			t.Errorf("produceVersion(%s) = %d, want %d", tc.kafka, got, tc.want)
		}
	}
}
