package reference

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchEnv turns on TestDebeziumThroughput (OUTBOXRELAY_DEBEZIUM=1 too).
const BenchEnv = "OUTBOXRELAY_DEBEZIUM_BENCH"

// TestDebeziumThroughput measures Debezium and outboxrelay on the same WAL:
// the events are committed first, each side's slot and publication already
// there; then Debezium runs alone until its topic holds every event, then
// outboxrelay alone. It reports events/s (from the start of the process, and
// from its first record), CPU seconds per 100,000 events and peak RSS.
// OUTBOXRELAY_DEBEZIUM_BENCH=N sets the event count (100000 for 1).
func TestDebeziumThroughput(t *testing.T) {
	requireDebezium(t)
	n, _ := strconv.Atoi(os.Getenv(BenchEnv))
	if n == 0 {
		t.Skipf("set %s=1 (or an event count) to measure Debezium and outboxrelay", BenchEnv)
	}
	if n == 1 {
		n = 100_000
	}
	w := newWorld(t)
	s := setup{name: "bench", conv: map[string]string{"key.converter": stringConverter, "value.converter": stringConverter}}
	for _, sql := range []string{
		`CREATE PUBLICATION dbz_bench FOR TABLE outbox_jsonb`,
		`CREATE PUBLICATION relay_bench FOR TABLE outbox_jsonb WITH (publish = 'insert')`,
		`SELECT pg_create_logical_replication_slot('dbz_bench', 'pgoutput')`,
		`SELECT pg_create_logical_replication_slot('relay_bench', 'pgoutput')`,
	} {
		if _, err := w.pool.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	const perTx = 100
	for i := 0; i < n; i += perTx {
		if _, err := w.pool.Exec(t.Context(), `INSERT INTO outbox_jsonb (id, aggregatetype, aggregateid, type, payload)
			SELECT gen_random_uuid(), 'Bench', 'agg-' || (g % 1000), 'Changed',
			  jsonb_build_object('seq', g, 'pad', repeat('x', 100))
			FROM generate_series($1::int, $2::int) g`, i, min(i+perTx, n)-1); err != nil {
			t.Fatal(err)
		}
	}
	file := w.writeFile("bench.properties", w.properties(s, []string{"jsonb"})+"publication.autocreate.mode=disabled\n")
	var rows []string
	// The JVM's defaults but the heap: both JIT tiers, as Debezium runs.
	dbz := w.start("debezium (bench)", "java", "-Xmx384m",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", classPath, "io.outboxrelay.reference.DebeziumReference", file)
	rows = append(rows, w.measure(t, "Debezium 3.6.1 (embedded, Kafka Connect converters)", dbz, "dbz.bench.Bench", n))
	dbz.stop(30 * time.Second)
	relay := w.start("outboxrelay (bench)", binary, "run", "--debezium-config", file, "--slot", "relay_bench",
		"--publication", "relay_bench", "--route-topic-replacement", "relay.bench.${routedByValue}",
		"--http-addr", "127.0.0.1:0", "--log-level", "warn")
	rows = append(rows, w.measure(t, "outboxrelay", relay, "relay.bench.Bench", n))
	t.Logf("%d events, 100 per transaction, on %s:\n| relay | events/s from start | events/s from first record | CPU s / 100k events | peak RSS |\n|---|---|---|---|---|\n%s",
		n, brokerKind(), strings.Join(rows, "\n"))
}

func brokerKind() string {
	if os.Getenv("OUTBOXRELAY_KAFKA") == "real" {
		return "Apache Kafka"
	}
	return "kfake"
}

// measure waits until topic holds n records and returns a table row: rates,
// the process's CPU time per 100,000 events and its peak RSS.
func (w *world) measure(t *testing.T, name string, p *proc, topic string, n int) string {
	t.Helper()
	began := time.Now()
	cl, err := kgo.NewClient(kgo.SeedBrokers(w.brokers...), kgo.MetadataMinAge(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var first time.Time
	for {
		var total int64
		if ends, err := adm.ListEndOffsets(context.Background(), topic); err == nil {
			ends.Each(func(o kadm.ListedOffset) {
				if o.Err == nil {
					total += o.Offset
				}
			})
		}
		if total > 0 && first.IsZero() {
			first = time.Now()
		}
		if total >= int64(n) {
			break
		}
		if time.Since(began) > 10*time.Minute {
			t.Fatalf("%s: %d of %d events after 10 minutes", name, total, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	done := time.Now()
	cpu, rss := procStats(p.cmd.Process.Pid)
	return fmt.Sprintf("| %s | %.0f | %.0f | %.2f | %d MiB |", name, float64(n)/done.Sub(began).Seconds(),
		float64(n)/done.Sub(first).Seconds(), cpu.Seconds()*100_000/float64(n), rss>>20)
}

// procStats reads a process's CPU time (user and system) and peak RSS.
func procStats(pid int) (time.Duration, int64) {
	var cpu time.Duration
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		cpu = time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	}
	var rss int64
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				rss = kb << 10
			}
		}
	}
	return cpu, rss
}
