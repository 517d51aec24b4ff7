package sink

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/router"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A partition placement beyond the topic's partitions is a bad event: with
// no dead-letter topic it ends Run with a permanent error naming the event
// (the relay halts on it, never reconnecting in a loop); with one, the event
// is dead-lettered and the events after it are delivered. Partitions added
// after the producer first read the topic are used.
func TestPartitionBeyondTheTopicIsABadEvent(t *testing.T) {
	for _, tc := range []struct {
		name      string
		dlq       bool
		partition int32
		grow      bool // the topic gains partitions before the event is sent
	}{
		{name: "fail", partition: 7},
		{name: "dlq", dlq: true, partition: 7},
		{name: "added partitions", partition: 4, grow: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kc := startKafka(t, kfake.SeedTopics(3, "t"), kfake.SeedTopics(1, "dlq"))
			cfg := DefaultConfig()
			cfg.Brokers = kc.ListenAddrs()
			if tc.dlq {
				cfg.DLQTopic = "dlq"
			}
			var acks ackLog
			s, ended := runSink(t, cfg, acks.add)
			s.Send(Message{Record: router.Record{Topic: "t", Key: []byte("k"), Value: []byte("first"), Partition: 1, EventID: "ev-1"}, Ack: 1})
			waitFor(t, func() bool { return acks.len() == 1 })
			if tc.grow {
				adm := kadm.NewClient(mustClient(t, kc))
				if _, err := adm.CreatePartitions(t.Context(), 2, "t"); err != nil {
					t.Fatal(err)
				}
			}
			s.Send(Message{Record: router.Record{Topic: "t", Key: []byte("k"), Value: []byte("bad"), Partition: tc.partition, EventID: "ev-2"}, Ack: 2})
			s.Send(Message{Record: router.Record{Topic: "t", Key: []byte("k"), Value: []byte("after"), Partition: 2, EventID: "ev-3"}, Ack: 3})
			if tc.dlq || tc.grow {
				waitFor(t, func() bool { return acks.len() == 3 })
				if done, err := ended(); done {
					t.Fatalf("Run ended: %v", err)
				}
				if tc.grow {
					recs := consumeAll(t, kc.ListenAddrs(), "t", 3)
					if len(recs[tc.partition]) != 1 || string(recs[tc.partition][0].Value) != "bad" {
						t.Fatalf("partition %d holds %v, want the event placed there", tc.partition, recs[tc.partition])
					}
					return
				}
				dead := consumeAll(t, kc.ListenAddrs(), "dlq", 1)[0]
				if h := headerValue(dead[0], HeaderDLQEventID); h != "ev-2" || !strings.Contains(headerValue(dead[0], HeaderDLQReason), "has 3 partitions") {
					t.Fatalf("dead letter for %q, reason %q", h, headerValue(dead[0], HeaderDLQReason))
				}
				return
			}
			var runErr error
			waitFor(t, func() bool { done, err := ended(); runErr = err; return done })
			var pe *ProduceError
			if !errors.As(runErr, &pe) || pe.EventID != "ev-2" || !pe.Permanent() || !errors.Is(runErr, ErrPartitionOutOfRange) {
				t.Fatalf("Run() = %v; want a permanent ProduceError for ev-2 (partition out of range)", runErr)
			}
			if !strings.Contains(runErr.Error(), "chooses partition 7 but topic t has 3 partitions") {
				t.Errorf("error %q does not say which partition and how many there are", runErr)
			}
		})
	}
}

// OldestRequest tells when the oldest unanswered request was sent: it ages
// while the broker holds a produce request, and is zero again once the
// broker answers.
func TestOldestRequestAgesWhileTheBrokerHoldsProduce(t *testing.T) {
	for _, exactly := range []bool{false, true} {
		t.Run(map[bool]string{false: "at-least-once", true: "exactly-once"}[exactly], func(t *testing.T) {
			kc := startKafka(t, kfake.SeedTopics(1, "t"))
			release := make(chan struct{})
			var stalling atomic.Bool
			kc.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
				kc.KeepControl()
				if stalling.Load() {
					kc.SleepControl(func() { <-release })
				}
				return nil, nil, false
			})
			cfg := DefaultConfig()
			cfg.Brokers = kc.ListenAddrs()
			if exactly {
				cfg.TransactionalID, cfg.CheckpointTopic, cfg.CheckpointKey = "tx-"+t.Name(), "cp", "slot"
			}
			var acks ackLog
			s, ended := runSink(t, cfg, acks.add)
			var releaseOnce sync.Once
			free := func() { releaseOnce.Do(func() { close(release) }) }
			t.Cleanup(free) // before runSink's: a held request would keep Run from returning
			if exactly {
				if _, _, err := s.ReadCheckpoint(); err != nil {
					t.Fatal(err)
				}
			}
			send := func(i int) {
				s.Send(Message{Record: router.Record{Topic: "t", Key: []byte("k"), Value: []byte("v"), Partition: -1, EventID: "ev"}, Ack: i, Checkpoint: []byte("c")})
				if exactly {
					s.Boundary([]byte("c"))
				}
			}
			send(1)
			waitFor(t, func() bool { return acks.len() == 1 })
			waitFor(t, func() bool { return s.OldestRequest().IsZero() })

			stalling.Store(true)
			sent := time.Now()
			send(2)
			waitFor(t, func() bool { return !s.OldestRequest().IsZero() })
			time.Sleep(500 * time.Millisecond)
			if old := s.OldestRequest(); old.IsZero() || old.After(sent.Add(100*time.Millisecond)) {
				t.Fatalf("OldestRequest() = %v while the broker holds the request sent at %v", old, sent)
			}
			free()
			waitFor(t, func() bool { return acks.len() == 2 })
			waitFor(t, func() bool { return s.OldestRequest().IsZero() })
			if done, err := ended(); done {
				t.Fatalf("Run ended: %v", err)
			}
		})
	}
}

// Exactly-once: events are acknowledged only at a Kafka commit, and a reader
// that reached its in-flight bound in the middle of a PostgreSQL transaction
// queues no boundary. A transaction left open with nothing more queued
// commits after txnMaxAge, with the last event's (partial) checkpoint, so
// the reader is never left waiting for ever.
func TestExactlyOnceCommitsWhenNothingMoreIsQueued(t *testing.T) {
	kc := startKafka(t, kfake.SeedTopics(1, "t"))
	cfg := DefaultConfig()
	cfg.Brokers = kc.ListenAddrs()
	cfg.TransactionalID, cfg.CheckpointTopic, cfg.CheckpointKey = "tx-"+t.Name(), "cp", "slot"
	var acks ackLog
	s, ended := runSink(t, cfg, acks.add)
	if _, _, err := s.ReadCheckpoint(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // the first events of a transaction; no boundary follows
		s.Send(Message{Record: router.Record{Topic: "t", Key: []byte("k"), Value: []byte("v"), Partition: -1, EventID: "ev"},
			Ack: i, Checkpoint: []byte(fmt.Sprintf(`{"partial_events":%d}`, i+1))})
	}
	waitFor(t, func() bool { return acks.len() == 3 })
	raw, found, err := s.ReadCheckpoint()
	if err != nil || !found || string(raw) != `{"partial_events":3}` {
		t.Fatalf("checkpoint after the idle commit: %q, %v, %v; want the last event's", raw, found, err)
	}
	if done, err := ended(); done {
		t.Fatalf("Run ended: %v", err)
	}
}
