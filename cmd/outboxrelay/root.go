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
		Use:           "outboxrelay",
		Short:         "Relay a PostgreSQL outbox table to Kafka through logical replication",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return src.apply(cmd)
		},
	}
	root.PersistentFlags().StringVar(&logs.level, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&logs.format, "log-format", "text", "log format: text or json")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	root.AddCommand(newRunCmd(logs, src), newSlotCmd(), newPublicationCmd(), newCheckCmd(src),
		newSchemaCmd(), newConfigCmd(src))
	if demo := demoCommand(logs); demo != nil {
		root.AddCommand(demo)
	}
	return root
}

func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}
