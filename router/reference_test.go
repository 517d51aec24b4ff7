package router

import (
	"testing"
	"time"
)

// Cases where Debezium 3.6 itself (test/reference) showed what its router
// does, beyond its documentation.
func TestRouteAsDebeziumDoes(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cols := func(payload uint32) []Column {
		return []Column{{Name: "id", TypeOID: oidText}, {Name: "aggregatetype", TypeOID: oidText}, {Name: "aggregateid", TypeOID: oidText}, {Name: "payload", TypeOID: payload}, {Name: "tenant", TypeOID: oidText}}
	}
	vals := func(payload, tenant []byte) [][]byte {
		return [][]byte{[]byte("1"), []byte("A"), []byte("k"), payload, tenant}
	}
	tests := []struct {
		name     string
		cfg      func(*Config)
		payload  uint32
		values   [][]byte
		value    string
		nilValue bool
		headers  []Header
	}{
		{
			name:    "a NULL header column is a header with a null value",
			cfg:     func(c *Config) { c.Additional = []Placement{{"tenant", InHeader, ""}} },
			payload: oidText, values: vals([]byte("x"), nil), value: "x",
			headers: []Header{{Key: "id", Value: []byte("1")}, {Key: "tenant"}},
		},
		{
			name:    "a white-space payload is empty: a tombstone",
			cfg:     func(c *Config) { c.TombstoneOnEmptyPayload = true },
			payload: oidText, values: vals([]byte(" \t\r\n "), nil), nilValue: true,
			headers: []Header{{Key: "id", Value: []byte("1")}},
		},
		{
			name:    "white space is kept without tombstones",
			payload: oidText, values: vals([]byte(" \t "), nil), value: " \t ",
			headers: []Header{{Key: "id", Value: []byte("1")}},
		},
		{
			name:    "an empty bytea payload is no tombstone",
			cfg:     func(c *Config) { c.TombstoneOnEmptyPayload = true },
			payload: oidBytea, values: vals([]byte(`\x`), nil), value: "",
			headers: []Header{{Key: "id", Value: []byte("1")}},
		},
		{
			name: "a JSON payload after white space is not expanded",
			cfg: func(c *Config) {
				c.ExpandJSONPayload = true
				c.Additional = []Placement{{"tenant", InEnvelope, ""}}
			},
			payload: oidText, values: vals([]byte(` {"a":1}`), []byte("t")), value: `{"payload":" {\"a\":1}","tenant":"t"}`,
			headers: []Header{{Key: "id", Value: []byte("1")}},
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
			plan, err := r.Compile(cols(tc.payload))
			if err != nil {
				t.Fatal(err)
			}
			rec, err := plan.Route(tc.values, now)
			if err != nil {
				t.Fatal(err)
			}
			if (rec.Value == nil) != tc.nilValue || string(rec.Value) != tc.value {
				t.Errorf("value = %q (nil %v), want %q (nil %v)", rec.Value, rec.Value == nil, tc.value, tc.nilValue)
			}
			if len(rec.Headers) != len(tc.headers) {
				t.Fatalf("headers = %q, want %q", rec.Headers, tc.headers)
			}
			for i, h := range tc.headers {
				got := rec.Headers[i]
				if got.Key != h.Key || string(got.Value) != string(h.Value) || (got.Value == nil) != (h.Value == nil) {
					t.Errorf("header %d = %q:%q (nil %v), want %q:%q (nil %v)", i, got.Key, got.Value, got.Value == nil, h.Key, h.Value, h.Value == nil)
				}
			}
		})
	}
}

// An envelope's payload, as Debezium 3.6 with JsonConverter
// (schemas.enable=false) wrote it in test/reference.
func TestEnvelopePayloadAsDebeziumWritesIt(t *testing.T) {
	tests := []struct {
		name   string
		oid    uint32
		expand bool
		raw    string
		want   string
	}{
		{"jsonb unexpanded is a string", oidJSONB, false, `{"a": 1}`, `"{\"a\": 1}"`},
		{"text unexpanded is a string", oidText, false, `{"a": 1}`, `"{\"a\": 1}"`},
		{"expanded object is compact", oidJSONB, true,
			`{"orderId": 1, "items": [{"sku": "A-1", "qty": 2}], "total": 12.50}`,
			`{"orderId":1,"items":[{"sku":"A-1","qty":2}],"total":12.5}`},
		{"expanded numbers are Java's", oidJSON, true,
			`{"float": 1.0e+2, "neg": -0, "nested": {"a": [true, false]}}`,
			`{"float":100.0,"neg":0,"nested":{"a":[true,false]}}`},
		{"expanded strings are re-escaped", oidText, true,
			"{\"note\": \"caf\\u00e9 \\\"q\\\" b\\\\s\\nn\", \"emoji\": \"😀\", \"html\": \"<a&b>\", \"c\": \"\\u0001\"}",
			`{"note":"café \"q\" b\\s\nn","emoji":"\uD83D\uDE00","html":"<a&b>","c":"\u0001"}`},
		{"white space first: not expanded", oidJSON, true, ` {"lead": "space"}`, `" {\"lead\": \"space\"}"`},
		{"a scalar is not expanded", oidJSONB, true, `42`, `"42"`},
		{"a string scalar is not expanded", oidJSONB, true, `"s"`, `"\"s\""`},
		{"invalid JSON is not expanded", oidText, true, `{nope`, `"{nope"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ExpandJSONPayload = tc.expand
			cfg.Additional = []Placement{{"tenant", InEnvelope, ""}}
			r, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := r.Compile([]Column{{Name: "id", TypeOID: oidText}, {Name: "aggregatetype", TypeOID: oidText}, {Name: "aggregateid", TypeOID: oidText}, {Name: "payload", TypeOID: tc.oid}, {Name: "tenant", TypeOID: oidText}})
			if err != nil {
				t.Fatal(err)
			}
			rec, err := plan.Route([][]byte{[]byte("1"), []byte("A"), []byte("k"), []byte(tc.raw), nil}, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if want := `{"payload":` + tc.want + `,"tenant":null}`; string(rec.Value) != want {
				t.Errorf("value = %s, want %s", rec.Value, want)
			}
		})
	}
}

func TestAppendJavaDouble(t *testing.T) {
	for f, want := range map[float64]string{
		12.5: "12.5", 100: "100.0", 0: "0.0", -1.25: "-1.25", 1e7: "1.0E7", 1.5e-4: "1.5E-4",
		0.001: "0.001", 123456.789: "123456.789", 9999999.5: "9999999.5", 2.5e20: "2.5E20",
	} {
		if got := string(appendJavaDouble(nil, f)); got != want {
			t.Errorf("appendJavaDouble(%v) = %s, want %s", f, got, want)
		}
	}
}
