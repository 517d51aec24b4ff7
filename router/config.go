package router

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// Where a column listed in Config.Additional is placed in the record.
type Where string

const (
	// InHeader adds the column as a Kafka header named by the alias (or the
	// column name), its value as text.
	InHeader Where = "header"
	// InEnvelope turns the record value into {"payload": ..., alias: value}.
	InEnvelope Where = "envelope"
	// InPartition sends the record to the partition number held by the
	// column, which must be an integer type; the alias is ignored.
	InPartition Where = "partition"
)

// Placement is one entry of Debezium's table.fields.additional.placement.
type Placement struct {
	Column string
	Where  Where
	Alias  string // header or envelope field name; the column name when empty
}

// Name is the header or envelope field name the placement writes.
func (p Placement) Name() string {
	if p.Alias != "" {
		return p.Alias
	}
	return p.Column
}

// ParsePlacements parses Debezium's "column:placement[:alias]" list,
// comma-separated, reporting every malformed entry at once.
func ParsePlacements(s string) ([]Placement, error) {
	var out []Placement
	var errs []error
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		parts := strings.Split(item, ":")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" {
			errs = append(errs, fmt.Errorf("placement %q: want column:header|envelope|partition[:alias]", item))
			continue
		}
		p := Placement{Column: parts[0], Where: Where(parts[1])}
		if len(parts) == 3 {
			p.Alias = parts[2]
		}
		switch p.Where {
		case InHeader, InEnvelope, InPartition:
		default:
			errs = append(errs, fmt.Errorf("placement %q: unknown placement %q (want header, envelope or partition)", item, parts[1]))
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

// Config holds the Outbox Event Router options under Debezium's names and
// defaults, so a record routed here is the record Debezium would produce.
type Config struct {
	// FieldEventID is the column sent as the "id" header
	// (table.field.event.id, default "id").
	FieldEventID string
	// FieldEventKey is the column used as the record key
	// (table.field.event.key, default "aggregateid").
	FieldEventKey string
	// FieldPayload is the column used as the record value
	// (table.field.event.payload, default "payload").
	FieldPayload string
	// FieldEventTimestamp, when set, is the column holding the record
	// timestamp (timestamp, timestamptz or epoch milliseconds); when empty the
	// record carries the time the event was routed.
	FieldEventTimestamp string
	// FieldTraceParent and FieldTraceState name the columns holding a W3C
	// trace context stored with the event (defaults "traceparent" and
	// "tracestate"); the record then carries it as the headers of those
	// names, first among its headers, where OpenTelemetry's Kafka
	// instrumentation reads it. A table without the column is not an error,
	// and neither is an invalid value: the record goes without it and
	// TraceContext.Dropped says why. Empty turns the form off.
	FieldTraceParent string
	FieldTraceState  string
	// FieldTracingSpanContext names the column holding the trace context as
	// java.util.Properties text, as Debezium's Quarkus outbox extension
	// writes it (tracing.span.context.field, default "tracingspancontext");
	// its traceparent and tracestate keys become the same headers. When a
	// row holds both forms, a valid FieldTraceParent wins. Empty turns the
	// form off.
	FieldTracingSpanContext string
	// RouteByField is the column whose value selects the topic
	// (route.by.field, default "aggregatetype").
	RouteByField string
	// RouteTopicRegex must match the whole route-by value for the
	// replacement to apply (route.topic.regex, default
	// "(?<routedByValue>.*)"); when it does not match, the value itself is
	// the topic.
	RouteTopicRegex string
	// RouteTopicReplacement is the topic template; ${name} expands a named
	// group of RouteTopicRegex and $1 a numbered one (route.topic.replacement,
	// default "outbox.event.${routedByValue}"). Validate refuses a reference
	// to a group the regex does not have, which would expand to nothing.
	RouteTopicReplacement string
	// RouteTopicAllow, when set, is a regular expression every routed topic
	// must match as a whole; an event routed to any other topic is refused
	// with ErrRoute, like a NULL route value. Empty (the default, as with
	// Debezium) allows every valid topic name: then each distinct route value
	// a writer inserts creates a topic.
	RouteTopicAllow string
	// Additional lists extra columns and where they go
	// (table.fields.additional.placement).
	Additional []Placement
	// TombstoneOnEmptyPayload sends a NULL or empty payload as a tombstone,
	// a record with a null value (route.tombstone.on.empty.payload).
	TombstoneOnEmptyPayload bool
	// ExpandJSONPayload embeds a text, json or jsonb payload that starts
	// with '{' or '[' and holds valid JSON as JSON inside an envelope, written
	// compactly the way Debezium's expansion and JsonConverter write it;
	// otherwise such a payload is a JSON string there, as Debezium carries it
	// (table.expand.json.payload).
	ExpandJSONPayload bool
	// JSONPayloadNullBehavior is what expansion does with an object member
	// whose value is null, at any depth (table.json.payload.null.behavior):
	// "ignore" (the default, as Debezium's) leaves it out, "optional_bytes"
	// keeps it as null. A member whose value is an empty array is always left
	// out: Debezium 3.6.1 was seen to drop it with either setting.
	JSONPayloadNullBehavior string
	// KeyFormat is how the key is written (key.converter); the zero value
	// is FormatRaw.
	KeyFormat Format
	// ValueFormat is how a payload without envelope placements is written
	// (value.converter); the zero value is FormatRaw. An envelope is always
	// JSON, as JsonConverter writes it; FormatJSONSchema takes neither an
	// envelope nor JSON expansion.
	ValueFormat Format
}

// DefaultConfig returns Debezium's defaults.
func DefaultConfig() Config {
	return Config{
		FieldEventID:            "id",
		FieldEventKey:           "aggregateid",
		FieldPayload:            "payload",
		FieldTraceParent:        DefaultFieldTraceParent,
		FieldTraceState:         DefaultFieldTraceState,
		FieldTracingSpanContext: DefaultFieldTracingSpanContext,
		RouteByField:            "aggregatetype",
		RouteTopicRegex:         "(?<routedByValue>.*)",
		RouteTopicReplacement:   "outbox.event.${routedByValue}",
		JSONPayloadNullBehavior: BehaviorIgnore,
		KeyFormat:               FormatRaw,
		ValueFormat:             FormatRaw,
	}
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct{ name, val string }{
		{"FieldEventID", c.FieldEventID},
		{"FieldEventKey", c.FieldEventKey},
		{"FieldPayload", c.FieldPayload},
		{"RouteByField", c.RouteByField},
		{"RouteTopicReplacement", c.RouteTopicReplacement},
	} {
		if f.val == "" {
			errs = append(errs, fmt.Errorf("%s must not be empty", f.name))
		}
	}
	if re, err := regexp.Compile(c.RouteTopicRegex); err != nil {
		errs = append(errs, fmt.Errorf("RouteTopicRegex: %w", err))
	} else {
		errs = append(errs, checkReplacement(c.RouteTopicReplacement, re)...)
	}
	if _, err := regexp.Compile(c.RouteTopicAllow); err != nil {
		errs = append(errs, fmt.Errorf("RouteTopicAllow: %w", err))
	}
	seen := map[string]bool{}
	partitions := 0
	for _, p := range c.Additional {
		if p.Where == InPartition {
			partitions++
			continue
		}
		key := string(p.Where) + ":" + p.Name()
		if seen[key] {
			errs = append(errs, fmt.Errorf("Additional: %s %q is placed twice", p.Where, p.Name()))
		}
		seen[key] = true
		if p.Where == InHeader && p.Name() == "id" {
			errs = append(errs, fmt.Errorf("Additional: header %q is reserved for the event id", p.Name()))
		}
		if p.Where == InEnvelope && p.Name() == "payload" {
			errs = append(errs, fmt.Errorf("Additional: envelope field %q is reserved for the payload", p.Name()))
		}
	}
	errs = append(errs, c.validateFormats()...)
	if c.FieldTracingSpanContext != "" && (c.FieldTracingSpanContext == c.FieldTraceParent || c.FieldTracingSpanContext == c.FieldTraceState) {
		errs = append(errs, fmt.Errorf("FieldTracingSpanContext %q names the same column as FieldTraceParent or FieldTraceState", c.FieldTracingSpanContext))
	}
	if c.FieldTraceState != "" && c.FieldTraceState == c.FieldTraceParent {
		errs = append(errs, fmt.Errorf("FieldTraceState %q names the same column as FieldTraceParent", c.FieldTraceState))
	}
	if partitions > 1 {
		errs = append(errs, fmt.Errorf("Additional: at most one column may choose the partition, got %d", partitions))
	}
	return errors.Join(errs...)
}

// The values of JSONPayloadNullBehavior.
const (
	BehaviorIgnore        = "ignore"
	BehaviorOptionalBytes = "optional_bytes"
)

func (c Config) validateFormats() []error {
	var errs []error
	if b := c.JSONPayloadNullBehavior; b != "" && b != BehaviorIgnore && b != BehaviorOptionalBytes {
		errs = append(errs, fmt.Errorf("JSONPayloadNullBehavior %q: want %s or %s", b, BehaviorIgnore, BehaviorOptionalBytes))
	}
	for _, f := range []struct {
		name string
		f    Format
	}{{"KeyFormat", c.KeyFormat}, {"ValueFormat", c.ValueFormat}} {
		if f.f != "" && !f.f.valid() {
			errs = append(errs, fmt.Errorf("%s %q: want one of %v", f.name, f.f, Formats))
		}
	}
	if c.ValueFormat != FormatJSONSchema {
		return errs
	}
	for _, p := range c.Additional {
		if p.Where == InEnvelope {
			errs = append(errs, fmt.Errorf("ValueFormat %s cannot write an envelope (placement %s:envelope): its Kafka Connect struct schema is not implemented; use ValueFormat json", c.ValueFormat, p.Column))
			break
		}
	}
	if c.ExpandJSONPayload {
		errs = append(errs, fmt.Errorf("ValueFormat %s cannot write an expanded JSON payload: the schema Debezium infers from each document is not implemented; use ValueFormat json", c.ValueFormat))
	}
	return errs
}

// Columns lists every column the configuration reads, without duplicates, in
// a stable order: these must all exist in the outbox table. The trace-context
// columns are not among them: they are read when the table has them.
func (c Config) Columns() []string {
	var out []string
	add := func(s string) {
		if s == "" {
			return
		}
		for _, x := range out {
			if x == s {
				return
			}
		}
		out = append(out, s)
	}
	add(c.FieldEventID)
	add(c.FieldEventKey)
	add(c.RouteByField)
	add(c.FieldPayload)
	add(c.FieldEventTimestamp)
	for _, p := range c.Additional {
		add(p.Column)
	}
	return out
}

// checkReplacement reads a topic template the way regexp.Expand does and
// reports every reference to a group re does not have (Expand would put
// nothing in its place) and every character of the literal text that Kafka
// refuses in a topic name, a '$' that starts no reference included.
func checkReplacement(tmpl string, re *regexp.Regexp) []error {
	var errs []error
	var literal strings.Builder
	for rest := tmpl; rest != ""; {
		before, after, found := strings.Cut(rest, "$")
		literal.WriteString(before)
		if !found {
			break
		}
		ref, name, tail, ok := templateRef(after)
		switch {
		case !ok:
			literal.WriteByte('$') // Expand keeps a '$' that starts no reference, and "$$" is one
		case !hasGroup(re, name):
			errs = append(errs, fmt.Errorf("RouteTopicReplacement %q: %s names no group of RouteTopicRegex %q (%s)%s",
				tmpl, ref, re.String(), groupList(re), digitsHint(ref, name)))
		}
		rest = tail
	}
	for _, c := range literal.String() {
		if !topicChar(c) {
			errs = append(errs, fmt.Errorf("RouteTopicReplacement %q: its text holds %q, which Kafka refuses in topic names ($ starts a reference: ${name} or ${1})", tmpl, c))
			break
		}
	}
	return errs
}

// templateRef reads the reference after a '$' as regexp.Expand does: "$"
// (a literal dollar) is not one, "{name}" and "name" (letters, digits and
// underscores) are. It returns the reference as written, the name, and the
// rest of the template.
func templateRef(s string) (ref, name, rest string, ok bool) {
	if strings.HasPrefix(s, "$") {
		return "", "", s[1:], false
	}
	brace := strings.HasPrefix(s, "{")
	body := strings.TrimPrefix(s, "{")
	i := strings.IndexFunc(body, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '_' })
	if i < 0 {
		i = len(body)
	}
	if i == 0 || brace && (i == len(body) || body[i] != '}') {
		return "", "", s, false
	}
	name, rest = body[:i], body[i:]
	if brace {
		rest = rest[1:]
		return "${" + name + "}", name, rest, true
	}
	return "$" + name, name, rest, true
}

// hasGroup reports whether Expand finds the group a reference names: a
// number (no leading zero) up to NumSubexp, or a group name.
func hasGroup(re *regexp.Regexp, name string) bool {
	if n, err := strconv.Atoi(name); err == nil && (name == "0" || name[0] != '0') && n >= 0 {
		return n <= re.NumSubexp()
	}
	return re.SubexpIndex(name) >= 0
}

func groupList(re *regexp.Regexp) string {
	groups := []string{"${0} is the whole value"}
	for i, n := range re.SubexpNames()[1:] {
		g := fmt.Sprintf("${%d}", i+1)
		if n != "" {
			g = "${" + n + "} or " + g
		}
		groups = append(groups, g)
	}
	return "it has: " + strings.Join(groups, ", ")
}

// digitsHint explains "$1x", which Expand reads as a group named "1x".
func digitsHint(ref, name string) string {
	if ref[1] == '{' || name[0] < '0' || name[0] > '9' {
		return ""
	}
	i := strings.IndexFunc(name, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		return ""
	}
	return fmt.Sprintf("; %s is read as one name: write ${%s}%s for group %s followed by %q", ref, name[:i], name[i:], name[:i], name[i:])
}
