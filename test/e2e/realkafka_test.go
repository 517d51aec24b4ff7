package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Tests for Apache Kafka alone, run with OUTBOXRELAY_KAFKA=real: broker-side
// faults on a three-node cluster (replication factor 3,
// min.insync.replicas=2), and a listener with TLS, SASL/SCRAM and ACLs.

func deliveryModes() []string { return []string{"at-least-once", "exactly-once"} }

// isolationOf is what a consumer of mode's records reads with.
func isolationOf(mode string) []kgo.Opt {
	if mode == "exactly-once" {
		return []kgo.Opt{kgo.FetchIsolationLevel(kgo.ReadCommitted())}
	}
	return nil
}

// readFinal reads until every committed event of w arrived, then once more
// after a pause, so that a late duplicate is counted too.
func (e *env) readFinal(w *writer, mode string) []*kgo.Record {
	e.t.Helper()
	e.readAllOfWith(w, 90*time.Second, isolationOf(mode)...)
	time.Sleep(time.Second)
	return e.readAllOfWith(w, 30*time.Second, isolationOf(mode)...)
}

// logRestarts logs why the relay restarted its stream, and returns how
// often it did.
func logRestarts(t *testing.T, p *relayProc) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(p.logs.String(), "\n") {
		if strings.Contains(line, "msg=reconnecting") {
			n++
			t.Logf("relay: %s", line)
		}
	}
	return n
}

// The leader of a partition the relay writes to is killed mid-stream and
// restarted a few seconds later: nothing is lost, per-key order holds, and
// in exactly-once mode a read_committed consumer sees no duplicate.
func TestRealKafkaPartitionLeaderKilled(t *testing.T) {
	requireRealKafka(t)
	for _, mode := range deliveryModes() {
		t.Run(mode, func(t *testing.T) {
			e := newEnvOn(t, shared, realNodes(3))
			k := e.kafka.real
			p := e.start("--delivery", mode)
			e.waitStreaming("outboxrelay")
			w := newWriter(e, 30)
			w.pace = 5 * time.Millisecond
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- w.runUntil(ctx, 3) }()
			e.readTopics([]string{"outbox.event.Order"}, harness.Count(100), 60*time.Second)

			leader, isr, err := k.Leader(t.Context(), "outbox.event.Order", 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("killing node %d, leader of outbox.event.Order/0 (ISR %v), with %d events committed", k.NodeID(leader), isr, len(w.events()))
			if err := k.Kill(leader); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 30*time.Second, "another node to lead outbox.event.Order/0", func() bool {
				now, _, err := k.Leader(t.Context(), "outbox.event.Order", 0)
				return err == nil && now >= 0 && now != leader
			})
			time.Sleep(3 * time.Second) // writing on against two nodes
			if err := k.Restart(t.Context(), leader); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 60*time.Second, "the restarted node back in the ISR", func() bool {
				_, isr, err := k.Leader(t.Context(), "outbox.event.Order", 0)
				return err == nil && len(isr) == 3
			})
			time.Sleep(2 * time.Second)
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			dups := w.verify(t, e.readFinal(w, mode))
			if mode == "exactly-once" && dups != 0 {
				t.Fatalf("%d duplicates in exactly-once mode", dups)
			}
			if p.exited() {
				t.Fatalf("relay exited: %s", p.logs.String())
			}
			t.Logf("%s: %d events across a leader kill and restart, %d duplicates, %d stream restarts",
				mode, len(w.events()), dups, logRestarts(t, p))
		})
	}
}

// A topic is deleted while the relay runs and created again, first by the
// relay itself, then by an operator (with the same partition count) while
// events wait for it: every event committed after the deletion reaches the
// new topic, in per-key order. (Re-created with another partition count, a
// key's partition changes, as it does for any producer.)
func TestRealKafkaTopicDeletedAndRecreated(t *testing.T) {
	requireRealKafka(t)
	for _, mode := range deliveryModes() {
		t.Run(mode, func(t *testing.T) {
			e := newEnvOn(t, shared, realNodes(3))
			adm, err := newAdmin(e)
			if err != nil {
				t.Fatal(err)
			}
			defer adm.Close()
			p := e.start("--delivery", mode)
			e.waitStreaming("outboxrelay")
			for round, recreate := range []string{"by the relay", "by an operator"} {
				w := newWriter(e, 10)
				w.types = []string{"Order"}
				if err := w.run(t.Context(), 2, 20); err != nil {
					t.Fatal(err)
				}
				e.readAllOfWith(w, 60*time.Second, isolationOf(mode)...)
				end := e.currentWAL()
				waitUntil(t, 20*time.Second, "the slot to confirm the events", func() bool { return e.confirmed("outboxrelay") >= end })

				if _, err := adm.DeleteTopics(t.Context(), "outbox.event.Order"); err != nil {
					t.Fatal(err)
				}
				waitUntil(t, 30*time.Second, "the topic to be gone", func() bool {
					td, err := adm.ListTopics(t.Context(), "outbox.event.Order")
					return err == nil && !td.Has("outbox.event.Order")
				})
				w = newWriter(e, 10)
				w.types = []string{"Order"}
				if err := w.run(t.Context(), 2, 20); err != nil {
					t.Fatal(err)
				}
				if round == 1 {
					time.Sleep(500 * time.Millisecond)
					// As many partitions as before, so that keys keep
					// theirs; the relay may have created it already.
					_, _ = adm.CreateTopic(t.Context(), 3, 3, nil, "outbox.event.Order")
				}
				dups := w.verify(t, e.readFinal(w, mode))
				if mode == "exactly-once" && dups != 0 {
					t.Fatalf("%d duplicates in exactly-once mode", dups)
				}
				if p.exited() {
					t.Fatalf("relay exited: %s", p.logs.String())
				}
				t.Logf("%s, topic re-created %s: %d events after the deletion, %d duplicates", mode, recreate, len(w.events()), dups)
			}
			logRestarts(t, p)
			{
			}
		})
	}
}

// The broker forgets the relay's producer ID (and its transactional ID)
// while the outbox is quiet: producer.id.expiration.ms and
// transactional.id.expiration.ms are 5 s, and the relay idles until the
// partitions list no producer.
// Events written afterwards all arrive, in order, exactly once in
// exactly-once mode.
func TestRealKafkaProducerIDExpires(t *testing.T) {
	requireRealKafka(t)
	for _, mode := range deliveryModes() {
		t.Run(mode, func(t *testing.T) {
			e := newEnvOn(t, shared, realNodes(3), realConfig(map[string]string{
				"producer.id.expiration.ms":                                  "5000",
				"producer.id.expiration.check.interval.ms":                   "1000",
				"transactional.id.expiration.ms":                             "5000",
				"transaction.remove.expired.transaction.cleanup.interval.ms": "1000",
			}))
			p := e.start("--delivery", mode)
			e.waitStreaming("outboxrelay")
			w := newWriter(e, 10)
			if err := w.run(t.Context(), 2, 30); err != nil {
				t.Fatal(err)
			}
			e.readAllOfWith(w, 60*time.Second, isolationOf(mode)...)
			adm, err := newAdmin(e)
			if err != nil {
				t.Fatal(err)
			}
			defer adm.Close()
			if n := producersOn(t, adm); n == 0 {
				t.Fatal("the brokers list no producer on the event topics after a delivery")
			}
			idle := time.Now()
			waitUntil(t, 60*time.Second, "the brokers to forget the relay's producer", func() bool { return producersOn(t, adm) == 0 })
			time.Sleep(3 * time.Second) // the transactional ID's expiry runs every second
			t.Logf("the brokers forgot the producer after %v idle", time.Since(idle).Round(time.Second))
			if err := w.run(t.Context(), 2, 30); err != nil {
				t.Fatal(err)
			}
			dups := w.verify(t, e.readFinal(w, mode))
			if mode == "exactly-once" && dups != 0 {
				t.Fatalf("%d duplicates in exactly-once mode", dups)
			}
			if p.exited() {
				t.Fatalf("relay exited: %s", p.logs.String())
			}
			t.Logf("%s: %d events around a pause past the producer ID's expiry, %d duplicates, %d stream restarts",
				mode, len(w.events()), dups, logRestarts(t, p))
		})
	}
}

// producersOn counts the producers the partitions of the event topics
// remember.
func producersOn(t *testing.T, adm *kadm.Client) int {
	t.Helper()
	set := kadm.TopicsSet{}
	for _, topic := range allTopics {
		set[topic] = map[int32]struct{}{}
	}
	ds, err := adm.DescribeProducers(t.Context(), set)
	if err != nil {
		t.Logf("describing producers: %v", err)
		return -1
	}
	n := 0
	ds.EachProducer(func(kadm.DescribedProducer) { n++ })
	return n
}

// Against a listener with TLS, SASL/SCRAM-SHA-512 and real ACLs, where the
// relay's user may create, describe and write the event topics it is
// granted and nothing else: granted events arrive, and an event for a topic
// the ACLs deny halts the relay with Kafka's authorization error, nothing
// confirmed past it.
func TestRealKafkaTLSSCRAMAndACLs(t *testing.T) {
	requireRealKafka(t)
	for _, mode := range deliveryModes() {
		t.Run(mode, func(t *testing.T) { secured(t, mode) })
	}
}

func secured(t *testing.T, mode string) {
	const user, password = "relay", "s3cret-Pw"
	e := newEnvOn(t, shared, realSecure(&harness.KafkaSecurity{TLS: true, SCRAM: map[string]string{user: password}, ACLs: true}))
	k := e.kafka.real
	adm, err := newAdmin(e) // the PLAINTEXT listener: a super user
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	acl := kadm.NewACLs().Allow("User:"+user).AllowHosts().Topics(allTopics...).
		Operations(kadm.OpCreate, kadm.OpDescribe, kadm.OpWrite).ResourcePatternType(kadm.ACLPatternLiteral)
	acls := []*kadm.ACLBuilder{acl}
	if mode == "exactly-once" { // its transactional ID and checkpoint topic
		acls = append(acls,
			kadm.NewACLs().Allow("User:"+user).AllowHosts().TransactionalIDs("outboxrelay.outboxrelay").
				Operations(kadm.OpDescribe, kadm.OpWrite).ResourcePatternType(kadm.ACLPatternLiteral),
			kadm.NewACLs().Allow("User:"+user).AllowHosts().Topics("outboxrelay.checkpoints").
				Operations(kadm.OpCreate, kadm.OpDescribe, kadm.OpWrite, kadm.OpRead).ResourcePatternType(kadm.ACLPatternLiteral))
	}
	for _, b := range acls {
		if res, err := adm.CreateACLs(t.Context(), b); err != nil || res[0].Err != nil {
			t.Fatalf("creating ACLs: %v %v", err, res)
		}
	}
	if err := createTopic(e, "outbox.event.Secret"); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := e.args("--delivery", mode, "--kafka-tls", "--kafka-tls-ca-file", k.CAFile, "--kafka-sasl-mechanism", "SCRAM-SHA-512",
		"--kafka-sasl-user", user, "--kafka-sasl-password-file", pwFile)
	args[slices.Index(args, "--brokers")+1] = strings.Join(k.SecureAddrs(), ",")
	p := e.startRaw(args...)
	e.waitStreaming("outboxrelay")
	w := newWriter(e, 10)
	if err := w.run(t.Context(), 2, 30); err != nil {
		t.Fatal(err)
	}
	if dups := w.verify(t, e.readAllOfWith(w, 60*time.Second, isolationOf(mode)...)); dups != 0 {
		t.Fatalf("%d duplicates in a run without failures", dups)
	}
	good := e.currentWAL()
	waitUntil(t, 10*time.Second, "the slot to confirm the granted events", func() bool { return e.confirmed("outboxrelay") >= good })

	exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('cccccccc-0000-0000-0000-000000000001', 'Secret', 'a', 't', '{}')`)
	bad := e.currentWAL()
	p.waitLog(t, "halted on a bad event", 30*time.Second)
	for _, want := range []string{"cccccccc-0000-0000-0000-000000000001", "outbox.event.Secret", "not authorized"} {
		if !strings.Contains(p.logs.String(), want) {
			t.Errorf("logs do not mention %q:\n%s", want, p.logs.String())
		}
	}
	for _, line := range strings.Split(p.logs.String(), "\n") {
		if strings.Contains(line, "halted on a bad event") {
			t.Logf("relay: %s", line)
		}
	}
	time.Sleep(time.Second)
	if c := e.confirmed("outboxrelay"); c >= bad {
		t.Fatalf("slot confirmed %X, at or past the denied event's transaction (ends %X)", c, bad)
	}
	logRestarts(t, p)
}
