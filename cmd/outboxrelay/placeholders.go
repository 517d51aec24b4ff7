package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Placeholders in --debezium-config files are expanded as the program that
// reads such a file would: Debezium Server's configuration (SmallRye Config,
// MicroProfile Config's expressions) for an application.properties, and
// Kafka Connect's config providers for a connector configuration. Errors
// name the key and the variable, never a value: values hold passwords.

// lookupFunc finds an environment variable.
type lookupFunc func(name string) (string, bool)

// Bounds of one expansion: SmallRye refuses expressions nested deeper than
// 32; the size bound keeps properties that refer to each other twice from
// doubling into gigabytes.
const (
	maxExpansionDepth = 32
	maxExpandedBytes  = 1 << 20
)

// serverExpander expands SmallRye Config expressions in a Debezium Server
// application.properties, as SmallRye Config 3 does:
//
//   - ${name} is the value of name: an environment variable called name, or
//     name with every character other than a letter or digit replaced by _,
//     or that in upper case (debezium.source.x and DEBEZIUM_SOURCE_X), or
//     else another property of the file, itself expanded;
//   - ${name:default} is default, itself expanded, when name has no value
//     (everything after the first colon; ${a::b} is a secret handler,
//     which outboxrelay does not have);
//   - names may hold expressions (${PREFIX_${ENV}}); the first } ends an
//     expression, and one the value leaves open ends with it;
//   - $$ is a $, and \$ (written \\$ in the file) too, and neither starts
//     an expression: route.topic.replacement=$${routedByValue};
//   - an environment variable named as a property, in any of the three forms,
//     overrides the property's value in the file.
type serverExpander struct {
	props map[string]string
	env   lookupFunc
	done  map[string]string // properties expanded so far
}

// expandServer returns props with every value expanded, or every problem:
// each names the key (and its line, when lines has it) and the variable.
func expandServer(props map[string]string, lines map[string]int, env lookupFunc) (map[string]string, error) {
	x := &serverExpander{props: map[string]string{}, env: env, done: map[string]string{}}
	for k, v := range props {
		if ev, ok := x.lookupEnv(k); ok {
			v = ev
		}
		x.props[k] = v
	}
	out := make(map[string]string, len(props))
	var errs []error
	for _, k := range sortedKeys(props) {
		v, err := x.property(k, 0)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s%s: %w", lineOf(lines, k), propertyKey(k), err))
			continue
		}
		out[k] = v
	}
	return out, errors.Join(errs...)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func lineOf(lines map[string]int, k string) string {
	if n, ok := lines[k]; ok {
		return fmt.Sprintf("line %d: ", n)
	}
	return ""
}

var envUnsafe = regexp.MustCompile(`[^A-Za-z0-9]`)

// lookupEnv finds the environment variable of a configuration name, in the
// three forms MicroProfile Config tries.
func (x *serverExpander) lookupEnv(name string) (string, bool) {
	sanitized := envUnsafe.ReplaceAllString(name, "_")
	for _, n := range []string{name, sanitized, strings.ToUpper(sanitized)} {
		if v, ok := x.env(n); ok {
			return v, true
		}
	}
	return "", false
}

// property is the expanded value of a property of the file.
func (x *serverExpander) property(name string, depth int) (string, error) {
	if v, ok := x.done[name]; ok {
		return v, nil
	}
	v, err := x.expand(x.props[name], depth)
	if err == nil {
		x.done[name] = v
	}
	return v, err
}

// expand evaluates the expressions of one value.
func (x *serverExpander) expand(v string, depth int) (string, error) {
	if depth >= maxExpansionDepth {
		return "", fmt.Errorf("expressions nest or refer to each other more than %d deep (a property that refers to itself?)", maxExpansionDepth)
	}
	if !strings.Contains(v, "$") {
		return v, nil
	}
	s := strings.ReplaceAll(v, `\$`, "$$")
	out, _, err := x.part(s, 0, "", true, depth)
	return out, err
}

// part reads s from i up to the end or to a byte of stop outside nested
// expressions, evaluating expressions when eval is set (a default is read
// without evaluating it unless it is needed). In a name, "::" does not
// stop at its first colon. It returns the text and where it stopped.
func (x *serverExpander) part(s string, i int, stop string, eval bool, depth int) (string, int, error) {
	var b strings.Builder
	for i < len(s) {
		c := s[i]
		switch {
		case strings.IndexByte(stop, c) >= 0 && !(c == ':' && strings.HasPrefix(s[i:], "::")):
			return b.String(), i, nil
		case c == ':' && strings.HasPrefix(s[i:], "::") && strings.IndexByte(stop, ':') >= 0:
			b.WriteString("::")
			i += 2
		case c == '$' && i+1 < len(s) && s[i+1] == '$':
			b.WriteByte('$')
			i += 2
		case c == '$' && i+1 < len(s) && s[i+1] == '{':
			v, next, err := x.expression(s, i+2, eval, depth)
			if err != nil {
				return "", 0, err
			}
			b.WriteString(v)
			i = next
		default:
			b.WriteByte(c)
			i++
		}
		if b.Len() > maxExpandedBytes {
			return "", 0, fmt.Errorf("expands to more than %d bytes", maxExpandedBytes)
		}
	}
	return b.String(), i, nil
}

// expression evaluates the expression whose name starts at s[i], just past
// its "${", and returns its value and where the text after it starts.
func (x *serverExpander) expression(s string, i int, eval bool, depth int) (string, int, error) {
	name, i, err := x.part(s, i, ":}", eval, depth)
	if err != nil {
		return "", 0, err
	}
	hasDefault := i < len(s) && s[i] == ':'
	defStart := i + 1
	if hasDefault {
		_, i, err = x.part(s, defStart, "}", false, depth)
		if err != nil {
			return "", 0, err
		}
	}
	next := min(i+1, len(s)) // past the '}', or the end of an open expression
	if !eval {
		return "", next, nil
	}
	switch {
	case name == "":
		return "", 0, errors.New("an expression ${} has no name")
	case strings.Contains(name, "::"):
		return "", 0, fmt.Errorf("%s uses a secret key handler (handler::value), which outboxrelay does not have", placeholderName(name))
	}
	if v, ok := x.lookupEnv(name); ok {
		v, err := x.expand(v, depth+1)
		return v, next, err
	}
	if _, ok := x.props[name]; ok {
		v, err := x.property(name, depth+1)
		return v, next, err
	}
	if !hasDefault {
		return "", 0, fmt.Errorf("%s is not set: no environment variable %s, and no property %s, and no default (${%s:default})",
			placeholderName("${"+name+"}"), envNameShown(name), placeholderName(name), placeholderName(name))
	}
	v, _, err := x.part(s, defStart, "}", true, depth)
	return v, next, err
}

var placeholderShaped = regexp.MustCompile(`^(\$\{)?[A-Za-z_][A-Za-z0-9_.\-]{0,127}(})?$`)

// placeholderName shows a variable's name when it is shaped like one; the
// text after "${" in a value that never meant an expression may be part of
// a password.
func placeholderName(name string) string {
	if placeholderShaped.MatchString(name) {
		return name
	}
	return "(a name not shown: it is not shaped like a variable name)"
}

// envNameShown is the upper-case environment variable MicroProfile Config
// also tries for name, or name itself when that is what it is.
func envNameShown(name string) string {
	up := strings.ToUpper(envUnsafe.ReplaceAllString(name, "_"))
	if up == name {
		return placeholderName(name)
	}
	return placeholderName(name) + " or " + placeholderName(up)
}

// connectVariable is a Kafka Connect config provider variable, as Kafka's
// ConfigTransformer reads one: ${provider:key} or ${provider:path:key}.
var connectVariable = regexp.MustCompile(`\$\{([^}]*?):(?:([^}]*?):)?([^}]*?)\}`)

// expandConnect resolves the config provider variables of a Kafka Connect
// connector configuration: ${env:NAME} (EnvVarConfigProvider),
// ${file:path:key} (FileConfigProvider: key of the properties file at path)
// and ${directory:path:file} (DirectoryConfigProvider: the contents of
// file in the directory path). Another provider, or a variable that has no
// value, is an error: Kafka Connect would pass the text on as it is, a
// password that is not one.
func expandConnect(props map[string]string, lines map[string]int, env lookupFunc) (map[string]string, error) {
	files := map[string]map[string]string{}
	out := make(map[string]string, len(props))
	var errs []error
	for _, k := range sortedKeys(props) {
		var problems []error
		out[k] = connectVariable.ReplaceAllStringFunc(props[k], func(m string) string {
			g := connectVariable.FindStringSubmatch(m)
			v, err := resolveProvider(g[1], g[2], g[3], env, files)
			if err != nil {
				problems = append(problems, err)
			}
			return v
		})
		for _, err := range problems {
			errs = append(errs, fmt.Errorf("%s%s: %w", lineOf(lines, k), propertyKey(k), err))
		}
	}
	return out, errors.Join(errs...)
}

func resolveProvider(provider, path, key string, env lookupFunc, files map[string]map[string]string) (string, error) {
	switch provider {
	case "env":
		if v, ok := env(key); ok {
			return v, nil
		}
		return "", fmt.Errorf("${env:%s}: environment variable %s is not set", placeholderName(key), placeholderName(key))
	case "file":
		props, ok := files[path]
		if !ok {
			b, err := os.ReadFile(path)
			if err != nil {
				return "", fmt.Errorf("${file:%s:%s}: %w", path, placeholderName(key), err)
			}
			if props, _, err = parseProperties(string(b)); err != nil {
				return "", fmt.Errorf("${file:%s:%s}: %w", path, placeholderName(key), err)
			}
			files[path] = props
		}
		if v, ok := props[key]; ok {
			return v, nil
		}
		return "", fmt.Errorf("${file:%s:%s}: the file has no key %s", path, placeholderName(key), placeholderName(key))
	case "directory":
		b, err := os.ReadFile(filepath.Join(path, key))
		if err != nil {
			return "", fmt.Errorf("${directory:%s:%s}: %w", path, placeholderName(key), err)
		}
		return string(b), nil
	}
	return "", fmt.Errorf("a ${%s:...} variable: config provider %s is not supported (env, file and directory are)", placeholderName(provider), placeholderName(provider))
}
