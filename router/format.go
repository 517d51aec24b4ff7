package router

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
)

// Format is how a record's key or value is written: the bytes one of Kafka
// Connect's converters gives for what Debezium's Outbox Event Router emits.
type Format string

const (
	// FormatRaw writes the column's value itself, as StringConverter and
	// ByteArrayConverter do: text as its UTF-8 bytes, bytea as its bytes,
	// SQL NULL as a null key or value.
	FormatRaw Format = "raw"
	// FormatJSON writes the value as JsonConverter with schemas.enable=false
	// does: text, json, jsonb and uuid as a JSON string, bytea as a base64
	// string, integers and booleans as such, SQL NULL as null.
	FormatJSON Format = "json"
	// FormatJSONSchema wraps FormatJSON's value as JsonConverter with
	// schemas.enable=true does: {"schema":{...},"payload":...}, the schema
	// being the Kafka Connect schema Debezium's PostgreSQL connector gives
	// the column.
	FormatJSONSchema Format = "json-schema"
)

// Formats lists the formats, for help texts and messages.
var Formats = []Format{FormatRaw, FormatJSON, FormatJSONSchema}

func (f Format) valid() bool {
	return f == FormatRaw || f == FormatJSON || f == FormatJSONSchema
}

// connectType is the Kafka Connect schema Debezium's PostgreSQL connector
// gives a column type (with its default settings), for the types the JSON
// formats support.
type connectType struct {
	typ, name string // name is empty for a plain type
}

const oidUUID = 2950

var connectTypes = map[uint32]connectType{
	oidText: {typ: "string"}, oidVarchar: {typ: "string"}, oidBpchar: {typ: "string"},
	oidJSON: {"string", "io.debezium.data.Json"}, oidJSONB: {"string", "io.debezium.data.Json"},
	oidUUID:  {"string", "io.debezium.data.Uuid"},
	oidBytea: {typ: "bytes"}, oidBool: {typ: "boolean"},
	oidInt2: {typ: "int16"}, oidInt4: {typ: "int32"}, oidInt8: {typ: "int64"}, oidFloat8: {typ: "double"},
}

// checkFormat reports a column whose type a JSON format cannot write the
// way JsonConverter would.
func checkFormat(f Format, col, option string, oid uint32) error {
	if f == FormatRaw || oid == 0 {
		return nil
	}
	if _, ok := connectTypes[oid]; ok {
		return nil
	}
	return fmt.Errorf("column %q (%s) is %s, which the %s format does not write; it writes text, varchar, char, uuid, json, jsonb, bytea, boolean, smallint, integer, bigint and double precision",
		col, option, typeName(oid), f)
}

// appendConnectJSON writes a column value as JsonConverter writes the value
// Debezium's connector gives it (f is FormatJSON or FormatJSONSchema; nil is
// SQL NULL). optional is the column's nullability, which the schema states.
func appendConnectJSON(buf []byte, f Format, v []byte, oid uint32, optional bool) []byte {
	if f == FormatJSONSchema {
		buf = append(buf, `{"schema":`...)
		buf = appendConnectSchema(buf, oid, optional)
		buf = append(buf, `,"payload":`...)
		return append(appendConnectValue(buf, v, oid), '}')
	}
	return appendConnectValue(buf, v, oid)
}

func appendConnectSchema(buf []byte, oid uint32, optional bool) []byte {
	ct := connectTypes[oid]
	buf = append(buf, `{"type":"`...)
	buf = append(buf, ct.typ...)
	buf = append(buf, `","optional":`...)
	buf = strconv.AppendBool(buf, optional)
	if ct.name != "" {
		buf = append(buf, `,"name":"`...)
		buf = append(buf, ct.name...)
		buf = append(buf, `","version":1`...)
	}
	return append(buf, '}')
}

// appendConnectValue writes the value part: Debezium carries text, json,
// jsonb and uuid as strings, bytea as bytes (base64 in JSON), integers,
// booleans and doubles as such.
func appendConnectValue(buf, v []byte, oid uint32) []byte {
	if v == nil {
		return append(buf, "null"...)
	}
	switch oid {
	case oidBytea:
		raw, err := decodeText(v, oid)
		if err != nil {
			return append(buf, "null"...) // Route decodes first and fails on a bad value
		}
		return appendJacksonString(buf, base64.StdEncoding.EncodeToString(raw))
	case oidBool:
		return strconv.AppendBool(buf, len(v) == 1 && v[0] == 't')
	case oidInt2, oidInt4, oidInt8:
		return append(buf, v...)
	case oidFloat8:
		// Jackson writes NaN and the infinities as strings, as PostgreSQL
		// spells them.
		if f, err := strconv.ParseFloat(string(v), 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return appendJavaDouble(buf, f)
		}
	}
	return appendJacksonString(buf, string(v))
}
