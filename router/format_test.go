package router

import (
	"strings"
	"testing"
	"time"
)

// The key and value formats, with the bytes Debezium 3.6.1 wrote through
// Kafka Connect's JsonConverter for the same rows (test/reference compares
// every record; these pin what it saw).
func TestFormats(t *testing.T) {
	cols := func(key, payload uint32, notNull bool) []Column {
		return []Column{{Name: "id", TypeOID: oidText}, {Name: "aggregatetype", TypeOID: oidText},
			{Name: "aggregateid", TypeOID: key, NotNull: notNull}, {Name: "payload", TypeOID: payload, NotNull: notNull}}
	}
	vals := func(key, payload []byte) [][]byte { return [][]byte{[]byte("1"), []byte("A"), key, payload} }
	tests := []struct {
		name       string
		key, value Format
		expand     bool
		keyOID     uint32
		payloadOID uint32
		notNull    bool
		row        [][]byte
		wantKey    *string // nil: a null key
		wantValue  *string // nil: a null value
	}{
		{"raw, as StringConverter", FormatRaw, FormatRaw, false, oidText, oidJSONB, false,
			vals([]byte("m-0"), []byte(`{"a": 1}`)), ptr("m-0"), ptr(`{"a": 1}`)},
		{"raw NULLs", FormatRaw, FormatRaw, false, oidText, oidJSONB, false, vals(nil, nil), nil, nil},
		{"json text key and jsonb payload are JSON strings", FormatJSON, FormatJSON, false, oidText, oidJSONB, false,
			vals([]byte("m-0"), []byte(`{"a": "😀"}`)), ptr(`"m-0"`), ptr(`"{\"a\": \"\uD83D\uDE00\"}"`)},
		{"json NULLs are null", FormatJSON, FormatJSON, false, oidText, oidText, false, vals(nil, nil), ptr("null"), ptr("null")},
		{"json bytea is base64", FormatJSON, FormatJSON, false, oidBytea, oidBytea, false,
			vals([]byte(`\x00ff`), []byte(`\x00ff80`)), ptr(`"AP8="`), ptr(`"AP+A"`)},
		{"json integer and boolean", FormatJSON, FormatJSON, false, oidInt8, oidBool, false,
			vals([]byte("-42"), []byte("t")), ptr("-42"), ptr("true")},
		{"json uuid and double", FormatJSON, FormatJSON, false, oidUUID, oidFloat8, false,
			vals([]byte("6f1c0a6e-0000-4000-8000-000000000001"), []byte("12.50")), ptr(`"6f1c0a6e-0000-4000-8000-000000000001"`), ptr("12.5")},
		{"json double NaN is a string", FormatJSON, FormatJSON, false, oidText, oidFloat8, false,
			vals([]byte("k"), []byte("NaN")), ptr(`"k"`), ptr(`"NaN"`)},
		{"json expands a document compactly", FormatRaw, FormatJSON, true, oidText, oidJSONB, false,
			vals([]byte("k"), []byte(`{"total": 12.50, "n": -0}`)), ptr("k"), ptr(`{"total":12.5,"n":0}`)},
		{"json expansion needs { or [ first", FormatRaw, FormatJSON, true, oidText, oidText, false,
			vals([]byte("k"), []byte(` {"a": 1}`)), ptr("k"), ptr(`" {\"a\": 1}"`)},
		{"json-schema nullable columns are optional", FormatJSONSchema, FormatJSONSchema, false, oidText, oidJSONB, false,
			vals([]byte("m-0"), []byte(`{"a":1}`)),
			ptr(`{"schema":{"type":"string","optional":true},"payload":"m-0"}`),
			ptr(`{"schema":{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1},"payload":"{\"a\":1}"}`)},
		{"json-schema NOT NULL columns are not optional", FormatJSONSchema, FormatJSONSchema, false, oidUUID, oidText, true,
			vals([]byte("6f1c0a6e-0000-4000-8000-000000000001"), []byte("x")),
			ptr(`{"schema":{"type":"string","optional":false,"name":"io.debezium.data.Uuid","version":1},"payload":"6f1c0a6e-0000-4000-8000-000000000001"}`),
			ptr(`{"schema":{"type":"string","optional":false},"payload":"x"}`)},
		{"json-schema NULLs", FormatJSONSchema, FormatJSONSchema, false, oidInt4, oidBytea, false, vals(nil, nil),
			ptr(`{"schema":{"type":"int32","optional":true},"payload":null}`),
			ptr(`{"schema":{"type":"bytes","optional":true},"payload":null}`)},
	}
	now := time.Unix(0, 0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.KeyFormat, cfg.ValueFormat, cfg.ExpandJSONPayload = tc.key, tc.value, tc.expand
			r, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := r.Compile(cols(tc.keyOID, tc.payloadOID, tc.notNull))
			if err != nil {
				t.Fatal(err)
			}
			rec, err := plan.Route(tc.row, now)
			if err != nil {
				t.Fatal(err)
			}
			check(t, "key", rec.Key, tc.wantKey)
			check(t, "value", rec.Value, tc.wantValue)
		})
	}
}

func ptr(s string) *string { return &s }

func check(t *testing.T, what string, got []byte, want *string) {
	t.Helper()
	switch {
	case want == nil && got != nil:
		t.Errorf("%s = %q, want null", what, got)
	case want != nil && got == nil:
		t.Errorf("%s = null, want %s", what, *want)
	case want != nil && string(got) != *want:
		t.Errorf("%s = %s\n want %s", what, got, *want)
	}
}

// A tombstone stays a null value in every format.
func TestFormatsKeepTombstones(t *testing.T) {
	for _, f := range Formats {
		cfg := DefaultConfig()
		cfg.ValueFormat, cfg.TombstoneOnEmptyPayload = f, true
		plan := textPlan(t, cfg)
		for _, p := range [][]byte{nil, []byte(""), []byte("  ")} {
			rec, err := plan.Route(textRow(p), time.Unix(0, 0))
			if err != nil || rec.Value != nil {
				t.Errorf("%s: payload %q gave value %q, %v; want a tombstone", f, p, rec.Value, err)
			}
		}
	}
}

func TestFormatsRefuseAtStart(t *testing.T) {
	bad := DefaultConfig()
	bad.KeyFormat, bad.ValueFormat, bad.ExpandJSONPayload = "avro", FormatJSONSchema, true
	bad.Additional = []Placement{{Column: "tenant", Where: InEnvelope}}
	err := bad.Validate()
	for _, w := range []string{`KeyFormat "avro"`, "cannot write an envelope", "cannot write an expanded JSON payload"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate() = %v, want it to mention %s", err, w)
		}
	}
	cfg := DefaultConfig()
	cfg.KeyFormat, cfg.ValueFormat = FormatJSON, FormatJSONSchema
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Compile([]Column{{Name: "id", TypeOID: oidText}, {Name: "aggregatetype", TypeOID: oidText},
		{Name: "aggregateid", TypeOID: oidNumeric}, {Name: "payload", TypeOID: oidTimestamptz}})
	for _, w := range []string{`"aggregateid" (FieldEventKey) is numeric`, `"payload" (FieldPayload) is timestamptz`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Compile() = %v, want it to mention %s", err, w)
		}
	}
}

// What Debezium 3.6.1 was seen to write for an expanded document with null
// members and empty arrays (test/reference, set-ups expand and keepnulls).
func TestExpansionDropsMembersAsDebeziumDoes(t *testing.T) {
	doc := `{"gone": null, "none": [], "kept": {"inner": null, "list": [1, null], "empty": {}}, "emptied": {"n": null}, "x": 1}`
	for behavior, want := range map[string]string{
		BehaviorIgnore:        `{"kept":{"list":[1,null],"empty":{}},"emptied":{},"x":1}`,
		"":                    `{"kept":{"list":[1,null],"empty":{}},"emptied":{},"x":1}`,
		BehaviorOptionalBytes: `{"gone":null,"kept":{"inner":null,"list":[1,null],"empty":{}},"emptied":{"n":null},"x":1}`,
	} {
		cfg := DefaultConfig()
		cfg.ValueFormat, cfg.ExpandJSONPayload, cfg.JSONPayloadNullBehavior = FormatJSON, true, behavior
		rec, err := textPlan(t, cfg).Route(textRow([]byte(doc)), time.Unix(0, 0))
		if err != nil || string(rec.Value) != want {
			t.Errorf("null behavior %q: value %s, %v; want %s", behavior, rec.Value, err, want)
		}
	}
	bad := DefaultConfig()
	bad.JSONPayloadNullBehavior = "drop"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), `JSONPayloadNullBehavior "drop"`) {
		t.Errorf("Validate() = %v, want it to refuse the behavior", err)
	}
}

// textPlan compiles cfg for a table of text columns id, aggregatetype,
// aggregateid and payload.
func textPlan(t *testing.T, cfg Config) *Plan {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := r.Compile([]Column{{Name: "id", TypeOID: oidText}, {Name: "aggregatetype", TypeOID: oidText},
		{Name: "aggregateid", TypeOID: oidText}, {Name: "payload", TypeOID: oidText}})
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

// textRow is a row of textPlan's table with the payload p.
func textRow(p []byte) [][]byte { return [][]byte{[]byte("1"), []byte("A"), []byte("k"), p} }
