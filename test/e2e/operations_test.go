package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A partition placement naming a partition the topic lacks is a bad event:
// it follows --on-bad-event (halt, or dead-letter and go on) instead of
// making the relay reconnect forever.
func TestPartitionBeyondTheTopicIsABadEvent(t *testing.T) {
	for _, mode := range []string{"fail", "dlq"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			exec1(t, e.pool, `ALTER TABLE outbox ADD COLUMN shard int`)
			if err := createTopic(e, "outbox.event.Order"); err != nil { // 3 partitions
				t.Fatal(err)
			}
			args := []string{"--fields-additional-placement", "shard:partition"}
			if mode == "dlq" {
				if err := createTopic(e, "outbox.dlq"); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--on-bad-event", "dlq", "--dlq-topic", "outbox.dlq")
			}
			p := e.start(args...)
			e.waitStreaming("outboxrelay")
			for i, shard := range []int{1, 7, 2} {
				exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, shard) VALUES ($1, 'Order', 'k', 't', '{}', $2)`,
					fmt.Sprintf("cccccccc-0000-0000-0000-%012d", i), shard)
			}
			end := e.currentWAL()
			if mode == "dlq" {
				dead := e.readTopics([]string{"outbox.dlq"}, harness.Count(1), 30*time.Second)
				if len(dead) != 1 || header(dead[0], "id") != "cccccccc-0000-0000-0000-000000000001" ||
					!strings.Contains(header(dead[0], "outboxrelay.dlq.reason"), "chooses partition 7 but topic outbox.event.Order has 3 partitions") {
					t.Fatalf("dead letters %v", dead)
				}
				if good := e.readTopics([]string{"outbox.event.Order"}, harness.Count(2), 30*time.Second); len(good) != 2 {
					t.Fatalf("%d records delivered, want the 2 good ones", len(good))
				}
				waitUntil(t, 10*time.Second, "the slot to confirm past the bad event", func() bool { return e.confirmed("outboxrelay") >= end })
				return
			}
			p.waitLog(t, "halted on a bad event", 30*time.Second)
			if strings.Contains(p.logs.String(), "reconnecting") {
				t.Fatalf("the relay reconnected instead of halting:\n%s", p.logs.String())
			}
			p.signal(syscall.SIGTERM)
			if code := p.wait(t, 15*time.Second); code != 1 {
				t.Fatalf("exit code %d, want 1", code)
			}
			for _, want := range []string{"cccccccc-0000-0000-0000-000000000001", "chooses partition 7", "add partitions to the topic"} {
				if !strings.Contains(p.logs.String(), want) {
					t.Errorf("output does not mention %q", want)
				}
			}
			if c := e.confirmed("outboxrelay"); c >= end {
				t.Fatalf("slot confirmed %X, past the bad event", c)
			}
		})
	}
}

// Creating the publication needs CREATE on the database: check and the
// run preflight say so, with the GRANT, for a role that has REPLICATION and
// owns the table but lacks it, and run creates nothing.
func TestPublicationNeedsCreateOnTheDatabase(t *testing.T) {
	e := newEnv(t)
	role := fmt.Sprintf("relay_%d", dbSeq.Add(1))
	var db string
	if err := e.pool.QueryRow(t.Context(), `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	exec1(t, e.pool, fmt.Sprintf(`CREATE ROLE %s LOGIN REPLICATION; ALTER TABLE outbox OWNER TO %s`, role, role))
	url := strings.Replace(e.url, "postgres@", role+"@", 1)
	grant := fmt.Sprintf(`GRANT CREATE ON DATABASE "%s" TO "%s";`, db, role)

	code, out := runBinary(t, nil, "check", "--pg-url", url)
	if code != 1 || !strings.Contains(out, "lacks the CREATE privilege") || !strings.Contains(out, grant) {
		t.Fatalf("check: exit code %d, want 1 with %q:\n%s", code, grant, out)
	}
	code, out = runBinary(t, nil, "run", "--pg-url", url, "--brokers", strings.Join(e.kafka.ListenAddrs(), ","), "--http-addr", "127.0.0.1:0")
	if code != 3 || !strings.Contains(out, grant) {
		t.Fatalf("run: exit code %d, want 3 with %q:\n%s", code, grant, out)
	}
	if slots, pubs := e.slotAndPublication(t); slots != 0 || pubs != 0 {
		t.Fatalf("run created %d slot(s) and %d publication(s) before refusing", slots, pubs)
	}
	exec1(t, e.pool, grant)
	if code, out := runBinary(t, nil, "check", "--pg-url", url); code != 0 {
		t.Fatalf("check after the GRANT: exit code %d:\n%s", code, out)
	}
}

// A wrong password with sslmode=prefer (the default) is reported first, not
// after the refused TLS attempt that comes before it.
func TestWrongPasswordLeadsTheError(t *testing.T) {
	pg := newCluster(t)
	admin, err := pgxConnect(t, pg.URL("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(t.Context())
	if _, err := admin.Exec(t.Context(), `CREATE ROLE app LOGIN REPLICATION PASSWORD 'right'`); err != nil {
		t.Fatal(err)
	}
	var hba string
	if err := admin.QueryRow(t.Context(), `SHOW hba_file`).Scan(&hba); err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(hba) != filepath.Join(pg.Dir, "data") {
		t.Fatalf("hba_file %s is outside the test's cluster", hba)
	}
	rules := "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(hba, []byte(rules), 0o600); err != nil { // keeps the file's owner
		t.Fatal(err)
	}
	if _, err := admin.Exec(t.Context(), `SELECT pg_reload_conf()`); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("postgres://app:Not-The-Pw-31337@127.0.0.1:%d/postgres?sslmode=prefer", pg.Port)
	waitUntil(t, 10*time.Second, "password authentication to apply", func() bool {
		c, err := pgxConnect(t, url)
		if err == nil {
			c.Close(t.Context())
		}
		return err != nil && strings.Contains(err.Error(), "password authentication failed")
	})
	for _, args := range [][]string{
		{"check", "--pg-url", url},
		{"run", "--pg-url", url, "--brokers", "127.0.0.1:1", "--http-addr", "127.0.0.1:0"},
	} {
		code, out := runBinary(t, nil, args...)
		t.Logf("%s: exit code %d:\n%s", args[0], code, out)
		auth, tls := strings.Index(out, "password authentication failed"), strings.Index(out, "server refused TLS")
		if code != 1 || auth < 0 || (tls >= 0 && tls < auth) {
			t.Errorf("%s: exit code %d; want 1 with the authentication failure first:\n%s", args[0], code, out)
		}
		if strings.Contains(out, "Not-The-Pw-31337") {
			t.Errorf("%s: the password appears in the output", args[0])
		}
	}
}

// stallProduce makes the broker hold every produce request while the
// returned flag is set, until release is closed.
func stallProduce(e *env) (stalling *atomic.Bool, release chan struct{}) {
	stalling, release = &atomic.Bool{}, make(chan struct{})
	e.kafka.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.kafka.KeepControl()
		if stalling.Load() {
			e.kafka.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	return stalling, release
}

func insertEvent(t *testing.T, e *env, i int) {
	t.Helper()
	exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, 'Order', 'k', 't', '{}')`,
		fmt.Sprintf("dddddddd-0000-0000-0000-%012d", i))
}

// A broker that stops answering produce requests is visible within the
// 5 s stall bound (checked every 0.5 s): /readyz turns 503, a WARN is
// logged, outboxrelay_produce_stalled is 1. All recover by themselves when
// the broker answers again.
func TestKafkaStallIsVisibleAndRecovers(t *testing.T) {
	e := newEnv(t)
	stalling, release := stallProduce(e)
	p := e.start()
	base := p.httpAddr(t)
	e.waitStreaming("outboxrelay")
	insertEvent(t, e, 1)
	e.readTopics([]string{"outbox.event.Order"}, harness.Count(1), 20*time.Second)
	waitUntil(t, 10*time.Second, "/readyz to answer 200", func() bool { code, _ := get(t, base+"/readyz"); return code == 200 })

	stalling.Store(true)
	insertEvent(t, e, 2)
	began := time.Now()
	waitUntil(t, 15*time.Second, "/readyz to answer 503", func() bool { code, _ := get(t, base+"/readyz"); return code == 503 })
	took := time.Since(began)
	t.Logf("not ready %v after the stalled event was written", took.Round(time.Millisecond))
	if took < 4*time.Second || took > 7*time.Second {
		t.Errorf("readiness turned false after %v; want the 5 s bound (reported within 5.5 s of the request)", took)
	}
	if _, body := get(t, base+"/readyz"); !strings.Contains(body, "Kafka has not answered") {
		t.Errorf("/readyz body %q", body)
	}
	p.waitLog(t, "Kafka stopped answering", 2*time.Second)
	if v := metric(t, base, "outboxrelay_produce_stalled"); v != 1 {
		t.Errorf("outboxrelay_produce_stalled = %v", v)
	}
	if v := metric(t, base, "outboxrelay_produce_request_wait_seconds"); v < 5 {
		t.Errorf("outboxrelay_produce_request_wait_seconds = %v", v)
	}
	if code, _ := get(t, base+"/streaming"); code != 200 {
		t.Errorf("/streaming %d while stalled: the relay still holds the slot", code)
	}

	close(release)
	waitUntil(t, 10*time.Second, "/readyz to answer 200 again", func() bool { code, _ := get(t, base+"/readyz"); return code == 200 })
	p.waitLog(t, "Kafka answers again", 2*time.Second)
	if v := metric(t, base, "outboxrelay_produce_stalled"); v != 0 {
		t.Errorf("outboxrelay_produce_stalled = %v after recovery", v)
	}
	e.readTopics([]string{"outbox.event.Order"}, harness.Count(2), 20*time.Second)
}

// SIGTERM while Kafka does not answer: after --shutdown-timeout the relay
// says how many events Kafka did not acknowledge, exits 4, confirms none of
// them, and a restart delivers them.
func TestStopWhileKafkaIsFrozen(t *testing.T) {
	e := newEnv(t)
	stalling, release := stallProduce(e)
	p := e.start("--shutdown-timeout", "1s")
	base := p.httpAddr(t)
	e.waitStreaming("outboxrelay")
	stalling.Store(true)
	exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
		SELECT gen_random_uuid(), 'Order', 'k' || g, 't', '{}' FROM generate_series(1, 3) g`)
	end := e.currentWAL()
	waitUntil(t, 10*time.Second, "3 events in flight", func() bool { return metric(t, base, "outboxrelay_in_flight_events") == 3 })
	p.signal(syscall.SIGTERM)
	if code := p.wait(t, 20*time.Second); code != 4 {
		t.Fatalf("exit code %d, want 4", code)
	}
	out := p.logs.String()
	for _, want := range []string{"level=WARN", "stopped before Kafka acknowledged every event", "unacknowledged_events=3", "sent again after a restart"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs do not mention %q", want)
		}
	}
	if c := e.confirmed("outboxrelay"); c >= end {
		t.Fatalf("slot confirmed %X, at or past the unacknowledged events (end %X)", c, end)
	}
	stalling.Store(false)
	close(release)
	e.start()
	if recs := e.readTopics([]string{"outbox.event.Order"}, harness.Count(3), 30*time.Second); len(recs) < 3 {
		t.Fatalf("%d of 3 events after the restart", len(recs))
	}
}

// The HTTP port is bound before anything is created: a taken port is a
// usage error naming --http-addr, and no slot or publication is left.
func TestTakenHTTPPortCreatesNothing(t *testing.T) {
	e := newEnv(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	code, out := runBinary(t, nil, "run", "--pg-url", e.url, "--brokers", strings.Join(e.kafka.ListenAddrs(), ","), "--http-addr", taken.Addr().String())
	if code != 2 {
		t.Fatalf("exit code %d, want 2:\n%s", code, out)
	}
	for _, want := range []string{"--http-addr " + taken.Addr().String(), "address already in use", "OUTBOXRELAY_HTTP_ADDR"} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not mention %q:\n%s", want, out)
		}
	}
	if slots, pubs := e.slotAndPublication(t); slots != 0 || pubs != 0 {
		t.Fatalf("%d slot(s) and %d publication(s) left behind", slots, pubs)
	}
}

// A standby waiting for the slot is ready and not streaming, is not counted
// as reconnecting, and says it waits once at info.
func TestStandbyIsReadyNotStreamingAndNotReconnecting(t *testing.T) {
	e := newEnv(t)
	first := e.start()
	base1 := first.httpAddr(t)
	e.waitStreaming("outboxrelay")
	second := e.start()
	base2 := second.httpAddr(t)
	waitUntil(t, 20*time.Second, "the standby to try the slot 4 times", func() bool { return metric(t, base2, "outboxrelay_slot_waits_total") >= 4 })
	for url, want := range map[string]int{base1 + "/readyz": 200, base1 + "/streaming": 200, base2 + "/readyz": 200, base2 + "/streaming": 503} {
		if code, body := get(t, url); code != want {
			t.Errorf("%s: %d %q, want %d", url, code, body, want)
		}
	}
	for sample, want := range map[string]float64{"outboxrelay_reconnects_total": 0, "outboxrelay_ready": 1, "outboxrelay_slot_held": 0, "outboxrelay_in_flight_events": 0} {
		if v := metric(t, base2, sample); v != want {
			t.Errorf("standby %s = %v, want %v", sample, v, want)
		}
	}
	if n := strings.Count(second.logs.String(), `level=INFO msg="waiting for the replication slot"`); n != 1 {
		t.Errorf("%d info lines about waiting for the slot, want 1", n)
	}
}

// The in-flight gauges are true at all times: when a session ends with
// events in flight (here the walsender is terminated while Kafka holds
// them, and the role may no longer replicate, so no new session starts),
// they drop to 0.
func TestInFlightGaugesClearWhenTheSessionEnds(t *testing.T) {
	e := newEnv(t)
	role := fmt.Sprintf("relay_%d", dbSeq.Add(1))
	var db string
	if err := e.pool.QueryRow(t.Context(), `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	exec1(t, e.pool, fmt.Sprintf(`CREATE ROLE %s LOGIN REPLICATION; ALTER TABLE outbox OWNER TO %s; GRANT CREATE ON DATABASE "%s" TO %s`, role, role, db, role))
	stalling, release := stallProduce(e)
	defer close(release)
	args := e.args()
	args[2] = strings.Replace(e.url, "postgres@", role+"@", 1)
	p := e.startRaw(args...)
	base := p.httpAddr(t)
	e.waitStreaming("outboxrelay")
	stalling.Store(true)
	exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
		SELECT gen_random_uuid(), 'Order', 'k' || g, 't', '{}' FROM generate_series(1, 4) g`)
	waitUntil(t, 10*time.Second, "4 events in flight", func() bool { return metric(t, base, "outboxrelay_in_flight_events") == 4 })
	exec1(t, e.pool, fmt.Sprintf(`ALTER ROLE %s NOREPLICATION`, role))
	exec1(t, e.pool, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'outboxrelay'`)
	waitUntil(t, 20*time.Second, "two reconnect attempts", func() bool { return strings.Count(p.logs.String(), `msg=reconnecting`) >= 2 })
	for sample, want := range map[string]float64{"outboxrelay_in_flight_events": 0, "outboxrelay_in_flight_bytes": 0, "outboxrelay_slot_held": 0, "outboxrelay_ready": 0} {
		if v := metric(t, base, sample); v != want {
			t.Errorf("%s = %v between sessions, want %v", sample, v, want)
		}
	}
}

// Managed services' replication roles pass the replication check: on Amazon
// RDS and Aurora a role replicates through membership in rds_replication,
// and the fix for a role that cannot names both forms.
func TestReplicationThroughRDSRole(t *testing.T) {
	e := newEnv(t)
	exec1(t, e.pool, `DO $$ BEGIN CREATE ROLE rds_replication NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`)
	member, plain := fmt.Sprintf("relay_%d", dbSeq.Add(1)), fmt.Sprintf("relay_%d", dbSeq.Add(1))
	exec1(t, e.pool, fmt.Sprintf(`CREATE ROLE %s LOGIN IN ROLE rds_replication; CREATE ROLE %s LOGIN`, member, plain))
	_, out := runBinary(t, nil, "check", "--pg-url", strings.Replace(e.url, "postgres@", member+"@", 1))
	if !strings.Contains(out, fmt.Sprintf(`role "%s" may replicate: it is a member of rds_replication`, member)) {
		t.Errorf("a member of rds_replication:\n%s", out)
	}
	_, out = runBinary(t, nil, "check", "--pg-url", strings.Replace(e.url, "postgres@", plain+"@", 1))
	if !strings.Contains(out, fmt.Sprintf(`ALTER ROLE "%s" WITH REPLICATION; (on Amazon RDS and Aurora: GRANT rds_replication TO "%s";)`, plain, plain)) {
		t.Errorf("a role without replication:\n%s", out)
	}
}
