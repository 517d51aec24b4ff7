package main

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Every flag of run belongs to exactly one group of its --help, and every
// name a group lists is one of run's flags.
func TestRunFlagsBelongToExactlyOneGroup(t *testing.T) {
	run, _, err := newRootCmd().Find([]string{"run"})
	if err != nil {
		t.Fatal(err)
	}
	run.LocalFlags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		if g := f.Annotations[flagGroupKey]; len(g) != 1 {
			t.Errorf("--%s is in groups %v, want exactly one", f.Name, g)
		}
	})
	for _, g := range flagGroups() {
		for _, n := range g.names {
			if run.Flags().Lookup(n) == nil && n != "standby-url" && !slices.Contains(replayFlags(), n) {
				t.Errorf("group %s lists --%s, which run lacks", g.title, n)
			}
		}
	}
}

// cobra's __complete command suggests the enumerated values.
func TestCompletionOfEnumeratedValues(t *testing.T) {
	for args, want := range map[string]string{
		"run --delivery=":       "at-least-once\nexactly-once\n",
		"run --on-bad-event=":   "fail\ndlq\n",
		"slot list -o=":         "table\njson\nyaml\n",
		"version --output=":     "table\njson\nyaml\n",
		"health --endpoint=":    "healthz\nreadyz\nstreaming\n",
		"check --value-format=": "raw\njson\njson-schema\n",
		"run --log-level=":      "debug\ninfo\nwarn\nerror\n",
	} {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&bytes.Buffer{})
		root.SetArgs(append([]string{"__complete"}, strings.Fields(args)...))
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		if got := out.String(); got != want+":4\n" {
			t.Errorf("__complete %s = %q, want %q", args, got, want)
		}
	}
}

// Every command shows how it is used.
func TestEveryCommandHasAnExample(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Example == "" && c.Name() != "help" && !c.Hidden {
			t.Errorf("%q has no Example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd())
}

// Every value completion offers for a flag is one the command accepts:
// run's flags through config print (which validates as run does), the
// others through their own validation. A flag a build lacks is skipped, as
// registerCompletions skips it.
func TestCompletedValuesAreAccepted(t *testing.T) {
	base := []string{"config", "print", "--pg-url", "postgres://u@h/db", "--brokers", "k:9092"}
	// what some values need beside them to make a valid configuration
	needs := map[string][]string{
		"on-bad-event=dlq":                   {"--dlq-topic", "outbox.dlq"},
		"kafka-sasl-mechanism=PLAIN":         {"--kafka-sasl-user", "u", "--kafka-sasl-password", "p"},
		"kafka-sasl-mechanism=SCRAM-SHA-256": {"--kafka-sasl-user", "u", "--kafka-sasl-password", "p"},
		"kafka-sasl-mechanism=SCRAM-SHA-512": {"--kafka-sasl-user", "u", "--kafka-sasl-password", "p"},
	}
	print, _, err := newRootCmd().Find([]string{"config", "print"})
	if err != nil {
		t.Fatal(err)
	}
	for flag, values := range flagValues() {
		for _, v := range values {
			var err error
			switch flag {
			case "output":
				err = (&output{format: v}).validate()
			case "endpoint":
				_, err = healthOptions{httpAddr: ":1", endpoint: v, timeout: time.Second}.url()
			case "log-level":
				_, err = (&logOptions{level: v, format: "text"}).logger(io.Discard)
			case "log-format":
				_, err = (&logOptions{level: "info", format: v}).logger(io.Discard)
			default:
				if print.Flags().Lookup(flag) == nil {
					t.Logf("--%s is not a flag of this build", flag)
					break
				}
				var out string
				out, err = runCLI(t, append(append(base, "--"+flag+"="+v), needs[flag+"="+v]...)...)
				if err != nil {
					err = fmt.Errorf("%w\n%s", err, out)
				}
			}
			if err != nil {
				t.Errorf("--%s=%s is completed but refused: %v", flag, v, err)
			}
		}
	}
}
