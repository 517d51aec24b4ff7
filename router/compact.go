package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// appendCompactJSON writes a JSON document the way Debezium's expansion
// (table.expand.json.payload) and Kafka's JsonConverter write it back: no
// white space, members in their order, integers as they are (-0 is 0),
// other numbers as Java's Double.toString prints them (12.50 is 12.5,
// 1.0e+2 is 100.0), strings re-escaped as Jackson does. As drop says, an
// object member whose value is null (Debezium's
// table.json.payload.null.behavior, "ignore" by default) or an empty array
// (Debezium cannot type its elements and always drops it) is left out at any
// depth; nulls inside arrays stay. It fails on what is not one valid JSON document.
func appendCompactJSON(buf, doc []byte, drop dropMembers) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	c := compactor{dec: dec, drop: drop}
	out, err := c.value(buf)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON document")
	}
	return out, nil
}

// dropMembers chooses which object members expansion leaves out.
type dropMembers struct{ nulls, emptyArrays bool }

type compactor struct {
	dec  *json.Decoder
	drop dropMembers
}

func (c *compactor) value(buf []byte) ([]byte, error) {
	tok, err := c.dec.Token()
	if err != nil {
		return nil, err
	}
	switch v := tok.(type) {
	case json.Delim:
		return c.container(buf, v)
	case string:
		return appendJacksonString(buf, v), nil
	case json.Number:
		return appendJavaNumber(buf, string(v))
	case bool:
		return strconv.AppendBool(buf, v), nil
	case nil:
		return append(buf, "null"...), nil
	}
	return nil, errors.New("unexpected JSON token")
}

func (c *compactor) container(buf []byte, open json.Delim) ([]byte, error) {
	var err error
	buf = append(buf, byte(open))
	for n := 0; c.dec.More(); {
		start := len(buf)
		if n > 0 {
			buf = append(buf, ',')
		}
		if open == '{' {
			tok, err := c.dec.Token()
			if err != nil {
				return nil, err
			}
			buf = append(appendJacksonString(buf, tok.(string)), ':')
		}
		at := len(buf)
		if buf, err = c.value(buf); err != nil {
			return nil, err
		}
		if open == '{' && c.dropped(buf[at:]) {
			buf = buf[:start]
			continue
		}
		n++
	}
	if _, err := c.dec.Token(); err != nil { // the closing delimiter
		return nil, err
	}
	if open == '{' {
		return append(buf, '}'), nil
	}
	return append(buf, ']'), nil
}

// dropped reports whether an object member with this compact value is left
// out.
func (c *compactor) dropped(v []byte) bool {
	return c.drop.nulls && string(v) == "null" || c.drop.emptyArrays && string(v) == "[]"
}

// appendJavaNumber writes an integer that fits 64 bits as it is, and any
// other number as the double Jackson reads it, printed by Double.toString.
func appendJavaNumber(buf []byte, n string) ([]byte, error) {
	if !strings.ContainsAny(n, ".eE") {
		i, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			return nil, errors.New("integer beyond 64 bits") // Debezium stops on it
		}
		return strconv.AppendInt(buf, i, 10), nil
	}
	f, err := strconv.ParseFloat(n, 64)
	if err != nil || math.IsInf(f, 0) {
		return nil, errors.New("number out of range")
	}
	return appendJavaDouble(buf, f), nil
}

// appendJavaDouble prints f as Java's Double.toString does: plain decimals
// with at least one fractional digit from 10^-3 to 10^7, computerized
// scientific notation (1.0E7, 1.5E-4) outside.
func appendJavaDouble(buf []byte, f float64) []byte {
	abs := math.Abs(f)
	if f == 0 || abs >= 1e-3 && abs < 1e7 {
		s := strconv.FormatFloat(f, 'f', -1, 64)
		if !strings.Contains(s, ".") {
			s += ".0"
		}
		if f == 0 && math.Signbit(f) {
			s = "-0.0"
		}
		return append(buf, s...)
	}
	mant, exp, _ := strings.Cut(strconv.FormatFloat(f, 'e', -1, 64), "e")
	if !strings.Contains(mant, ".") {
		mant += ".0"
	}
	e, _ := strconv.Atoi(exp)
	buf = append(buf, mant...)
	buf = append(buf, 'E')
	return strconv.AppendInt(buf, int64(e), 10)
}

// appendJacksonString writes s as Jackson does: the two-character escapes
// for " \\ and \b \f \n \r \t, \u00XX for the other control characters, and
// a surrogate pair of \uXXXX escapes for characters beyond the BMP; hex
// digits in upper case.
func appendJacksonString(buf []byte, s string) []byte {
	const hexdigits = "0123456789ABCDEF"
	u4 := func(buf []byte, r rune) []byte {
		return append(buf, '\\', 'u', hexdigits[r>>12&0xf], hexdigits[r>>8&0xf], hexdigits[r>>4&0xf], hexdigits[r&0xf])
	}
	buf = append(buf, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			buf = append(buf, '\\', byte(r))
		case r == '\b':
			buf = append(buf, '\\', 'b')
		case r == '\f':
			buf = append(buf, '\\', 'f')
		case r == '\n':
			buf = append(buf, '\\', 'n')
		case r == '\r':
			buf = append(buf, '\\', 'r')
		case r == '\t':
			buf = append(buf, '\\', 't')
		case r < 0x20:
			buf = u4(buf, r)
		case r > 0xffff:
			r -= 0x10000
			buf = u4(u4(buf, 0xd800+(r>>10)), 0xdc00+(r&0x3ff))
		default:
			buf = utf8.AppendRune(buf, r)
		}
	}
	return append(buf, '"')
}
