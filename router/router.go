// Package router turns an outbox row into the Kafka record Debezium's Outbox
// Event Router would produce for it.
//
// The package is pure: it knows nothing of PostgreSQL connections or Kafka
// clients. Column values arrive in PostgreSQL's text output format, as
// pgoutput sends them (a nil slice is SQL NULL); the caller must run the
// session with DateStyle ISO, TimeZone UTC and bytea_output hex.
//
// A Router is built once from a Config. Each time the table's definition is
// announced (a pgoutput Relation message), Compile resolves the configured
// columns by name into a Plan; Plan.Route then works by position, with no
// per-event lookups.
package router

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// PostgreSQL type OIDs the router treats specially.
const (
	oidBool        = 16
	oidBytea       = 17
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidVarchar     = 1043
	oidBpchar      = 1042
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidNumeric     = 1700
	oidJSONB       = 3802
)

// Column describes one column of the outbox table.
type Column struct {
	Name    string
	TypeOID uint32
	// TypMod is the type modifier as PostgreSQL reports it (atttypmod): for
	// timestamp and timestamptz the fractional-second digits, -1 when the
	// type has none. Envelope fields of those types are written with it.
	TypMod int32
	// NotNull is the column's NOT NULL constraint. Only the json-schema
	// format reads it: the schema marks a nullable column optional.
	NotNull bool
}

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is what the router produces for one outbox row.
type Record struct {
	Topic string
	// Key is the key column's value; nil when it is NULL.
	Key []byte
	// Value is the payload (or the envelope); nil is a tombstone.
	Value   []byte
	Headers []Header
	// Partition is the partition chosen by a partition placement, or -1 to
	// let the producer hash the key.
	Partition int32
	Timestamp time.Time
	// EventID is the event id as text, for error messages.
	EventID string
	// Trace is the trace context stored with the event; when valid, Headers
	// carries it first, as "traceparent" and "tracestate".
	Trace TraceContext
}

// Size is the record's approximate footprint in bytes.
func (r *Record) Size() int64 {
	n := len(r.Topic) + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return int64(n)
}

// ErrRoute marks an outbox row that cannot become a record (a NULL route
// value, an invalid topic, an unparsable timestamp or partition). Retrying
// the same row gives the same error.
var ErrRoute = errors.New("routing outbox event")

// Router routes rows according to a validated Config.
type Router struct {
	cfg   Config
	regex *regexp.Regexp
	allow *regexp.Regexp // nil: every valid topic
}

// New validates cfg and returns a Router.
func New(cfg Config) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	re, err := regexp.Compile("^(?:" + cfg.RouteTopicRegex + ")$")
	if err != nil {
		return nil, fmt.Errorf("compiling route-topic-regex: %w", err)
	}
	r := &Router{cfg: cfg, regex: re}
	if cfg.RouteTopicAllow != "" {
		if r.allow, err = regexp.Compile("^(?:" + cfg.RouteTopicAllow + ")$"); err != nil {
			return nil, fmt.Errorf("compiling RouteTopicAllow: %w", err)
		}
	}
	return r, nil
}

type field struct {
	idx     int
	oid     uint32
	typmod  int32
	notNull bool
}

type placed struct {
	field
	p Placement
}

// Plan routes rows of one table definition. It caches topics and is not safe
// for concurrent use.
type Plan struct {
	r                           *Router
	id, key, payload, route, ts field
	headers, envelope           []placed
	partition                   *placed
	trace                       *tracePlan // nil: the table has no trace-context column
	ncols                       int
	topics                      map[string]string
}

const topicCacheSize = 4096

// Compile resolves the configured columns in a table definition, reporting
// every missing column or unusable type at once.
func (r *Router) Compile(cols []Column) (*Plan, error) {
	byName := make(map[string]field, len(cols))
	for i, c := range cols {
		byName[c.Name] = field{idx: i, oid: c.TypeOID, typmod: c.TypMod, notNull: c.NotNull}
	}
	var errs []error
	lookup := func(name, option string) field {
		f, ok := byName[name]
		if !ok {
			errs = append(errs, fmt.Errorf("column %q (%s) is not in the table", name, option))
			return field{idx: -1}
		}
		return f
	}
	p := &Plan{r: r, ncols: len(cols), topics: make(map[string]string), ts: field{idx: -1}}
	p.id = lookup(r.cfg.FieldEventID, "FieldEventID")
	p.key = lookup(r.cfg.FieldEventKey, "FieldEventKey")
	p.payload = lookup(r.cfg.FieldPayload, "FieldPayload")
	p.route = lookup(r.cfg.RouteByField, "RouteByField")
	for _, err := range []error{
		checkFormat(r.cfg.KeyFormat, r.cfg.FieldEventKey, "FieldEventKey", p.key.oid),
		checkFormat(r.cfg.ValueFormat, r.cfg.FieldPayload, "FieldPayload", p.payload.oid),
	} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if r.cfg.FieldEventTimestamp != "" {
		p.ts = lookup(r.cfg.FieldEventTimestamp, "FieldEventTimestamp")
		switch p.ts.oid {
		case 0, oidTimestamp, oidTimestamptz, oidInt8, oidInt4:
		default:
			errs = append(errs, fmt.Errorf("column %q (FieldEventTimestamp) must be timestamp, timestamptz or an epoch-milliseconds integer, not %s", r.cfg.FieldEventTimestamp, typeName(p.ts.oid)))
		}
	}
	for _, pl := range r.cfg.Additional {
		f := lookup(pl.Column, "Additional")
		entry := placed{field: f, p: pl}
		switch pl.Where {
		case InHeader:
			p.headers = append(p.headers, entry)
		case InEnvelope:
			p.envelope = append(p.envelope, entry)
		case InPartition:
			switch f.oid {
			case 0, oidInt2, oidInt4, oidInt8:
			default:
				errs = append(errs, fmt.Errorf("column %q (partition placement, Additional) must be an integer type (smallint, integer or bigint), not %s", pl.Column, typeName(f.oid)))
			}
			p.partition = &entry
		}
	}
	p.trace = r.compileTrace(byName)
	if len(errs) > 0 {
		return nil, fmt.Errorf("compiling the outbox table definition: %w", errors.Join(errs...))
	}
	return p, nil
}

// Route builds the record for one row. values holds one text-format value per
// column of the compiled definition, nil for NULL; now is the record
// timestamp when no timestamp column is configured. The record may share
// memory with values.
func (p *Plan) Route(values [][]byte, now time.Time) (Record, error) {
	if len(values) != p.ncols {
		return Record{}, fmt.Errorf("%w: row has %d columns, table definition has %d", ErrRoute, len(values), p.ncols)
	}
	rec := Record{Partition: -1, Timestamp: now}
	if p.trace != nil {
		rec.Trace = p.trace.route(values)
		rec.Headers = rec.Trace.appendHeaders(make([]Header, 0, 3+len(p.headers)))
	}
	if id := values[p.id.idx]; id != nil {
		idv, err := decodeText(id, p.id.oid)
		if err != nil {
			return Record{}, p.fail(rec, "decoding %s: %v", p.r.cfg.FieldEventID, err)
		}
		rec.EventID = string(id)
		if rec.Headers == nil {
			rec.Headers = make([]Header, 0, 1+len(p.headers))
		}
		rec.Headers = append(rec.Headers, Header{Key: "id", Value: idv})
	}
	route := values[p.route.idx]
	if route == nil {
		return Record{}, p.fail(rec, "route-by column %q is NULL", p.r.cfg.RouteByField)
	}
	topic, err := p.topic(route)
	if err != nil {
		return Record{}, p.fail(rec, "%v", err)
	}
	rec.Topic = topic
	if rec.Key, err = p.keyBytes(values[p.key.idx]); err != nil {
		return Record{}, p.fail(rec, "decoding key column %q: %v", p.r.cfg.FieldEventKey, err)
	}
	if err := p.value(&rec, values); err != nil {
		return Record{}, err
	}
	for _, h := range p.headers {
		v := values[h.idx]
		if v == nil {
			// Debezium adds the header with a null value.
			rec.Headers = append(rec.Headers, Header{Key: h.p.Name()})
			continue
		}
		hv, err := decodeText(v, h.oid)
		if err != nil {
			return Record{}, p.fail(rec, "decoding header column %q: %v", h.p.Column, err)
		}
		rec.Headers = append(rec.Headers, Header{Key: h.p.Name(), Value: hv})
	}
	if p.partition != nil {
		v := values[p.partition.idx]
		n, err := strconv.ParseInt(string(v), 10, 32)
		if v == nil || err != nil || n < 0 {
			return Record{}, p.fail(rec, "partition column %q holds %q, want a non-negative integer", p.partition.p.Column, v)
		}
		rec.Partition = int32(n)
	}
	if p.ts.idx >= 0 {
		v := values[p.ts.idx]
		if v != nil {
			if rec.Timestamp, err = parseTimestamp(v, p.ts.oid); err != nil {
				return Record{}, p.fail(rec, "timestamp column %q: %v", p.r.cfg.FieldEventTimestamp, err)
			}
		}
	}
	return rec, nil
}

// Describe returns, as best it can, the event id, key and payload of a row
// that failed to route, for a dead-letter record.
func (p *Plan) Describe(values [][]byte) (id string, key, payload []byte) {
	if len(values) != p.ncols {
		return "", nil, nil
	}
	id = string(values[p.id.idx])
	key, _ = decodeText(values[p.key.idx], p.key.oid)
	payload, _ = decodeText(values[p.payload.idx], p.payload.oid)
	return id, key, payload
}

func (p *Plan) fail(rec Record, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if rec.EventID != "" {
		return fmt.Errorf("%w %s: %s", ErrRoute, rec.EventID, msg)
	}
	return fmt.Errorf("%w: %s", ErrRoute, msg)
}

// keyBytes writes the key column's value in the key format.
func (p *Plan) keyBytes(k []byte) ([]byte, error) {
	f := p.r.cfg.KeyFormat
	if f == "" || f == FormatRaw {
		if k == nil {
			return nil, nil
		}
		return decodeText(k, p.key.oid)
	}
	if _, err := decodeText(k, p.key.oid); k != nil && err != nil {
		return nil, err
	}
	return appendConnectJSON(make([]byte, 0, len(k)+8), f, k, p.key.oid, !p.key.notNull), nil
}

func (p *Plan) value(rec *Record, values [][]byte) error {
	raw := values[p.payload.idx]
	if p.r.cfg.TombstoneOnEmptyPayload && p.empty(raw) {
		return nil // tombstone
	}
	rawFormat := p.r.cfg.ValueFormat == "" || p.r.cfg.ValueFormat == FormatRaw
	if raw == nil && len(p.envelope) == 0 && rawFormat {
		return nil // a NULL payload is a null value, as with Debezium
	}
	var payload []byte
	if raw != nil {
		var err error
		if payload, err = decodeText(raw, p.payload.oid); err != nil {
			return p.fail(*rec, "decoding payload column %q: %v", p.r.cfg.FieldPayload, err)
		}
	}
	if len(p.envelope) == 0 {
		rec.Value = p.plainValue(raw, payload)
		return nil
	}
	buf := make([]byte, 0, len(raw)+64)
	buf = append(buf, `{"payload":`...)
	buf = p.appendPayloadJSON(buf, raw, payload)
	for _, e := range p.envelope {
		buf = append(buf, ',')
		buf = appendJacksonString(buf, e.p.Name())
		buf = append(buf, ':')
		buf = appendEnvelopeField(buf, values[e.idx], e.field)
	}
	rec.Value = append(buf, '}')
	return nil
}

// plainValue writes a payload that has no envelope in the value format: as
// it is (raw), or as JsonConverter writes it, an expanded JSON document
// compactly.
func (p *Plan) plainValue(raw, payload []byte) []byte {
	switch p.r.cfg.ValueFormat {
	case FormatJSON:
		if isText(p.payload.oid) || p.payload.oid == oidJSON || p.payload.oid == oidJSONB {
			return p.appendPayloadJSON(make([]byte, 0, len(raw)+16), raw, payload)
		}
		return appendConnectValue(make([]byte, 0, len(raw)+16), raw, p.payload.oid)
	case FormatJSONSchema:
		return appendConnectJSON(make([]byte, 0, len(raw)+96), FormatJSONSchema, raw, p.payload.oid, !p.payload.notNull)
	}
	return payload
}

// empty reports whether a payload is one Debezium's router calls empty: SQL
// NULL, or a value whose text is empty once Java's String.trim() removed
// every leading and trailing character up to U+0020. A bytea payload reaches
// the router as a byte buffer, whose text form is never empty.
func (p *Plan) empty(raw []byte) bool {
	if raw == nil {
		return true
	}
	if p.payload.oid == oidBytea {
		return false
	}
	for _, c := range raw {
		if c > ' ' {
			return false
		}
	}
	return true
}

// appendPayloadJSON writes the envelope's payload field as Debezium's
// JsonConverter does: Debezium carries text, json and jsonb columns as
// strings, so such a payload is a JSON string unless it is expanded; an
// expanded one is written compactly (see appendCompactJSON).
func (p *Plan) appendPayloadJSON(buf, raw, decoded []byte) []byte {
	switch {
	case raw == nil:
		return append(buf, "null"...)
	case p.payload.oid == oidBytea:
		return appendJacksonString(buf, base64.StdEncoding.EncodeToString(decoded))
	case !isText(p.payload.oid) && p.payload.oid != oidJSON && p.payload.oid != oidJSONB:
		return appendEnvelopeField(buf, raw, p.payload)
	}
	// Debezium expands a payload that starts with '{' or '[' exactly: no
	// white space before it.
	if p.r.cfg.ExpandJSONPayload && len(raw) > 0 && (raw[0] == '{' || raw[0] == '[') {
		drop := dropMembers{nulls: p.r.cfg.JSONPayloadNullBehavior != BehaviorOptionalBytes, emptyArrays: true}
		if out, err := appendCompactJSON(buf, raw, drop); err == nil {
			return out
		}
	}
	return appendJacksonString(buf, string(raw))
}

// Topic returns the topic of a row whose route-by column holds route (in
// text format, nil for NULL), as Route would choose it, or an ErrRoute
// error: a NULL route value, or a topic that is invalid or not allowed.
func (p *Plan) Topic(route []byte) (string, error) {
	if route == nil {
		return "", p.fail(Record{}, "route-by column %q is NULL", p.r.cfg.RouteByField)
	}
	t, err := p.topic(route)
	if err != nil {
		return "", p.fail(Record{}, "%v", err)
	}
	return t, nil
}

func (p *Plan) topic(route []byte) (string, error) {
	if t, ok := p.topics[string(route)]; ok {
		return t, nil
	}
	value := string(route)
	topic := value
	if m := p.r.regex.FindStringSubmatchIndex(value); m != nil {
		topic = string(p.r.regex.ExpandString(nil, p.r.cfg.RouteTopicReplacement, value, m))
	}
	if err := ValidTopic(topic); err != nil {
		return "", fmt.Errorf("route value %q gives topic %q: %w", value, topic, err)
	}
	if p.r.allow != nil && !p.r.allow.MatchString(topic) {
		return "", fmt.Errorf("route value %q gives topic %q, which RouteTopicAllow %q does not allow", value, topic, p.r.cfg.RouteTopicAllow)
	}
	if len(p.topics) >= topicCacheSize {
		clear(p.topics)
	}
	p.topics[value] = topic
	return topic, nil
}

// ValidTopic applies Kafka's topic naming rules: 1 to 249 characters from
// [a-zA-Z0-9._-], and not "." or "..".
func ValidTopic(t string) error {
	switch {
	case t == "":
		return errors.New("topic name is empty")
	case t == "." || t == "..":
		return fmt.Errorf("topic name %q is not allowed", t)
	case len(t) > 249:
		return fmt.Errorf("topic name is %d characters long, Kafka allows 249", len(t))
	}
	for _, c := range t {
		if !topicChar(c) {
			return fmt.Errorf("topic name has the character %q; Kafka allows only [a-zA-Z0-9._-]", c)
		}
	}
	return nil
}

func topicChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

var typeNames = map[uint32]string{
	oidBool: "boolean", oidBytea: "bytea", oidInt8: "bigint", oidInt2: "smallint", oidInt4: "integer",
	oidText: "text", oidJSON: "json", oidFloat4: "real", oidFloat8: "double precision", oidVarchar: "varchar",
	oidBpchar: "char", oidTimestamp: "timestamp", oidTimestamptz: "timestamptz", oidNumeric: "numeric", oidJSONB: "jsonb",
}

// typeName names a column type for error messages.
func typeName(oid uint32) string {
	if n, ok := typeNames[oid]; ok {
		return fmt.Sprintf("%s (type OID %d)", n, oid)
	}
	return fmt.Sprintf("type OID %d", oid)
}

func isText(oid uint32) bool {
	return oid == oidText || oid == oidVarchar || oid == oidBpchar
}

// decodeText returns the bytes a value stands for: bytea's hex form is
// decoded to raw bytes, every other type is its text form unchanged.
func decodeText(v []byte, oid uint32) ([]byte, error) {
	if oid != oidBytea {
		return v, nil
	}
	if len(v) < 2 || v[0] != '\\' || v[1] != 'x' {
		return nil, errors.New("bytea value is not in hex format (set bytea_output = hex)")
	}
	out := make([]byte, hex.DecodedLen(len(v)-2))
	if _, err := hex.Decode(out, v[2:]); err != nil {
		return nil, fmt.Errorf("bytea value: %w", err)
	}
	return out, nil
}

var timestampLayouts = []string{
	"2006-01-02 15:04:05.999999999Z07:00:00",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z07",
}

// parseTimestamp reads a timestamp, timestamptz (ISO DateStyle) or epoch
// milliseconds integer.
func parseTimestamp(v []byte, oid uint32) (time.Time, error) {
	s := string(v)
	switch oid {
	case oidInt8, oidInt4:
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("epoch milliseconds %q: %w", s, err)
		}
		return time.UnixMilli(ms).UTC(), nil
	case oidTimestamp:
		t, err := time.Parse("2006-01-02 15:04:05.999999999", s)
		if err != nil {
			return time.Time{}, fmt.Errorf("timestamp %q (DateStyle must be ISO): %w", s, err)
		}
		return t, nil
	}
	for _, layout := range timestampLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("timestamptz %q is not in ISO format (DateStyle must be ISO)", s)
}
