package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// Where a setting's value came from, in precedence order.
const (
	fromFlag     = "flag"
	fromEnv      = "env"
	fromFile     = "file"
	fromDebezium = "debezium-config"
	fromDefault  = "default"
)

// sources applies the configuration sources to a command's flags: a flag
// given on the command line wins over its OUTBOXRELAY_* environment
// variable, which wins over the --config YAML file (whose keys are the flag
// names) and the --debezium-config properties file, which win over defaults.
type sources struct {
	origin      map[string]string // flag name to where its value came from
	unsupported []string          // Debezium keys with no outboxrelay meaning
}

func newSources() *sources { return &sources{origin: map[string]string{}} }

func (s *sources) addFlags(fs *pflag.FlagSet) {
	fs.String("config", "", "YAML configuration file; its keys are the flag names (flags and environment variables win)")
	fs.String("debezium-config", "", "Debezium Server application.properties or Kafka Connect connector properties to take settings from")
}

// apply fills every flag not given on the command line, reporting every
// problem at once.
func (s *sources) apply(cmd *cobra.Command) error {
	fs := cmd.Flags()
	var errs []error
	for _, name := range []string{"config", "debezium-config"} {
		if f := fs.Lookup(name); f != nil && !f.Changed {
			if v, ok := os.LookupEnv(envName(name)); ok {
				_ = f.Value.Set(v)
			}
		}
	}
	file := map[string]string{}
	fileOrigin := map[string]string{}
	if f := fs.Lookup("debezium-config"); f != nil && f.Value.String() != "" {
		values, unsupported, err := readDebezium(f.Value.String())
		if err != nil {
			errs = append(errs, err)
		}
		s.unsupported = unsupported
		for k, v := range values {
			file[k], fileOrigin[k] = v, fromDebezium
		}
	}
	if f := fs.Lookup("config"); f != nil && f.Value.String() != "" {
		values, err := readYAML(f.Value.String(), fs)
		if err != nil {
			errs = append(errs, err)
		}
		for k, v := range values {
			file[k], fileOrigin[k] = v, fromFile
		}
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			s.origin[f.Name] = fromFlag
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("environment variable %s=%s: %v", envName(f.Name), shown(f.Name, v), err))
			}
			s.origin[f.Name] = fromEnv
			return
		}
		if v, ok := file[f.Name]; ok {
			if sv, ok := f.Value.(pflag.SliceValue); ok {
				_ = sv.Replace(splitList(v))
			} else if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %s: %v", fileOrigin[f.Name], f.Name, shown(f.Name, v), err))
			}
			s.origin[f.Name] = fileOrigin[f.Name]
			return
		}
		s.origin[f.Name] = fromDefault
	})
	if err := errors.Join(errs...); err != nil {
		return usageError(err)
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// readYAML reads a flat YAML mapping of flag names (dashes or underscores)
// to values; a list becomes a comma-separated value. Unknown keys are errors.
// Errors name the line and the key, never a value: the file may hold secrets,
// or be another file given by mistake.
func readYAML(path string, fs *pflag.FlagSet) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the configuration file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("configuration file %s is not valid YAML (%s)", path, yamlErrorLine(err))
	}
	out := map[string]string{}
	if len(doc.Content) == 0 {
		return out, nil // empty
	}
	root := resolve(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("configuration file %s: line %d: want a mapping of flag names to values, as in deploy/relay.yaml", path, root.Line)
	}
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], resolve(root.Content[i+1])
		name := strings.ReplaceAll(k.Value, "_", "-")
		if k.Kind != yaml.ScalarNode || fs.Lookup(name) == nil || name == "config" {
			errs = append(errs, fmt.Errorf("configuration file %s: line %d: unknown key %s (keys are the flag names, see --help)", path, k.Line, flagKey(k.Value)))
			continue
		}
		value, err := yamlValue(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("configuration file %s: line %d: key %q %v", path, v.Line, k.Value, err))
			continue
		}
		if v.Tag != "!!null" {
			out[name] = value
		}
	}
	return out, errors.Join(errs...)
}

// yamlValue is a scalar's text, or a list's items joined with commas.
func yamlValue(v *yaml.Node) (string, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		return v.Value, nil
	case yaml.SequenceNode:
		parts := make([]string, len(v.Content))
		for i, item := range v.Content {
			if item = resolve(item); item.Kind != yaml.ScalarNode {
				return "", errors.New("holds a list of lists or mappings; values are scalars or lists of scalars")
			}
			parts[i] = item.Value
		}
		return strings.Join(parts, ","), nil
	}
	return "", errors.New("holds a mapping; values are scalars or lists")
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

var yamlLine = regexp.MustCompile(`\bline (\d+)\b`)

// yamlErrorLine keeps the line number of a YAML error and drops the rest,
// which can quote the text.
func yamlErrorLine(err error) string {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		return "line " + m[1]
	}
	return "no line given"
}

var flagShaped = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// flagKey quotes a configuration key that could be a flag name; anything
// else is not shown, for it may be a line of some other file.
func flagKey(k string) string {
	if flagShaped.MatchString(k) {
		return strconv.Quote(k)
	}
	return "(not shown: not a flag name)"
}

// shown is a flag value for an error message, or a mask for a secret.
func shown(name, v string) string {
	if secret(name) || name == "pg-url" {
		return "(value not shown)"
	}
	return strconv.Quote(v)
}

// secret reports whether a flag's value must be masked when printed.
func secret(name string) bool {
	return (strings.Contains(name, "password") || strings.Contains(name, "secret")) && !strings.HasSuffix(name, "-file")
}

// printEffective writes the effective configuration as YAML that --config
// accepts, each value annotated with its source, secrets masked.
func (s *sources) printEffective(w io.Writer, fs *pflag.FlagSet) {
	var names []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" && f.Name != "config" && f.Name != "debezium-config" {
			names = append(names, f.Name)
		}
	})
	sort.Strings(names)
	for _, n := range names {
		f := fs.Lookup(n)
		v := f.Value.String()
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			v = strings.Join(sv.GetSlice(), ",")
		}
		switch {
		case n == "pg-url":
			v = maskConnString(v)
		case secret(n) && v != "":
			v = "*****"
		}
		fmt.Fprintf(w, "%s: %s  # %s\n", n, yamlScalar(v), s.origin[n])
	}
	for _, k := range s.unsupported {
		fmt.Fprintf(w, "# not supported, ignored: %s\n", k)
	}
}

func yamlScalar(v string) string {
	b, _ := yaml.Marshal(v)
	return strings.TrimSuffix(string(b), "\n")
}

func newConfigCmd(src *sources) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect the effective configuration"}
	opts := defaultRunOptions()
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the configuration run would use, with each value's source and secrets masked",
		Long: `Takes the same flags, environment variables and files as run, and prints the
result as YAML that --config accepts, without connecting to anything. Values are
validated as run validates them.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			src.printEffective(cmd.OutOrStdout(), cmd.Flags())
			for _, w := range opts.kafka.Warnings() {
				fmt.Fprintf(cmd.OutOrStdout(), "# warning, unsafe Kafka connection setting: %s\n", w)
			}
			return opts.finish()
		},
	}
	opts.addFlags(print.Flags())
	src.addFlags(print.Flags())
	cmd.AddCommand(print)
	return cmd
}

// PostgreSQL connection strings come in the two forms pgx reads: a URL
// (postgres:// or postgresql://) or libpq's key=value list. Their passwords
// are never shown: config print masks them, and errors are scrubbed of them.

const mask = "*****"

// connSecrets finds the byte spans of every password in a connection string:
// a URL's userinfo password and its password and sslpassword query values
// (keys percent-decoded, in any case), or the password and sslpassword values
// of a key=value string. ok is false when the string cannot be read with
// certainty (it does not parse, or a password may have spilled into another
// part of a URL); then none of it may be shown.
func connSecrets(s string) (spans [][2]int, ok bool) {
	if isConnURL(s) {
		return urlSecrets(s)
	}
	return keyValueSecrets(s)
}

func isConnURL(s string) bool {
	l := strings.ToLower(s)
	return strings.HasPrefix(l, "postgres://") || strings.HasPrefix(l, "postgresql://")
}

func urlSecrets(s string) ([][2]int, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Fragment != "" || strings.Contains(u.Path, "@") || !numericPorts(u.Host) {
		return nil, false
	}
	start := strings.Index(s, "://") + 3
	rest := s[start:]
	// pgx ends the userinfo at the first '@' before any '/', net/url at the
	// last '@' before the first '/' or '?': hide the password either reads.
	end := -1
	if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
		end = i
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority = rest[:i]
	}
	end = max(end, strings.LastIndex(authority, "@"))
	var spans [][2]int
	if end >= 0 {
		if c := strings.IndexByte(rest[:end], ':'); c >= 0 {
			spans = append(spans, [2]int{start + c + 1, start + end})
		}
	}
	q := strings.IndexByte(rest[end+1:], '?')
	if q < 0 {
		return spans, true
	}
	pos := start + end + 1 + q + 1
	for _, pair := range strings.Split(s[pos:], "&") {
		key, _, hasValue := strings.Cut(pair, "=")
		k, err := url.QueryUnescape(key)
		if err != nil {
			return nil, false
		}
		if k = strings.ToLower(k); hasValue && (k == "password" || k == "sslpassword") {
			spans = append(spans, [2]int{pos + len(key) + 1, pos + len(pair)})
		}
		pos += len(pair) + 1
	}
	return spans, true
}

// numericPorts reports whether every host of a (multi-host) URL authority
// has a numeric port or none: pgx takes any text there for a port, so a
// password that spilled out of the userinfo could sit in it.
func numericPorts(hosts string) bool {
	for _, h := range strings.Split(hosts, ",") {
		if strings.HasPrefix(h, "[") {
			i := strings.IndexByte(h, ']')
			if i < 0 {
				return false
			}
			h = h[i+1:]
			if h != "" && h[0] != ':' {
				return false
			}
		}
		if i := strings.LastIndexByte(h, ':'); i >= 0 {
			h = h[i+1:]
		} else {
			continue
		}
		for _, c := range h {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	return true
}

// keyValueSecrets reads libpq's key = value list: values are unquoted up to
// white space, or single-quoted; a backslash escapes the next character.
func keyValueSecrets(s string) ([][2]int, bool) {
	var spans [][2]int
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' }
	i := 0
	for {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) {
			return spans, true
		}
		k := i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := strings.ToLower(s[k:i])
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) || s[i] != '=' || key == "" {
			return nil, false
		}
		i++
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		from, to, next, ok := kvValue(s, i)
		if !ok {
			return nil, false
		}
		if key == "password" || key == "sslpassword" {
			spans = append(spans, [2]int{from, to})
		}
		i = next
	}
}

// kvValue finds the value that starts at s[i]: its span (inside the quotes
// of a quoted one) and where the next pair may start.
func kvValue(s string, i int) (from, to, next int, ok bool) {
	quoted := i < len(s) && s[i] == '\''
	if quoted {
		i++
	}
	from = i
	for ; i < len(s); i++ {
		switch {
		case s[i] == '\\':
			i++
		case quoted && s[i] == '\'':
			return from, i, i + 1, true
		case !quoted && strings.IndexByte(" \t\n\r\v\f", s[i]) >= 0:
			return from, i, i, true
		}
	}
	if quoted {
		return 0, 0, 0, false // unterminated
	}
	return from, min(i, len(s)), len(s), true
}

// maskConnString shows a connection string with every password masked, or
// only its scheme when it cannot be read with certainty.
func maskConnString(s string) string {
	spans, ok := connSecrets(s)
	if !ok {
		if isConnURL(s) {
			return s[:strings.Index(s, "://")+3] + mask
		}
		return mask
	}
	var b strings.Builder
	last := 0
	for _, sp := range spans {
		b.WriteString(s[last:sp[0]])
		b.WriteString(mask)
		last = sp[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// connPasswords lists the passwords of a connection string as written and
// decoded, for scrubbing them from messages. When the string cannot be
// read, a URL's text between the user name and the last '@' stands in.
func connPasswords(s string) []string {
	spans, ok := connSecrets(s)
	if !ok {
		if start := strings.Index(s, "://") + 3; start > 2 {
			rest := s[start:]
			if c, at := strings.IndexByte(rest, ':'), strings.LastIndexByte(rest, '@'); c >= 0 && at > c+1 {
				return []string{rest[c+1 : at]}
			}
		}
		return nil
	}
	var out []string
	for _, sp := range spans {
		raw := s[sp[0]:sp[1]]
		out = append(out, raw, strings.NewReplacer(`\\`, `\`, `\'`, `'`, `\ `, ` `).Replace(raw))
		if d, err := url.PathUnescape(raw); err == nil {
			out = append(out, d)
		}
		if d, err := url.QueryUnescape(raw); err == nil {
			out = append(out, d)
		}
	}
	return out
}

// withPassword adds a password to a connection string in its own form, so
// that pgx uses it; a string that already holds one is an error.
func withPassword(s, pw string) (string, error) {
	spans, ok := connSecrets(s)
	switch {
	case s == "" || !ok:
		return s, nil // the connection string's own error is reported
	case len(spans) > 0:
		return "", errors.New("pg-url holds a password and pg-password-file is set: give one")
	case !isConnURL(s):
		return s + " password='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw) + "'", nil
	}
	// pgx decodes query values as paths are: '+' stays a plus.
	value := "password=" + strings.ReplaceAll(url.QueryEscape(pw), "+", "%20")
	switch {
	case strings.HasSuffix(s, "?") || strings.HasSuffix(s, "&"):
		return s + value, nil
	case strings.Contains(s, "?"):
		return s + "&" + value, nil
	}
	return s + "?" + value, nil
}

// scrub replaces every secret in msg with the mask, longest first.
func scrub(msg string, secrets []string) string {
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, mask)
		}
	}
	return msg
}
