package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/outboxrelay/outboxrelay/router"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// flagGroupKey is the pflag annotation naming a flag's group in --help.
const flagGroupKey = "outboxrelay_flag_group"

// flagGroup is a section of run's --help: the flags it names, then those
// whose name starts with one of its prefixes and that no group names.
type flagGroup struct {
	title    string
	names    []string
	prefixes []string
}

// flagGroups are the sections of --help for run and the commands taking its
// flags, in order.
func flagGroups() []flagGroup {
	return []flagGroup{
		{title: "Replay", names: replayFlags()},
		{title: "PostgreSQL", prefixes: []string{"pg-"},
			names: []string{"table", "slot", "publication", "slot-failover", "status-interval", "standby-url", "snapshot", "snapshot-order-by"}},
		{title: "Kafka", prefixes: []string{"kafka-"},
			names: []string{"brokers", "create-topics", "topic-partitions", "topic-replication-factor"}},
		{title: "Routing", prefixes: []string{"field-", "route-"},
			names: []string{"fields-additional-placement", "tombstone-on-empty-payload", "expand-json-payload",
				"json-payload-null-behavior", "key-format", "value-format"}},
		{title: "Delivery", names: []string{"delivery", "checkpoint-topic", "accept-new-source", "on-bad-event", "dlq-topic", "on-update",
			"max-in-flight-events", "max-in-flight-bytes", "shutdown-timeout"}},
		{title: "Operations", names: []string{"http-addr", "pprof", "retry-backoff-max", "heartbeat-interval"}},
		{title: "Configuration files", names: []string{"config", "debezium-config"}},
	}
}

// groupsOf lists the groups a flag belongs to: those naming it, or else
// those with a prefix of it. run's flags belong to exactly one.
func groupsOf(name string, groups []flagGroup) []string {
	var named, prefixed []string
	for _, g := range groups {
		if slices.Contains(g.names, name) {
			named = append(named, g.title)
		}
		for _, p := range g.prefixes {
			if strings.HasPrefix(name, p) {
				prefixed = append(prefixed, g.title)
			}
		}
	}
	if len(named) > 0 {
		return named
	}
	return prefixed
}

// useFlagGroups annotates cmd's flags with their groups and shows them so
// in --help; flags in no group come last, under "Other flags".
func useFlagGroups(cmd *cobra.Command) {
	groups := flagGroups()
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if g := groupsOf(f.Name, groups); len(g) > 0 {
			_ = cmd.Flags().SetAnnotation(f.Name, flagGroupKey, g)
		}
	})
	cmd.SetUsageFunc(groupedUsage)
}

// groupedUsage is cobra's usage text with the local flags in sections.
func groupedUsage(c *cobra.Command) error {
	w := c.OutOrStderr()
	fmt.Fprintf(w, "Usage:\n  %s\n", c.UseLine())
	if c.HasExample() {
		fmt.Fprintf(w, "\nExamples:\n%s\n", c.Example)
	}
	sections := map[string]*pflag.FlagSet{}
	c.LocalFlags().VisitAll(func(f *pflag.Flag) {
		title := "Other"
		if g := f.Annotations[flagGroupKey]; len(g) > 0 {
			title = g[0]
		}
		if sections[title] == nil {
			sections[title] = pflag.NewFlagSet(title, pflag.ContinueOnError)
			sections[title].SortFlags = false
		}
		sections[title].AddFlag(f)
	})
	for _, g := range append(flagGroups(), flagGroup{title: "Other"}) {
		if fs := sections[g.title]; fs != nil {
			fmt.Fprintf(w, "\n%s flags:\n%s", g.title, fs.FlagUsages())
		}
	}
	if c.HasAvailableInheritedFlags() {
		fmt.Fprintf(w, "\nGlobal flags:\n%s", c.InheritedFlags().FlagUsages())
	}
	return nil
}

// flagValues are the values of the flags that take one of a fixed set, for
// shell completion, by flag name wherever the flag appears.
func flagValues() map[string][]string {
	var formats []string
	for _, f := range router.Formats {
		formats = append(formats, string(f))
	}
	return map[string][]string{
		"delivery":                   {"at-least-once", "exactly-once"},
		"on-bad-event":               {"fail", "dlq"},
		"output":                     outputFormats(),
		"log-level":                  {"debug", "info", "warn", "error"},
		"log-format":                 {"text", "json"},
		"key-format":                 formats,
		"value-format":               formats,
		"json-payload-null-behavior": {router.BehaviorIgnore, router.BehaviorOptionalBytes},
		"kafka-sasl-mechanism":       {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"},
		"kafka-compression":          {"none", "gzip", "snappy", "lz4", "zstd"},
		"endpoint":                   healthEndpoints(),
	}
}

// registerCompletions completes the enumerated values of every flag of
// every command under root; a flag named in flagValues that a build lacks
// is skipped.
func registerCompletions(root *cobra.Command) {
	values := flagValues()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if v, ok := values[f.Name]; ok {
				_ = c.RegisterFlagCompletionFunc(f.Name, cobra.FixedCompletions(v, cobra.ShellCompDirectiveNoFileComp))
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// completionExamples adds Example sections to cobra's completion commands.
func completionExamples(root *cobra.Command) {
	for _, c := range root.Commands() {
		if c.Name() != "completion" {
			continue
		}
		c.Example = "  outboxrelay completion bash > /etc/bash_completion.d/outboxrelay\n  source <(outboxrelay completion zsh)"
		for _, shell := range c.Commands() {
			switch shell.Name() {
			case "bash":
				shell.Example = "  source <(outboxrelay completion bash)\n  outboxrelay completion bash > /etc/bash_completion.d/outboxrelay"
			case "zsh":
				shell.Example = "  outboxrelay completion zsh > \"${fpath[1]}/_outboxrelay\""
			case "fish":
				shell.Example = "  outboxrelay completion fish > ~/.config/fish/completions/outboxrelay.fish"
			case "powershell":
				shell.Example = "  outboxrelay completion powershell | Out-String | Invoke-Expression"
			}
		}
	}
}

// commandExamples are the Example sections of the commands, by path.
func commandExamples() map[string]string {
	const pg = "--pg-url postgres://relay@db:5432/app --pg-password-file /run/secrets/pg"
	return map[string]string{
		"outboxrelay run": "  outboxrelay run " + pg + " --brokers k1:9092,k2:9092\n" +
			"  outboxrelay run --config relay.yaml --delivery exactly-once\n" +
			"  outboxrelay run --debezium-config application.properties",
		"outboxrelay replay": "  outboxrelay replay --config relay.yaml --dry-run\n" +
			"  outboxrelay replay --config relay.yaml --since 2026-03-01T00:00:00Z\n" +
			"  outboxrelay replay --config relay.yaml --where \"aggregatetype = 'Order' AND created_at > now() - interval '1 day'\" --yes\n" +
			"  outboxrelay replay --config relay.yaml --ids 9f3a6d4e-1b2c-4d5e-8f90-a1b2c3d4e5f6,0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
		"outboxrelay slot":               "  outboxrelay slot list " + pg,
		"outboxrelay slot list":          "  outboxrelay slot list " + pg + "\n  outboxrelay slot list " + pg + " -o yaml",
		"outboxrelay slot create":        "  outboxrelay slot create outboxrelay " + pg + "\n  outboxrelay slot create outboxrelay --failover " + pg,
		"outboxrelay slot drop":          "  outboxrelay slot drop old_slot " + pg,
		"outboxrelay slot advance":       "  outboxrelay slot advance outboxrelay --to current " + pg + "\n  outboxrelay slot advance outboxrelay --to 16/B374D848 --yes " + pg,
		"outboxrelay slot peek":          "  outboxrelay slot peek outboxrelay --limit 10 " + pg,
		"outboxrelay publication":        "  outboxrelay publication show " + pg,
		"outboxrelay publication create": "  outboxrelay publication create --table public.outbox " + pg,
		"outboxrelay publication drop":   "  outboxrelay publication drop outboxrelay " + pg,
		"outboxrelay publication show":   "  outboxrelay publication show outboxrelay " + pg + " -o json",
		"outboxrelay check":              "  outboxrelay check " + pg + "\n  outboxrelay check " + pg + " --slot-failover --standby-url postgres://relay@standby:5432/app",
		"outboxrelay schema":             "  outboxrelay schema --table public.outbox | psql \"$DATABASE_URL\"",
		"outboxrelay config":             "  outboxrelay config print --config relay.yaml",
		"outboxrelay config print":       "  OUTBOXRELAY_BROKERS=k1:9092 outboxrelay config print --config relay.yaml\n  outboxrelay config print --debezium-config application.properties",
		"outboxrelay demo":               "  go run -tags demo ./cmd/outboxrelay demo",
	}
}

// addExamples gives every command under root without an Example its own.
func addExamples(c *cobra.Command, examples map[string]string) {
	if c.Example == "" {
		c.Example = examples[c.CommandPath()]
	}
	for _, sub := range c.Commands() {
		addExamples(sub, examples)
	}
}
