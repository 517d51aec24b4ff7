package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// runBinary runs outboxrelay to completion with env additions and returns its
// exit code and combined output.
func runBinary(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	code, stdout, stderr := runSplit(t, env, args...)
	return code, stdout + stderr
}

// runSplit is runBinary with standard output and error apart; standard
// input is empty, as when a script runs the command.
func runSplit(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"nothing given", nil, []string{"run"}, []string{"pg-url is required", "brokers: at least one"}},
		{"unknown flag", nil, []string{"run", "--pg-urll", "x"}, []string{"unknown flag: --pg-urll"}},
		{"every problem at once", nil, []string{"run", "--pg-url", "postgres://h/db", "--brokers", "nohost",
			"--slot", "Bad-Slot", "--fields-additional-placement", "type:sideways", "--topic-partitions", "0"},
			[]string{"has no port", "Bad-Slot", `unknown placement "sideways"`, "topic-partitions"}},
		{"bad environment value", []string{"OUTBOXRELAY_TOPIC_PARTITIONS=many"}, []string{"run"}, []string{"OUTBOXRELAY_TOPIC_PARTITIONS"}},
		{"environment supplies flags", []string{"OUTBOXRELAY_PG_URL=postgres://h/db", "OUTBOXRELAY_BROKERS=k:9092", "OUTBOXRELAY_SLOT=UPPER"},
			[]string{"run"}, []string{`slot "UPPER"`}},
		{"dlq without a topic", nil, []string{"run", "--pg-url", "postgres://h/db", "--brokers", "k:9092", "--on-bad-event", "dlq"},
			[]string{"needs a valid --dlq-topic"}},
		{"dlq with exactly-once, unknown modes", nil, []string{"run", "--pg-url", "postgres://h/db", "--brokers", "k:9092", "--on-bad-event", "dlq",
			"--dlq-topic", "d", "--delivery", "exactly-once"}, []string{"not supported with exactly-once"}},
		{"unknown modes", nil, []string{"run", "--pg-url", "postgres://h/db", "--brokers", "k:9092", "--on-bad-event", "skip", "--delivery", "maybe"},
			[]string{`on-bad-event "skip"`, `delivery "maybe"`}},
		{"flag wins over environment", []string{"OUTBOXRELAY_SLOT=fine"}, []string{"run", "--pg-url", "postgres://h/db", "--brokers", "k:9092", "--slot", "Not-Fine"},
			[]string{`slot "Not-Fine"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runBinary(t, tc.env, tc.args...)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; output:\n%s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not mention %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestUnreachablePostgres(t *testing.T) {
	began := time.Now()
	code, out := runBinary(t, nil, "run", "--pg-url", "postgres://postgres@127.0.0.1:1/db?connect_timeout=5", "--brokers", "127.0.0.1:1")
	if code != 1 || !strings.Contains(out, "connecting to PostgreSQL") || !strings.Contains(out, "127.0.0.1:1") {
		t.Fatalf("exit code %d, output:\n%s", code, out)
	}
	if d := time.Since(began); d > 15*time.Second {
		t.Fatalf("took %v to report an unreachable server", d)
	}
}

// Preflight reports every unmet prerequisite at once, with the fix, and
// exits 3 without creating anything.
func TestPreflightReportsEveryProblem(t *testing.T) {
	pg := newCluster(t, harness.PostgresOptions{WALLevel: "replica"})
	url, err := pg.CreateDatabase(t.Context(), "app")
	if err != nil {
		t.Fatal(err)
	}
	exec1Conn(t, url, `CREATE ROLE app LOGIN; CREATE TABLE outbox (id uuid, aggregateid text, type text); GRANT SELECT ON outbox TO app`)
	appURL := strings.Replace(url, "postgres@", "app@", 1)
	code, out := runBinary(t, nil, "run", "--pg-url", appURL, "--brokers", "127.0.0.1:1")
	if code != 3 {
		t.Fatalf("exit code %d, want 3:\n%s", code, out)
	}
	t.Logf("what the operator sees:\n%s", out)
	for _, want := range []string{
		`wal_level is "replica"`, "ALTER SYSTEM SET wal_level = logical",
		`role "app" has no REPLICATION attribute`, `ALTER ROLE "app" WITH REPLICATION`,
		`has no column "aggregatetype"`, `has no column "payload"`, "ALTER TABLE",
		`publication "outboxrelay" does not exist and the current role does not own`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not mention %q:\n%s", want, out)
		}
	}

	// A missing table gets the recommended DDL.
	code, out = runBinary(t, nil, "run", "--pg-url", url, "--brokers", "127.0.0.1:1", "--table", "public.events")
	if code != 3 || !strings.Contains(out, `table "public"."events" does not exist`) || !strings.Contains(out, "CREATE TABLE") {
		t.Fatalf("exit code %d:\n%s", code, out)
	}
}

// An existing publication that does not include the table is refused with
// the statement that fixes it.
func TestPublicationWithoutTheTable(t *testing.T) {
	e := newEnv(t)
	exec1(t, e.pool, `CREATE PUBLICATION elsewhere FOR TABLE other`)
	code, out := runBinary(t, nil, e.args("--publication", "elsewhere")...)
	if code != 3 || !strings.Contains(out, `ALTER PUBLICATION "elsewhere" ADD TABLE "public"."outbox"`) {
		t.Fatalf("exit code %d:\n%s", code, out)
	}
}

// A row that cannot become a record (NULL route value), a missing topic with
// topic creation off, and a payload over the producer's limit: with the
// default --on-bad-event=fail each halts the relay with an error naming the
// event; nothing from it on is confirmed, and what came before is delivered.
func TestBadEventsStopWithoutLoss(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		setup func(t *testing.T, e *env)
		bad   string
		want  []string
	}{
		{"NULL route value", nil, nil,
			`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('bbbbbbbb-0000-0000-0000-000000000001', NULL, 'a', 't', '{}')`,
			[]string{"bbbbbbbb-0000-0000-0000-000000000001", `route-by column "aggregatetype" is NULL`}},
		{"missing topic without creation", []string{"--create-topics=false"}, nil,
			`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('bbbbbbbb-0000-0000-0000-000000000002', 'Nowhere', 'a', 't', '{}')`,
			[]string{"bbbbbbbb-0000-0000-0000-000000000002", "outbox.event.Nowhere", "--create-topics=false"}},
		{"payload over the message limit", []string{"--kafka-max-message-bytes", "2000"}, nil,
			`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('bbbbbbbb-0000-0000-0000-000000000003', 'Order', 'a', 't', jsonb_build_object('pad', repeat('x', 5000)))`,
			[]string{"bbbbbbbb-0000-0000-0000-000000000003", "MaxMessageBytes"}},
		{"payload over the broker's limit", nil, brokerLimit,
			`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('bbbbbbbb-0000-0000-0000-000000000004', 'Big', 'a', 't', jsonb_build_object('pad', repeat('x', 5000)))`,
			[]string{"bbbbbbbb-0000-0000-0000-000000000004", "outbox.event.Big", "Message was too large"}},
		{"topic authorization failure", nil, forbidden,
			`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('bbbbbbbb-0000-0000-0000-000000000005', 'Secret', 'a', 't', '{}')`,
			[]string{"bbbbbbbb-0000-0000-0000-000000000005", "outbox.event.Secret", "not authorized to access this topic"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.name == "missing topic without creation" {
				// the good event's topic exists; the bad one's does not
				if err := createTopic(e, "outbox.event.Order"); err != nil {
					t.Fatal(err)
				}
			}
			if tc.setup != nil {
				tc.setup(t, e)
			}
			p := e.start(tc.args...)
			e.waitStreaming("outboxrelay")
			exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('aaaaaaaa-0000-0000-0000-000000000001', 'Order', 'a', 't', '{}')`)
			e.readTopics([]string{"outbox.event.Order"}, harness.Count(1), 20*time.Second)
			good := e.currentWAL()
			waitUntil(t, 10*time.Second, "the good event to be confirmed", func() bool { return e.confirmed("outboxrelay") >= good })
			exec1(t, e.pool, tc.bad)
			badEnd := e.currentWAL()
			// --on-bad-event=fail: halted, alive, not ready, nothing confirmed
			// past the bad event; SIGTERM then exits 1 with the error.
			p.waitLog(t, "halted on a bad event", 30*time.Second)
			time.Sleep(time.Second)
			if p.exited() {
				t.Fatalf("relay exited instead of staying up:\n%s", p.logs.String())
			}
			if code, body := get(t, p.httpAddr(t)+"/readyz"); code != 503 || !strings.Contains(body, "halted") {
				t.Fatalf("/readyz while halted: %d %q", code, body)
			}
			if n := strings.Count(p.logs.String(), "halted on a bad event"); n != 1 {
				t.Fatalf("the bad event was logged %d times, want once", n)
			}
			p.signal(syscall.SIGTERM)
			if code := p.wait(t, 15*time.Second); code != 1 {
				t.Fatalf("exit code %d, want 1", code)
			}
			out := p.logs.String()
			t.Logf("last line: %s", lastLine(out))
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not mention %q:\n%s", w, out)
				}
			}
			if c := e.confirmed("outboxrelay"); c >= badEnd {
				t.Fatalf("slot confirmed %X, at or past the bad event's transaction (ends %X)", c, badEnd)
			}
		})
	}
}

func exec1Conn(t *testing.T, url, sql string) {
	t.Helper()
	conn, err := pgxConnect(t, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func createTopic(e *env, name string) error {
	cl, err := newAdmin(e)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := cl.CreateTopic(context.Background(), 3, 1, nil, name)
	if err != nil {
		return err
	}
	if resp.Err != nil {
		return fmt.Errorf("creating %s: %w", name, resp.Err)
	}
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// brokerLimit creates outbox.event.Big with a 2,000-byte message limit on the
// broker, far below the producer's.
func brokerLimit(t *testing.T, e *env) {
	t.Helper()
	adm, err := newAdmin(e)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	limit := "2000"
	resp, err := adm.CreateTopic(t.Context(), 3, 1, map[string]*string{"max.message.bytes": &limit}, "outbox.event.Big")
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// forbidden makes the broker answer every produce to outbox.event.Secret
// with TOPIC_AUTHORIZATION_FAILED, as one with ACLs does.
func forbidden(t *testing.T, e *env) {
	t.Helper()
	if err := createTopic(e, "outbox.event.Secret"); err != nil {
		t.Fatal(err)
	}
	e.kafka.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "outbox.event.Secret", Err: kerr.TopicAuthorizationFailed, Count: -1})
}
