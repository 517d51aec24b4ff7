package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/outboxrelay/outboxrelay/sink"
)

// parseProperties reads a Java .properties file: # and ! comments, key and
// value separated by '=', ':' or white space, backslash line continuations
// and escapes (\t \n \r \f \uXXXX). lines maps each key to the line it
// starts on. Errors name the line (and the key when it is readable), never a
// value: values hold passwords.
func parseProperties(text string) (props map[string]string, lines map[string]int, err error) {
	props, lines = map[string]string{}, map[string]int{}
	all := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	for i := 0; i < len(all); i++ {
		first := i + 1
		line := strings.TrimLeft(all[i], " \t\f")
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		for continues(line) && i+1 < len(all) {
			i++
			line = line[:len(line)-1] + strings.TrimLeft(all[i], " \t\f")
		}
		if continues(line) {
			line = line[:len(line)-1]
		}
		key, value := splitProperty(line)
		k, err := unescape(key)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: the key: %w", first, err)
		}
		v, err := unescape(value)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: the value of %s: %w", first, propertyKey(k), err)
		}
		props[k], lines[k] = v, first
	}
	return props, lines, nil
}

var propertyShaped = regexp.MustCompile(`^[a-z][A-Za-z0-9_-]*(\.[A-Za-z0-9_$-]+)+$`)

// isPropertyKey reports whether k looks like a Debezium or Kafka property
// name (dotted, such as database.hostname). A line of another kind of file,
// such as a PEM key, does not.
func isPropertyKey(k string) bool {
	return propertyShaped.MatchString(k) || k == "name" || k == "transforms" || k == "predicates"
}

// propertyKey quotes a key for a message when it is property-shaped.
func propertyKey(k string) string {
	if isPropertyKey(k) {
		return strconv.Quote(k)
	}
	return "a key that is not a property name"
}

// continues reports whether a line ends in an odd number of backslashes.
func continues(line string) bool {
	n := 0
	for i := len(line) - 1; i >= 0 && line[i] == '\\'; i-- {
		n++
	}
	return n%2 == 1
}

func splitProperty(line string) (string, string) {
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '\\':
			i++
		case '=', ':':
			return line[:i], strings.TrimLeft(line[i+1:], " \t\f")
		case ' ', '\t', '\f':
			rest := strings.TrimLeft(line[i:], " \t\f")
			if rest != "" && (rest[0] == '=' || rest[0] == ':') {
				rest = strings.TrimLeft(rest[1:], " \t\f")
			}
			return line[:i], rest
		}
	}
	return line, ""
}

func unescape(s string) (string, error) {
	if !strings.Contains(s, "\\") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 'f':
			b.WriteByte('\f')
		case 'u':
			if i+5 > len(s) {
				return "", errors.New("truncated \\u escape (want \\u and four hexadecimal digits)")
			}
			r, err := strconv.ParseUint(s[i+1:i+5], 16, 16)
			if err != nil {
				return "", errors.New("bad \\u escape (want \\u and four hexadecimal digits)")
			}
			b.WriteRune(rune(r))
			i += 4
		default:
			b.WriteByte(s[i])
		}
	}
	if !utf8.ValidString(b.String()) {
		return "", errors.New("invalid UTF-8")
	}
	return b.String(), nil
}

// The Outbox Event Router options and the flags they become.
var routerOptions = map[string]string{
	"table.op.invalid.behavior":         "on-update",
	"table.field.event.id":              "field-event-id",
	"table.field.event.key":             "field-event-key",
	"table.field.event.payload":         "field-payload",
	"table.field.event.timestamp":       "field-event-timestamp",
	"route.by.field":                    "route-by-field",
	"route.topic.regex":                 "route-topic-regex",
	"route.topic.replacement":           "route-topic-replacement",
	"table.fields.additional.placement": "fields-additional-placement",
	"route.tombstone.on.empty.payload":  "tombstone-on-empty-payload",
	"table.expand.json.payload":         "expand-json-payload",
	"table.json.payload.null.behavior":  "json-payload-null-behavior",
	"tracing.span.context.field":        "field-tracing-span-context",
}

// parseConnectorFile reads a properties file, or a Kafka Connect connector
// configuration in JSON: the body of a POST /connectors ({"name": ...,
// "config": {...}}) or its config object alone.
func parseConnectorFile(b []byte) (map[string]string, map[string]int, error) {
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		return parseProperties(string(b))
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, nil, jsonError(err)
	}
	props := map[string]string{}
	if raw, ok := doc["config"]; ok {
		var name string
		if err := json.Unmarshal(doc["name"], &name); err == nil && name != "" {
			props["name"] = name
		}
		doc = nil
		if err := json.Unmarshal(raw, &doc); err != nil {
			return nil, nil, jsonError(err)
		}
	}
	var errs []error
	for k, raw := range doc {
		var v any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		_ = dec.Decode(&v) // valid: the document decoded
		switch v := v.(type) {
		case string:
			props[k] = v
		case json.Number, bool:
			props[k] = fmt.Sprint(v)
		case nil:
		default:
			errs = append(errs, fmt.Errorf("the value of %s is not a string, number or boolean", propertyKey(k)))
		}
	}
	return props, map[string]int{}, errors.Join(errs...)
}

// jsonError says where a JSON document is broken without quoting it.
func jsonError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("not valid JSON (at byte %d)", se.Offset)
	}
	return errors.New("not a JSON object of connector settings")
}

// expandPlaceholders expands what the program that reads the file would:
// SmallRye Config's expressions in a Debezium Server file (debezium.* keys),
// Kafka Connect's config provider variables in a connector configuration.
func expandPlaceholders(props map[string]string, lines map[string]int, env lookupFunc) (map[string]string, error) {
	for k := range props {
		if strings.HasPrefix(k, "debezium.") {
			return expandServer(props, lines, env)
		}
	}
	return expandConnect(props, lines, env)
}

// readDebezium maps a Debezium Server application.properties (debezium.*
// keys) or a Kafka Connect PostgreSQL connector configuration onto flag
// values. Keys with no outboxrelay meaning are returned with the reason.
func readDebezium(path string) (map[string]string, []string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the Debezium configuration: %w", err)
	}
	props, lines, err := parseConnectorFile(b)
	if err == nil {
		props, err = expandPlaceholders(props, lines, os.LookupEnv)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("Debezium configuration %s: %w", path, err)
	}
	flags, unsupported, err := mapDebezium(props, lines)
	if err != nil {
		return nil, nil, fmt.Errorf("Debezium configuration %s: %w", path, err)
	}
	if len(flags) == 0 {
		return nil, nil, fmt.Errorf("Debezium configuration %s: none of its %d keys maps to an outboxrelay setting; is it a Debezium Server application.properties or a PostgreSQL connector configuration?", path, len(props))
	}
	return flags, unsupported, nil
}

// mapDebezium maps properties onto flag values. lines, when known, gives
// each key's line for messages; a key that is not shaped like a property
// name is reported by its line alone, for the file may be another one given
// by mistake (a private key, say) whose lines must not reach the logs.
func mapDebezium(props map[string]string, lines map[string]int) (map[string]string, []string, error) {
	m := debeziumMapper{flags: map[string]string{}, source: map[string]string{}, producer: map[string]string{}, transforms: map[string]string{}, format: map[string]string{}}
	server := false
	for k, v := range props {
		if !isPropertyKey(k) {
			m.unsupported = append(m.unsupported, fmt.Sprintf("line %d (not a property name; not shown)", lines[k]))
			continue
		}
		switch {
		case strings.HasPrefix(k, "debezium.source."):
			server = true
			m.source[strings.TrimPrefix(k, "debezium.source.")] = v
		case strings.HasPrefix(k, "debezium.transforms"):
			server = true
			m.transforms[strings.TrimPrefix(strings.TrimPrefix(k, "debezium.transforms"), ".")] = v
		case strings.HasPrefix(k, "debezium.sink.kafka.producer."):
			m.producer[strings.TrimPrefix(k, "debezium.sink.kafka.producer.")] = v
		case strings.HasPrefix(k, "debezium.format."):
			m.format[strings.TrimPrefix(k, "debezium.format.")] = v
		case k == "debezium.sink.type":
			if v != "kafka" {
				return nil, nil, fmt.Errorf("debezium.sink.type is %q; outboxrelay produces to Kafka", v)
			}
		case strings.HasPrefix(k, "transforms"):
			m.transforms[strings.TrimPrefix(strings.TrimPrefix(k, "transforms"), ".")] = v
		case k == "bootstrap.servers" || strings.HasPrefix(k, "producer.override."):
			m.producer[strings.TrimPrefix(k, "producer.override.")] = v
		case strings.HasPrefix(k, "producer."):
			// A Kafka Connect worker's producer settings (connect-distributed.properties).
			m.producer[strings.TrimPrefix(k, "producer.")] = v
		case k == "compression.type" || compressionLevelKey.MatchString(k):
			m.producer[k] = v
		case strings.HasPrefix(k, "debezium."):
			m.skip(k, "a Debezium Server setting outboxrelay does not need")
		default:
			m.source[k] = v
		}
	}
	err := errors.Join(m.database(), m.converters(server), m.connector(), m.router(), m.kafka())
	sort.Strings(m.unsupported)
	return m.flags, m.unsupported, err
}

type debeziumMapper struct {
	flags, source, producer, transforms map[string]string
	format                              map[string]string // Debezium Server's debezium.format.*
	unsupported                         []string
}

func (m *debeziumMapper) skip(key, why string) {
	m.unsupported = append(m.unsupported, key+" ("+why+")")
}

func (m *debeziumMapper) database() error {
	host, ok := m.source["database.hostname"]
	if !ok {
		return nil
	}
	u := url.URL{Scheme: "postgres", Host: host, Path: "/" + m.source["database.dbname"]}
	if port := m.source["database.port"]; port != "" {
		u.Host = host + ":" + port
	}
	if user := m.source["database.user"]; user != "" {
		if pw, ok := m.source["database.password"]; ok {
			u.User = url.UserPassword(user, pw)
		} else {
			u.User = url.User(user)
		}
	}
	q := url.Values{}
	for _, p := range []string{"sslmode", "sslrootcert", "sslcert", "sslkey"} {
		if v, ok := m.source["database."+p]; ok {
			q.Set(p, v)
		}
	}
	u.RawQuery = q.Encode()
	m.flags["pg-url"] = u.String()
	for _, k := range []string{"hostname", "port", "user", "password", "dbname", "sslmode", "sslrootcert", "sslcert", "sslkey"} {
		delete(m.source, "database."+k)
	}
	return nil
}

// Kafka Connect converters and the formats that write the same bytes.
const (
	stringConverter    = "org.apache.kafka.connect.storage.StringConverter"
	byteArrayConverter = "org.apache.kafka.connect.converters.ByteArrayConverter"
	jsonConverter      = "org.apache.kafka.connect.json.JsonConverter"
)

// converters maps the key and value converters onto --key-format and
// --value-format: Kafka Connect's key.converter and value.converter
// (JsonConverter's schemas.enable defaults to true), or Debezium Server's
// debezium.format.key and debezium.format.value, which default to json with
// schemas. A connector configuration without a converter keeps the raw
// format: its worker's converter is not in the file.
func (m *debeziumMapper) converters(server bool) error {
	var errs []error
	for _, part := range []string{"key", "value"} {
		f, err := m.converter(part, server)
		if err != nil {
			errs = append(errs, err)
		} else if f != "" {
			m.flags[part+"-format"] = f
		}
	}
	for k := range m.format {
		switch {
		case k == "key" || k == "value" || k == "key.schemas.enable" || k == "value.schemas.enable":
		case strings.HasPrefix(k, "header"):
			m.skip("debezium.format."+k, "outboxrelay writes header values as text, as Kafka Connect's SimpleHeaderConverter does")
		default:
			m.skip("debezium.format."+k, "a format setting outboxrelay does not support")
		}
	}
	return errors.Join(errs...)
}

func (m *debeziumMapper) converter(part string, server bool) (string, error) {
	if server {
		name, set := m.format[part]
		schemas := m.format[part+".schemas.enable"]
		switch {
		case !set || name == "json":
			return jsonFormat(schemas), nil
		default:
			return "", fmt.Errorf("debezium.format.%s is %q: outboxrelay writes what json (JsonConverter) writes, or raw bytes with --%s-format raw", part, name, part)
		}
	}
	class, set := m.source[part+".converter"]
	schemas := m.source[part+".converter.schemas.enable"]
	delete(m.source, part+".converter")
	delete(m.source, part+".converter.schemas.enable")
	switch class {
	case stringConverter, byteArrayConverter:
		return "raw", nil
	case jsonConverter:
		return jsonFormat(schemas), nil
	}
	if !set {
		return "", nil
	}
	return "", fmt.Errorf("%s.converter is %s: outboxrelay writes what StringConverter, ByteArrayConverter (--%s-format raw) and JsonConverter (json, json-schema) write", part, class, part)
}

// jsonFormat is JsonConverter's format for its schemas.enable setting,
// which defaults to true.
func jsonFormat(schemasEnable string) string {
	if strings.EqualFold(strings.TrimSpace(schemasEnable), "false") {
		return "json"
	}
	return "json-schema"
}

var tableEntry = regexp.MustCompile(`^[A-Za-z0-9_$]+(\\?\.)[A-Za-z0-9_$]+$`)

func (m *debeziumMapper) connector() error {
	for k, v := range m.source {
		switch k {
		case "connector.class":
			if !strings.HasSuffix(v, "PostgresConnector") {
				return fmt.Errorf("connector.class is %s; outboxrelay replaces the PostgreSQL connector", v)
			}
		case "slot.name":
			m.flags["slot"] = v
		case "publication.name":
			m.flags["publication"] = v
		case "plugin.name":
			if v != "pgoutput" {
				return fmt.Errorf("plugin.name is %s: outboxrelay decodes pgoutput; its slot cannot be reused, create a pgoutput slot (outboxrelay slot create)", v)
			}
		case "table.include.list", "table.whitelist":
			tables := splitList(v)
			for i, t := range tables {
				if !tableEntry.MatchString(t) {
					return fmt.Errorf("%s is %q: outboxrelay takes a list of outbox tables, each schema.table (%q is a pattern: list the tables it matches)", k, v, t)
				}
				tables[i] = strings.Replace(t, `\.`, ".", 1)
			}
			m.flags["table"] = strings.Join(tables, ",")
		case "publication.autocreate.mode":
			m.skip(k, "outboxrelay uses an existing publication as it is and creates a missing one for the outbox table only")
		case "offset.storage", "offset.storage.file.filename", "offset.flush.interval.ms":
			m.skip(k, "outboxrelay keeps its position in the replication slot")
		case "snapshot.mode":
			if err := m.snapshotMode(v); err != nil {
				return err
			}
		case "topic.prefix", "database.server.name", "name", "tasks.max", "schema.include.list":
			m.skip(k, "not needed: only the outbox table's inserts are relayed, routed by the event router options")
		default:
			m.skip(k, "no outboxrelay equivalent")
		}
	}
	return nil
}

func (m *debeziumMapper) router() error {
	names := splitList(m.transforms[""])
	delete(m.transforms, "")
	router := ""
	for _, n := range names {
		if strings.HasSuffix(m.transforms[n+".type"], "outbox.EventRouter") {
			router = n
		}
	}
	for k, v := range m.transforms {
		name, opt, _ := strings.Cut(k, ".")
		if name != router || router == "" {
			m.skip("transforms."+k, "only the Outbox Event Router transform is supported")
			continue
		}
		if opt == "type" {
			continue
		}
		flag, ok := routerOptions[opt]
		if !ok {
			if opt == "tracing.with.context.field.only" {
				continue // either way Debezium's router adds trace headers only to events that carry a context, as outboxrelay does
			}
			m.skip("transforms."+k, "event router option outboxrelay does not support")
			continue
		}
		m.flags[flag] = v
	}
	return nil
}

var (
	jaasField  = regexp.MustCompile(`(username|password)\s*=\s*"((?:[^"\\]|\\.)*)"`)
	jaasModule = regexp.MustCompile(`^\s*([A-Za-z0-9_.$]+)\s+(required|requisite|sufficient|optional)\b`)
)

// jaas takes the user and password of a PLAIN or SCRAM login module. Its
// errors never quote the value, which holds the password.
func (m *debeziumMapper) jaas(v string) error {
	mod := jaasModule.FindStringSubmatch(v)
	if mod == nil {
		return errors.New(`sasl.jaas.config: want "<LoginModule class> required username=\"...\" password=\"...\";" (value not shown)`)
	}
	if !strings.HasSuffix(mod[1], ".PlainLoginModule") && !strings.HasSuffix(mod[1], ".ScramLoginModule") {
		return fmt.Errorf("sasl.jaas.config: login module %s is not supported; outboxrelay authenticates with PLAIN or SCRAM (PlainLoginModule, ScramLoginModule)", mod[1])
	}
	found := map[string]string{}
	for _, f := range jaasField.FindAllStringSubmatch(v, -1) {
		found[f[1]] = strings.ReplaceAll(f[2], `\"`, `"`)
	}
	var missing []string
	for _, name := range []string{"username", "password"} {
		if _, ok := found[name]; !ok {
			missing = append(missing, name+`="..."`)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("sasl.jaas.config: found no %s (value not shown)", strings.Join(missing, " or "))
	}
	m.flags["kafka-sasl-user"], m.flags["kafka-sasl-password"] = found["username"], found["password"]
	return nil
}

func (m *debeziumMapper) kafka() error {
	if err := m.compression(); err != nil {
		return err
	}
	for k, v := range m.producer {
		switch k {
		case "bootstrap.servers":
			m.flags["brokers"] = v
		case "security.protocol":
			switch strings.ToUpper(v) {
			case "PLAINTEXT", "SASL_PLAINTEXT":
			case "SSL", "SASL_SSL":
				m.flags["kafka-tls"] = "true"
			default:
				return fmt.Errorf("security.protocol %q is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", v)
			}
		case "sasl.mechanism":
			m.flags["kafka-sasl-mechanism"] = v
		case "sasl.jaas.config":
			if err := m.jaas(v); err != nil {
				return err
			}
		case "ssl.truststore.location":
			if strings.EqualFold(m.producer["ssl.truststore.type"], "PEM") {
				m.flags["kafka-tls-ca-file"] = v
			} else {
				m.skip(k, "a JKS or PKCS12 trust store: export the CA as PEM and pass --kafka-tls-ca-file")
			}
		case "ssl.truststore.type":
		case "ssl.endpoint.identification.algorithm":
			// Empty turns off only the hostname check in Java clients: the
			// certificate chain is still verified.
			switch strings.ToLower(v) {
			case "":
				m.flags["kafka-tls-skip-hostname-verification"] = "true"
			case "https":
			default:
				m.skip(k, "only https (the default) or empty (no hostname check) are supported")
			}
		case "acks", "enable.idempotence", "key.serializer", "value.serializer", "max.in.flight.requests.per.connection":
			m.skip(k, "outboxrelay always produces with acks=all, idempotence and one request in flight")
		case "max.request.size":
			m.flags["kafka-max-message-bytes"] = v
		case "compression.type", "compression.gzip.level", "compression.lz4.level", "compression.zstd.level":
		case "client.id":
			m.flags["kafka-client-id"] = v
		case "linger.ms":
			if _, err := strconv.ParseUint(v, 10, 31); err != nil {
				m.skip(k, "not a whole number of milliseconds")
				break
			}
			m.flags["kafka-linger"] = v + "ms"
		default:
			m.skip(k, "Kafka producer setting outboxrelay does not support")
		}
	}
	return nil
}

var compressionLevelKey = regexp.MustCompile(`^compression\.[a-z0-9]+\.level$`)

// compression maps the producer's compression.type onto --kafka-compression,
// and the level of that codec (compression.gzip.level and
// compression.zstd.level, Kafka 3.8+) onto --kafka-compression-level.
func (m *debeziumMapper) compression() error {
	codec, set := m.producer["compression.type"]
	codec = strings.ToLower(strings.TrimSpace(codec))
	if set {
		if !slices.Contains(sink.Codecs, codec) {
			return fmt.Errorf("compression.type %q is not one of %s", m.producer["compression.type"], strings.Join(sink.Codecs, ", "))
		}
		m.flags["kafka-compression"] = codec
	}
	for k, v := range m.producer {
		if !compressionLevelKey.MatchString(k) {
			continue
		}
		switch name := strings.TrimSuffix(strings.TrimPrefix(k, "compression."), ".level"); {
		case name != codec:
			m.skip(k, "compression.type is "+cmp.Or(codec, "none")+", not "+name)
		case name == "lz4":
			m.skip(k, "outboxrelay's lz4 encoder has one level")
		case strings.TrimSpace(v) == "-1":
			// gzip's default, as Kafka writes it.
		default:
			m.flags["kafka-compression-level"] = strings.TrimSpace(v)
		}
	}
	return nil
}

// snapshotMode maps Debezium's snapshot.mode: initial reads the rows kept
// in the outbox tables when the slot is created, never and no_data read
// none; the others have no counterpart.
func (m *debeziumMapper) snapshotMode(v string) error {
	switch v {
	case "initial":
		m.flags["snapshot"] = "initial"
	case "never", "no_data":
		m.flags["snapshot"] = "never"
	default:
		return fmt.Errorf("snapshot.mode is %q: outboxrelay reads a snapshot only when it creates its slot (initial) or never (never, no_data); "+
			"to send kept rows again use outboxrelay replay", v)
	}
	return nil
}
