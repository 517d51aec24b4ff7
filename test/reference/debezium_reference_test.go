package reference

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// payloadTypes are the payload column types compared; each has its own
// outbox table, outbox_<type>.
var payloadTypes = []string{"jsonb", "json", "text", "bytea"}

// setup is one configuration run by both Debezium and outboxrelay: the
// converters (which outboxrelay reads and ignores) and the Outbox Event
// Router options.
type setup struct {
	name   string
	conv   map[string]string
	router map[string]string
	tables []string // payload types; all when empty
}

func (s setup) types() []string {
	if len(s.tables) == 0 {
		return payloadTypes
	}
	return s.tables
}

const (
	stringConverter    = "org.apache.kafka.connect.storage.StringConverter"
	jsonConverter      = "org.apache.kafka.connect.json.JsonConverter"
	byteArrayConverter = "org.apache.kafka.connect.converters.ByteArrayConverter"
)

// setups are the converter set-ups users run and the router placements.
var setups = []setup{
	{name: "string", conv: map[string]string{"key.converter": stringConverter, "value.converter": stringConverter},
		router: map[string]string{"table.fields.additional.placement": "type:header:eventType,tenant:header", "route.tombstone.on.empty.payload": "true"}},
	{name: "bytes", tables: []string{"bytea"},
		conv:   map[string]string{"key.converter": stringConverter, "value.converter": byteArrayConverter},
		router: map[string]string{"table.fields.additional.placement": "type:header:eventType", "route.tombstone.on.empty.payload": "true"}},
	{name: "envelope", conv: map[string]string{"key.converter": stringConverter, "value.converter": jsonConverter, "value.converter.schemas.enable": "false"},
		router: map[string]string{"table.fields.additional.placement": "type:header:eventType,tenant:envelope,shard:partition,shard:envelope:shard_no,at:envelope,ts:envelope,flag:envelope,big:envelope,id:envelope:event_id,payload:envelope:raw", "table.expand.json.payload": "true"}},
	{name: "json", conv: map[string]string{"key.converter": jsonConverter, "key.converter.schemas.enable": "false", "value.converter": jsonConverter, "value.converter.schemas.enable": "false"},
		router: map[string]string{"table.fields.additional.placement": "type:header:eventType", "route.tombstone.on.empty.payload": "true"}},
	{name: "expand", tables: []string{"jsonb", "json", "text"},
		conv:   map[string]string{"key.converter": stringConverter, "value.converter": jsonConverter, "value.converter.schemas.enable": "false"},
		router: map[string]string{"table.fields.additional.placement": "type:header:eventType", "table.expand.json.payload": "true"}},
	{name: "keepnulls", tables: []string{"jsonb", "text"},
		conv: map[string]string{"key.converter": stringConverter, "value.converter": jsonConverter, "value.converter.schemas.enable": "false"},
		router: map[string]string{"table.fields.additional.placement": "type:header:eventType", "table.expand.json.payload": "true",
			"table.json.payload.null.behavior": "optional_bytes"}},
	{name: "schemas", tables: []string{"jsonb", "text"},
		conv:   map[string]string{"key.converter": jsonConverter, "value.converter": jsonConverter},
		router: map[string]string{"table.fields.additional.placement": "type:header:eventType"}},
}

// row is one outbox event the test writes.
type row struct {
	id, atype, aid, typ string
	payload             *string // text for the column (hex for bytea); nil: NULL
	tenant              *string
	shard               int
	del                 bool // deleted in the same transaction
}

func ptr(s string) *string { return &s }

// payloads returns the payloads written to outbox_<typ>.
func payloads(typ string) []*string {
	docs := []string{
		`{"orderId": 1, "items": [{"sku": "A-1", "qty": 2}], "total": 12.50}`,
		"{\"note\": \"café \\\"quoted\\\" back\\\\slash\\nnewline\", \"emoji\": \"😀\", \"html\": \"<a&b>\"}",
		`{"float": 1.0e+2, "neg": -0, "nested": {"a": [true, false]}}`,
		`{ "spaced" :  true }`,
		`{}`,
		`{"gone": null, "none": [], "kept": {"inner": null, "list": [1, null], "empty": {}}, "emptied": {"n": null}, "x": 1}`,
		` {"lead": "space"}`,
		`"just a string"`,
		`42`,
	}
	var out []*string
	switch typ {
	case "bytea":
		out = append(out, ptr("00ff80"), ptr(hex.EncodeToString([]byte(docs[0]))), ptr(""))
	default:
		for _, d := range docs {
			out = append(out, ptr(d))
		}
		if typ == "text" {
			out = append(out, ptr("hello, world"), ptr(""), ptr(" \t "))
		}
	}
	return append(out, nil)
}

// lastPayloads are written after every other event: Debezium's engine stops
// on them when table.expand.json.payload is on (a top-level JSON array, an
// integer beyond 64 bits).
func lastPayloads(typ string) []*string {
	if typ == "bytea" {
		return nil
	}
	return []*string{ptr(`[1, 2, 3]`), ptr(`{"big": 12345678901234567890}`)}
}

// rows builds the events of one table: every payload, then 24 events over 8
// aggregates (partition placement and per-aggregate order), two
// insert-and-delete events and one with a NULL key.
func rows(typ string) []row {
	var out []row
	n := 0
	add := func(r row) {
		n++
		r.id = fmt.Sprintf("%08x-0000-4000-8000-%012d", len(typ)*1000+n, n)
		if r.typ == "" {
			r.typ = "Changed"
		}
		out = append(out, r)
	}
	tenants := []*string{ptr("acme"), ptr(`acme "eu" \ ünï`), nil}
	for i, p := range payloads(typ) {
		add(row{atype: "Misc_" + typ, aid: fmt.Sprintf("m-%d", i), payload: p, tenant: tenants[i%len(tenants)], shard: i % 3})
	}
	for i := range 24 {
		p := fmt.Sprintf(`{"aggregate": "a-%d", "n": %d}`, i%8, i)
		if typ == "bytea" {
			p = hex.EncodeToString([]byte(p))
		}
		add(row{atype: "Order_" + typ, aid: fmt.Sprintf("a-%d", i%8), typ: "OrderChanged", payload: &p, tenant: ptr("t"), shard: (i % 8) % 3})
	}
	for i := range 2 {
		p := `{"deleted": true}`
		if typ == "bytea" {
			p = hex.EncodeToString([]byte(p))
		}
		add(row{atype: "Order_" + typ, aid: fmt.Sprintf("a-%d", i), payload: &p, tenant: ptr("t"), shard: i % 3, del: true})
	}
	add(row{atype: "Misc_" + typ, aid: "", payload: ptr(map[bool]string{true: "7b7d", false: "{}"}[typ == "bytea"]), shard: 1})
	for i, p := range lastPayloads(typ) {
		add(row{atype: "Last_" + typ, aid: fmt.Sprintf("l-%d", i), payload: p, tenant: ptr("t"), shard: 2})
	}
	return out
}

func valueSQL(typ string) string {
	if typ == "bytea" {
		return "decode($5::text, 'hex')"
	}
	return "$5::text::" + typ
}

// writeRows writes the rows of every table in transactions of three events,
// the tables interleaved, and one UPDATE per table (which neither side
// publishes).
func writeRows(t *testing.T, pool *pgxpool.Pool, byType map[string][]row) {
	t.Helper()
	ctx := t.Context()
	for i := 0; ; i += 3 {
		more := false
		for _, typ := range payloadTypes {
			rs := firstRows(byType[typ])
			if i >= len(rs) {
				continue
			}
			more = true
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs[i:min(i+3, len(rs))] {
				insert(t, tx, typ, r)
				if r.del {
					if _, err := tx.Exec(ctx, fmt.Sprintf(`DELETE FROM outbox_%s WHERE id = $1`, typ), r.id); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if !more {
			break
		}
	}
	for _, typ := range payloadTypes {
		if len(byType[typ]) == 0 {
			continue
		}
		if _, err := pool.Exec(ctx, fmt.Sprintf(`UPDATE outbox_%s SET type = 'Updated' WHERE id = $1`, typ), byType[typ][0].id); err != nil {
			t.Fatal(err)
		}
	}
}

// writeLastRows writes the rows of lastPayloads.
func writeLastRows(t *testing.T, pool *pgxpool.Pool, byType map[string][]row) {
	t.Helper()
	for _, typ := range payloadTypes {
		for _, r := range byType[typ][len(firstRows(byType[typ])):] {
			insert(t, pool, typ, r)
		}
	}
}

// firstRows is rs without the rows of lastPayloads.
func firstRows(rs []row) []row {
	n := len(rs)
	for n > 0 && strings.HasPrefix(rs[n-1].atype, "Last_") {
		n--
	}
	return rs[:n]
}

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func insert(t *testing.T, db execer, typ string, r row) {
	t.Helper()
	var aid any = r.aid
	if r.aid == "" {
		aid = nil
	}
	sql := fmt.Sprintf(`INSERT INTO outbox_%s (id, aggregatetype, aggregateid, type, payload, tenant, shard)
		VALUES ($1, $2, $3, $4, %s, $6, $7)`, typ, valueSQL(typ))
	if _, err := db.Exec(t.Context(), sql, r.id, r.atype, aid, r.typ, r.payload, r.tenant, r.shard); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// world is the database, the broker and the processes of one comparison.
type world struct {
	t       *testing.T
	pg      *harness.Postgres
	url     string
	dbname  string
	pool    *pgxpool.Pool
	brokers []string
	dir     string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := t.Context()
	pg, err := harness.StartPostgres(ctx, harness.PostgresOptions{Settings: map[string]string{
		"max_replication_slots": "64", "max_wal_senders": "64",
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	w := &world{t: t, pg: pg, dbname: "reference", dir: t.TempDir()}
	if w.url, err = pg.CreateDatabase(ctx, w.dbname); err != nil {
		t.Fatal(err)
	}
	if w.pool, err = pgxpool.New(ctx, w.url); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.pool.Close)
	for _, typ := range payloadTypes {
		ddl := fmt.Sprintf(`CREATE TABLE outbox_%s (id uuid PRIMARY KEY, aggregatetype text, aggregateid text,
			type text NOT NULL, payload %s, tenant text, shard int NOT NULL DEFAULT 0,
			at timestamptz DEFAULT timestamptz '2026-01-02 03:04:05+00' + floor(random()*4) * interval '0.25 s' + floor(random()*3) * interval '1 us',
			ts timestamp DEFAULT timestamp '1999-12-31 23:59:59' + floor(random()*4) * interval '0.25 s' + floor(random()*3) * interval '1 us',
			flag boolean DEFAULT true, big bigint DEFAULT 9007199254740993)`, typ, typ)
		if _, err := w.pool.Exec(ctx, ddl); err != nil {
			t.Fatal(err)
		}
	}
	w.brokers = startBroker(t)
	return w
}

// startBroker starts kfake, or Apache Kafka under OUTBOXRELAY_KAFKA=real,
// with three partitions per topic and topics created on first use (as Kafka
// Connect's producer expects by default).
func startBroker(t *testing.T) []string {
	t.Helper()
	if harness.RealKafkaRequested() {
		k, err := harness.StartRealKafka(t.Context(), harness.RealKafkaOptions{Config: map[string]string{
			"num.partitions": "3", "auto.create.topics.enable": "true",
		}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Close)
		return k.ListenAddrs()
	}
	k, err := harness.StartKafka(kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k.ListenAddrs()
}

// properties is one Kafka Connect PostgreSQL connector configuration, the
// file both sides read: Debezium's slot, publication and topics are
// dbz_<setup>, dbz.<setup>.*; outboxrelay's flags override them.
func (w *world) properties(s setup, tables []string) string {
	var list []string
	for _, typ := range tables {
		list = append(list, "public.outbox_"+typ)
	}
	kv := map[string]string{
		"name":                        "dbz-" + s.name,
		"connector.class":             "io.debezium.connector.postgresql.PostgresConnector",
		"database.hostname":           w.pg.Host,
		"database.port":               fmt.Sprint(w.pg.Port),
		"database.user":               "postgres",
		"database.dbname":             w.dbname,
		"database.sslmode":            "disable",
		"topic.prefix":                "reference_" + s.name,
		"plugin.name":                 "pgoutput",
		"slot.name":                   "dbz_" + s.name,
		"publication.name":            "dbz_" + s.name,
		"publication.autocreate.mode": "filtered",
		"table.include.list":          strings.Join(list, ","),
		"snapshot.mode":               "no_data",
		"transforms":                  "outbox",
		"transforms.outbox.type":      "io.debezium.transforms.outbox.EventRouter",
		"transforms.outbox.route.topic.replacement": "dbz." + s.name + ".${routedByValue}",
		"bootstrap.servers":                         strings.Join(w.brokers, ","),
	}
	for k, v := range s.router {
		kv["transforms.outbox."+k] = v
	}
	for k, v := range s.conv {
		kv[k] = v
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "# set-up %s\n", s.name)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, strings.ReplaceAll(kv[k], `\`, `\\`))
	}
	return b.String()
}

func (w *world) writeFile(name, text string) string {
	w.t.Helper()
	p := filepath.Join(w.dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// proc is a process the test started and stops.
type proc struct {
	name string
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
}

// stop interrupts the process and waits for it, killing it after timeout.
func (p *proc) stop(timeout time.Duration) {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// syncBuffer collects a relay's output while the test reads it.
type syncBuffer = harness.SyncBuffer

func (w *world) start(name string, args ...string) *proc {
	w.t.Helper()
	p := &proc{name: name, cmd: exec.Command(args[0], args[1:]...), logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	w.t.Cleanup(func() {
		p.stop(20 * time.Second)
		if w.t.Failed() || os.Getenv("OUTBOXRELAY_REFERENCE_LOGS") != "" {
			w.t.Logf("%s logs:\n%s", name, tail(p.logs.String(), 30))
			if f, err := os.CreateTemp("", "outboxrelay-reference-*.log"); err == nil {
				fmt.Fprintf(f, "%s\n%s", name, p.logs.String())
				f.Close()
				w.t.Logf("%s: all its logs are in %s", name, f.Name())
			}
		}
	})
	return p
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitStreaming waits until a walsender reads from every slot.
func (w *world) waitStreaming(timeout time.Duration, slots ...string) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for _, slot := range slots {
		for {
			var ok bool
			err := w.pool.QueryRow(context.Background(), harness.SlotStreamingSQL, slot).Scan(&ok)
			if err == nil && ok {
				break
			}
			if time.Now().After(deadline) {
				w.t.Fatalf("no walsender streams from slot %s after %v", slot, timeout)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// startDebezium runs one engine per set-up in one JVM.
func (w *world) startDebezium() *proc {
	w.t.Helper()
	args := []string{"java", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-Dorg.slf4j.simpleLogger.log.io.debezium.connector.postgresql=info",
		"-Dorg.slf4j.simpleLogger.showDateTime=true", "-cp", classPath, "io.outboxrelay.reference.DebeziumReference"}
	var slots []string
	for _, s := range setups {
		args = append(args, w.writeFile("dbz-"+s.name+".properties", w.properties(s, s.types())))
		slots = append(slots, "dbz_"+s.name)
	}
	p := w.start("debezium", args...)
	began := time.Now()
	w.waitStreaming(3*time.Minute, slots...)
	w.t.Logf("Debezium: %d engines streaming after %v", len(setups), time.Since(began).Round(time.Millisecond))
	return p
}

// startRelays runs one outboxrelay per set-up and table, each from the
// set-up's properties file for that one table, on its own slot and
// publication, writing to relay.<setup>.*.
func (w *world) startRelays() {
	w.t.Helper()
	var slots []string
	for _, s := range setups {
		for _, typ := range s.types() {
			file := w.writeFile("relay-"+s.name+"-"+typ+".properties", w.properties(s, []string{typ}))
			slot := "relay_" + s.name + "_" + typ
			w.start("outboxrelay "+s.name+"/"+typ, binary, "run", "--debezium-config", file,
				"--slot", slot, "--publication", slot,
				"--route-topic-replacement", "relay."+s.name+".${routedByValue}",
				"--http-addr", "127.0.0.1:0", "--status-interval", "200ms", "--log-level", "warn")
			slots = append(slots, slot)
		}
	}
	w.waitStreaming(time.Minute, slots...)
}

// readAll reads every record of the dbz.* and relay.* topics until want
// records have arrived, or none has for quiet (an engine that stopped never
// sends the rest), or timeout.
func (w *world) readAll(want int, quiet, timeout time.Duration) []*kgo.Record {
	w.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(w.brokers...), kgo.ConsumeTopics(`^(dbz|relay)\..*`), kgo.ConsumeRegex(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond),
		kgo.MetadataMinAge(250*time.Millisecond), kgo.MetadataMaxAge(time.Second))
	if err != nil {
		w.t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline, changed := time.Now().Add(timeout), time.Now()
	for len(out) < want && time.Now().Before(deadline) && time.Since(changed) < quiet {
		ctx, cancel := context.WithTimeout(w.t.Context(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		if recs := fs.Records(); len(recs) > 0 {
			out = append(out, recs...)
			changed = time.Now()
		}
	}
	return out
}

func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// side is one producer's records of one set-up and table, by event id.
type side map[string]*kgo.Record

// split sorts the records by side ("dbz", "relay"), set-up and payload type
// (the route value's suffix after '_').
func split(t *testing.T, recs []*kgo.Record) map[string]side {
	t.Helper()
	out := map[string]side{}
	for _, r := range recs {
		who, rest, _ := strings.Cut(r.Topic, ".")
		name, suffix, _ := strings.Cut(rest, ".")
		_, typ, _ := strings.Cut(suffix, "_")
		k := who + "/" + name + "/" + typ
		if out[k] == nil {
			out[k] = side{}
		}
		id, ok := header(r, "id")
		if !ok {
			id = fmt.Sprintf("no-id@%s/%d/%d", suffix, r.Partition, r.Offset)
		}
		if _, dup := out[k][id]; dup {
			t.Errorf("%s: event %s delivered twice", k, id)
		}
		out[k][id] = r
	}
	return out
}

func suffix(topic string) string {
	_, rest, _ := strings.Cut(topic, ".")
	_, s, _ := strings.Cut(rest, ".")
	return s
}

// contextHeader prefixes the headers Debezium 3 adds about itself
// (extended.headers.enabled): connector name, task id, run id.
const contextHeader = "__debezium.context."

// headerList shows the headers other than Debezium's context headers; a
// null header value shows as <null>.
func headerList(r *kgo.Record) string {
	var hs []string
	for _, h := range r.Headers {
		if strings.HasPrefix(h.Key, contextHeader) {
			continue
		}
		v := string(h.Value)
		if h.Value == nil {
			v = "<null>"
		}
		hs = append(hs, h.Key+"="+v)
	}
	return strings.Join(hs, ",")
}

func contextHeaders(r *kgo.Record) []string {
	var hs []string
	for _, h := range r.Headers {
		if strings.HasPrefix(h.Key, contextHeader) {
			hs = append(hs, h.Key)
		}
	}
	return hs
}

func show(b []byte) string {
	if b == nil {
		return "null"
	}
	return fmt.Sprintf("%q", b)
}

// difference is one aspect in which the two records of one event differ.
type difference struct {
	key       string // setup/type/aspect
	id        string
	dbz, mine string
}

// compare returns the differences between Debezium's and outboxrelay's
// records of one set-up and table.
func compare(s setup, typ string, dbz, relay side, evs []row) []difference {
	var out []difference
	diff := func(aspect, id, a, b string) {
		out = append(out, difference{key: s.name + "/" + typ + "/" + aspect, id: id, dbz: a, mine: b})
	}
	for _, ev := range evs {
		d, r := dbz[ev.id], relay[ev.id]
		switch {
		case d == nil && r == nil:
			diff("missing", ev.id, "none", "none")
			continue
		case d == nil || r == nil:
			aspect := "presence"
			if strings.HasPrefix(ev.atype, "Last_") {
				aspect = "presence-last" // one of lastPayloads
			}
			diff(aspect, ev.id, fmt.Sprint(d != nil), fmt.Sprint(r != nil))
			continue
		}
		if suffix(d.Topic) != suffix(r.Topic) {
			diff("topic", ev.id, d.Topic, r.Topic)
		}
		if !bytes.Equal(d.Key, r.Key) || (d.Key == nil) != (r.Key == nil) {
			diff("key", ev.id, show(d.Key), show(r.Key))
		}
		if !bytes.Equal(d.Value, r.Value) || (d.Value == nil) != (r.Value == nil) {
			diff("value", ev.id, show(d.Value), show(r.Value))
		}
		if headerList(d) != headerList(r) {
			diff("headers", ev.id, headerList(d), headerList(r))
		}
		if a, b := contextHeaders(d), contextHeaders(r); len(a) != len(b) {
			diff("context-headers", ev.id, strings.Join(a, ","), strings.Join(b, ","))
		}
		// A null key leaves the partition to the producer's choice on both
		// sides (sticky in Java, random in outboxrelay): not compared.
		if d.Partition != r.Partition && d.Key != nil {
			diff("partition", ev.id, fmt.Sprint(d.Partition), fmt.Sprint(r.Partition))
		}
	}
	for id := range dbz {
		if !hasEvent(evs, id) {
			diff("extra", id, show(dbz[id].Value), "")
		}
	}
	for id := range relay {
		if !hasEvent(evs, id) {
			diff("extra", id, "", show(relay[id].Value))
		}
	}
	return out
}

func hasEvent(evs []row, id string) bool {
	for _, ev := range evs {
		if ev.id == id {
			return true
		}
	}
	return false
}

// orderOf lists the event ids of each topic suffix and partition in offset
// order, leaving out the events that other puts elsewhere.
func orderOf(s, other side) map[string][]string {
	recs := make([]*kgo.Record, 0, len(s))
	for id, r := range s {
		if o := other[id]; o != nil && o.Partition == r.Partition && suffix(o.Topic) == suffix(r.Topic) {
			recs = append(recs, r)
		}
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Offset < recs[j].Offset })
	out := map[string][]string{}
	for _, r := range recs {
		id, _ := header(r, "id")
		k := fmt.Sprintf("%s/%d", suffix(r.Topic), r.Partition)
		out[k] = append(out[k], id)
	}
	return out
}

// TestDebeziumReference runs Debezium and outboxrelay over the same WAL with
// the same configuration and compares their records. Every difference must
// be one listed in knownDifferences (and in docs/debezium-comparison.md),
// and every listed one must still occur.
func TestDebeziumReference(t *testing.T) {
	requireDebezium(t)
	began := time.Now()
	w := newWorld(t)
	dbz := w.startDebezium()
	w.startRelays()
	t.Logf("everything streaming after %v", time.Since(began).Round(time.Millisecond))

	byType := map[string][]row{}
	for _, typ := range payloadTypes {
		byType[typ] = rows(typ)
	}
	writeRows(t, w.pool, byType)
	want, first := 0, 0
	for _, s := range setups {
		for _, typ := range s.types() {
			want += 2 * len(byType[typ])
			first += 2 * len(firstRows(byType[typ]))
		}
	}
	// Debezium's engine fails a whole batch when one record of it stops the
	// engine: the events that stop it come once the others are in.
	w.readAll(first, 20*time.Second, 3*time.Minute)
	writeLastRows(t, w.pool, byType)
	w.readAll(want, 10*time.Second, 3*time.Minute)
	// Read again: anything late, a duplicate or an extra record, is in.
	time.Sleep(2 * time.Second)
	recs := w.readAll(want+1, 5*time.Second, time.Minute)
	t.Logf("read %d records (%d expected) after %v", len(recs), want, time.Since(began).Round(time.Millisecond))

	bySide := split(t, recs)
	seen := map[string]bool{}
	var table []string
	for _, s := range setups {
		for _, typ := range s.types() {
			dbz, relay := bySide["dbz/"+s.name+"/"+typ], bySide["relay/"+s.name+"/"+typ]
			diffs := compare(s, typ, dbz, relay, byType[typ])
			mine := orderOf(relay, dbz)
			for k, ids := range orderOf(dbz, relay) {
				if got := mine[k]; strings.Join(got, ",") != strings.Join(ids, ",") {
					diffs = append(diffs, difference{key: s.name + "/" + typ + "/order", id: k, dbz: strings.Join(ids, ","), mine: strings.Join(got, ",")})
				}
			}
			table = append(table, summarize(t, s, typ, diffs, seen)...)
		}
	}
	t.Logf("comparison:\n%s", strings.Join(table, "\n"))
	for k, why := range knownDifferences {
		if !seen[k] {
			t.Errorf("listed difference %s (%s) no longer occurs: remove it here and in docs/debezium-comparison.md", k, why)
		}
	}

	t.Run("ConsumerGroupSwitch", func(t *testing.T) {
		consumerGroupSwitch(t, w, dbz, byType["jsonb"])
	})
}

// summarize reports one set-up and table as table lines, failing the test
// for a difference not listed in knownDifferences.
func summarize(t *testing.T, s setup, typ string, diffs []difference, seen map[string]bool) []string {
	t.Helper()
	byKey := map[string][]difference{}
	for _, d := range diffs {
		byKey[d.key] = append(byKey[d.key], d)
	}
	if len(byKey) == 0 {
		return []string{fmt.Sprintf("| %s | %s | matched |", s.name, typ)}
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		ds := byKey[k]
		listed, why, known := lookupDifference(k)
		seen[listed] = true
		if os.Getenv("OUTBOXRELAY_REFERENCE_LOGS") != "" {
			for _, d := range ds {
				t.Logf("%s: event %s: Debezium %s, outboxrelay %s", k, d.id, d.dbz, d.mine)
			}
		}
		if !known {
			for _, d := range ds[:min(3, len(ds))] {
				t.Errorf("%s: event %s: Debezium %s, outboxrelay %s", k, d.id, d.dbz, d.mine)
			}
		}
		out = append(out, fmt.Sprintf("| %s | %s | different: %s in %d records, e.g. Debezium %s, outboxrelay %s | %s |",
			s.name, typ, k[strings.LastIndex(k, "/")+1:], len(ds), ds[0].dbz, ds[0].mine, why))
	}
	return out
}

// lookupDifference finds the entry of knownDifferences for setup/type/aspect:
// the exact key, else setup/*/aspect, else */*/aspect.
func lookupDifference(k string) (listed, why string, ok bool) {
	parts := strings.SplitN(k, "/", 3)
	for _, c := range []string{k, parts[0] + "/*/" + parts[2], "*/*/" + parts[2]} {
		if why, ok := knownDifferences[c]; ok {
			return c, why, true
		}
	}
	return k, "NOT LISTED", false
}

// knownDifferences lists, by set-up/type/aspect, every difference the test
// tolerates, with its reason; docs/debezium-comparison.md explains each.
var knownDifferences = map[string]string{
	"*/*/context-headers": "Debezium 3 adds __debezium.context.{connectorLogicalName,taskId,connectorName,runId} " +
		"(extended.headers.enabled, on by default) about its own run; outboxrelay has no connector, task or run id to report",
	"string/bytea/value": "StringConverter turns Debezium's byte buffer into Java's ByteBuffer.toString() " +
		"(java.nio.HeapByteBuffer[pos=0 lim=3 cap=3]); outboxrelay sends the bytes, as the ByteArrayConverter set-up (bytes) does",
	"envelope/*/presence-last": "a top-level JSON array or an integer beyond 64 bits stops Debezium's engine when it expands JSON " +
		"(DataException: Invalid Java object for schema with type ARRAY / FLOAT64); outboxrelay relays both",
	"keepnulls/*/presence-last": "a top-level JSON array or an integer beyond 64 bits stops Debezium's engine when it expands JSON " +
		"(DataException: Invalid type for ARRAY); outboxrelay relays both",
	"expand/*/presence-last": "a top-level JSON array or an integer beyond 64 bits stops Debezium's engine when it expands JSON " +
		"(DataException: Invalid type for ARRAY); outboxrelay relays both",
}
