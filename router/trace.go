package router

import (
	"bytes"
	"fmt"
)

// The W3C Trace Context header names, which OpenTelemetry's Kafka
// instrumentation reads from a record.
const (
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)

// Default column names of the stored trace context.
const (
	DefaultFieldTraceParent        = "traceparent"
	DefaultFieldTraceState         = "tracestate"
	DefaultFieldTracingSpanContext = "tracingspancontext" // Debezium's tracing.span.context.field
)

// TraceContext is the W3C trace context stored with an event, as the router
// found it.
type TraceContext struct {
	// Parent is a valid traceparent, nil when the event has none.
	Parent []byte
	// State is the tracestate that goes with Parent, nil when none.
	State []byte
	// Dropped says why a stored trace context (or its tracestate) was left
	// out of the record; empty when nothing was.
	Dropped string
}

// tracePlan holds the positions of the trace-context columns the table has;
// -1 for one it lacks.
type tracePlan struct {
	parent, state, spanContext  field
	parentName, spanContextName string
}

// compileTrace finds the trace-context columns in a table definition. A
// missing one is not an error: most outbox tables have none. It returns nil
// when the table has none, or when a header placement already writes a
// trace header (the placement keeps the record as it was).
func (r *Router) compileTrace(byName map[string]field) *tracePlan {
	for _, pl := range r.cfg.Additional {
		if pl.Where == InHeader && (pl.Name() == HeaderTraceParent || pl.Name() == HeaderTraceState) {
			return nil
		}
	}
	find := func(name string) field {
		if f, ok := byName[name]; ok && name != "" {
			return f
		}
		return field{idx: -1}
	}
	t := &tracePlan{
		parent: find(r.cfg.FieldTraceParent), state: find(r.cfg.FieldTraceState),
		spanContext: find(r.cfg.FieldTracingSpanContext),
		parentName:  r.cfg.FieldTraceParent, spanContextName: r.cfg.FieldTracingSpanContext,
	}
	if t.parent.idx < 0 && t.spanContext.idx < 0 {
		return nil
	}
	return t
}

// route reads the stored trace context of a row. The plain columns win over
// Debezium's span-context column when they hold a valid traceparent; a
// tracestate always goes with the traceparent it was stored with.
func (t *tracePlan) route(values [][]byte) TraceContext {
	var tc TraceContext
	if t.parent.idx >= 0 && values[t.parent.idx] != nil {
		tc = t.plain(values)
		if tc.Parent != nil {
			return tc
		}
	}
	if t.spanContext.idx >= 0 && values[t.spanContext.idx] != nil {
		dropped := tc.Dropped
		tc = t.debezium(values[t.spanContext.idx])
		if tc.Parent != nil || dropped == "" {
			return tc
		}
		if tc.Dropped != "" {
			dropped += "; " + tc.Dropped
		}
		tc.Dropped = dropped
	}
	return tc
}

func (t *tracePlan) plain(values [][]byte) TraceContext {
	parent, err := textValue(values[t.parent.idx], t.parent.oid)
	if err == nil {
		err = ValidTraceParent(parent)
	}
	if err != nil {
		return TraceContext{Dropped: fmt.Sprintf("column %q: %v", t.parentName, err)}
	}
	tc := TraceContext{Parent: parent}
	if t.state.idx >= 0 && values[t.state.idx] != nil {
		state, err := textValue(values[t.state.idx], t.state.oid)
		if err == nil {
			err = ValidTraceState(state)
		}
		if err != nil {
			tc.Dropped = fmt.Sprintf("tracestate column: %v (the traceparent is kept)", err)
		} else if len(bytes.Trim(state, " \t")) > 0 {
			tc.State = state
		}
	}
	return tc
}

func (t *tracePlan) debezium(raw []byte) TraceContext {
	text, err := textValue(raw, t.spanContext.oid)
	if err != nil {
		return TraceContext{Dropped: fmt.Sprintf("column %q: %v", t.spanContextName, err)}
	}
	props, err := ParseProperties(string(text))
	if err != nil {
		return TraceContext{Dropped: fmt.Sprintf("column %q: %v", t.spanContextName, err)}
	}
	parent, ok := props[HeaderTraceParent]
	if !ok {
		return TraceContext{Dropped: fmt.Sprintf("column %q holds no traceparent", t.spanContextName)}
	}
	if err := ValidTraceParent([]byte(parent)); err != nil {
		return TraceContext{Dropped: fmt.Sprintf("column %q: %v", t.spanContextName, err)}
	}
	tc := TraceContext{Parent: []byte(parent)}
	if state, ok := props[HeaderTraceState]; ok {
		if err := ValidTraceState([]byte(state)); err != nil {
			tc.Dropped = fmt.Sprintf("column %q: tracestate: %v (the traceparent is kept)", t.spanContextName, err)
		} else if len(bytes.Trim([]byte(state), " \t")) > 0 {
			tc.State = []byte(state)
		}
	}
	return tc
}

// textValue is a trace column's text: bytea decoded, char(n)'s padding
// removed.
func textValue(v []byte, oid uint32) ([]byte, error) {
	if oid == oidBpchar {
		return bytes.TrimRight(v, " "), nil
	}
	return decodeText(v, oid)
}

// ValidTraceParent checks a traceparent header value against the W3C Trace
// Context recommendation: version-traceid-parentid-flags in lower-case hex,
// 2-32-16-2 digits, version ff invalid, trace and parent ids not all zeros.
// Version 00 is exactly 55 characters; a later version may append fields
// after a '-'.
func ValidTraceParent(v []byte) error {
	if len(v) < 55 {
		return fmt.Errorf("traceparent %q is %d characters long, want 55 (version-traceid-parentid-flags)", clip(string(v), 64), len(v))
	}
	version := v[0:2]
	for i, part := range [][]byte{version, v[3:35], v[36:52], v[53:55]} {
		if !lowerHex(part) {
			return fmt.Errorf("traceparent %q: %s is not lower-case hex", clip(string(v), 64), []string{"version", "trace id", "parent id", "flags"}[i])
		}
	}
	switch {
	case v[2] != '-' || v[35] != '-' || v[52] != '-':
		return fmt.Errorf("traceparent %q: want version-traceid-parentid-flags separated by '-'", clip(string(v), 64))
	case string(version) == "ff":
		return fmt.Errorf("traceparent %q: version ff is invalid", clip(string(v), 64))
	case string(version) == "00" && len(v) != 55:
		return fmt.Errorf("traceparent %q: version 00 is 55 characters long, not %d", clip(string(v), 64), len(v))
	case len(v) > 55 && v[55] != '-':
		return fmt.Errorf("traceparent %q: want '-' after the flags", clip(string(v), 64))
	case allZeros(v[3:35]):
		return fmt.Errorf("traceparent %q: the trace id is all zeros", clip(string(v), 64))
	case allZeros(v[36:52]):
		return fmt.Errorf("traceparent %q: the parent id is all zeros", clip(string(v), 64))
	}
	return nil
}

func lowerHex(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func allZeros(b []byte) bool {
	for _, c := range b {
		if c != '0' {
			return false
		}
	}
	return true
}

// maxTraceStateMembers is the W3C limit on tracestate list members.
const maxTraceStateMembers = 32

// ValidTraceState checks a tracestate header value against the W3C Trace
// Context grammar: at most 32 comma-separated key=value members (empty
// members and spaces or tabs around them allowed), keys of [a-z0-9_-*/] with
// an optional tenant@system form, values of 1 to 256 printable ASCII
// characters other than ',' and '=' that do not end in a space, no key
// twice.
func ValidTraceState(v []byte) error {
	var keys [maxTraceStateMembers][]byte
	n := 0
	for member := range bytes.SplitSeq(v, []byte{','}) {
		member = bytes.Trim(member, " \t")
		if len(member) == 0 {
			continue
		}
		key, value, ok := bytes.Cut(member, []byte{'='})
		if !ok || !validStateKey(key) || !validStateValue(value) {
			return fmt.Errorf("tracestate member %q is not key=value as W3C Trace Context defines them", clip(string(member), 64))
		}
		if n == maxTraceStateMembers {
			return fmt.Errorf("tracestate has more than %d members", maxTraceStateMembers)
		}
		for _, k := range keys[:n] {
			if bytes.Equal(k, key) {
				return fmt.Errorf("tracestate names %q twice", key)
			}
		}
		keys[n] = key
		n++
	}
	return nil
}

func validStateKey(k []byte) bool {
	tenant, system, multi := bytes.Cut(k, []byte{'@'})
	if !multi {
		return len(k) <= 256 && keyChars(k, true)
	}
	return len(tenant) >= 1 && len(tenant) <= 241 && keyChars(tenant, false) &&
		len(system) >= 1 && len(system) <= 14 && keyChars(system, true)
}

// keyChars checks a tracestate key: a lower-case letter first (or a digit,
// for a tenant), then [a-z0-9_-*/].
func keyChars(k []byte, letterFirst bool) bool {
	if len(k) == 0 {
		return false
	}
	if c := k[0]; !(c >= 'a' && c <= 'z' || !letterFirst && c >= '0' && c <= '9') {
		return false
	}
	for _, c := range k[1:] {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '*' || c == '/') {
			return false
		}
	}
	return true
}

func validStateValue(v []byte) bool {
	if len(v) == 0 || len(v) > 256 || v[len(v)-1] == ' ' {
		return false
	}
	for _, c := range v {
		if c < 0x20 || c > 0x7e || c == ',' || c == '=' {
			return false
		}
	}
	return true
}

// appendHeaders adds the traceparent and tracestate headers, when there is a
// valid context.
func (tc TraceContext) appendHeaders(hs []Header) []Header {
	if tc.Parent == nil {
		return hs
	}
	hs = append(hs, Header{Key: HeaderTraceParent, Value: tc.Parent})
	if tc.State != nil {
		hs = append(hs, Header{Key: HeaderTraceState, Value: tc.State})
	}
	return hs
}
