package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/router"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// output renders results as an aligned table for people, or JSON or YAML
// for scripts. JSON and YAML hold the same fields under the same names.
type output struct{ format string }

// outputFormats are the values of -o.
func outputFormats() []string { return []string{"table", "json", "yaml"} }

func (o *output) addFlag(fs *pflag.FlagSet) {
	fs.StringVarP(&o.format, "output", "o", "table", "output format: table, json or yaml")
}

func (o *output) validate() error {
	if !slices.Contains(outputFormats(), o.format) {
		return usageError(fmt.Errorf("--output %q: want table, json or yaml", o.format))
	}
	return nil
}

// print writes v as JSON or YAML, or the table built by rows.
func (o *output) print(w io.Writer, v any, rows func(tw io.Writer)) error {
	switch o.format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		return writeYAML(w, v)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	rows(tw)
	return tw.Flush()
}

// writeYAML writes v as YAML with the names and order of its JSON form, so
// that a script reads the same fields in either: JSON is YAML, so the JSON
// text is read into a YAML tree, whose flow style is then dropped.
func writeYAML(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding the output: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("encoding the output as YAML: %w", err)
	}
	blockStyle(&doc)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("writing YAML: %w", err)
	}
	return enc.Close()
}

// blockStyle clears the styles JSON's syntax gave the nodes (flow
// collections, quoted strings); the encoder still quotes a string that
// would read as another type.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// dbOptions are the connection and table flags of the operator commands.
type dbOptions struct {
	repl     replication.Config
	passFile string
}

func (d *dbOptions) addConnFlag(fs *pflag.FlagSet) {
	d.repl = replication.DefaultConfig()
	fs.StringVar(&d.repl.ConnString, "pg-url", "", "PostgreSQL URL or key=value string without the password; "+
		"the password from --pg-password-file, PGPASSWORD or PGPASSFILE (a password written here is visible in ps) (required)")
	fs.StringVar(&d.passFile, "pg-password-file", "", "file holding the PostgreSQL password (trailing newline removed); it is never printed")
}

func (d *dbOptions) addTableFlags(fs *pflag.FlagSet) {
	fs.StringSliceVar(&d.repl.Tables, "table", d.repl.Tables, "outbox tables, schema.table, comma-separated or the flag repeated")
	fs.StringVar(&d.repl.Publication, "publication", d.repl.Publication, "publication whose changes are decoded")
}

func (d *dbOptions) validate() error {
	var errs []error
	if d.repl.ConnString == "" {
		errs = append(errs, errors.New("--pg-url is required (or OUTBOXRELAY_PG_URL)"))
	}
	if err := replication.ValidateTables(d.repl.Tables); err != nil {
		errs = append(errs, err)
	}
	if d.passFile != "" {
		cs, pw, err := addPasswordFile(d.repl.ConnString, d.passFile)
		if err != nil {
			errs = append(errs, errors.New(scrub(err.Error(), append(connPasswords(cs), pw))))
		}
		d.repl.ConnString = cs
	}
	if err := errors.Join(errs...); err != nil {
		return usageError(err)
	}
	return nil
}

// args wraps a cobra argument check so that its failure is a usage error.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return usageError(err)
		}
		return nil
	}
}

// confirm asks a yes/no question on the command's input unless yes is set.
func confirm(cmd *cobra.Command, yes bool, question string) error {
	if yes {
		return nil
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s [y/N] ", question)
	line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errors.New("not confirmed, nothing was changed (pass --yes to proceed without the question)")
}

func orDash[T any](p *T, f func(T) string) string {
	if p == nil {
		return "-"
	}
	return f(*p)
}

func newSlotCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "slot", Short: "List, create, drop, advance and peek into logical replication slots"}
	cmd.AddCommand(newSlotListCmd(), newSlotCreateCmd(), newSlotDropCmd(), newSlotAdvanceCmd(), newSlotPeekCmd())
	return cmd
}

func newSlotListCmd() *cobra.Command {
	var db dbOptions
	var out output
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List logical slots with the WAL each retains; inactive slots retaining WAL and lost slots are flagged",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := errors.Join(db.validate(), out.validate()); err != nil {
				return err
			}
			slots, err := replication.ListSlots(cmd.Context(), db.repl.ConnString)
			if err != nil {
				return err
			}
			return out.print(cmd.OutOrStdout(), slots, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tPLUGIN\tDATABASE\tACTIVE\tPID\tCONFIRMED_FLUSH\tRESTART\tRETAINED\tLAG\tWAL_STATUS\tSAFE_WAL\tFAILOVER\tATTENTION")
				for _, s := range slots {
					fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Plugin, s.Database, s.Active,
						orDash(s.ActivePID, func(p int) string { return fmt.Sprint(p) }), s.Confirmed, s.Restart,
						orDash(s.Retained, replication.HumanBytes), orDash(s.Lag, replication.HumanBytes), s.WALStatus,
						orDash(s.SafeWAL, replication.HumanBytes), failoverState(s), s.Attention)
				}
			})
		},
	}
	db.addConnFlag(cmd.Flags())
	out.addFlag(cmd.Flags())
	return cmd
}

func newSlotCreateCmd() *cobra.Command {
	var db dbOptions
	var out output
	var failover bool
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a pgoutput logical replication slot",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := errors.Join(db.validate(), out.validate()); err != nil {
				return err
			}
			lsn, err := replication.CreateSlot(cmd.Context(), db.repl.ConnString, a[0], failover)
			if err != nil {
				return err
			}
			res := map[string]any{"slot": a[0], "plugin": "pgoutput", "consistent_point": lsn, "failover": failover}
			return out.print(cmd.OutOrStdout(), res, func(w io.Writer) {
				fmt.Fprintf(w, "created slot %s (pgoutput) at %s; events committed from here on are captured\n", a[0], lsn)
			})
		},
	}
	db.addConnFlag(cmd.Flags())
	out.addFlag(cmd.Flags())
	cmd.Flags().BoolVar(&failover, "failover", false, "create a failover slot synchronized to standbys (PostgreSQL 17+)")
	return cmd
}

func newSlotDropCmd() *cobra.Command {
	var db dbOptions
	var out output
	var force, yes bool
	cmd := &cobra.Command{
		Use:   "drop NAME",
		Short: "Drop a slot; an active one only with --force, which terminates the connection holding it",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := errors.Join(db.validate(), out.validate()); err != nil {
				return err
			}
			s, err := replication.GetSlot(cmd.Context(), db.repl.ConnString, a[0])
			if err != nil {
				return err
			}
			if s.Active && !force {
				return fmt.Errorf("slot %q is active (walsender PID %s): stop the relay using it, or pass --force to terminate that connection",
					s.Name, orDash(s.ActivePID, func(p int) string { return fmt.Sprint(p) }))
			}
			q := fmt.Sprintf("drop slot %s? Events it holds that were not delivered are lost (lag %s).", s.Name, orDash(s.Lag, replication.HumanBytes))
			if err := confirm(cmd, yes, q); err != nil {
				return err
			}
			if err := replication.DropSlot(cmd.Context(), db.repl.ConnString, a[0], force); err != nil {
				return err
			}
			return out.print(cmd.OutOrStdout(), map[string]any{"slot": a[0], "dropped": true}, func(w io.Writer) {
				fmt.Fprintf(w, "dropped slot %s\n", a[0])
			})
		},
	}
	db.addConnFlag(cmd.Flags())
	out.addFlag(cmd.Flags())
	cmd.Flags().BoolVar(&force, "force", false, "terminate the walsender holding an active slot first")
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	return cmd
}

func newSlotAdvanceCmd() *cobra.Command {
	var db dbOptions
	var out output
	var to string
	var yes bool
	cmd := &cobra.Command{
		Use:   "advance NAME --to LSN|current",
		Short: "Move a slot forward, skipping the events before the target; says how many outbox events are skipped",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := errors.Join(db.validate(), out.validate()); err != nil {
				return err
			}
			if to == "" {
				return usageError(errors.New("--to is required: an LSN such as 16/B374D848, or current"))
			}
			ctx := cmd.Context()
			s, err := replication.GetSlot(ctx, db.repl.ConnString, a[0])
			if err != nil {
				return err
			}
			target, err := replication.ResolveLSN(ctx, db.repl.ConnString, to)
			if err != nil {
				return usageError(fmt.Errorf("--to: %w", err))
			}
			cfg := db.repl
			cfg.Slot = a[0]
			pending, err := replication.PeekSlot(ctx, cfg, target, 0)
			if err != nil {
				return err
			}
			q := fmt.Sprintf("advance slot %s from %s to %s, skipping %d outbox events of %s?", s.Name, s.Confirmed, replication.FormatLSN(target), pending.Count, strings.Join(db.repl.Tables, ", "))
			fmt.Fprintln(cmd.ErrOrStderr(), q)
			if err := confirm(cmd, yes, "proceed?"); err != nil {
				return err
			}
			end, err := replication.AdvanceSlot(ctx, db.repl.ConnString, a[0], target)
			if err != nil {
				return err
			}
			res := map[string]any{"slot": a[0], "from": s.Confirmed, "to": end, "skipped_outbox_events": pending.Count}
			return out.print(cmd.OutOrStdout(), res, func(w io.Writer) {
				fmt.Fprintf(w, "advanced slot %s from %s to %s; %d outbox events skipped\n", a[0], s.Confirmed, end, pending.Count)
			})
		},
	}
	db.addConnFlag(cmd.Flags())
	db.addTableFlags(cmd.Flags())
	out.addFlag(cmd.Flags())
	cmd.Flags().StringVar(&to, "to", "", "target position: an LSN (X/Y) or current")
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	return cmd
}

func newSlotPeekCmd() *cobra.Command {
	var db dbOptions
	var out output
	var limit int
	cmd := &cobra.Command{
		Use:   "peek NAME",
		Short: "Count the outbox events waiting in a slot and show the first few, consuming nothing",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := errors.Join(db.validate(), out.validate()); err != nil {
				return err
			}
			if limit < 0 {
				return usageError(fmt.Errorf("--limit %d must not be negative", limit))
			}
			cfg := db.repl
			cfg.Slot = a[0]
			p, err := replication.PeekSlot(cmd.Context(), cfg, 0, limit)
			if err != nil {
				return err
			}
			return out.print(cmd.OutOrStdout(), p, func(w io.Writer) {
				fmt.Fprintf(w, "%d outbox events of %s waiting in slot %s\n", p.Count, strings.Join(cfg.Tables, ", "), p.Slot)
				if len(p.First) == 0 {
					return
				}
				var head []string
				for _, c := range p.First[0].Columns {
					head = append(head, strings.ToUpper(c.Name))
				}
				fmt.Fprintf(w, "COMMIT_END\t%s\n", strings.Join(head, "\t"))
				for _, e := range p.First {
					vals := []string{e.CommitEnd}
					for _, c := range e.Columns {
						vals = append(vals, orDash(c.Value, func(s string) string { return truncate(s, 60) }))
					}
					fmt.Fprintln(w, strings.Join(vals, "\t"))
				}
			})
		},
	}
	db.addConnFlag(cmd.Flags())
	db.addTableFlags(cmd.Flags())
	out.addFlag(cmd.Flags())
	cmd.Flags().IntVar(&limit, "limit", 5, "how many events to show")
	return cmd
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

func newPublicationCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "publication", Short: "Create, drop and show publications"}
	var createDB dbOptions
	var createOut output
	create := &cobra.Command{
		Use:   "create",
		Short: "Create the publication for the outbox table, inserts only",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := errors.Join(createDB.validate(), createOut.validate()); err != nil {
				return err
			}
			if err := replication.CreatePublication(cmd.Context(), createDB.repl); err != nil {
				return err
			}
			res := map[string]any{"publication": createDB.repl.Publication, "tables": createDB.repl.Tables, "operations": []string{"insert"}}
			return createOut.print(cmd.OutOrStdout(), res, func(w io.Writer) {
				fmt.Fprintln(w, "created: "+replication.PublicationDDL(createDB.repl))
			})
		},
	}
	createDB.addConnFlag(create.Flags())
	createDB.addTableFlags(create.Flags())
	createOut.addFlag(create.Flags())

	var dropDB dbOptions
	var dropOut output
	var yes bool
	drop := &cobra.Command{
		Use:   "drop NAME",
		Short: "Drop a publication",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := errors.Join(dropDB.validate(), dropOut.validate()); err != nil {
				return err
			}
			if err := confirm(cmd, yes, fmt.Sprintf("drop publication %s? Slots decoding with it fail until it exists again.", a[0])); err != nil {
				return err
			}
			if err := replication.DropPublication(cmd.Context(), dropDB.repl.ConnString, a[0]); err != nil {
				return err
			}
			return dropOut.print(cmd.OutOrStdout(), map[string]any{"publication": a[0], "dropped": true}, func(w io.Writer) {
				fmt.Fprintf(w, "dropped publication %s\n", a[0])
			})
		},
	}
	dropDB.addConnFlag(drop.Flags())
	dropOut.addFlag(drop.Flags())
	drop.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")

	var showDB dbOptions
	var showOut output
	show := &cobra.Command{
		Use:   "show [NAME]",
		Short: "Show publications with their tables and operations",
		Args:  args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := errors.Join(showDB.validate(), showOut.validate()); err != nil {
				return err
			}
			name := ""
			if len(a) == 1 {
				name = a[0]
			}
			pubs, err := replication.ListPublications(cmd.Context(), showDB.repl.ConnString, name)
			if err != nil {
				return err
			}
			return showOut.print(cmd.OutOrStdout(), pubs, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tOPERATIONS\tALL_TABLES\tTABLES")
				for _, p := range pubs {
					fmt.Fprintf(w, "%s\t%s\t%v\t%s\n", p.Name, strings.Join(p.Operations, ","), p.AllTables, strings.Join(p.Tables, ","))
				}
			})
		},
	}
	showDB.addConnFlag(show.Flags())
	showOut.addFlag(show.Flags())
	cmd.AddCommand(create, drop, show)
	return cmd
}

func newCheckCmd(src *sources) *cobra.Command {
	opts := defaultRunOptions()
	var out output
	var standby string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Preflight checklist: pass, warn or fail for each prerequisite, with what fixes it",
		Long: `Runs every check outboxrelay run makes, and more, without changing anything.
Takes the same flags as run (Kafka flags are ignored). Exit codes: 0 when nothing
fails (warnings allowed), 1 when a check fails, 2 on a usage error.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := errors.Join(opts.finishDB(), out.validate()); err != nil {
				return err
			}
			st, err := replication.Inspect(cmd.Context(), opts.repl)
			if err != nil {
				return err
			}
			results := append(st.Results, columnTypes(opts.route, opts.repl.Tables, st.Columns)...)
			if standby != "" {
				sr, err := replication.InspectStandby(cmd.Context(), opts.repl, standby)
				if err != nil {
					return errors.New(scrub(err.Error(), connPasswords(standby)))
				}
				for _, r := range sr {
					r.Check = "standby: " + r.Check
					results = append(results, r)
				}
			}
			for i := range results {
				results[i].Detail, results[i].Fix = forPeople(results[i].Detail), forPeople(results[i].Fix)
			}
			failed := 0
			for _, r := range results {
				if r.Status == replication.Fail {
					failed++
				}
			}
			err = out.print(cmd.OutOrStdout(), results, func(w io.Writer) {
				for _, r := range results {
					fmt.Fprintf(w, "%s\t%s\t%s\n", strings.ToUpper(string(r.Status)), r.Check, r.Detail)
					if r.Fix != "" {
						fmt.Fprintf(w, "\t\tfix: %s\n", strings.ReplaceAll(r.Fix, "\n", "\n\t\t     "))
					}
				}
			})
			if err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("%d check(s) failed", failed)
			}
			return nil
		},
	}
	opts.addFlags(cmd.Flags())
	src.addFlags(cmd.Flags())
	out.addFlag(cmd.Flags())
	cmd.Flags().StringVar(&standby, "standby-url", "", "also check this hot standby of the primary (PostgreSQL 17+) for what keeps a failover slot (--slot-failover) usable after a promotion; "+
		"its password from PGPASSWORD or PGPASSFILE, never printed")
	return cmd
}

// preflightColumns refuses at start what check refuses: a table whose column
// types the router cannot use as configured (a partition placement on a
// text column), together with every other unmet prerequisite, as the
// relay's own preflight reports them (exit code 3). Any other outcome,
// including a failure to connect, is left to the relay's preflight.
func preflightColumns(ctx context.Context, opts runOptions) error {
	st, err := replication.Inspect(ctx, opts.repl)
	if err != nil {
		return nil
	}
	types := columnTypes(opts.route, opts.repl.Tables, st.Columns)
	if len(types) == 0 || types[0].Status != replication.Fail {
		return nil
	}
	st.Results = append(st.Results, types...)
	return &exitError{code: exitPreflight, err: st.Failed()}
}

// columnTypes checks that the router can use the table's column types.
// The failures come first.
func columnTypes(cfg router.Config, tables []string, cols [][]replication.Column) []replication.Result {
	rt, err := router.New(cfg)
	if err != nil {
		return []replication.Result{{Check: "column types", Status: replication.Fail, Detail: err.Error()}}
	}
	var failed, passed []replication.Result
	for i, tc := range cols {
		if len(tc) == 0 {
			continue // a missing table, reported already
		}
		rc := make([]router.Column, len(tc))
		for j, c := range tc {
			rc[j] = router.Column{Name: c.Name, TypeOID: c.TypeOID, TypMod: c.TypMod, NotNull: c.NotNull}
		}
		if _, err := rt.Compile(rc); err != nil {
			failed = append(failed, replication.Result{Check: "column types", Status: replication.Fail, Detail: tables[i] + ": " + err.Error(),
				Fix: "change the column types or the --field-* and --fields-additional-placement flags"})
			continue
		}
		passed = append(passed, replication.Result{Check: "column types", Status: replication.Pass, Detail: tables[i] + ": the router can use every configured column"})
	}
	return append(failed, passed...)
}

func newSchemaCmd() *cobra.Command {
	var db dbOptions
	cmd := &cobra.Command{
		Use:   "schema",
		Short: "Print the recommended outbox table DDL, the publication, and an insert-and-delete writer (commented out); the output runs in psql",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := replication.ValidateTables(db.repl.Tables); err != nil {
				return usageError(err)
			}
			qt := replication.QualifiedTable(db.repl.Tables[0])
			w := cmd.OutOrStdout()
			for _, t := range db.repl.Tables {
				fmt.Fprintf(w, "-- The outbox table.\n%s\n\n", replication.OutboxDDL(replication.QualifiedTable(t)))
			}
			fmt.Fprintf(w, "-- The publication outboxrelay creates if it is missing (inserts only).\n%s\n\n", replication.PublicationDDL(db.repl))
			// The writer is an example for the application's code: as SQL it
			// would fail (it updates the application's own table), so it is
			// commented out and the output can be piped to psql as it is.
			fmt.Fprintln(w, "-- An insert-and-delete writer, for the application (commented out so that this output runs in psql):")
			fmt.Fprintln(w, commentOut(replication.WriterExample(qt)))
			return nil
		},
	}
	db.repl = replication.DefaultConfig()
	db.addTableFlags(cmd.Flags())
	return cmd
}

// commentOut turns every line that is not an SQL comment yet into one.
func commentOut(sql string) string {
	lines := strings.Split(sql, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			lines[i] = "-- " + l
		}
	}
	return strings.Join(lines, "\n")
}

// failoverState shows whether a slot survives a failover: "-" for an
// ordinary slot, "yes" for a failover slot, "synced" for a standby's copy.
func failoverState(s replication.SlotInfo) string {
	switch {
	case s.Synced:
		return "synced"
	case s.Failover:
		return "yes"
	}
	return "-"
}
