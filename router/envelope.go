package router

import (
	"strconv"
	"strings"
	"time"
)

// appendEnvelopeField writes a column value inside an envelope as Debezium's
// PostgreSQL connector carries it (its default settings) and JsonConverter
// writes it, checked against Debezium 3.6.1 in test/reference: text, json,
// jsonb and uuid as JSON strings; booleans and integers as such; double
// precision as Java prints a double; bytea as base64; timestamptz as an
// ISO-8601 UTC string with the column's fractional digits
// (io.debezium.time.ZonedTimestamp); timestamp as epoch milliseconds
// (precision up to 3) or microseconds (io.debezium.time.Timestamp and
// MicroTimestamp). numeric and real stay the number PostgreSQL printed
// (Debezium writes a base64 decimal and a Java float); other types (dates,
// times, arrays) are written as their text, which Debezium may write
// otherwise.
func appendEnvelopeField(buf, v []byte, f field) []byte {
	if v == nil {
		return append(buf, "null"...)
	}
	switch f.oid {
	case oidBool, oidInt2, oidInt4, oidInt8, oidFloat8, oidBytea:
		return appendConnectValue(buf, v, f.oid)
	case oidFloat4, oidNumeric:
		// Debezium writes numeric as a base64 decimal and real as a Java
		// float; a finite value stays the number PostgreSQL printed.
		if _, err := strconv.ParseFloat(string(v), 64); err == nil && !strings.ContainsAny(string(v), "nN") {
			return append(buf, v...)
		}
	case oidTimestamptz:
		if t, err := parseTimestamp(v, f.oid); err == nil {
			return appendJacksonString(buf, zonedTimestamp(t, f.typmod))
		}
	case oidTimestamp:
		if t, err := parseTimestamp(v, f.oid); err == nil {
			if precision(f.typmod) <= 3 {
				return strconv.AppendInt(buf, t.UnixMilli(), 10)
			}
			return strconv.AppendInt(buf, t.UnixMicro(), 10)
		}
	}
	return appendJacksonString(buf, string(v))
}

// precision is a timestamp column's fractional-second digits: its type
// modifier, or 6 when it has none.
func precision(typmod int32) int {
	if typmod < 0 || typmod > 6 {
		return 6
	}
	return int(typmod)
}

// zonedTimestamp formats t as Debezium's ZonedTimestamp: UTC, ISO-8601, as
// many fractional digits as the column's precision.
func zonedTimestamp(t time.Time, typmod int32) string {
	layout := "2006-01-02T15:04:05"
	if p := precision(typmod); p > 0 {
		layout += "." + strings.Repeat("0", p)
	}
	return t.UTC().Format(layout) + "Z"
}
