package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestChaos injects faults at random while writers commit and roll back:
// SIGKILL, SIGSTOP longer than wal_sender_timeout (the standby relay takes
// the slot; in exactly-once mode its producer fences the stopped one, a
// zombie), broker errors and leader changes, immediate PostgreSQL restarts.
// After every fault the slot must not confirm past what Kafka holds
// (committed, in exactly-once mode); at the end every committed event is
// there, nothing rolled back is, per-key order of first delivery holds, and
// in exactly-once mode nothing is there twice.
//
// Each mode runs 45 s; OUTBOXRELAY_CHAOS=10m runs longer.
func TestChaos(t *testing.T) {
	d := 45 * time.Second
	if v := os.Getenv("OUTBOXRELAY_CHAOS"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("OUTBOXRELAY_CHAOS=%q: %v", v, err)
		}
	}
	for _, mode := range []string{"at-least-once", "exactly-once"} {
		t.Run(mode, func(t *testing.T) { chaos(t, mode, d) })
	}
}

func chaos(t *testing.T, mode string, d time.Duration) {
	skipUnderRealKafka(t, "Fault")
	pg := newCluster(t, harness.PostgresOptions{Settings: map[string]string{"wal_sender_timeout": "5s"}})
	e := newEnvOn(t, pg)
	kc, err := harness.StartKafka(kfake.NumBrokers(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	e.kafka = &broker{Cluster: kc, t: t}
	var isolation []kgo.Opt
	if mode == "exactly-once" {
		isolation = append(isolation, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	args := []string{"--kafka-retries", "3", "--delivery", mode}

	w := newWriter(e, 40)
	w.pace = 5 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	relays := []*relayProc{e.start(args...)}
	e.waitStreaming("outboxrelay")
	relays = append(relays, e.start(args...)) // a standby on the same slot
	writing := make(chan error, 1)
	go func() { writing <- w.runUntil(ctx, 3) }()

	rng := rand.New(rand.NewPCG(13, uint64(time.Now().UnixNano())))
	deadline := time.Now().Add(d)
	var faults []string
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		victim := rng.IntN(len(relays))
		switch rng.IntN(5) {
		case 0:
			faults = append(faults, "SIGKILL")
			relays[victim].signal(syscall.SIGKILL)
			relays[victim].wait(t, 10*time.Second)
			relays[victim] = e.start(args...)
		case 1:
			faults = append(faults, "SIGSTOP 7s")
			relays[victim].signal(syscall.SIGSTOP)
			time.Sleep(7 * time.Second) // longer than wal_sender_timeout
			relays[victim].signal(syscall.SIGCONT)
		case 2:
			errs := []*kerr.Error{kerr.NotEnoughReplicas, kerr.RequestTimedOut}
			fe := errs[rng.IntN(len(errs))]
			faults = append(faults, "produce "+fe.Message)
			kc.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: fe, Count: 1 + rng.IntN(8)})
		case 3:
			faults = append(faults, "leader change")
			kc.ShufflePartitionLeaders()
		case 4:
			faults = append(faults, "PostgreSQL immediate restart")
			if err := pg.Restart(t.Context(), "immediate"); err != nil {
				t.Fatal(err)
			}
			e.pool.Reset()
		}
		e.checkNotAhead(t, mode == "exactly-once")
		for _, r := range relays {
			if r.exited() {
				t.Fatalf("a relay exited after %v:\n%s", faults, r.logs.String())
			}
		}
	}
	cancel()
	if err := <-writing; err != nil && ctx.Err() == nil {
		t.Fatal(err)
	}
	recs := e.readAllOfWith(w, 120*time.Second, isolation...)
	time.Sleep(time.Second) // anything late would be a duplicate
	recs = e.readAllOfWith(w, 30*time.Second, isolation...)
	dups := w.verify(t, recs)
	e.checkNotAhead(t, mode == "exactly-once")
	if mode == "exactly-once" && dups != 0 {
		t.Fatalf("%d duplicates in exactly-once mode after %s", dups, strings.Join(faults, ", "))
	}
	t.Logf("%s, %v of chaos, %d faults (%s): %d events, %d rolled back, %d duplicates",
		mode, d, len(faults), strings.Join(faults, ", "), len(w.events()), len(w.rolled), dups)
}

// checkNotAhead checks that every transaction at or below the slot's
// confirmed position is in Kafka (committed, with readCommitted), and returns
// how many events that covers and how many records Kafka held. It takes each
// partition's end offset (the last stable offset with readCommitted) after
// reading the slot and counts only records below it: those were in Kafka
// when the slot was read, so reading them for as long as the consumer needs
// cannot hide a confirmation that came before Kafka's acknowledgement.
func (e *env) checkNotAhead(t *testing.T, readCommitted bool) (covered, held int) {
	t.Helper()
	var c uint64
	for attempt := 0; ; attempt++ { // PostgreSQL may be restarting
		var s *string
		err := e.pool.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'outboxrelay'").Scan(&s)
		if err == nil && s != nil {
			var hi, lo uint64
			fmt.Sscanf(*s, "%X/%X", &hi, &lo)
			c = hi<<32 | lo
			break
		}
		if attempt == 100 {
			t.Fatalf("reading the slot: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ends := e.endOffsets(t, readCommitted)
	must := e.committedThrough(c)
	var opts []kgo.Opt
	if readCommitted {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	got := map[string]bool{}
	seen := 0
	missing := func() []string {
		var m []string
		for _, id := range must {
			if !got[id] {
				m = append(m, id)
			}
		}
		return m
	}
	_, err := harness.ReadAll(context.Background(), e.kafka.ListenAddrs(), allTopics, func(recs []*kgo.Record) bool {
		for _, r := range recs[seen:] {
			if r.Offset < ends[r.Topic][r.Partition] {
				got[header(r, "id")] = true
				held++
			}
		}
		seen = len(recs)
		return len(missing()) == 0
	}, 30*time.Second, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if m := missing(); len(m) > 0 {
		t.Fatalf("slot confirmed %X but event %s of a transaction at or before it was not in Kafka when the slot was read (%s)", c, m[0], e.describe(m[:1]))
	}
	return len(must), held
}

// endOffsets lists every partition's end offset of allTopics, the last
// stable offset with readCommitted; topics not created yet are left out.
func (e *env) endOffsets(t *testing.T, readCommitted bool) map[string]map[int32]int64 {
	t.Helper()
	adm, err := newAdmin(e)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	for attempt := 0; ; attempt++ { // leaders may be moving
		list := adm.ListEndOffsets
		if readCommitted {
			list = adm.ListCommittedOffsets
		}
		listed, err := list(context.Background(), allTopics...)
		ends := map[string]map[int32]int64{}
		failed := err
		listed.Each(func(o kadm.ListedOffset) {
			switch {
			case errors.Is(o.Err, kerr.UnknownTopicOrPartition):
			case o.Err != nil:
				failed = o.Err
			default:
				if ends[o.Topic] == nil {
					ends[o.Topic] = map[int32]int64{}
				}
				ends[o.Topic][o.Partition] = o.Offset
			}
		})
		if failed == nil {
			return ends
		}
		if attempt == 50 {
			t.Fatalf("listing end offsets: %v", failed)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
