package sink

import (
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// fakePartition delivers the records it is given, each after its delay.
type fakePartition struct {
	sarama.PartitionConsumer
	msgs chan *sarama.ConsumerMessage
	errs chan *sarama.ConsumerError
}

func (f *fakePartition) Messages() <-chan *sarama.ConsumerMessage { return f.msgs }
func (f *fakePartition) Errors() <-chan *sarama.ConsumerError     { return f.errs }

func deliver(recs []*sarama.ConsumerMessage, delays []time.Duration) *fakePartition {
	f := &fakePartition{msgs: make(chan *sarama.ConsumerMessage), errs: make(chan *sarama.ConsumerError)}
	go func() {
		for i, r := range recs {
			time.Sleep(delays[i])
			f.msgs <- r
		}
	}()
	return f
}

func rec(offset int64, key, value string) *sarama.ConsumerMessage {
	return &sarama.ConsumerMessage{Offset: offset, Key: []byte(key), Value: []byte(value)}
}

// A checkpoint read must not take a slow first fetch (a leader change, a
// stopped process) for an empty topic: the relay would start as if it had
// no checkpoint and deliver everything again in exactly-once mode.
func TestLastOfWaitsForASlowFirstRecord(t *testing.T) {
	f := deliver([]*sarama.ConsumerMessage{rec(0, "cp", "v1"), rec(1, "cp", "v2")},
		[]time.Duration{readQuiet + readQuiet/2, 0})
	got, found, err := lastOf(f, "t", "cp", 2)
	if err != nil || !found || string(got) != "v2" {
		t.Fatalf("lastOf = %q, %v, %v; want v2 found", got, found, err)
	}
}

// Records below the stable offset that read_committed never delivers
// (transaction markers, aborted records) end the read after a quiet period.
func TestLastOfEndsAfterTrailingMarkers(t *testing.T) {
	f := deliver([]*sarama.ConsumerMessage{rec(0, "cp", "v1"), rec(2, "other", "x")}, []time.Duration{0, 0})
	start := time.Now()
	got, found, err := lastOf(f, "t", "cp", 5)
	if err != nil || !found || string(got) != "v1" {
		t.Fatalf("lastOf = %q, %v, %v; want v1 found", got, found, err)
	}
	if waited := time.Since(start); waited < readQuiet {
		t.Fatalf("returned after %v, before a quiet period", waited)
	}
}

// The record just below the stable offset ends the read at once.
func TestLastOfEndsAtTheStableOffset(t *testing.T) {
	f := deliver([]*sarama.ConsumerMessage{rec(0, "cp", "v1"), rec(1, "cp", "v2")}, []time.Duration{0, 0})
	got, found, err := lastOf(f, "t", "cp", 2)
	if err != nil || !found || string(got) != "v2" {
		t.Fatalf("lastOf = %q, %v, %v; want v2 found", got, found, err)
	}
}
