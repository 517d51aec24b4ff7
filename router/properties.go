package router

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
)

// ParseProperties reads text in the format of java.util.Properties.load, as
// Debezium's tracing reads the span-context column its Quarkus outbox
// extension writes with Properties.store: "#" and "!" comment lines, keys
// ending at the first unescaped '=', ':' or white space, backslash escapes
// (\t, \n, \r, \f, \uXXXX, and "\c" for any other c), and lines continued
// by an odd number of trailing backslashes. A later key replaces an earlier
// one. The only error is a malformed \uXXXX escape, which Java refuses too.
func ParseProperties(s string) (map[string]string, error) {
	out := map[string]string{}
	for s != "" {
		var line string
		line, s = logicalLine(s)
		if line == "" {
			continue
		}
		key, value, err := splitProperty(line)
		if err != nil {
			return nil, err
		}
		out[key] = value
	}
	return out, nil
}

func isPropSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\f' }

// logicalLine returns the next logical line of s, its continuations joined,
// leading white space removed, and "" for a blank or comment line; the
// escapes are still in it.
func logicalLine(s string) (line, rest string) {
	s = strings.TrimLeft(s, " \t\f")
	if s != "" && (s[0] == '#' || s[0] == '!') {
		_, rest = cutLine(s)
		return "", rest
	}
	var b strings.Builder
	for {
		natural, after := cutLine(s)
		if !continued(natural) {
			if b.Len() == 0 {
				return natural, after
			}
			b.WriteString(natural)
			return b.String(), after
		}
		b.WriteString(natural[:len(natural)-1])
		s = strings.TrimLeft(after, " \t\f")
		if s == "" {
			return b.String(), ""
		}
	}
}

// cutLine splits s after its first line terminator (\n, \r or \r\n).
func cutLine(s string) (line, rest string) {
	i := strings.IndexAny(s, "\r\n")
	if i < 0 {
		return s, ""
	}
	if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
		return s[:i], s[i+2:]
	}
	return s[:i], s[i+1:]
}

// continued reports whether line ends with an odd number of backslashes.
func continued(line string) bool {
	n := 0
	for i := len(line) - 1; i >= 0 && line[i] == '\\'; i-- {
		n++
	}
	return n%2 == 1
}

// splitProperty splits a logical line into its unescaped key and value.
func splitProperty(line string) (key, value string, err error) {
	end := len(line)
	for i := 0; i < len(line); i++ {
		c := line[i]
		if c == '\\' {
			i++
			continue
		}
		if c == '=' || c == ':' || isPropSpace(c) {
			end = i
			break
		}
	}
	rest := strings.TrimLeft(line[end:], " \t\f")
	if rest != "" && (rest[0] == '=' || rest[0] == ':') {
		rest = strings.TrimLeft(rest[1:], " \t\f")
	}
	if key, err = unescapeProperty(line[:end]); err != nil {
		return "", "", err
	}
	if value, err = unescapeProperty(rest); err != nil {
		return "", "", err
	}
	return key, value, nil
}

var errMalformedEscape = errors.New(`malformed \uXXXX escape`)

// unescapeProperty resolves the backslash escapes of a key or value. UTF-16
// surrogate pairs written as two \u escapes become one character; an
// unpaired surrogate becomes U+FFFD.
func unescapeProperty(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	var units []uint16 // pending \u escapes, to pair surrogates
	flush := func() {
		for _, r := range utf16.Decode(units) {
			b.WriteRune(r)
		}
		units = units[:0]
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			if c != '\\' {
				flush()
				b.WriteByte(c)
			}
			continue
		}
		i++
		if s[i] == 'u' {
			u, err := hex4(s[i+1:])
			if err != nil {
				return "", fmt.Errorf("%w at %q", err, clip(s[i-1:], 6))
			}
			units = append(units, u)
			i += 4
			continue
		}
		flush()
		b.WriteByte(unescapeChar(s[i]))
	}
	flush()
	return b.String(), nil
}

func unescapeChar(c byte) byte {
	switch c {
	case 't':
		return '\t'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 'f':
		return '\f'
	}
	return c
}

func hex4(s string) (uint16, error) {
	if len(s) < 4 {
		return 0, errMalformedEscape
	}
	var v uint16
	for _, c := range []byte(s[:4]) {
		d, ok := hexDigit(c)
		if !ok {
			return 0, errMalformedEscape
		}
		v = v<<4 | uint16(d)
	}
	return v, nil
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
