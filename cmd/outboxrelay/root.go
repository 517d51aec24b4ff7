package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
)

// envPrefix prefixes the environment variable of every flag: --pg-url is
// also OUTBOXRELAY_PG_URL. A flag given on the command line wins (see
// sources for the whole precedence).
const envPrefix = "OUTBOXRELAY_"

type logOptions struct {
	level  string
	format string
}

func (o *logOptions) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.level)); err != nil {
		return nil, usageError(fmt.Errorf("--log-level %q: want debug, info, warn or error", o.level))
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch o.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError(fmt.Errorf("--log-format %q: want text or json", o.format))
}

func newRootCmd() *cobra.Command {
	logs := &logOptions{}
	src := newSources()
	root := &cobra.Command{
		Use:   "outboxrelay",
		Short: "Relay a PostgreSQL outbox table to Kafka through logical replication",
		Example: `  outboxrelay schema | psql "$DATABASE_URL"
  outboxrelay check --pg-url postgres://relay@db:5432/app --pg-password-file /run/secrets/pg
  outboxrelay run --pg-url postgres://relay@db:5432/app --pg-password-file /run/secrets/pg --brokers k1:9092,k2:9092
  outboxrelay replay --config relay.yaml --since 24h --dry-run
  outboxrelay slot list --pg-url postgres://relay@db:5432/app -o yaml
  outboxrelay --version`,
		Version:       currentBuild().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return src.apply(cmd)
		},
	}
	root.PersistentFlags().StringVar(&logs.level, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&logs.format, "log-format", "text", "log format: text or json")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	root.SetVersionTemplate("outboxrelay {{.Version}}\n")
	root.AddCommand(newRunCmd(logs, src), newReplayCmd(logs, src), newSlotCmd(), newPublicationCmd(), newCheckCmd(src),
		newSchemaCmd(), newConfigCmd(src), newVersionCmd(), newHealthCmd())
	if demo := demoCommand(logs); demo != nil {
		root.AddCommand(demo)
	}
	root.InitDefaultCompletionCmd()
	completionExamples(root)
	addExamples(root, commandExamples())
	registerCompletions(root)
	return root
}

func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}
