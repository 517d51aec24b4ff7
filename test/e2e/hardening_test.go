package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
)

// A partition placement on a text column is refused by run at start, as by
// check: exit code 3 with the fix, before the slot or the publication is
// created, instead of halting at the first event.
func TestPartitionPlacementOnTextColumnIsRefusedAtStart(t *testing.T) {
	e := newEnv(t)
	exec1(t, e.pool, `ALTER TABLE outbox ADD COLUMN shard text`)
	args := []string{"--fields-additional-placement", "shard:partition"}
	if code, out := runBinary(t, nil, append([]string{"check", "--pg-url", e.url, "--brokers", "k:9092"}, args...)...); code != 1 || !strings.Contains(out, "must be an integer type") {
		t.Fatalf("check: exit code %d:\n%s", code, out)
	}
	p := e.start(args...)
	if code := p.wait(t, 30*time.Second); code != 3 {
		t.Fatalf("exit code %d, want 3; logs:\n%s", code, p.logs.String())
	}
	out := p.logs.String()
	for _, want := range []string{`column "shard" (partition placement) must be an integer type`, "not text", "--fields-additional-placement"} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not mention %q:\n%s", want, out)
		}
	}
	if slots, pubs := e.slotAndPublication(t); slots != 0 || pubs != 0 {
		t.Errorf("run created %d slot(s) and %d publication(s) before refusing", slots, pubs)
	}
}

// outboxrelay schema | psql runs as it is on an empty database and creates
// the table and the publication.
func TestSchemaRunsInPsql(t *testing.T) {
	psql, err := exec.LookPath("psql")
	if dir, derr := harness.BinDir(); derr == nil {
		// The npm builds of other majors have no psql: the machine's serves.
		if p := filepath.Join(dir, "psql"); fileExists(p) {
			psql, err = p, nil
		}
	}
	if err != nil {
		t.Skip("no psql:", err)
	}
	url, err := shared.CreateDatabase(t.Context(), fmt.Sprintf("schema_%d", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	code, schema, stderr := runSplit(t, nil, "schema")
	if code != 0 {
		t.Fatalf("schema: exit code %d: %s", code, stderr)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", url)
	cmd.Stdin = strings.NewReader(schema)
	if out, err := cmd.CombinedOutput(); err != nil || strings.Contains(string(out), "ERROR") {
		t.Fatalf("outboxrelay schema | psql: %v\n%s", err, out)
	}
	conn, err := pgxConnect(t, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var table, pub bool
	if err := conn.QueryRow(t.Context(), `SELECT to_regclass('public.outbox') IS NOT NULL,
		EXISTS (SELECT FROM pg_publication_tables WHERE pubname = 'outboxrelay' AND tablename = 'outbox')`).Scan(&table, &pub); err != nil {
		t.Fatal(err)
	}
	if !table || !pub {
		t.Fatalf("after psql: table %v, publication %v", table, pub)
	}
}

// With --route-topic-allow, an event routed to any other topic is a bad
// event: here it goes to the dead-letter topic, no topic is created for it,
// and the stream goes on.
func TestRouteTopicAllowGuardsTopics(t *testing.T) {
	e := newEnv(t)
	if err := createTopic(e, "outbox.dlq"); err != nil {
		t.Fatal(err)
	}
	p := e.start("--route-topic-allow", `outbox\.event\.(Order|Customer)`, "--on-bad-event", "dlq", "--dlq-topic", "outbox.dlq")
	e.waitStreaming("outboxrelay")
	for i, atype := range []string{"Order", "Spam1", "Customer", "Spam2", "Order"} {
		exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, $2, 'k', 't', '{}')`,
			fmt.Sprintf("aaaaaaaa-0000-0000-0000-%012d", i), atype)
	}
	end := e.currentWAL()
	good := e.readTopics([]string{"outbox.event.Order", "outbox.event.Customer"}, harness.Count(3), 30*time.Second)
	if len(good) != 3 {
		t.Fatalf("%d allowed records, want 3; logs:\n%s", len(good), p.logs.String())
	}
	dead := e.readTopics([]string{"outbox.dlq"}, harness.Count(2), 15*time.Second)
	if len(dead) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dead))
	}
	for _, d := range dead {
		if !strings.Contains(header(d, "outboxrelay.dlq.reason"), "RouteTopicAllow") || !strings.Contains(header(d, "outboxrelay.dlq.reason"), "outbox.event.Spam") {
			t.Errorf("dead letter reason %q", header(d, "outboxrelay.dlq.reason"))
		}
	}
	waitUntil(t, 10*time.Second, "the slot to confirm past the refused events", func() bool { return e.confirmed("outboxrelay") >= end })
	adm, err := newAdmin(e)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	topics, err := adm.ListTopics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range topics.Names() {
		if strings.HasPrefix(name, "outbox.event.Spam") {
			t.Errorf("topic %s was created", name)
		}
	}
}

// slotAndPublication counts the slot and the publication named outboxrelay
// (0 or 1 each).
func (e *env) slotAndPublication(t *testing.T) (slots, pubs int) {
	t.Helper()
	if err := e.pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'outboxrelay'),
		(SELECT count(*) FROM pg_publication WHERE pubname = 'outboxrelay')`).Scan(&slots, &pubs); err != nil {
		t.Fatal(err)
	}
	return slots, pubs
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
