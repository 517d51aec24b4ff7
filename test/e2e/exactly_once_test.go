package e2e

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Ten SIGKILLs at random moments while concurrent writers commit about
// 50,000 events: in exactly-once mode a read_committed consumer sees every
// event exactly once, in per-key order; in at-least-once mode nothing is lost
// and the duplicates are counted.
func TestSIGKILLDuringLoad(t *testing.T) {
	for _, mode := range []string{"exactly-once", "at-least-once"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			w := newWriter(e, 50)
			w.pace = 2 * time.Millisecond
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			rng := rand.New(rand.NewPCG(11, uint64(time.Now().UnixNano())))
			for i := range 10 {
				p := e.start("--delivery", mode)
				e.waitStreaming("outboxrelay")
				if i == 0 {
					go func() { done <- w.run(ctx, 3, 6200) }()
				}
				time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond)
				p.signal(syscall.SIGKILL)
				p.wait(t, 10*time.Second)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			p := e.start("--delivery", mode)
			recs := e.readCommittedAllOf(w, 90*time.Second)
			time.Sleep(time.Second) // anything late would be a duplicate
			recs = e.readCommittedAllOf(w, 30*time.Second)
			dups := w.verify(t, recs)
			if mode == "exactly-once" && dups != 0 {
				t.Fatalf("%d duplicates in exactly-once mode; relay logs:\n%s", dups, p.logs.String())
			}
			t.Logf("%s: %d events, 10 SIGKILLs, %d duplicates", mode, len(w.events()), dups)
		})
	}
}

// readCommittedAllOf is readAllOf with isolation.level=read_committed.
func (e *env) readCommittedAllOf(w *writer, timeout time.Duration) []*kgo.Record {
	e.t.Helper()
	return e.readAllOfWith(w, timeout, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
}

// One transaction larger than a Kafka transaction and than the in-flight
// bound, killed while it is being delivered: it is committed to Kafka in
// parts, each with a checkpoint naming how many of its events are in, and
// after the restart every event is there exactly once, in order.
func TestExactlyOnceLargeTransaction(t *testing.T) {
	e := newEnv(t)
	p := e.start("--delivery", "exactly-once")
	e.waitStreaming("outboxrelay")
	exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
		SELECT gen_random_uuid(), 'Order', 'big', 'Line', jsonb_build_object('n', n) FROM generate_series(1, 25000) n`)
	// Kill once part of it is committed in Kafka.
	waitUntil(t, 30*time.Second, "part of the transaction in Kafka", func() bool {
		recs, _ := harness.ReadAll(context.Background(), e.kafka.ListenAddrs(), []string{"outbox.event.Order"}, harness.Count(2000), 200*time.Millisecond,
			kgo.FetchIsolationLevel(kgo.ReadCommitted()))
		return len(recs) >= 2000
	})
	p.signal(syscall.SIGKILL)
	p.wait(t, 10*time.Second)
	p = e.start("--delivery", "exactly-once")
	p.waitLog(t, "resuming after the checkpoint", 20*time.Second)
	recs, err := harness.ReadAll(context.Background(), e.kafka.ListenAddrs(), []string{"outbox.event.Order"}, harness.Count(25000), 60*time.Second,
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	recs, _ = harness.ReadAll(context.Background(), e.kafka.ListenAddrs(), []string{"outbox.event.Order"}, nil, 2*time.Second,
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if len(recs) != 25000 {
		t.Fatalf("read %d records, want exactly 25000", len(recs))
	}
	for i, r := range recs { // one key, one partition: offset order is commit order
		if want := `{"n": ` + strconv.Itoa(i+1) + `}`; string(r.Value) != want {
			t.Fatalf("record %d is %s, want %s", i, r.Value, want)
		}
	}
}

// A checkpoint written for another database system is refused, unless the
// operator says the new source is right.
func TestExactlyOnceRefusesAnotherSource(t *testing.T) {
	e := newEnv(t)
	adm, err := newAdmin(e)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if _, err := adm.CreateTopic(t.Context(), 1, 1, nil, "outboxrelay.checkpoints"); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kafka.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rec := &kgo.Record{Topic: "outboxrelay.checkpoints", Key: []byte("outboxrelay"),
		Value: []byte(`{"slot":"outboxrelay","end_lsn":1,"system_id":"1234567890","timeline":1}`)}
	if err := cl.ProduceSync(t.Context(), rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	p := e.start("--delivery", "exactly-once")
	if code := p.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	for _, want := range []string{"refusing to resume", "1234567890", "--accept-new-source"} {
		if !strings.Contains(p.logs.String(), want) {
			t.Fatalf("logs lack %q:\n%s", want, p.logs.String())
		}
	}
	p = e.start("--delivery", "exactly-once", "--accept-new-source")
	p.waitLog(t, "starting over on a new source", 20*time.Second)
	e.waitStreaming("outboxrelay")
}
