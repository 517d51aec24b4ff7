package router

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

const (
	tp1 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tp2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	ts1 = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
)

func TestValidTraceParent(t *testing.T) {
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{tp1, true},
		{tp2, true},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-bring", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false}, // version 00 is 55 long
		{"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.extra", false},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false}, // upper case
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false},
		{"", false},
		{" " + tp1[1:], false},
	} {
		if err := ValidTraceParent([]byte(tc.v)); (err == nil) != tc.ok {
			t.Errorf("ValidTraceParent(%q) = %v, want ok=%v", tc.v, err, tc.ok)
		}
	}
}

func TestValidTraceState(t *testing.T) {
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{ts1, true},
		{"", true},
		{" , ,\t", true},
		{"congo=t61rcWkgMzE , rojo=00f067aa0ba902b7", true},
		{"tenant@system=v,0tenant@sys=v", true},
		{"a=b c", true},
		{"a=b ", true}, // the trailing space is optional white space
		{"a", false},
		{"A=b", false},
		{"a=", false},
		{"a=b=c", false},
		{"a=b,a=c", false},
		{"a@=b", false},
		{"a=\x01", false},
		{"a=é", false},
		{strings.Repeat("k=v,", 32) + "x=y", false},
	} {
		if err := ValidTraceState([]byte(tc.v)); (err == nil) != tc.ok {
			t.Errorf("ValidTraceState(%q) = %v, want ok=%v", tc.v, err, tc.ok)
		}
	}
	var many []string
	for i := range 32 {
		many = append(many, "k"+strings.Repeat("x", i)+"=v")
	}
	if err := ValidTraceState([]byte(strings.Join(many, ","))); err != nil {
		t.Errorf("32 members: %v", err)
	}
	if err := ValidTraceState([]byte(strings.Join(append(many, "z=1"), ","))); err == nil {
		t.Error("33 members were accepted")
	}
}

// quarkusContext is what Debezium's Quarkus outbox extension stores:
// Properties.store output, with '=' and ':' in values escaped.
const quarkusContext = "#Tue Dec 01 10:00:00 UTC 2026\r\ntraceparent=" + tp1 + "\r\ntracestate=rojo\\=00f067aa0ba902b7,congo\\=t61rcWkgMzE\r\n"

func TestParseProperties(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     map[string]string
	}{
		{"store output", quarkusContext, map[string]string{"traceparent": tp1, "tracestate": ts1}},
		{"separators", "a=1\nb:2\nc 3\nd = 4\ne\t:\t5\nf\n g=", map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "", "g": ""}},
		{"second separator is value", "a==1\nb: :2", map[string]string{"a": "=1", "b": ":2"}},
		{"comments and blanks", "# c\n! c\n\n   \n  # indented comment\nk=v", map[string]string{"k": "v"}},
		{"escaped key separators", `a\=b\:c\ d=1`, map[string]string{"a=b:c d": "1"}},
		{"escapes", `k=\t\n\r\f\\\q\u0041\u00e9`, map[string]string{"k": "\t\n\r\f\\qAé"}},
		{"surrogate pair", `k=\uD83D\uDE00`, map[string]string{"k": "😀"}},
		{"lone surrogate", `k=\uD83Dx`, map[string]string{"k": "\uFFFDx"}},
		{"continuation", "k=ab\\\n    cd\\\r\n\tef\nn=1", map[string]string{"k": "abcdef", "n": "1"}},
		{"continuation is not a comment", "k=a\\\n#b", map[string]string{"k": "a#b"}},
		{"comment does not continue", "#a\\\nk=v", map[string]string{"k": "v"}},
		{"even backslashes do not continue", "k=a\\\\\nn=1", map[string]string{"k": `a\`, "n": "1"}},
		{"continuation at the end", "k=a\\", map[string]string{"k": "a"}},
		{"cr line ends", "a=1\rb=2", map[string]string{"a": "1", "b": "2"}},
		{"last one wins", "k=1\nk=2", map[string]string{"k": "2"}},
		{"value keeps inner and trailing space", "k = a b ", map[string]string{"k": "a b "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseProperties(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%q = %q, want %q (all: %q)", k, got[k], v, got)
				}
			}
		})
	}
	for _, bad := range []string{`k=\u12`, `k=\u12g4`, `\uzzzz=1`} {
		if _, err := ParseProperties(bad); err == nil {
			t.Errorf("ParseProperties(%q) accepted a malformed escape", bad)
		}
	}
}

// storeProperties writes props as Java's Properties.store(Writer) does
// (without the date comment), for the round-trip fuzz test.
func storeProperties(props [][2]string) string {
	var b strings.Builder
	b.WriteString("#a comment\n")
	for _, kv := range props {
		b.WriteString(storeEscape(kv[0], true))
		b.WriteByte('=')
		b.WriteString(storeEscape(kv[1], false))
		b.WriteByte('\n')
	}
	return b.String()
}

func storeEscape(s string, key bool) string {
	var b strings.Builder
	for i, c := range s {
		switch {
		case c == ' ' && (i == 0 || key):
			b.WriteString(`\ `)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\f':
			b.WriteString(`\f`)
		case strings.ContainsRune(`=:#!\`, c):
			b.WriteByte('\\')
			b.WriteRune(c)
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}

func FuzzParseProperties(f *testing.F) {
	f.Add(quarkusContext, "k", "v")
	f.Add("a\\\n b", " lead", "x=y:z#!\\")
	f.Add(`\u00`, "\t", "\r\n")
	f.Fuzz(func(t *testing.T, text, key, value string) {
		_, _ = ParseProperties(text) // never panics
		if !utf8Clean(key) || !utf8Clean(value) {
			return
		}
		in := storeProperties([][2]string{{key, value}, {"traceparent", tp1}})
		got, err := ParseProperties(in)
		if err != nil {
			t.Fatalf("ParseProperties(%q): %v", in, err)
		}
		want := map[string]string{key: value, "traceparent": tp1}
		if key == "traceparent" {
			want[key] = tp1
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("ParseProperties(%q)[%q] = %q, want %q", in, k, got[k], v)
			}
		}
	})
}

func utf8Clean(s string) bool {
	for _, r := range s {
		if r == 0xFFFD {
			return false
		}
	}
	return true
}

var traceParentRE = regexp.MustCompile(`^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$`)

func FuzzValidTraceParent(f *testing.F) {
	for _, s := range []string{tp1, tp2, "ff" + tp1[2:], tp1 + "-x", "01" + tp1[2:] + "-x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m := traceParentRE.FindStringSubmatch(s)
		want := m != nil && m[1] != "ff" && !(m[1] == "00" && m[5] != "") &&
			strings.Trim(m[2], "0") != "" && strings.Trim(m[3], "0") != ""
		if err := ValidTraceParent([]byte(s)); (err == nil) != want {
			t.Fatalf("ValidTraceParent(%q) = %v, want ok=%v", s, err, want)
		}
		_ = ValidTraceState([]byte(s)) // never panics
	})
}

var traceCols = append(append([]Column(nil), outboxCols...),
	Column{Name: "traceparent", TypeOID: oidText}, Column{Name: "tracestate", TypeOID: oidVarchar},
	Column{Name: "tracingspancontext", TypeOID: oidText})

func traceRow(parent, state, spanContext string) [][]byte {
	r := row("7f1c0d9e-8a3b-4c55-9d1e-2b3c4d5e6f70", "Order", "42", "t", "{}")
	for _, v := range []string{parent, state, spanContext} {
		if v == "<null>" {
			r = append(r, nil)
		} else {
			r = append(r, []byte(v))
		}
	}
	return r
}

func TestRouteTraceContext(t *testing.T) {
	debezium := "#c\ntraceparent=" + tp2 + "\ntracestate=dbz\\=1\n"
	tests := []struct {
		name    string
		cfg     func(*Config)
		cols    []Column
		values  [][]byte
		headers []string // keys and values, in order
		dropped string   // a substring of Trace.Dropped; empty: none
	}{
		{name: "plain form", values: traceRow(tp1, ts1, "<null>"),
			headers: []string{"traceparent", tp1, "tracestate", ts1, "id", ""}},
		{name: "plain form without tracestate", values: traceRow(tp1, "<null>", "<null>"),
			headers: []string{"traceparent", tp1, "id", ""}},
		{name: "empty tracestate", values: traceRow(tp1, " ", "<null>"),
			headers: []string{"traceparent", tp1, "id", ""}},
		{name: "no context", values: traceRow("<null>", ts1, "<null>"), headers: []string{"id", ""}},
		{name: "invalid traceparent is dropped", values: traceRow("00-xyz", ts1, "<null>"),
			headers: []string{"id", ""}, dropped: `column "traceparent": traceparent "00-xyz" is 6 characters long`},
		{name: "invalid tracestate keeps the traceparent", values: traceRow(tp1, "a", "<null>"),
			headers: []string{"traceparent", tp1, "id", ""}, dropped: "tracestate column"},
		{name: "debezium form", values: traceRow("<null>", "<null>", debezium),
			headers: []string{"traceparent", tp2, "tracestate", "dbz=1", "id", ""}},
		{name: "debezium form as Quarkus stores it", values: traceRow("<null>", "<null>", quarkusContext),
			headers: []string{"traceparent", tp1, "tracestate", ts1, "id", ""}},
		{name: "plain form wins over debezium's", values: traceRow(tp1, "<null>", debezium),
			headers: []string{"traceparent", tp1, "id", ""}},
		{name: "debezium's when the plain one is invalid", values: traceRow("bad", ts1, debezium),
			headers: []string{"traceparent", tp2, "tracestate", "dbz=1", "id", ""}},
		{name: "both invalid", values: traceRow("bad", ts1, "x=1"),
			headers: []string{"id", ""}, dropped: `column "traceparent": traceparent "bad"`},
		{name: "debezium form without traceparent", values: traceRow("<null>", "<null>", "#only a comment"),
			headers: []string{"id", ""}, dropped: "holds no traceparent"},
		{name: "debezium form with a malformed escape", values: traceRow("<null>", "<null>", `traceparent=\u00`),
			headers: []string{"id", ""}, dropped: "malformed"},
		{name: "form turned off", cfg: func(c *Config) { c.FieldTraceParent, c.FieldTracingSpanContext = "", "" },
			values: traceRow(tp1, ts1, debezium), headers: []string{"id", ""}},
		{name: "renamed columns", cfg: func(c *Config) { c.FieldTraceParent, c.FieldTraceState = "tracestate", "traceparent" },
			values: traceRow(ts1, tp1, "<null>"), headers: []string{"traceparent", tp1, "tracestate", ts1, "id", ""}},
		{name: "a header placement writing traceparent keeps the record as it was",
			cfg:    func(c *Config) { c.Additional = []Placement{{"note", InHeader, "traceparent"}} },
			values: traceRow(tp1, ts1, debezium), headers: []string{"id", "", "traceparent", "x"}},
		{name: "char(n) padding and bytea", cols: append(append([]Column(nil), outboxCols...),
			Column{Name: "traceparent", TypeOID: oidBpchar}, Column{Name: "tracestate", TypeOID: oidBytea}),
			values:  append(row("7f1c0d9e-8a3b-4c55-9d1e-2b3c4d5e6f70", "Order", "42", "t", "{}"), []byte(tp1+"   "), []byte(`\x613d62`)),
			headers: []string{"traceparent", tp1, "tracestate", "a=b", "id", ""}},
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
				cols = traceCols
			}
			p, err := r.Compile(cols)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := p.Route(tc.values, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, h := range rec.Headers {
				v := string(h.Value)
				if h.Key == "id" {
					v = ""
				}
				got = append(got, h.Key, v)
			}
			if strings.Join(got, "|") != strings.Join(tc.headers, "|") {
				t.Errorf("headers %q, want %q", got, tc.headers)
			}
			if tc.dropped == "" && rec.Trace.Dropped != "" || !strings.Contains(rec.Trace.Dropped, tc.dropped) {
				t.Errorf("Dropped = %q, want %q", rec.Trace.Dropped, tc.dropped)
			}
		})
	}
}

func TestTraceColumnsAreOptional(t *testing.T) {
	r, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Compile(outboxCols)
	if err != nil {
		t.Fatalf("a table without trace columns: %v", err)
	}
	if p.trace != nil {
		t.Error("a table without trace columns got a trace plan")
	}
	for _, c := range DefaultConfig().Columns() {
		if strings.HasPrefix(c, "trac") {
			t.Errorf("Columns() requires %q", c)
		}
	}
	cfg := DefaultConfig()
	cfg.FieldTracingSpanContext = "traceparent"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "FieldTracingSpanContext") {
		t.Errorf("Validate with one column for two forms: %v", err)
	}
}

func BenchmarkRouteTrace(b *testing.B) {
	r, _ := New(DefaultConfig())
	p, _ := r.Compile(traceCols)
	vals := traceRow(tp1, ts1, "<null>")
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Route(vals, now); err != nil {
			b.Fatal(err)
		}
	}
}
