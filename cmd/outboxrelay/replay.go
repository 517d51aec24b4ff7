package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/outboxrelay/outboxrelay/cmd/internal/pipeline"
	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/router"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// replayOptions are the replay command's settings: run's, for the
// connection, the routing and Kafka, and its own.
type replayOptions struct {
	run         runOptions
	src         *sources
	where       string
	since       string
	sinceColumn string
	ids         []string
	dryRun      bool
	yes         bool
	progress    time.Duration
	sinceTime   time.Time // --since, parsed
}

// replayIgnored are run's flags that mean nothing to replay. They are
// hidden, and still accepted, so that one --config file serves both.
var replayIgnored = []string{"slot", "publication", "slot-failover", "status-interval", "retry-backoff-max", "http-addr", "pprof",
	"delivery", "checkpoint-topic", "accept-new-source", "heartbeat-interval", "max-in-flight-bytes"}

// replayFlags are replay's own flags, the first section of its --help.
func replayFlags() []string {
	return []string{"where", "since", "since-column", "ids", "dry-run", "yes", "progress-interval"}
}

// replayFilters are the flags that select rows; at most one may be given.
var replayFilters = []string{"where", "since", "ids"}

// replayPreview is how many records --dry-run shows.
const replayPreview = 5

func (o *replayOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.where, "where", "", "SQL condition selecting the rows to replay, e.g. \"aggregatetype = 'Order'\"; "+
		"it runs as the relay's role (--pg-url) inside a READ ONLY transaction")
	fs.StringVar(&o.since, "since", "", "replay the rows whose --since-column is at or after this time: 2026-03-01, 2026-03-01T12:00:00Z (RFC 3339; UTC without an offset), or a duration ago such as 24h")
	fs.StringVar(&o.sinceColumn, "since-column", "created_at", "the column holding each row's insert time: --since filters on it, and rows are replayed in its order (then physical order) when the table has it")
	fs.StringSliceVar(&o.ids, "ids", nil, "replay the rows with these event ids (the --field-event-id column, compared as text), comma-separated")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print what would be sent and the first records, send nothing")
	fs.BoolVar(&o.yes, "yes", false, "do not ask for confirmation (needed without a terminal)")
	fs.DurationVar(&o.progress, "progress-interval", 5*time.Second, "how often progress is logged while sending")
}

func newReplayCmd(logs *logOptions, src *sources) *cobra.Command {
	o := &replayOptions{run: defaultRunOptions(), src: src}
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Publish rows kept in the outbox table again, as the records run would have produced",
		Long: `Reads rows kept in the outbox table and publishes them again as the records
run would have produced for them: the same topics, keys, values, headers and
partitions, from the same routing and Kafka flags (and --config or
--debezium-config files). For a new consumer that needs history, or after a
lost replication slot. It never touches the slot or the publication.

Without --where, --since or --ids every row is replayed. Rows are read in one
READ ONLY snapshot and sent in --since-column order (then physical order) when
the table has that column, else in physical order; records of one key keep
that order in their partition. Consumers that already read a record receive it
again.

Before sending, replay prints the table, the filter, the number of rows, the
topics with their counts and the brokers, and asks for confirmation (y/N) on
the terminal; without a terminal it refuses unless --yes is given. --dry-run
prints the summary and the first records and sends nothing.

Exit codes: 0 every selected row was sent and acknowledged (or nothing to do),
1 a failure (nothing or part was sent: the message says how much), 2 a usage
error, a --where the server refuses, or no confirmation possible, 3 the table
cannot be routed as configured, 4 interrupted before every row was sent and
acknowledged. See docs/replay.md.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.finish(); err != nil {
				return err
			}
			log, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return o.replay(cmd, log)
		},
	}
	o.run.addFlags(cmd.Flags())
	src.addFlags(cmd.Flags())
	o.addFlags(cmd.Flags())
	for _, name := range replayIgnored {
		_ = cmd.Flags().MarkHidden(name)
	}
	useFlagGroups(cmd)
	return cmd
}

// given reports whether a flag was set anywhere: command line, environment
// or file, even to an empty value.
func (o *replayOptions) given(name string) bool {
	from := o.src.origin[name]
	return from != "" && from != fromDefault
}

// finish validates run's settings and then replay's own, reporting every
// problem of each at once.
func (o *replayOptions) finish() error {
	if err := o.run.finish(); err != nil {
		return err
	}
	// Replay produces with the idempotent producer, never in transactions.
	o.run.kafka.TransactionalID, o.run.kafka.CheckpointKey = "", ""
	var errs []error
	var set []string
	for _, f := range replayFilters {
		if o.given(f) {
			set = append(set, "--"+f)
		}
	}
	if len(set) > 1 {
		errs = append(errs, fmt.Errorf("%s select rows in different ways: give one of --where, --since and --ids", strings.Join(set, " and ")))
	}
	if o.given("where") && strings.TrimSpace(o.where) == "" {
		errs = append(errs, errors.New("--where is empty (omit it to replay every row)"))
	}
	if o.given("ids") && len(nonEmpty(o.ids)) == 0 {
		errs = append(errs, errors.New("--ids names no id"))
	}
	if o.given("since") {
		t, err := parseSince(o.since, time.Now())
		if err != nil {
			errs = append(errs, err)
		}
		o.sinceTime = t
	}
	if o.sinceColumn == "" {
		errs = append(errs, errors.New("--since-column is empty"))
	}
	if len(o.run.repl.Tables) != 1 {
		errs = append(errs, fmt.Errorf("--table names %d tables: replay reads one table at a time, run it once per table", len(o.run.repl.Tables)))
	}
	if o.progress <= 0 {
		errs = append(errs, fmt.Errorf("--progress-interval %v must be positive", o.progress))
	}
	if err := errors.Join(errs...); err != nil {
		return usageError(err)
	}
	return nil
}

func nonEmpty(list []string) []string {
	var out []string
	for _, s := range list {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// parseSince reads --since: a date, a date and time (RFC 3339, or UTC
// without an offset), or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want a date (2026-03-01), a time (2026-03-01T12:00:00Z) or a duration ago (24h)", s)
}

// replay checks the table, prints the summary, asks, and sends.
func (o *replayOptions) replay(cmd *cobra.Command, log *slog.Logger) error {
	ctx, out := cmd.Context(), cmd.OutOrStdout()
	cols, err := replication.TableColumns(ctx, o.run.repl.ConnString, o.table())
	if err != nil {
		return o.queryError(err)
	}
	plan, err := o.compile(cols)
	if err != nil {
		return err
	}
	q, desc, err := o.query(cols)
	if err != nil {
		return err
	}
	rows, err := replication.OpenRows(ctx, o.run.repl.ConnString, q)
	if err != nil {
		return o.queryError(err)
	}
	defer rows.Close(context.WithoutCancel(ctx))
	sum, err := o.summarize(ctx, rows, plan, desc)
	if err != nil {
		return err
	}
	sum.print(out)
	if err := sum.routable(o.run.kafka.DLQTopic); err != nil {
		return err
	}
	switch {
	case o.dryRun:
		return o.preview(ctx, out, rows, plan)
	case sum.rows == 0:
		fmt.Fprintln(out, "nothing to replay")
		return nil
	}
	if err := o.confirm(cmd, sum); err != nil {
		return err
	}
	return o.send(ctx, out, rows, plan, sum, log)
}

// compile prepares the router for the table (exit code 3 when the table
// cannot be routed as configured, as run's preflight refuses it).
func (o *replayOptions) compile(cols []replication.Column) (*router.Plan, error) {
	rt, err := router.New(o.run.route)
	if err != nil {
		return nil, usageError(err)
	}
	rc := make([]router.Column, len(cols))
	for i, c := range cols {
		rc[i] = router.Column{Name: c.Name, TypeOID: c.TypeOID, TypMod: c.TypMod, NotNull: c.NotNull}
	}
	plan, err := rt.Compile(rc)
	if err != nil {
		return nil, &exitError{code: exitPreflight, err: fmt.Errorf("%w; change the table or the --field-* and --fields-additional-placement flags", err)}
	}
	return plan, nil
}

// Type OIDs a --since-column may have.
const (
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
)

// query is the rows to read: every column, the filter, the order; desc
// describes the filter and the order for the summary.
func (o *replayOptions) query(cols []replication.Column) (replication.RowsQuery, [2]string, error) {
	q := replication.RowsQuery{Table: o.table(), OrderBy: "ctid"}
	var since *replication.Column
	for i, c := range cols {
		q.Columns = append(q.Columns, c.Name)
		if c.Name == o.sinceColumn {
			since = &cols[i]
		}
	}
	desc := [2]string{"none: every row", "physical order (ctid); the table has no column " + o.sinceColumn + " (--since-column)"}
	if since != nil {
		q.OrderBy = replication.QuoteIdent(since.Name) + ", ctid"
		desc[1] = since.Name + ", then physical order (ctid)"
	}
	switch {
	case o.given("where"):
		q.Where, desc[0] = o.where, "--where "+o.where
	case o.given("ids"):
		ids := nonEmpty(o.ids)
		q.Where, q.Args = replication.QuoteIdent(o.run.route.FieldEventID)+"::text = ANY ($1::text[])", []any{ids}
		desc[0] = fmt.Sprintf("--ids: %d id(s) in column %s", len(ids), o.run.route.FieldEventID)
	case o.given("since"):
		if err := o.sinceUsable(since); err != nil {
			return q, desc, err
		}
		q.Where, q.Args = replication.QuoteIdent(since.Name)+" >= $1", []any{o.sinceTime.UTC()}
		desc[0] = fmt.Sprintf("--since: %s >= %s", since.Name, o.sinceTime.UTC().Format(time.RFC3339Nano))
	}
	return q, desc, nil
}

// sinceUsable checks that --since has a timestamp column to filter on.
func (o *replayOptions) sinceUsable(c *replication.Column) error {
	table := o.table()
	if c == nil {
		return usageError(fmt.Errorf("--since filters on --since-column %q, which table %s does not have: name the column holding each row's insert time with --since-column, or select rows with --where", o.sinceColumn, table))
	}
	switch c.TypeOID {
	case oidTimestamptz, oidTimestamp, oidDate:
		return nil
	}
	return usageError(fmt.Errorf("--since-column %q of table %s is not a timestamp, timestamptz or date column (type OID %d): select rows with --where instead", c.Name, table, c.TypeOID))
}

// queryError names the flag behind a query the server refused.
func (o *replayOptions) queryError(err error) error {
	var qe *replication.QueryError
	if !errors.As(err, &qe) {
		return err
	}
	switch qe.Field {
	case "Table":
		return &exitError{code: exitPreflight, err: fmt.Errorf("--table %s: %w", o.table(), qe.Err)}
	case "Where":
		for _, f := range replayFilters {
			if o.given(f) {
				return usageError(fmt.Errorf("--%s: the server refused the condition, nothing was sent: %w", f, qe.Err))
			}
		}
	}
	return err
}

// replaySummary is what a replay will send.
type replaySummary struct {
	table, filter, order string
	rows                 int64
	topics               []topicCount
	unroutable           int64
	firstBad             error
	brokers              []string
	dlq                  string
}

type topicCount struct {
	topic string
	rows  int64
}

// summarize counts the rows per topic, in the snapshot the rows are read in.
func (o *replayOptions) summarize(ctx context.Context, rows *replication.Rows, plan *router.Plan, desc [2]string) (*replaySummary, error) {
	groups, err := rows.CountBy(ctx, o.run.route.RouteByField)
	if err != nil {
		if o.given("where") {
			return nil, usageError(fmt.Errorf("--where: the server could not evaluate the condition, nothing was sent: %w", err))
		}
		return nil, err
	}
	sum := &replaySummary{table: o.table(), filter: desc[0], order: desc[1], brokers: o.run.kafka.Brokers, dlq: o.run.kafka.DLQTopic}
	byTopic := map[string]int64{}
	for _, g := range groups {
		sum.rows += g.Rows
		topic, err := plan.Topic(g.Value)
		if err != nil {
			sum.unroutable += g.Rows
			if sum.firstBad == nil {
				sum.firstBad = err
			}
			continue
		}
		byTopic[topic] += g.Rows
	}
	for t, n := range byTopic {
		sum.topics = append(sum.topics, topicCount{topic: t, rows: n})
	}
	sort.Slice(sum.topics, func(i, j int) bool {
		a, b := sum.topics[i], sum.topics[j]
		return a.rows > b.rows || (a.rows == b.rows && a.topic < b.topic)
	})
	return sum, nil
}

func (s *replaySummary) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "table:\t%s\n", s.table)
	fmt.Fprintf(tw, "filter:\t%s\n", s.filter)
	fmt.Fprintf(tw, "order:\t%s\n", s.order)
	fmt.Fprintf(tw, "rows:\t%d\n", s.rows)
	for i, t := range s.topics {
		label := ""
		if i == 0 {
			label = "topics:"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\n", label, t.topic, t.rows)
	}
	if s.unroutable > 0 {
		where := "none is sent: replay stops before sending"
		if s.dlq != "" {
			where = "sent to the dead-letter topic " + s.dlq
		}
		fmt.Fprintf(tw, "unroutable:\t%d rows (%s), e.g. %v\n", s.unroutable, where, s.firstBad)
	}
	fmt.Fprintf(tw, "brokers:\t%s\n", strings.Join(s.brokers, ","))
	_ = tw.Flush()
}

// routable refuses a replay with rows that cannot be routed and no
// dead-letter topic, before anything is sent.
func (s *replaySummary) routable(dlq string) error {
	if s.unroutable == 0 || dlq != "" {
		return nil
	}
	return fmt.Errorf("%d of the selected rows cannot be routed (%w); nothing was sent: leave them out with --where, or send them to a dead-letter topic with --on-bad-event=dlq --dlq-topic", s.unroutable, s.firstBad)
}

// preview prints the first records of a dry run.
func (o *replayOptions) preview(ctx context.Context, w io.Writer, rows *replication.Rows, plan *router.Plan) error {
	shown := 0
	errEnough := errors.New("enough")
	err := rows.Each(ctx, func(values [][]byte) error {
		if shown == replayPreview {
			return errEnough
		}
		shown++
		rec, err := plan.Route(values, time.Now())
		if err != nil {
			fmt.Fprintf(w, "record %d: %v\n", shown, err)
			return nil
		}
		fmt.Fprintf(w, "record %d: topic=%s partition=%s key=%s id=%s value=%s\n", shown, rec.Topic, partitionOf(rec), abbreviate(rec.Key), rec.EventID, abbreviate(rec.Value))
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return fmt.Errorf("reading the first rows: %w", err)
	}
	fmt.Fprintln(w, "dry run: nothing was sent")
	return nil
}

func partitionOf(rec router.Record) string {
	if rec.Partition < 0 {
		return "(hash of the key)"
	}
	return fmt.Sprint(rec.Partition)
}

// abbreviate shows a key or value quoted, cut after 80 bytes.
func abbreviate(b []byte) string {
	if b == nil {
		return "null"
	}
	if len(b) > 80 {
		return fmt.Sprintf("%q...(%d bytes)", b[:80], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// confirm asks on the terminal unless --yes; without a terminal it refuses.
func (o *replayOptions) confirm(cmd *cobra.Command, sum *replaySummary) error {
	if o.yes {
		return nil
	}
	if !isTerminal(cmd.InOrStdin()) {
		return usageError(errors.New("refusing to replay without confirmation: standard input is not a terminal; check the summary above (or --dry-run) and pass --yes"))
	}
	// The question is asked on another goroutine so that Ctrl-C, which
	// cancels the context instead of killing the process, also ends it. A
	// read of the terminal cannot be canceled: the goroutine ends with the
	// process.
	answer := make(chan error, 1)
	go func() { answer <- confirm(cmd, false, fmt.Sprintf("publish %d records to Kafka again?", sum.rows)) }()
	select {
	case err := <-answer:
		return err
	case <-cmd.Context().Done():
		fmt.Fprintln(cmd.ErrOrStderr())
		return errors.New("interrupted at the question, nothing was sent")
	}
}

// sender publishes rows and counts what Kafka acknowledged.
type sender struct {
	plan  *router.Plan
	snk   *sink.Sink
	dlq   string
	log   *slog.Logger
	room  chan struct{} // one token per record sent and not yet acknowledged
	sent  atomic.Int64
	acked atomic.Int64
	total int64
	start time.Time
}

// send publishes every row and waits for every acknowledgement; an
// interrupt stops the reading and waits --shutdown-timeout for what is in
// flight.
func (o *replayOptions) send(ctx context.Context, out io.Writer, rows *replication.Rows, plan *router.Plan, sum *replaySummary, log *slog.Logger) error {
	s := &sender{plan: plan, dlq: o.run.kafka.DLQTopic, log: log, room: make(chan struct{}, o.run.kafka.QueueSize), total: sum.rows, start: time.Now()}
	snk, err := sink.Open(o.run.kafka, log, func(any) { s.acked.Add(1); <-s.room })
	if err != nil {
		return fmt.Errorf("nothing was sent: %w", err)
	}
	s.snk = snk
	defer snk.Close()
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	sinkCtx, stopSink := context.WithCancel(context.WithoutCancel(ctx))
	var sinkErr error
	sinkDone := make(chan struct{})
	go func() {
		defer close(sinkDone)
		sinkErr = snk.Run(sinkCtx)
		stopReading()
	}()
	var reporter sync.WaitGroup
	reported := make(chan struct{})
	reporter.Go(func() { s.report(reported, o.progress) })
	readErr := rows.Each(readCtx, s.row(readCtx))
	s.drain(ctx, sinkDone, o.run.repl.DrainTimeout)
	stopSink()
	<-sinkDone
	close(reported)
	reporter.Wait()
	return s.outcome(ctx, out, sum, readErr, sinkErr)
}

// row routes one row and hands it to the sink once there is room.
func (s *sender) row(ctx context.Context) func([][]byte) error {
	return func(values [][]byte) error {
		// The record shares memory with the values, which Each reuses.
		vals := replication.CloneValues(values)
		rec, err := s.plan.Route(vals, time.Now())
		if err != nil && s.dlq == "" {
			return err
		}
		if err != nil {
			rec = pipeline.DeadLetter(s.plan, vals, s.dlq, err)
			s.log.Warn("sending a row that cannot be routed to the dead-letter topic", "event_id", rec.EventID, "dlq_topic", s.dlq, "reason", err.Error())
		}
		// A stop request ends the reading even when there is room: select
		// would pick either at random.
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case s.room <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.snk.Send(sink.Message{Record: rec})
		s.sent.Add(1)
		return nil
	}
}

// drain waits until Kafka acknowledged everything sent or the sink
// stopped; once ctx is done, for at most timeout.
func (s *sender) drain(ctx context.Context, sinkDone <-chan struct{}, timeout time.Duration) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var deadline <-chan time.Time
	for s.acked.Load() < s.sent.Load() {
		if deadline == nil && ctx.Err() != nil {
			s.log.Info("stop requested: reading stopped, waiting for Kafka's acknowledgements", "in_flight", s.sent.Load()-s.acked.Load(), "timeout", timeout.String())
			deadline = time.After(timeout)
		}
		select {
		case <-sinkDone:
			return
		case <-deadline:
			return
		case <-tick.C:
		}
	}
}

// report logs the progress every interval until done closes.
func (s *sender) report(done <-chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	last, lastAt := int64(0), s.start
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			sent := s.sent.Load()
			rate := float64(sent-last) / now.Sub(lastAt).Seconds()
			s.log.Info("replaying", "sent", sent, "acknowledged", s.acked.Load(), "rows", s.total, "rows_per_s", int64(rate))
			last, lastAt = sent, now
		}
	}
}

// outcome reports how the replay ended and returns its exit.
func (s *sender) outcome(ctx context.Context, out io.Writer, sum *replaySummary, readErr, sinkErr error) error {
	sent, acked := s.sent.Load(), s.acked.Load()
	counts := fmt.Sprintf("%d of %d rows sent, %d acknowledged by Kafka (those are in Kafka; the others may or may not be)", sent, s.total, acked)
	switch {
	case sinkErr != nil:
		return fmt.Errorf("publishing to Kafka: %w\n%s", sinkErr, counts)
	case readErr != nil && ctx.Err() == nil:
		return fmt.Errorf("replaying %s: %w\n%s", sum.table, readErr, counts)
	case ctx.Err() != nil || acked < sent:
		s.log.Warn("replay interrupted before every selected row was sent and acknowledged", "sent", sent, "acknowledged", acked, "rows", s.total, "exit_code", exitUndelivered)
		return exitCode(exitUndelivered)
	}
	took := time.Since(s.start)
	fmt.Fprintf(out, "replayed %d rows to %d topic(s) in %s (%.0f rows/s); Kafka acknowledged every record\n",
		sent, len(sum.topics), took.Round(time.Millisecond), float64(sent)/max(took.Seconds(), 1e-9))
	return nil
}

// table is the one table replayed (finish checks there is one).
func (o *replayOptions) table() string { return o.run.repl.Tables[0] }
