package router

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

// A replacement that refers to a group the regex lacks expands to nothing
// (every event would go to "outbox."); Validate refuses it at start.
func TestValidateReplacementReferences(t *testing.T) {
	tests := []struct {
		name, regex, replacement string
		want                     []string // empty: valid
	}{
		{"debezium default", "(?<routedByValue>.*)", "outbox.event.${routedByValue}", nil},
		{"unbraced name", "(?<routedByValue>.*)", "outbox.$routedByValue", nil},
		{"numbered group", `(.*)-v\d+`, "evt.$1", nil},
		{"braced number", `(.*)-v\d+`, "evt.${1}.x", nil},
		{"whole match", `.*`, "evt.$0", nil},
		{"no reference", ".*", "all.events", nil},
		{"unknown name", "(?<routedByValue>.*)", "outbox.${nosuchgroup}", []string{"${nosuchgroup} names no group", "${routedByValue} or ${1}"}},
		{"unknown unbraced name", "(?<routedByValue>.*)", "outbox.$nosuch", []string{"$nosuch names no group"}},
		{"number beyond the groups", `(.*)`, "evt.${2}", []string{"${2} names no group"}},
		{"no groups at all", `.*`, "evt.$1", []string{"$1 names no group", "${0} is the whole value"}},
		{"digits followed by letters", `(.*)`, "evt.$1x", []string{"$1x names no group", "write ${1}x"}},
		{"leading zero", `(.*)`, "evt.${01}", []string{"${01} names no group"}},
		{"every problem", "(?<a>.*)", "${b}.${c}", []string{"${b} names", "${c} names"}},
		{"literal dollar", ".*", "cost$$", []string{`holds '$'`}},
		{"unclosed brace", "(?<a>.*)", "x.${a", []string{`holds '$'`}},
		{"invalid literal", "(?<a>.*)", "events/${a}", []string{`holds '/'`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.RouteTopicRegex, cfg.RouteTopicReplacement = tc.regex, tc.replacement
			err := cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error mentioning %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to mention %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), "RouteTopicReplacement") {
				t.Errorf("Validate() = %v, want it to name the RouteTopicReplacement field", err)
			}
		})
	}
}

// checkReplacement reads templates as regexp.Expand does: whenever it
// accepts one, expanding it with every group matched yields nothing but
// characters Kafka allows (no '$' that Expand kept as text).
func FuzzCheckReplacement(f *testing.F) {
	f.Add(`(?<a>x)(y)`, "t.${a}.$2.$$.${1}z.$a_b")
	f.Add(`(x)`, "${")
	f.Fuzz(func(t *testing.T, expr, tmpl string) {
		re, err := regexp.Compile(expr)
		if err != nil || len(checkReplacement(tmpl, re)) > 0 {
			return
		}
		match := make([]int, 2*(re.NumSubexp()+1)) // every group matches ""
		for _, c := range string(re.ExpandString(nil, tmpl, "", match)) {
			if !topicChar(c) {
				t.Fatalf("accepted %q for %q, but it expands with %q", tmpl, expr, c)
			}
		}
	})
}

// With RouteTopicAllow set, an event routed to any other topic is a routing
// error (a bad event, following --on-bad-event), and no topic is created for
// it; without it every valid topic is allowed, as with Debezium.
func TestRouteTopicAllow(t *testing.T) {
	tests := []struct {
		name, allow, route string
		topic              string // empty: refused
	}{
		{"off by default", "", "Anything", "outbox.event.Anything"},
		{"allowed", `outbox\.event\.(Order|Customer)`, "Order", "outbox.event.Order"},
		{"whole topic must match", `outbox\.event\.(Order|Customer)`, "OrderX", ""},
		{"prefix is not enough", `outbox\.event\.Order`, "Order2", ""},
		{"not in the list", `outbox\.event\.(Order|Customer)`, "Spam", ""},
		{"alternation is anchored as a whole", `outbox\.event\.Order|outbox\.event\.Customer`, "Customerx", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.RouteTopicAllow = tc.allow
			r, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := r.Compile(outboxCols)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 { // the second time from the topic cache
				rec, err := plan.Route(row("e1", tc.route, "1", "t", "{}"), time.Now())
				if topic, terr := plan.Topic([]byte(tc.route)); topic != rec.Topic || (terr == nil) != (err == nil) {
					t.Fatalf("Topic() = %q, %v; Route() = %q, %v", topic, terr, rec.Topic, err)
				}
				if tc.topic == "" {
					if !errors.Is(err, ErrRoute) || !strings.Contains(err.Error(), "RouteTopicAllow") {
						t.Fatalf("Route() = %q, %v; want ErrRoute naming RouteTopicAllow", rec.Topic, err)
					}
					continue
				}
				if err != nil || rec.Topic != tc.topic {
					t.Fatalf("Route() = %q, %v; want %q", rec.Topic, err, tc.topic)
				}
			}
		})
	}
	plan, err := textPlan(t, DefaultConfig()).Topic(nil)
	if !errors.Is(err, ErrRoute) {
		t.Errorf("Topic(NULL) = %q, %v; want ErrRoute", plan, err)
	}
	cfg := DefaultConfig()
	cfg.RouteTopicAllow = "("
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "RouteTopicAllow") {
		t.Errorf("Validate() with an invalid RouteTopicAllow = %v", err)
	}
}

// A partition placement on a column that is not an integer is refused when
// the table definition is compiled, naming the column's type.
func TestCompilePartitionPlacementType(t *testing.T) {
	tests := []struct {
		oid  uint32
		want string // empty: accepted
	}{
		{oidInt2, ""}, {oidInt4, ""}, {oidInt8, ""},
		{oidText, "not text (type OID 25)"},
		{oidNumeric, "not numeric"},
		{2950, "not type OID 2950"},
	}
	for _, tc := range tests {
		cfg := DefaultConfig()
		cfg.Additional = []Placement{{"shard", InPartition, ""}}
		r, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Compile(append(outboxCols[:len(outboxCols):len(outboxCols)], Column{Name: "shard", TypeOID: tc.oid}))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("OID %d: %v", tc.oid, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("OID %d: err = %v, want %q", tc.oid, err, tc.want)
		}
	}
}
