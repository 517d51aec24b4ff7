package router

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

var outboxCols = []Column{
	{Name: "id", TypeOID: oidUUID, NotNull: true}, {Name: "aggregatetype", TypeOID: oidText}, {Name: "aggregateid", TypeOID: oidText},
	{Name: "type", TypeOID: oidText}, {Name: "payload", TypeOID: oidJSONB}, {Name: "created_at", TypeOID: oidTimestamptz},
	{Name: "tenant", TypeOID: oidInt4}, {Name: "blob", TypeOID: oidBytea}, {Name: "note", TypeOID: oidText},
}

func row(id, atype, aid, typ, payload string, extra ...string) [][]byte {
	vals := []string{id, atype, aid, typ, payload, "2026-11-23 10:00:00.5+00", "3", `\x00ff41`, "x"}
	for i := 0; i+1 < len(extra); i += 2 {
		for j, c := range outboxCols {
			if c.Name == extra[i] {
				vals[j] = extra[i+1]
			}
		}
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		if v != "<null>" {
			out[i] = []byte(v)
		}
	}
	return out
}

func TestRoute(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	id := "7f1c0d9e-8a3b-4c55-9d1e-2b3c4d5e6f70"
	tests := []struct {
		name      string
		cfg       func(*Config)
		cols      []Column
		values    [][]byte
		topic     string
		key       string
		nilKey    bool
		value     string
		nilValue  bool
		headers   map[string]string
		partition int32
		ts        time.Time
	}{
		{
			name:   "debezium defaults",
			values: row(id, "Order", "42", "OrderCreated", `{"a": 1}`),
			topic:  "outbox.event.Order", key: "42", value: `{"a": 1}`,
			headers: map[string]string{"id": id}, partition: -1, ts: now,
		},
		{
			name: "custom replacement and header placement",
			cfg: func(c *Config) {
				c.RouteTopicReplacement = "${routedByValue}.events"
				c.Additional = []Placement{{"type", InHeader, "eventType"}}
			},
			values: row(id, "Customer", "c-1", "Renamed", `[]`),
			topic:  "Customer.events", key: "c-1", value: `[]`,
			headers: map[string]string{"id": id, "eventType": "Renamed"}, partition: -1, ts: now,
		},
		{
			name:   "regex with numbered group",
			cfg:    func(c *Config) { c.RouteTopicRegex = `(.*)-v\d+`; c.RouteTopicReplacement = "evt.$1" },
			values: row(id, "order-v2", "1", "t", `{}`),
			topic:  "evt.order", key: "1", value: `{}`, headers: map[string]string{"id": id}, partition: -1, ts: now,
		},
		{
			name:   "regex that does not match keeps the value",
			cfg:    func(c *Config) { c.RouteTopicRegex = `(.*)-v\d+`; c.RouteTopicReplacement = "evt.$1" },
			values: row(id, "plain", "1", "t", `{}`),
			topic:  "plain", key: "1", value: `{}`, headers: map[string]string{"id": id}, partition: -1, ts: now,
		},
		{
			name: "envelope, partition and timestamp placements",
			cfg: func(c *Config) {
				c.FieldEventTimestamp = "created_at"
				c.Additional = []Placement{{"type", InEnvelope, "eventType"}, {"tenant", InEnvelope, ""}, {"tenant", InPartition, ""}}
			},
			values: row(id, "Order", "42", "Created \"quoted\"", `{"a": 1}`),
			topic:  "outbox.event.Order", key: "42",
			// Debezium carries jsonb as a string: unexpanded, JsonConverter
			// writes it as one (test/reference).
			value:   `{"payload":"{\"a\": 1}","eventType":"Created \"quoted\"","tenant":3}`,
			headers: map[string]string{"id": id}, partition: 3,
			ts: time.Date(2026, 11, 23, 10, 0, 0, 500_000_000, time.UTC),
		},
		{
			name:   "NULL key and NULL payload",
			values: row(id, "Order", "<null>", "t", "<null>"),
			topic:  "outbox.event.Order", nilKey: true, nilValue: true, headers: map[string]string{"id": id}, partition: -1, ts: now,
		},
		{
			name:   "empty payload is kept without tombstones",
			cols:   []Column{{Name: "id", TypeOID: oidText}, {Name: "aggregatetype", TypeOID: oidText}, {Name: "aggregateid", TypeOID: oidText}, {Name: "payload", TypeOID: oidText}},
			values: [][]byte{[]byte("1"), []byte("A"), []byte("k"), {}},
			topic:  "outbox.event.A", key: "k", value: "", headers: map[string]string{"id": "1"}, partition: -1, ts: now,
		},
		{
			name:   "empty payload becomes a tombstone when asked",
			cfg:    func(c *Config) { c.TombstoneOnEmptyPayload = true },
			cols:   []Column{{Name: "id", TypeOID: oidText}, {Name: "aggregatetype", TypeOID: oidText}, {Name: "aggregateid", TypeOID: oidText}, {Name: "payload", TypeOID: oidText}},
			values: [][]byte{[]byte("1"), []byte("A"), []byte("k"), {}},
			topic:  "outbox.event.A", key: "k", nilValue: true, headers: map[string]string{"id": "1"}, partition: -1, ts: now,
		},
		{
			name:   "bytea payload and key are raw bytes",
			cfg:    func(c *Config) { c.FieldPayload = "blob"; c.FieldEventKey = "blob" },
			values: row(id, "Bin", "1", "t", `{}`),
			topic:  "outbox.event.Bin", key: "\x00\xffA", value: "\x00\xffA", headers: map[string]string{"id": id}, partition: -1, ts: now,
		},
		{
			name: "expanded text payload inside an envelope",
			cfg: func(c *Config) {
				c.FieldPayload = "note"
				c.ExpandJSONPayload = true
				c.Additional = []Placement{{"type", InEnvelope, ""}}
			},
			values: row(id, "T", "1", "t", `{}`, "note", `{"x":[1,2]}`),
			topic:  "outbox.event.T", key: "1", value: `{"payload":{"x":[1,2]},"type":"t"}`, headers: map[string]string{"id": id}, partition: -1, ts: now,
		},
		{
			name:   "unexpanded text payload inside an envelope is a string",
			cfg:    func(c *Config) { c.FieldPayload = "note"; c.Additional = []Placement{{"type", InEnvelope, ""}} },
			values: row(id, "T", "1", "t", `{}`, "note", `{"x":1}`),
			topic:  "outbox.event.T", key: "1", value: `{"payload":"{\"x\":1}","type":"t"}`, headers: map[string]string{"id": id}, partition: -1, ts: now,
		},
		{
			name:   "epoch milliseconds timestamp",
			cfg:    func(c *Config) { c.FieldEventTimestamp = "tenant" },
			values: row(id, "T", "1", "t", `{}`, "tenant", "1700000000123"),
			topic:  "outbox.event.T", key: "1", value: `{}`, headers: map[string]string{"id": id}, partition: -1,
			ts: time.UnixMilli(1700000000123).UTC(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			r, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			cols := tc.cols
			if cols == nil {
				cols = outboxCols
			}
			plan, err := r.Compile(cols)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := plan.Route(tc.values, now)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Topic != tc.topic {
				t.Errorf("topic = %q, want %q", rec.Topic, tc.topic)
			}
			if (rec.Key == nil) != tc.nilKey || (!tc.nilKey && string(rec.Key) != tc.key) {
				t.Errorf("key = %q (nil %v), want %q (nil %v)", rec.Key, rec.Key == nil, tc.key, tc.nilKey)
			}
			if (rec.Value == nil) != tc.nilValue || (!tc.nilValue && string(rec.Value) != tc.value) {
				t.Errorf("value = %q (nil %v), want %q (nil %v)", rec.Value, rec.Value == nil, tc.value, tc.nilValue)
			}
			got := map[string]string{}
			for _, h := range rec.Headers {
				got[h.Key] = string(h.Value)
			}
			if len(got) != len(tc.headers) {
				t.Errorf("headers = %v, want %v", got, tc.headers)
			}
			for k, v := range tc.headers {
				if got[k] != v {
					t.Errorf("header %q = %q, want %q", k, got[k], v)
				}
			}
			if rec.Partition != tc.partition {
				t.Errorf("partition = %d, want %d", rec.Partition, tc.partition)
			}
			if !rec.Timestamp.Equal(tc.ts) {
				t.Errorf("timestamp = %v, want %v", rec.Timestamp, tc.ts)
			}
		})
	}
}

func TestRouteErrors(t *testing.T) {
	id := "e1"
	tests := []struct {
		name   string
		cfg    func(*Config)
		values [][]byte
		want   string
	}{
		{"NULL route value", nil, row(id, "<null>", "1", "t", "{}"), `route-by column "aggregatetype" is NULL`},
		{"invalid topic character", nil, row(id, "has space", "1", "t", "{}"), "Kafka allows only"},
		{"topic too long", nil, row(id, strings.Repeat("a", 240), "1", "t", "{}"), "Kafka allows 249"},
		{"bad partition", func(c *Config) { c.Additional = []Placement{{"tenant", InPartition, ""}} }, row(id, "A", "1", "t", "{}", "tenant", "-1"), "non-negative integer"},
		{"bad timestamp", func(c *Config) { c.FieldEventTimestamp = "created_at" }, row(id, "A", "1", "t", "{}", "created_at", "infinity"), "not in ISO format"},
		{"bad bytea", func(c *Config) { c.FieldPayload = "blob" }, row(id, "A", "1", "t", "{}", "blob", "raw"), "hex format"},
		{"short row", nil, [][]byte{nil}, "row has 1 columns"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			r, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := r.Compile(outboxCols)
			if err != nil {
				t.Fatal(err)
			}
			_, err = plan.Route(tc.values, time.Now())
			if !errors.Is(err, ErrRoute) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrRoute containing %q", err, tc.want)
			}
		})
	}
}

func TestCompileReportsEveryMissingColumn(t *testing.T) {
	cfg := DefaultConfig()
	cfg.FieldEventTimestamp = "type"
	cfg.Additional = []Placement{{"nope", InHeader, ""}, {"type", InPartition, ""}}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Compile([]Column{{Name: "id", TypeOID: oidText}, {Name: "type", TypeOID: oidText}})
	for _, want := range []string{`"aggregateid"`, `"payload"`, `"aggregatetype"`, `"nope"`, "FieldEventTimestamp) must be", "partition placement, Additional) must be an integer"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Compile error %v does not mention %s", err, want)
		}
	}
}

func TestParsePlacementsAndValidate(t *testing.T) {
	got, err := ParsePlacements(" type:header:eventType, tenant:partition ,region:envelope")
	if err != nil {
		t.Fatal(err)
	}
	want := []Placement{{"type", InHeader, "eventType"}, {"tenant", InPartition, ""}, {"region", InEnvelope, ""}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("placement %d = %v, want %v", i, got[i], want[i])
		}
	}
	_, err = ParsePlacements("a:nowhere,b,c:header:x:y")
	for _, w := range []string{`unknown placement "nowhere"`, `"b"`, `"c:header:x:y"`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("ParsePlacements error %v does not mention %s", err, w)
		}
	}
	cfg := Config{RouteTopicRegex: "(", Additional: []Placement{{"a", InPartition, ""}, {"b", InPartition, ""}, {"c", InHeader, "id"}}}
	err = cfg.Validate()
	for _, w := range []string{"FieldEventID", "FieldPayload", "RouteTopicRegex", "at most one column", "reserved for the event id"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate error %v does not mention %s", err, w)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

// TestAppendJacksonString pins the string escapes of Jackson, which Kafka's
// JsonConverter writes with: short escapes for \b \f \n \r \t, no HTML
// escaping, and a character beyond the BMP as a surrogate pair (observed
// from Debezium 3.6.1 in test/reference).
func TestAppendJacksonString(t *testing.T) {
	for in, want := range map[string]string{
		"plain": `"plain"`, `a"b\c`: `"a\"b\\c"`, "tab\tnl\n": `"tab\tnl\n"`, "\b\f\r": `"\b\f\r"`,
		"\x01\x1f": `"\u0001\u001F"`, "<&>": `"<&>"`, "é": `"é"`, "\xff": "\"\uFFFD\"", "😀": `"\uD83D\uDE00"`,
	} {
		if got := string(appendJacksonString(nil, in)); got != want {
			t.Errorf("appendJacksonString(%q) = %s, want %s", in, got, want)
		}
	}
}

// FuzzRoute checks that any row either routes to a valid topic or fails with
// ErrRoute, and that envelopes are always valid JSON.
func FuzzRoute(f *testing.F) {
	f.Add("Order", "42", `{"a":1}`, "note", "3")
	f.Add("", "", "", "\x00\"", "x")
	f.Fuzz(func(t *testing.T, route, key, payload, note, tenant string) {
		cfg := DefaultConfig()
		cfg.FieldPayload = "note"
		cfg.ExpandJSONPayload = true
		cfg.Additional = []Placement{{"type", InEnvelope, ""}, {"tenant", InPartition, ""}, {"payload", InEnvelope, "p"}}
		r, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		plan, err := r.Compile(outboxCols)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := plan.Route(row("id", route, key, "t", payload, "note", note, "tenant", tenant), time.Now())
		if err != nil {
			if !errors.Is(err, ErrRoute) {
				t.Fatalf("error is not ErrRoute: %v", err)
			}
			return
		}
		if ValidTopic(rec.Topic) != nil {
			t.Fatalf("routed to invalid topic %q", rec.Topic)
		}
		if !bytes.HasPrefix(rec.Value, []byte(`{"payload":`)) {
			t.Fatalf("value %q is not an envelope", rec.Value)
		}
	})
}

func BenchmarkRoute(b *testing.B) {
	r, _ := New(DefaultConfig())
	plan, _ := r.Compile(outboxCols)
	vals := row("7f1c0d9e-8a3b-4c55-9d1e-2b3c4d5e6f70", "Order", "42", "OrderCreated", strings.Repeat(`{"k":"v"}`, 25))
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := plan.Route(vals, now); err != nil {
			b.Fatal(err)
		}
	}
}
