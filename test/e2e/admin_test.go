package e2e

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
	"gopkg.in/yaml.v3"
)

func (e *env) admin(t *testing.T, args ...string) (int, string) {
	t.Helper()
	return runBinary(t, nil, append(args, "--pg-url", e.url)...)
}

// adminJSON runs an operator command with -o json and returns its standard
// output only.
func (e *env) adminJSON(t *testing.T, args ...string) (int, string) {
	t.Helper()
	code, stdout, _ := runSplit(t, nil, append(args, "--pg-url", e.url, "-o", "json")...)
	return code, stdout
}

func mustJSON(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("output is not JSON (%v):\n%s", err, out)
	}
}

func TestSlotCommands(t *testing.T) {
	e := newEnv(t)
	if code, out := e.admin(t, "publication", "create"); code != 0 {
		t.Fatalf("publication create: %d %s", code, out)
	}
	code, out := e.adminJSON(t, "slot", "create", "ops")
	var created struct {
		ConsistentPoint string `json:"consistent_point"`
	}
	mustJSON(t, out, &created)
	if code != 0 || created.ConsistentPoint == "" {
		t.Fatalf("slot create: %d %s", code, out)
	}
	if code, out := e.admin(t, "slot", "create", "ops"); code != 1 || !strings.Contains(out, "already exists") {
		t.Fatalf("creating it again: %d %s", code, out)
	}
	if version := e.serverVersion(t); version < 170000 {
		if code, out := e.admin(t, "slot", "create", "fo", "--failover"); code != 1 || !strings.Contains(out, "needs PostgreSQL 17") {
			t.Fatalf("--failover before PostgreSQL 17: %d %s", code, out)
		}
	} else {
		if code, out := e.admin(t, "slot", "create", "fo", "--failover"); code != 0 {
			t.Fatalf("--failover on PostgreSQL 17+: %d %s", code, out)
		}
		if code, out := e.admin(t, "slot", "list"); code != 0 || !regexp.MustCompile(`(?m)^fo\s.*\syes\s`).MatchString(out) {
			t.Fatalf("slot list does not show fo as a failover slot: %d %s", code, out)
		}
		if code, out := e.admin(t, "slot", "drop", "fo", "--yes"); code != 0 {
			t.Fatalf("dropping fo: %d %s", code, out)
		}
	}

	for i, v := range []string{"1", "2", "3"} {
		exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (gen_random_uuid(), 'Order', $1, 'Created', '{"n": 1}')`, "o-"+v)
		if i == 0 {
			exec1(t, e.pool, `UPDATE outbox SET type = 'x'`) // updates and deletes are not events
			exec1(t, e.pool, `DELETE FROM outbox WHERE aggregateid = 'o-1'`)
		}
	}
	for range 2 { // peeking consumes nothing
		code, out := e.adminJSON(t, "slot", "peek", "ops", "--limit", "2")
		var p struct {
			Count int `json:"outbox_events"`
			First []struct {
				Columns []struct {
					Name  string  `json:"name"`
					Value *string `json:"value"`
				} `json:"columns"`
			} `json:"first"`
		}
		mustJSON(t, out, &p)
		if code != 0 || p.Count != 3 || len(p.First) != 2 || p.First[0].Columns[2].Name != "aggregateid" || *p.First[0].Columns[2].Value != "o-1" {
			t.Fatalf("slot peek: %d %s", code, out)
		}
	}
	code, out = e.admin(t, "slot", "peek", "ops", "--limit", "1")
	if code != 0 || !strings.Contains(out, "3 outbox events of public.outbox waiting in slot ops") || !strings.Contains(out, "AGGREGATEID") {
		t.Fatalf("slot peek table: %d %s", code, out)
	}
	t.Logf("slot peek:\n%s", out)

	for range 5 { // an idle slot now retains more than 64 MiB of WAL
		exec1(t, e.pool, `INSERT INTO other (note) VALUES ('x')`)
		exec1(t, e.pool, `SELECT pg_switch_wal()`)
	}
	code, out = e.admin(t, "slot", "list")
	if code != 0 || !strings.Contains(out, "CONFIRMED_FLUSH") || !regexp.MustCompile(`(?m)^ops .*inactive and retaining WAL$`).MatchString(out) {
		t.Fatalf("slot list: %d %s", code, out)
	}
	t.Logf("slot list:\n%s", out)
	var slots []struct {
		Name   string `json:"name"`
		Plugin string `json:"plugin"`
		Active bool   `json:"active"`
		Lag    *int64 `json:"lag_bytes"`
	}
	code, out = e.adminJSON(t, "slot", "list")
	mustJSON(t, out, &slots)
	found := false
	for _, s := range slots {
		if s.Name == "ops" {
			found = s.Plugin == "pgoutput" && !s.Active && s.Lag != nil && *s.Lag > 0
		}
	}
	if code != 0 || !found {
		t.Fatalf("slot list -o json: %d %s", code, out)
	}
	checkYAMLMatchesJSON(t, out, func() (int, string) {
		code, stdout, _ := runSplit(t, nil, "slot", "list", "--pg-url", e.url, "-o", "yaml")
		return code, stdout
	})

	if code, out := e.admin(t, "slot", "advance", "ops", "--to", "banana"); code != 2 || !strings.Contains(out, "want an LSN") {
		t.Fatalf("advance to an invalid LSN: %d %s", code, out)
	}
	if code, out := e.admin(t, "slot", "advance", "ops", "--to", "current"); code != 1 || !strings.Contains(out, "skipping 3 outbox events") || !strings.Contains(out, "not confirmed") {
		t.Fatalf("advance without --yes: %d %s", code, out)
	}
	code, out = e.adminJSON(t, "slot", "advance", "ops", "--to", "current", "--yes")
	var adv struct {
		Skipped int `json:"skipped_outbox_events"`
	}
	mustJSON(t, out, &adv)
	if code != 0 || adv.Skipped != 3 {
		t.Fatalf("advance: %d %s", code, out)
	}
	if code, out := e.adminJSON(t, "slot", "peek", "ops"); code != 0 || !strings.Contains(out, `"outbox_events": 0`) {
		t.Fatalf("peek after advance: %d %s", code, out)
	}

	for _, args := range [][]string{{"slot", "peek", "nope"}, {"slot", "drop", "nope", "--yes"}, {"slot", "advance", "nope", "--to", "current"}} {
		if code, out := e.admin(t, args...); code != 1 || !strings.Contains(out, "does not exist") {
			t.Fatalf("%v on an unknown slot: %d %s", args, code, out)
		}
	}
	if code, out := e.admin(t, "slot", "drop", "ops"); code != 1 || !strings.Contains(out, "not confirmed") {
		t.Fatalf("drop without --yes: %d %s", code, out)
	}
	if code, out := e.admin(t, "slot", "drop", "ops", "--yes"); code != 0 || !strings.Contains(out, "dropped slot ops") {
		t.Fatalf("drop: %d %s", code, out)
	}
	if code, out := e.admin(t, "slot", "create"); code != 2 {
		t.Fatalf("create without a name: %d %s", code, out)
	}
}

// An active slot is dropped only with --force; the relay that used it then
// stops with an explanation instead of silently recreating it.
func TestDropActiveSlot(t *testing.T) {
	e := newEnv(t)
	p := e.start()
	e.waitStreaming("outboxrelay")
	if code, out := e.admin(t, "slot", "drop", "outboxrelay", "--yes"); code != 1 || !strings.Contains(out, "is active") || !strings.Contains(out, "--force") {
		t.Fatalf("drop of an active slot without --force: %d %s", code, out)
	}
	if code, out := e.admin(t, "slot", "drop", "outboxrelay", "--yes", "--force"); code != 0 {
		t.Fatalf("drop --force: %d %s", code, out)
	}
	if code := p.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("relay exit code %d after its slot was dropped, want 1", code)
	}
	if !strings.Contains(p.logs.String(), "no longer exists") {
		t.Fatalf("relay did not explain the dropped slot:\n%s", p.logs.String())
	}
}

func TestPublicationCommands(t *testing.T) {
	e := newEnv(t)
	if code, out := e.admin(t, "publication", "create", "--publication", "p1"); code != 0 || !strings.Contains(out, "publish = 'insert'") {
		t.Fatalf("create: %d %s", code, out)
	}
	if code, out := e.admin(t, "publication", "create", "--publication", "p1"); code != 1 || !strings.Contains(out, "already exists") {
		t.Fatalf("create again: %d %s", code, out)
	}
	exec1(t, e.pool, `CREATE PUBLICATION everything FOR ALL TABLES`)
	code, out := e.adminJSON(t, "publication", "show")
	var pubs []struct {
		Name       string   `json:"name"`
		AllTables  bool     `json:"all_tables"`
		Operations []string `json:"operations"`
		Tables     []string `json:"tables"`
	}
	mustJSON(t, out, &pubs)
	if code != 0 || len(pubs) != 2 || pubs[1].Name != "p1" || strings.Join(pubs[1].Operations, ",") != "insert" ||
		strings.Join(pubs[1].Tables, ",") != "public.outbox" || !pubs[0].AllTables || len(pubs[0].Operations) != 4 {
		t.Fatalf("show: %d %s", code, out)
	}
	code, out = e.admin(t, "publication", "show", "p1")
	if code != 0 || !strings.Contains(out, "NAME") || !strings.Contains(out, "public.outbox") {
		t.Fatalf("show p1: %d %s", code, out)
	}
	t.Logf("publication show:\n%s", out)
	if code, out := e.admin(t, "publication", "show", "nope"); code != 1 || !strings.Contains(out, "does not exist") {
		t.Fatalf("show unknown: %d %s", code, out)
	}
	if code, out := e.admin(t, "publication", "drop", "p1"); code != 1 || !strings.Contains(out, "not confirmed") {
		t.Fatalf("drop without --yes: %d %s", code, out)
	}
	if code, out := e.admin(t, "publication", "drop", "p1", "--yes"); code != 0 {
		t.Fatalf("drop: %d %s", code, out)
	}
}

func TestCheck(t *testing.T) {
	e := newEnv(t)
	code, out := e.admin(t, "check")
	if code != 0 || !strings.Contains(out, "PASS  wal_level") || !strings.Contains(out, "WARN  max_slot_wal_keep_size") || !strings.Contains(out, "PASS  column types") {
		t.Fatalf("check on a ready database: %d\n%s", code, out)
	}
	t.Logf("check:\n%s", out)
	var results []struct {
		Check, Status, Detail, Fix string
	}
	code, out = e.adminJSON(t, "check", "--fields-additional-placement", "type:partition")
	mustJSON(t, out, &results)
	failed := ""
	for _, r := range results {
		if r.Status == "fail" {
			failed = r.Check
		}
	}
	if code != 1 || failed != "column types" {
		t.Fatalf("check with a text partition column: %d %s", code, out)
	}
	if code, out := e.admin(t, "check", "--table", "public.missing"); code != 1 || !strings.Contains(out, "FAIL  outbox table") || !strings.Contains(out, "CREATE TABLE") {
		t.Fatalf("check with a missing table: %d %s", code, out)
	}
	if code, out := e.admin(t, "check", "-o", "xml"); code != 2 {
		t.Fatalf("check -o xml: %d %s", code, out)
	}

	pg := newCluster(t, harness.PostgresOptions{WALLevel: "replica"})
	url, err := pg.CreateDatabase(t.Context(), "app")
	if err != nil {
		t.Fatal(err)
	}
	code, out = runBinary(t, nil, "check", "--pg-url", url)
	if code != 1 || !strings.Contains(out, "FAIL  wal_level") || !strings.Contains(out, "ALTER SYSTEM SET wal_level = logical") {
		t.Fatalf("check on wal_level=replica: %d %s", code, out)
	}
}

// A full max_replication_slots fails the check only while the relay's slot
// is still to be created: a relay whose slot exists needs no free one.
func TestCheckSlotCapacity(t *testing.T) {
	pg := newCluster(t, harness.PostgresOptions{Settings: map[string]string{"max_replication_slots": "1"}})
	url, err := pg.CreateDatabase(t.Context(), "app")
	if err != nil {
		t.Fatal(err)
	}
	exec1Conn(t, url, outboxDDL)
	exec1Conn(t, url, `SELECT pg_create_logical_replication_slot('other', 'pgoutput')`)
	code, out := runBinary(t, nil, "check", "--pg-url", url)
	if code != 1 || !strings.Contains(out, "FAIL  replication slots") || !strings.Contains(out, "raise max_replication_slots") {
		t.Fatalf("check with every slot taken by another: %d\n%s", code, out)
	}
	exec1Conn(t, url, `SELECT pg_drop_replication_slot('other')`)
	exec1Conn(t, url, `SELECT pg_create_logical_replication_slot('outboxrelay', 'pgoutput')`)
	code, out = runBinary(t, nil, "check", "--pg-url", url)
	if !strings.Contains(out, "PASS  replication slots") || !strings.Contains(out, "outboxrelay among them") {
		t.Fatalf("check with the relay's own slot taking the only one: %d\n%s", code, out)
	}
}

// checkYAMLMatchesJSON runs slot list -o yaml and checks that it holds
// what its -o json output jsonOut holds for the inactive slot ops: the same
// fields, names and values, numbers aside (WAL moves between the two runs).
func checkYAMLMatchesJSON(t *testing.T, jsonOut string, runYAML func() (int, string)) {
	t.Helper()
	code, yamlOut := runYAML()
	var fromJSON, fromYAML []map[string]any
	mustJSON(t, jsonOut, &fromJSON)
	if err := yaml.Unmarshal([]byte(yamlOut), &fromYAML); code != 0 || err != nil {
		t.Fatalf("-o yaml: exit %d, %v:\n%s", code, err, yamlOut)
	}
	a, b := slotShape(fromJSON, "ops"), slotShape(fromYAML, "ops")
	if a == "" || a != b {
		t.Errorf("-o yaml reads as\n%s\n-o json as\n%s", b, a)
	}
}

// slotShape is the JSON of the named slot's entry with every number
// replaced by "number".
func slotShape(slots []map[string]any, name string) string {
	for _, s := range slots {
		if s["name"] != name {
			continue
		}
		shape := map[string]any{}
		for k, v := range s {
			switch v.(type) {
			case float64, int, int64, uint64:
				v = "number"
			}
			shape[k] = v
		}
		b, _ := json.Marshal(shape)
		return string(b)
	}
	return ""
}
