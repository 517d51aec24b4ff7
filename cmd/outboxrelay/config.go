package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
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
				errs = append(errs, fmt.Errorf("environment variable %s=%q: %v", envName(f.Name), v, err))
			}
			s.origin[f.Name] = fromEnv
			return
		}
		if v, ok := file[f.Name]; ok {
			if sv, ok := f.Value.(pflag.SliceValue); ok {
				_ = sv.Replace(splitList(v))
			} else if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %q: %v", fileOrigin[f.Name], f.Name, v, err))
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
func readYAML(path string, fs *pflag.FlagSet) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the configuration file: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("configuration file %s: %w", path, err)
	}
	out := map[string]string{}
	var errs []error
	for k, v := range raw {
		name := strings.ReplaceAll(k, "_", "-")
		if fs.Lookup(name) == nil || name == "config" {
			errs = append(errs, fmt.Errorf("configuration file %s: unknown key %q (keys are the flag names, see --help)", path, k))
			continue
		}
		switch v := v.(type) {
		case []any:
			parts := make([]string, len(v))
			for i, p := range v {
				parts[i] = fmt.Sprint(p)
			}
			out[name] = strings.Join(parts, ",")
		case map[string]any:
			errs = append(errs, fmt.Errorf("configuration file %s: key %q holds a mapping; values are scalars or lists", path, k))
		case nil:
		default:
			out[name] = fmt.Sprint(v)
		}
	}
	return out, errors.Join(errs...)
}

// secret reports whether a flag's value must be masked when printed.
func secret(name string) bool {
	return (strings.Contains(name, "password") || strings.Contains(name, "secret")) && !strings.HasSuffix(name, "-file")
}

func maskURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return strings.Replace(u.String(), "xxxxx", "*****", -1)
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
			v = maskURL(v)
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
			return opts.finish()
		},
	}
	opts.addFlags(print.Flags())
	src.addFlags(print.Flags())
	cmd.AddCommand(print)
	return cmd
}
