package e2e

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka's codec numbers, the low bits of a record batch's attributes.
const (
	codecGzip = 1
	codecLZ4  = 3
	codecZstd = 4
)

// --kafka-compression: with each codec in turn, one relay after the other on
// the same slot, every event arrives with its content, in commit order per
// aggregate, in batches of the requested codec, as franz-go reads them. The
// exactly-once run covers sarama's transactional producer, events and
// checkpoints; the others our at-least-once batches.
func TestCompression(t *testing.T) {
	e := newEnv(t)
	earlier := map[string]bool{} // ids of the runs before: other codecs
	for _, c := range []struct {
		args     []string
		codec    int8
		readOpts []kgo.Opt
	}{
		{args: []string{"--kafka-compression", "lz4"}, codec: codecLZ4},
		{args: []string{"--kafka-compression", "zstd"}, codec: codecZstd},
		{args: []string{"--kafka-compression", "gzip", "--kafka-compression-level", "9"}, codec: codecGzip},
		{args: []string{"--kafka-compression", "zstd", "--kafka-compression-level", "3", "--delivery", "exactly-once"}, codec: codecZstd,
			readOpts: []kgo.Opt{kgo.FetchIsolationLevel(kgo.ReadCommitted())}},
	} {
		p := e.start(c.args...)
		e.waitStreaming("outboxrelay")
		w := newWriter(e, 20)
		if err := w.run(t.Context(), 2, 40); err != nil {
			t.Fatal(err)
		}
		recs := e.readAllOfWith(w, 60*time.Second, c.readOpts...)
		var mine []*kgo.Record
		for _, r := range recs {
			if id := header(r, "id"); !earlier[id] {
				mine = append(mine, r)
				earlier[id] = true
			}
		}
		if dups := w.verify(t, mine); dups != 0 {
			t.Fatalf("%v: %d duplicates in a run without failures", c.args, dups)
		}
		checkCodec(t, fmt.Sprint(c.args), mine, c.codec)
		p.signal(syscall.SIGTERM)
		if code := p.wait(t, 15*time.Second); code != 0 {
			t.Fatalf("%v: exit code %d after SIGTERM; logs:\n%s", c.args, code, p.logs.String())
		}
		t.Logf("%v: %d events in %d records, all in batches of codec %d", c.args, len(w.events()), len(mine), c.codec)
	}
	// The exactly-once run's checkpoints went through the same producer.
	cps, err := harness.ReadAll(t.Context(), e.kafka.ListenAddrs(), []string{"outboxrelay.checkpoints"}, harness.Count(1), 30*time.Second,
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	var written []*kgo.Record
	for _, r := range cps {
		if string(r.Key) == "outboxrelay" && r.ProducerID >= 0 && r.Attrs.IsTransactional() {
			written = append(written, r)
		}
	}
	if len(written) == 0 {
		t.Fatalf("no transactional checkpoint of slot outboxrelay among %d records of the checkpoint topic", len(cps))
	}
	checkCodec(t, "checkpoints", written, codecZstd)
}

// checkCodec fails the test unless every record came in a batch of codec.
func checkCodec(t *testing.T, what string, recs []*kgo.Record, codec int8) {
	t.Helper()
	for _, r := range recs {
		if got := int8(r.Attrs.CompressionType()); got != codec {
			t.Fatalf("%s: record at %s/%d@%d came in a batch of codec %d, want %d", what, r.Topic, r.Partition, r.Offset, got, codec)
		}
	}
}
