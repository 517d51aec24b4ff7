package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kgo"
)

// replayRows is how many rows TestReplay keeps in the outbox table.
const replayRows = 24

// TestReplay streams rows with run, then replays them with every filter and
// checks that each replay produces exactly the records run produced for
// the same rows (topic, partition, key, value, headers, and their order in
// each partition); and that --dry-run, a refused --where, a --since on a
// missing column and a replay without --yes or a terminal send nothing.
func TestReplay(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	routing := []string{"--fields-additional-placement", "type:header:eventType,created_at:envelope:at", "--topic-partitions", "3"}
	relay := e.start(routing...)
	e.waitStreaming("outboxrelay")
	ids := e.insertReplayRows(ctx)
	k := &kafkaLog{e: e, names: topics([]string{"Order", "Customer", "Invoice"}), seen: map[recKey]bool{}}
	streamed := k.next(replayRows)
	relay.signal(syscall.SIGTERM)
	if code := relay.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("run exited %d", code)
	}
	byID := map[string]*kgo.Record{}
	for _, r := range streamed {
		byID[headerOf(r, "id")] = r
	}
	// replay runs a replay that must send exactly run's records for the
	// rows with the ids want.
	replay := func(want []string, args ...string) string {
		t.Helper()
		out := e.replayCmd(0, append(append([]string{"--yes"}, routing...), args...)...)
		compareReplayed(t, args, k.next(len(want)), byID, want)
		return out
	}
	out := replay(ids, "--progress-interval", "10ms")
	for _, s := range []string{"rows: 24", "outbox.event.Order 8", "replayed 24 rows to 3 topic(s)"} {
		if !strings.Contains(squeeze(out), s) {
			t.Errorf("replay's output lacks %q:\n%s", s, out)
		}
	}
	var orders []string
	for i, id := range ids {
		if replayType(i) == "Order" {
			orders = append(orders, id)
		}
	}
	replay(orders, "--where", "aggregatetype = 'Order'")
	replay(ids[20:], "--since", "2026-03-01T00:20:00Z")
	replay([]string{ids[1], ids[5]}, "--ids", ids[1]+","+ids[5])

	out = e.replayCmd(0, append([]string{"--dry-run"}, routing...)...)
	for _, s := range []string{"rows: 24", "record 5: topic=outbox.event.Customer", "dry run: nothing was sent"} {
		if !strings.Contains(squeeze(out), s) {
			t.Errorf("--dry-run's output lacks %q:\n%s", s, out)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "standard input is not a terminal"},
		{[]string{"--yes", "--where", "nope = 1"}, "--where: the server refused the condition, nothing was sent"},
		{[]string{"--yes", "--where", "1/(length(type)-5) = 1"}, "--where: the server could not evaluate the condition"},
		{[]string{"--yes", "--since", "1h", "--since-column", "nope"}, `--since filters on --since-column "nope", which table public.outbox does not have`},
	} {
		if out := e.replayCmd(2, c.args...); !strings.Contains(out, c.want) {
			t.Errorf("replay %v: output lacks %q:\n%s", c.args, c.want, out)
		}
	}
	// On a terminal (script(1) gives it one) replay asks: "n" sends
	// nothing, "y" sends.
	if _, err := exec.LookPath("script"); err == nil {
		args := append([]string{"--ids", ids[2]}, routing...)
		if out := e.replayOnTerminal(1, "n\n", args...); !strings.Contains(out, "publish 1 records to Kafka again? [y/N]") || !strings.Contains(out, "not confirmed") {
			t.Errorf("replay on a terminal answered n: want the question and a refusal:\n%s", out)
		}
		e.replayOnTerminal(0, "y\n", args...)
		compareReplayed(t, args, k.next(1), byID, ids[2:3])
	} else {
		t.Log("no script(1) on this machine: the question on a terminal is not tested")
	}
	// A row that cannot be routed stops a replay before anything is sent,
	// unless a dead-letter topic takes it, as with run.
	const bad = "bbbbbbbb-0000-0000-0000-000000000000"
	exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, NULL, 'k', 't', '{}')`, bad)
	if out := e.replayCmd(1, "--yes", "--where", "aggregatetype IS NULL OR id = '"+ids[3]+"'"); !strings.Contains(out, "1 of the selected rows cannot be routed") {
		t.Errorf("replay of an unroutable row: want a refusal:\n%s", out)
	}
	e.replayCmd(0, "--yes", "--ids", bad, "--on-bad-event", "dlq", "--dlq-topic", "outbox.dlq")
	dlq := e.readTopics([]string{"outbox.dlq"}, harness.Count(1), 20*time.Second)
	if len(dlq) != 1 || headerOf(dlq[0], "id") != bad {
		t.Errorf("dead-letter topic holds %d records, want the row %s", len(dlq), bad)
	}
	// Nothing was sent by the refusals and the dry run: the next replay's
	// record is the only new one.
	replay(ids[:1], "--ids", ids[0])
}

// replayOnTerminal runs outboxrelay replay on a pseudo-terminal that
// script(1) provides, typing input, and checks its exit code.
func (e *env) replayOnTerminal(code int, input string, args ...string) string {
	e.t.Helper()
	words := append([]string{binary, "replay", "--pg-url", e.url, "--brokers", strings.Join(e.kafka.ListenAddrs(), ",")}, args...)
	for i, w := range words {
		words[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	cmd := exec.Command("script", "-qec", strings.Join(words, " "), "/dev/null")
	cmd.Stdin = strings.NewReader(input)
	cmd.Env = append(os.Environ(), "GORACE=halt_on_error=0 atexit_sleep_ms=0")
	out, _ := cmd.CombinedOutput()
	if got := cmd.ProcessState.ExitCode(); got != code {
		e.t.Fatalf("replay %v on a terminal, answering %q, exited %d, want %d:\n%s", args, input, got, code, out)
	}
	checkRaces(e.t, string(out))
	return string(out)
}

// squeeze collapses every run of white space to one space.
func squeeze(s string) string { return strings.Join(strings.Fields(s), " ") }

// replayType is the aggregate type of row i.
func replayType(i int) string { return []string{"Order", "Customer", "Invoice"}[i%3] }

// insertReplayRows inserts replayRows rows, one per transaction, a minute
// apart in created_at, on 4 aggregates, and returns their ids in order.
func (e *env) insertReplayRows(ctx context.Context) []string {
	e.t.Helper()
	var ids []string
	for i := range replayRows {
		var id string
		err := e.pool.QueryRow(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, created_at)
			VALUES (gen_random_uuid(), $1, $2, $3, $4, '2026-03-01 00:00:00.123456+00'::timestamptz + $5 * interval '1 minute') RETURNING id::text`,
			replayType(i), fmt.Sprintf("agg-%d", i%4), fmt.Sprintf("Type%d", i), fmt.Sprintf(`{"n": %d, "s": "é"}`, i), i).Scan(&id)
		if err != nil {
			e.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// replayCmd runs outboxrelay replay with the env's connection flags and
// checks its exit code; it returns the output.
func (e *env) replayCmd(code int, args ...string) string {
	e.t.Helper()
	p := e.startRaw(append([]string{"replay", "--pg-url", e.url, "--brokers", strings.Join(e.kafka.ListenAddrs(), ",")}, args...)...)
	if got := p.wait(e.t, 30*time.Second); got != code {
		e.t.Fatalf("replay %v exited %d, want %d:\n%s", args, got, code, p.logs.String())
	}
	return p.logs.String()
}

type recKey struct {
	topic     string
	partition int32
	offset    int64
}

// kafkaLog reads the topics and hands out the records not seen before.
type kafkaLog struct {
	e     *env
	names []string
	seen  map[recKey]bool
}

// next waits for n new records and returns them, by topic, partition and
// offset; more than n new records fail the test.
func (k *kafkaLog) next(n int) []*kgo.Record {
	k.e.t.Helper()
	total := len(k.seen) + n
	all := k.e.readTopics(k.names, harness.Count(total), 20*time.Second)
	if len(all) != total {
		k.e.t.Fatalf("Kafka holds %d records, want %d", len(all), total)
	}
	var out []*kgo.Record
	for _, r := range all {
		key := recKey{r.Topic, r.Partition, r.Offset}
		if !k.seen[key] {
			k.seen[key] = true
			out = append(out, r)
		}
	}
	sortRecords(out)
	return out
}

func sortRecords(rs []*kgo.Record) {
	sort.Slice(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Offset < b.Offset
	})
}

func headerOf(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// compareReplayed checks that the replayed records are run's records for
// the ids wanted, in run's order within each partition.
func compareReplayed(t *testing.T, args []string, got []*kgo.Record, byID map[string]*kgo.Record, want []string) {
	t.Helper()
	var exp []*kgo.Record
	for _, id := range want {
		exp = append(exp, byID[id])
	}
	sortRecords(exp)
	if len(got) != len(exp) {
		t.Fatalf("replay %v sent %d records, want %d", args, len(got), len(exp))
	}
	for i := range exp {
		if a, b := describe(exp[i]), describe(got[i]); a != b {
			t.Errorf("replay %v record %d:\n run    %s\n replay %s", args, i, a, b)
		}
	}
}

// describe is a record without its offset and timestamp.
func describe(r *kgo.Record) string {
	var hs []string
	for _, h := range r.Headers {
		hs = append(hs, fmt.Sprintf("%s=%q", h.Key, h.Value))
	}
	return fmt.Sprintf("%s/%d key=%q value=%q headers=[%s]", r.Topic, r.Partition, r.Key, r.Value, strings.Join(hs, " "))
}

// TestReplayInterrupted interrupts a replay whose records Kafka holds
// unanswered: it stops reading at the in-flight bound, waits for the
// acknowledgements that come after the interrupt, says how many rows were
// sent and acknowledged, and exits 4.
func TestReplayInterrupted(t *testing.T) {
	e := newEnv(t)
	for i := range 50 {
		insertEvent(t, e, i)
	}
	stalling, release := stallProduce(e)
	stalling.Store(true)
	p := e.startRaw("replay", "--pg-url", e.url, "--brokers", strings.Join(e.kafka.ListenAddrs(), ","), "--yes",
		"--max-in-flight-events", "10", "--shutdown-timeout", "60s", "--progress-interval", "20ms")
	p.waitLog(t, "sent=10 acknowledged=0", 20*time.Second)
	p.signal(syscall.SIGINT)
	p.waitLog(t, "stop requested: reading stopped, waiting for Kafka's acknowledgements\" in_flight=10", 20*time.Second)
	stalling.Store(false)
	close(release)
	if code := p.wait(t, 30*time.Second); code != 4 {
		t.Fatalf("replay exited %d, want 4:\n%s", code, p.logs.String())
	}
	if out := p.logs.String(); !strings.Contains(out, "replay interrupted before every selected row was sent and acknowledged") ||
		!strings.Contains(out, "sent=10 acknowledged=10 rows=50") {
		t.Fatalf("the interrupted replay does not report 10 rows sent and acknowledged:\n%s", out)
	}
	k := &kafkaLog{e: e, names: []string{"outbox.event.Order"}, seen: map[recKey]bool{}}
	if got := k.next(10); len(got) != 10 {
		t.Fatalf("Kafka holds %d records, want 10", len(got))
	}
}
