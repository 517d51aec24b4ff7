// Command bench measures outboxrelay on a throwaway PostgreSQL cluster and
// the in-process Kafka-protocol broker, against two yardsticks on the same
// WAL: pg_recvlogical decoding the same slot range to /dev/null (the
// standard client) and pg_logical_slot_get_binary_changes (in-server decode
// only, the ceiling for one slot).
//
//	go run ./test/bench            # every scenario, a table
//	go run ./test/bench -json      # the same as JSON
//	go run ./test/bench -quick     # smaller sizes, for a smoke run
//	go run ./test/bench -kafka kfake,real -debezium 100000
//	                               # also against Apache Kafka, and Debezium 3.6.1
//	                               # on the same WAL and broker
//	go run ./test/bench -compression none,lz4,zstd -compression-events 200000
//	                               # the same backlog drained once per codec
//	go run ./test/bench -only none -legs loopback -tracing 200000
//	                               # trace headers and OTLP spans: what they cost
//
// Each scenario gets a new database and three slots created at the same
// point before the events are written; the relay (built without the race
// detector) runs as a separate process so its CPU time and peak RSS are its
// own. The relay produces with acks=all and the idempotent producer.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type result struct {
	Scenario        string  `json:"scenario"`
	Leg             string  `json:"leg"`
	Broker          string  `json:"broker"`
	Events          int     `json:"events"`
	Seconds         float64 `json:"seconds"`
	EventsPerSec    float64 `json:"events_per_sec"`
	RecvlogicalSecs float64 `json:"pg_recvlogical_seconds,omitempty"`
	VsRecvlogical   float64 `json:"ratio_to_pg_recvlogical,omitempty"`
	DecodeSecs      float64 `json:"in_server_decode_seconds,omitempty"`
	VsDecode        float64 `json:"ratio_to_in_server_decode,omitempty"`
	CPUPer100k      float64 `json:"cpu_seconds_per_100k_events"`
	// BrokerCPUPer100k is the broker's CPU while the relay drained a
	// backlog: Apache Kafka's JVM, or the benchmark process's, which is
	// mostly the in-process broker taking the relay's produce requests.
	// Either shares the machine's cores with the relay.
	BrokerCPUPer100k float64 `json:"broker_cpu_seconds_per_100k_events,omitempty"`
	PeakRSSMiB       float64 `json:"peak_rss_mib"`
	// The walsender's CPU seconds per 100k events, serving the relay and
	// serving pg_recvlogical: the server-side cost of each client.
	WalsenderCPUPer100k            float64 `json:"walsender_cpu_seconds_per_100k_events,omitempty"`
	RecvlogicalWalsenderCPUPer100k float64 `json:"pg_recvlogical_walsender_cpu_seconds_per_100k_events,omitempty"`
	P50ms                          float64 `json:"p50_commit_to_consumer_ms,omitempty"`
	P95ms                          float64 `json:"p95_commit_to_consumer_ms,omitempty"`
	P99ms                          float64 `json:"p99_commit_to_consumer_ms,omitempty"`
	RelayP50ms                     float64 `json:"relay_p50_commit_to_ack_ms,omitempty"`
	RelayP99ms                     float64 `json:"relay_p99_commit_to_ack_ms,omitempty"`
	// The two parts of commit-to-ack: commit to the walsender sending the
	// event (PostgreSQL's side), and the relay handing it to the producer
	// to Kafka's acknowledgement.
	DecodeP99ms  float64 `json:"relay_p99_decode_delay_ms,omitempty"`
	ProduceP99ms float64 `json:"relay_p99_produce_latency_ms,omitempty"`
	KeptUp       *bool   `json:"kept_up,omitempty"`
	// BusyBeforePct is the share of the machine's CPU in use just before
	// the scenario started, when nothing of the benchmark was running.
	BusyBeforePct float64 `json:"busy_before_pct"`
	// StealPct is the share of the machine's CPU time the hypervisor took
	// away during the scenario.
	StealPct float64 `json:"steal_pct"`
	// The share of one core each walsender used while its client drained
	// the backlog. Near 100 the walsender is the bottleneck.
	WalsenderBusyPct            float64 `json:"walsender_busy_pct,omitempty"`
	RecvlogicalWalsenderBusyPct float64 `json:"pg_recvlogical_walsender_busy_pct,omitempty"`
	// The relay's own replication stream and decoding with Kafka left out
	// (every event acknowledged as it is decoded), on the same WAL; from
	// the median pair by its own ratio.
	StreamVsRecvlogical       float64 `json:"stream_only_ratio_to_pg_recvlogical,omitempty"`
	StreamWalsenderBusyPct    float64 `json:"stream_only_walsender_busy_pct,omitempty"`
	StreamWalsenderCPUPer100k float64 `json:"stream_only_walsender_cpu_seconds_per_100k_events,omitempty"`
	// With -pairs N, the relay's figures above are the median pair's (by
	// ratio to pg_recvlogical), peak RSS is the highest of all, and Ratios
	// holds every pair's ratio, lowest first.
	Pairs  int       `json:"pairs,omitempty"`
	Ratios []float64 `json:"ratios_to_pg_recvlogical,omitempty"`
	// The steady scenario's relay while the writers kept the rate, sampled
	// every second (Linux): CPU cores, mean and busiest second, and resident
	// set, mean and highest. What a Kubernetes resource request is sized from.
	SteadyCPUCores     float64 `json:"steady_cpu_cores,omitempty"`
	SteadyCPUPeakCores float64 `json:"steady_cpu_peak_cores,omitempty"`
	SteadyRSSMiB       float64 `json:"steady_rss_mib,omitempty"`
	SteadyRSSMaxMiB    float64 `json:"steady_rss_max_mib,omitempty"`
	// The compression scenario: the relay's codec, and the bytes per event
	// of the record batches the broker holds (what crossed the wire) and of
	// their records uncompressed.
	Codec                  string  `json:"codec,omitempty"`
	BatchBytesPerEvent     float64 `json:"batch_bytes_per_event,omitempty"`
	UncompressedBytesPerEv float64 `json:"uncompressed_bytes_per_event,omitempty"`
	// The tracing scenario: which variant, and the spans the OTLP receiver
	// got during the drain.
	Tracing string `json:"tracing,omitempty"`
	Spans   int64  `json:"spans_received,omitempty"`
}

type bench struct {
	relayArgs  []string
	cpuprofile string // where to write the relay's CPU profile of the first scenario
	pg         *harness.Postgres
	kafka      harness.Broker
	brokerCPU  func() float64 // the broker's CPU seconds so far
	dbzClass   string         // the Debezium reference program's class path
	relay      string
	bin        string
	seq        int
	pairs      int // drains of each backlog per client
	quick      bool
	logDir     string
	relayEnv   []string // added to the relay's environment
}

func main() {
	var o options
	var relayArgs string
	flag.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	flag.BoolVar(&o.quick, "quick", false, "smaller sizes")
	flag.StringVar(&o.only, "only", "", "run only scenarios whose name contains this")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write the relay's CPU profile during the first scenario to this file")
	flag.StringVar(&relayArgs, "relay-args", "", "extra flags for the relay, space-separated")
	flag.IntVar(&o.rate, "rate", 5000, "events per second of the steady scenario")
	flag.StringVar(&o.logs, "logs", "", "keep the relay's logs in this directory (default: a temporary one, removed)")
	flag.StringVar(&o.relayBin, "relay", "", "a prebuilt relay binary to measure (default: build ./cmd/outboxrelay)")
	flag.IntVar(&o.pairs, "pairs", 1, "backlog scenarios: drain the same backlog this many times with each client, rotating which goes first, and report the median pair")
	flag.StringVar(&o.legs, "legs", "loopback,network", "how the relay reaches PostgreSQL, comma-separated: loopback (a cluster on this host), network (a cluster in a network namespace, over a veth link; needs root)")
	flag.IntVar(&o.events, "events", 0, "events of the single-event backlog scenario (default 100,000; 20,000 with -quick)")
	flag.StringVar(&o.kafka, "kafka", "kfake", "the brokers, comma-separated: kfake (in process), real (Apache Kafka 4.1 from Maven Central in KRaft mode; needs a JDK and test/kafka/fetch.sh)")
	flag.IntVar(&o.debezium, "debezium", 0, "also drain a backlog of this many events (100 per transaction) with Debezium 3.6.1 and then with outboxrelay, on the same WAL and broker "+
		"(needs a JDK and Maven: test/debezium/fetch.sh); 0: no Debezium scenario")
	flag.StringVar(&o.codecs, "compression", "", "also drain one backlog (100 events per transaction) once per codec of this comma-separated list (none, gzip, snappy, lz4, zstd), "+
		"with the bytes of the record batches the broker holds; empty: no compression scenario")
	flag.IntVar(&o.codecEvents, "compression-events", 100_000, "events of the compression scenario's backlog")
	flag.IntVar(&o.snapshot, "snapshot", 0, "run only the initial snapshot scenario, on the first leg: keep this many rows in the outbox, start the relay with --snapshot initial "+
		"while writers commit, and count what Kafka holds by id (missing, duplicated), the snapshot's time and the relay's peak RSS")
	flag.IntVar(&o.traceEvents, "tracing", 0, "also drain backlogs of this many events (100 per transaction), without trace columns, with them, and with them and an OTLP endpoint, "+
		"interleaved; 0: no tracing scenario")
	flag.IntVar(&o.traceRounds, "tracing-rounds", 3, "rounds of the tracing scenario")
	flag.Parse()
	o.relayArgs = strings.Fields(relayArgs)
	if o.pairs < 1 {
		fmt.Fprintln(os.Stderr, "bench: -pairs must be at least 1")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the command line's settings.
type options struct {
	json, quick                      bool
	only, cpuprofile, logs, relayBin string
	legs, kafka, codecs              string
	relayArgs                        []string
	rate, events, pairs, debezium    int
	codecEvents                      int
	snapshot                         int
	traceEvents, traceRounds         int
}

func run(o options) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "outboxrelay-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if o.logs == "" {
		o.logs = dir
	} else if err := os.MkdirAll(o.logs, 0o755); err != nil {
		return err
	}
	b := &bench{relay: filepath.Join(dir, "outboxrelay"), quick: o.quick, logDir: o.logs, cpuprofile: o.cpuprofile, relayArgs: o.relayArgs, pairs: o.pairs}
	if o.relayBin != "" {
		b.relay = o.relayBin
	} else {
		build := exec.Command("go", "build", "-o", b.relay, "./cmd/outboxrelay")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building the relay (run from the repository root): %w", err)
		}
	}
	if b.bin, err = harness.BinDir(); err != nil {
		return err
	}
	kinds, err := brokerKinds(o.kafka)
	if err != nil {
		return err
	}
	if o.debezium > 0 {
		if b.dbzClass, err = debeziumClassPath(); err != nil {
			return err
		}
	}
	legs, stop, err := startLegs(ctx, o.legs)
	if err != nil {
		return err
	}
	defer stop()
	if o.snapshot > 0 {
		return b.snapshotOnly(ctx, o, kinds, legs[0])
	}

	n := func(full, small int) int {
		if o.quick {
			return small
		}
		return full
	}
	single := n(100_000, 20_000)
	if o.events > 0 {
		single = o.events
	}
	scenarios := []scenario{
		{"backlog, 1 event/tx", func(ctx context.Context) (result, error) { return b.backlog(ctx, single, 1, smallPad) }},
		{"backlog, 100 events/tx", func(ctx context.Context) (result, error) { return b.backlog(ctx, n(1_000, 200), 100, smallPad) }},
		{"one 100k-event tx", func(ctx context.Context) (result, error) { return b.backlog(ctx, 1, n(100_000, 20_000), smallPad) }},
		{"one 30k-event tx of 1 KB", func(ctx context.Context) (result, error) { return b.backlog(ctx, 1, n(30_000, 10_000), 1000) }},
		{fmt.Sprintf("steady %d/s", o.rate), func(ctx context.Context) (result, error) {
			return b.steady(ctx, o.rate, time.Duration(n(60, 10))*time.Second)
		}},
	}
	var results []result
	for _, kind := range kinds {
		rs, err := b.onBroker(ctx, kind, o, scenarios, legs)
		if err != nil {
			return err
		}
		results = append(results, rs...)
	}
	if o.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	printTable(results)
	return nil
}

// scenario is one measurement the benchmark makes on every leg.
type scenario struct {
	name string
	fn   func(context.Context) (result, error)
}

// onBroker starts a broker of the kind and runs every chosen scenario on
// every leg against it, then the Debezium comparison when asked for.
func (b *bench) onBroker(ctx context.Context, kind string, o options, scenarios []scenario, legs []leg) ([]result, error) {
	stopBroker, err := b.startBroker(ctx, kind)
	if err != nil {
		return nil, err
	}
	defer stopBroker()
	var results []result
	for _, s := range scenarios {
		if o.only != "" && !strings.Contains(s.name, o.only) {
			continue
		}
		for _, l := range legs {
			b.pg = l.pg
			r, err := runScenario(ctx, s.name, l.name, s.fn)
			if err != nil {
				return nil, fmt.Errorf("%s (%s broker): %w", s.name, kind, err)
			}
			r.Broker = kind
			results = append(results, r)
		}
	}
	if o.debezium > 0 {
		b.pg = legs[0].pg
		rs, err := b.versusDebezium(ctx, o.debezium, legs[0].name)
		if err != nil {
			return nil, fmt.Errorf("Debezium comparison (%s broker): %w", kind, err)
		}
		for i := range rs {
			rs[i].Broker = kind
		}
		results = append(results, rs...)
	}
	if o.codecs != "" {
		b.pg = legs[0].pg
		rs, err := b.compression(ctx, o.codecEvents, strings.Split(o.codecs, ","), legs[0].name)
		if err != nil {
			return nil, fmt.Errorf("compression (%s broker): %w", kind, err)
		}
		for i := range rs {
			rs[i].Broker = kind
		}
		results = append(results, rs...)
	}
	if o.traceEvents > 0 {
		b.pg = legs[0].pg
		rs, err := b.tracing(ctx, o.traceEvents, o.traceRounds, legs[0].name)
		if err != nil {
			return nil, fmt.Errorf("tracing (%s broker): %w", kind, err)
		}
		for i := range rs {
			rs[i].Broker = kind
		}
		results = append(results, rs...)
	}
	return results, nil
}

// runScenario runs one scenario on one leg, with the machine's busy and
// stolen CPU around it.
func runScenario(ctx context.Context, name, leg string, fn func(context.Context) (result, error)) (result, error) {
	fmt.Fprintf(os.Stderr, "running %s (%s) ...\n", name, leg)
	busy := busyShare(500 * time.Millisecond)
	if busy > busyWarn {
		fmt.Fprintf(os.Stderr, "  WARNING: %.0f%% of the CPU was busy before this scenario started; its figures measure the contention too\n", busy*100)
	}
	_, steal0, total0 := cpuTimes()
	r, err := fn(ctx)
	if err != nil {
		return r, fmt.Errorf("%s (%s): %w", name, leg, err)
	}
	_, steal1, total1 := cpuTimes()
	if total1 > total0 {
		r.StealPct = math.Round((steal1-steal0)/(total1-total0)*1000) / 10
	}
	r.Scenario, r.Leg, r.BusyBeforePct = name, leg, math.Round(busy*1000)/10
	return r, nil
}

// leg is one way of reaching PostgreSQL: its own cluster on this host's
// loopback, or in a network namespace over a veth link.
type leg struct {
	name string
	pg   *harness.Postgres
}

// pgSettings tune the benchmark's clusters for throughput.
var pgSettings = map[string]string{
	"synchronous_commit": "off", "shared_buffers": "256MB", "max_wal_size": "4GB", "wal_buffers": "16MB",
}

// startLegs starts a cluster for each leg named in list (comma-separated:
// loopback, network) and returns them with a function that stops them all.
func startLegs(ctx context.Context, list string) ([]leg, func(), error) {
	var legs []leg
	var nss []*harness.Netns
	stop := func() {
		for _, l := range legs {
			_ = l.pg.Stop()
		}
		for _, ns := range nss {
			_ = ns.Close()
		}
	}
	for _, name := range strings.Split(list, ",") {
		opts := harness.PostgresOptions{Settings: pgSettings}
		switch strings.TrimSpace(name) {
		case "loopback":
		case "network":
			ns, err := harness.StartNetns(len(nss))
			if err != nil {
				stop()
				return nil, nil, fmt.Errorf("the network leg (-legs loopback leaves it out): %w", err)
			}
			nss = append(nss, ns)
			opts.Netns = ns
		default:
			stop()
			return nil, nil, fmt.Errorf("-legs: unknown leg %q (want loopback, network)", name)
		}
		pg, err := harness.StartPostgres(ctx, opts)
		if err != nil {
			stop()
			return nil, nil, err
		}
		legs = append(legs, leg{name: strings.TrimSpace(name), pg: pg})
	}
	return legs, stop, nil
}

// busyWarn is the share of busy CPU before a scenario above which its
// figures are flagged: another benchmark, a build or a noisy neighbour.
const busyWarn = 0.2

// cpuTimes reads the machine's busy, stolen and total CPU time so far from
// /proc/stat, in clock ticks (zeros where it cannot be read). Stolen time is
// time the hypervisor gave this machine's virtual CPUs to someone else.
func cpuTimes() (busy, steal, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		if i >= 8 { // guest time is already counted in user time
			break
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
		if i == 7 {
			steal = v
		}
	}
	return busy, steal, total
}

// busyShare returns the share of all CPUs' time spent busy over d.
func busyShare(d time.Duration) float64 {
	b0, _, t0 := cpuTimes()
	time.Sleep(d)
	b1, _, t1 := cpuTimes()
	if t1 <= t0 {
		return 0
	}
	return (b1 - b0) / (t1 - t0)
}

func printTable(all []result) {
	var rs, codecs, traced []result
	for _, r := range all {
		switch {
		case r.Tracing != "":
			traced = append(traced, r)
		case r.Codec != "":
			codecs = append(codecs, r)
		default:
			rs = append(rs, r)
		}
	}
	defer printTracing(traced)
	defer printCompression(codecs)
	if len(rs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tleg\tbroker\tevents\tevents/s\tvs pg_recvlogical\tvs in-server decode\tCPU s/100k\tbroker CPU s/100k\twalsender CPU s/100k (relay, pg_recvlogical)\twalsender busy % (relay, pg_recvlogical)\tstream only: vs pg_recvlogical, walsender busy %\tpeak RSS MiB\tp50 ms\tp95 ms\tp99 ms\trelay p50 ms\trelay p99 ms\tof which decode p99\tproduce p99\tkept up\tsteady CPU cores (mean, peak 1 s)\tsteady RSS MiB (mean, max)\tsteal %\t")
	for _, r := range rs {
		opt := func(v float64, f string) string {
			if v == 0 {
				return "-"
			}
			return fmt.Sprintf(f, v)
		}
		kept := "-"
		if r.KeptUp != nil {
			kept = strconv.FormatBool(*r.KeptUp)
		}
		wbusy := "-"
		if r.WalsenderBusyPct > 0 {
			wbusy = fmt.Sprintf("%.0f, %.0f", r.WalsenderBusyPct, r.RecvlogicalWalsenderBusyPct)
		}
		streamOnly := "-"
		if r.StreamVsRecvlogical > 0 {
			streamOnly = fmt.Sprintf("%.2fx, %.0f", r.StreamVsRecvlogical, r.StreamWalsenderBusyPct)
		}
		ratio := opt(r.VsRecvlogical, "%.2fx")
		if len(r.Ratios) > 1 {
			ratio = fmt.Sprintf("%s (%d pairs: %.2f – %.2f)", ratio, r.Pairs, r.Ratios[0], r.Ratios[len(r.Ratios)-1])
		}
		ws := "-"
		if r.WalsenderCPUPer100k > 0 {
			ws = fmt.Sprintf("%.2f, %.2f", r.WalsenderCPUPer100k, r.RecvlogicalWalsenderCPUPer100k)
		}
		steadyCPU, steadyRSS := "-", "-"
		if r.SteadyRSSMaxMiB > 0 {
			steadyCPU = fmt.Sprintf("%.3f, %.3f", r.SteadyCPUCores, r.SteadyCPUPeakCores)
			steadyRSS = fmt.Sprintf("%.1f, %.1f", r.SteadyRSSMiB, r.SteadyRSSMaxMiB)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.0f\t%s\t%s\t%.2f\t%s\t%s\t%s\t%s\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t\n", r.Scenario, r.Leg, r.Broker, r.Events, r.EventsPerSec,
			ratio, opt(r.VsDecode, "%.2fx"), r.CPUPer100k, opt(r.BrokerCPUPer100k, "%.2f"), ws, wbusy, streamOnly, r.PeakRSSMiB,
			opt(r.P50ms, "%.1f"), opt(r.P95ms, "%.1f"), opt(r.P99ms, "%.1f"), opt(r.RelayP50ms, "≤%.1f"), opt(r.RelayP99ms, "≤%.1f"),
			opt(r.DecodeP99ms, "≤%.1f"), opt(r.ProduceP99ms, "≤%.1f"), kept, steadyCPU, steadyRSS, r.StealPct)
	}
	tw.Flush()
}

// smallPad is the filler of a typical event (about 250 bytes in all).
const smallPad = 150

const schema = `
CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text NOT NULL, aggregateid text NOT NULL,
  type text NOT NULL, payload jsonb, created_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE PUBLICATION bench FOR TABLE outbox WITH (publish = 'insert');
CREATE PROCEDURE write_events(txs int, per_tx int, first int, pad int) LANGUAGE plpgsql AS $$
DECLARE ev uuid; k int;
BEGIN
  FOR i IN 0..txs-1 LOOP
    FOR j IN 0..per_tx-1 LOOP
      ev := gen_random_uuid();
      k := first + i * per_tx + j;
      INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (ev, 'Order', 'agg-' || (k % 1000), 'OrderCreated',
        jsonb_build_object('orderId', k, 'customer', 'customer-' || (k % 977), 'lines', 3, 'note', repeat('x', pad)));
      DELETE FROM outbox WHERE id = ev;
    END LOOP;
    COMMIT;
  END LOOP;
END $$;`

// slot is the scenario's slot of that role; slot names are cluster-wide.
func (b *bench) slot(role string) string { return fmt.Sprintf("%s_%d", role, b.seq) }

// dropSlots releases the scenario's slots so they stop retaining WAL.
func (b *bench) dropSlots(ctx context.Context, pool *pgxpool.Pool) {
	_, _ = pool.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE '%\\_' || $1 AND NOT active", strconv.Itoa(b.seq))
	pool.Close()
}

// prepare makes a database with the schema and, at one point, a slot for the
// in-server decode and one for each relay and pg_recvlogical run.
func (b *bench) prepare(ctx context.Context) (string, *pgxpool.Pool, error) {
	b.seq++
	url, err := b.pg.CreateDatabase(ctx, fmt.Sprintf("bench_%d", b.seq))
	if err != nil {
		return "", nil, err
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return "", nil, err
	}
	if _, err := pool.Exec(ctx, schema); err != nil {
		pool.Close()
		return "", nil, fmt.Errorf("creating the schema: %w", err)
	}
	roles := []string{"decode"}
	for k := range b.pairs {
		roles = append(roles, role("relay", k), role("recvlogical", k), role("stream", k))
	}
	for _, s := range roles {
		if _, err := pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", b.slot(s)); err != nil {
			pool.Close()
			return "", nil, fmt.Errorf("creating slot %s: %w", s, err)
		}
	}
	return url, pool, nil
}

// flushBacklog makes the written backlog visible to the walsenders and
// returns its end. The writers commit with synchronous_commit off, so their
// last commits may reach the walsenders only when the WAL writer flushes
// (every wal_writer_delay): the first client of a pair would wait for it. A
// synchronous commit that wrote WAL (here the catalog rows of a table
// nothing publishes) flushes everything before it.
func flushBacklog(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	if _, err := pool.Exec(ctx, `BEGIN; SET LOCAL synchronous_commit = on;
		CREATE TEMP TABLE flush_backlog (x int) ON COMMIT DROP; COMMIT`); err != nil {
		return "", fmt.Errorf("flushing the backlog: %w", err)
	}
	return currentLSN(ctx, pool)
}

func currentLSN(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	var lsn string
	err := pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn)
	return lsn, err
}

func lsnValue(s string) uint64 {
	hi, lo, _ := strings.Cut(s, "/")
	h, _ := strconv.ParseUint(hi, 16, 32)
	l, _ := strconv.ParseUint(lo, 16, 32)
	return h<<32 | l
}

// relayProc is a running relay.
type relayProc struct {
	cmd  *exec.Cmd
	done chan error
}

func (b *bench) startRelay(url, slot, topicSuffix string, extra ...string) (*relayProc, error) {
	logf, err := os.Create(filepath.Join(b.logDir, "relay-"+topicSuffix+".log"))
	if err != nil {
		return nil, err
	}
	args := []string{"run", "--pg-url", url, "--brokers", strings.Join(b.kafka.ListenAddrs(), ","),
		"--slot", slot, "--publication", "bench", "--http-addr", "", "--log-level", "warn",
		"--route-topic-replacement", "bench." + topicSuffix + ".${routedByValue}"}
	args = append(append(args, b.relayArgs...), extra...)
	profile := b.cpuprofile
	if profile != "" {
		b.cpuprofile = "" // the first scenario only
		args = append(args, "--http-addr", "127.0.0.1:6161", "--pprof")
	}
	cmd := exec.Command(b.relay, args...)
	cmd.Env = append(os.Environ(), b.relayEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &relayProc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); logf.Close() }()
	if profile != "" {
		go func() {
			time.Sleep(300 * time.Millisecond)
			out, err := exec.Command("curl", "-s", "-o", profile, "http://127.0.0.1:6161/debug/pprof/profile?seconds=3").CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "fetching the profile: %v %s\n", err, out)
			}
		}()
	}
	return p, nil
}

// peakRSS reads the process's high-water resident set, MiB.
func peakRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// stop ends the relay cleanly and returns its peak RSS and CPU seconds.
func (p *relayProc) stop() (rssMiB, cpu float64, err error) {
	rssMiB = peakRSS(p.cmd.Process.Pid)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err = <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		return 0, 0, errors.New("the relay did not stop within 20 s")
	}
	st := p.cmd.ProcessState
	return rssMiB, (st.UserTime() + st.SystemTime()).Seconds(), err
}

// waitConfirmed polls the slot until its confirmed position reaches target
// and returns the CPU seconds its walsender had used by then.
func waitConfirmed(ctx context.Context, pool *pgxpool.Pool, slot string, target uint64, timeout time.Duration) (walsenderCPU float64, err error) {
	began := time.Now()
	deadline := began.Add(timeout)
	held := false
	for {
		s, cpu, err := slotState(ctx, pool, slot)
		if err != nil {
			return 0, err
		}
		if cpu > 0 {
			walsenderCPU = cpu
		}
		if cpu > 0 && !held {
			held = true
			fmt.Fprintf(os.Stderr, "  slot %s streaming after %v\n", slot, time.Since(began).Round(time.Millisecond))
		}
		if lsnValue(s) >= target {
			return walsenderCPU, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("slot %s stuck at %s, short of the target", slot, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// watchWalsender reports the CPU seconds of the walsender serving slot, as
// last seen before done closed.
func watchWalsender(ctx context.Context, pool *pgxpool.Pool, slot string, done <-chan struct{}) <-chan float64 {
	out := make(chan float64, 1)
	go func() {
		var cpu float64
		defer func() { out <- cpu }()
		for {
			if _, c, err := slotState(ctx, pool, slot); err == nil && c > 0 {
				cpu = c
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return out
}

// slotState reads a slot's confirmed position and the CPU seconds used so
// far by the walsender serving it (0 when none is).
func slotState(ctx context.Context, pool *pgxpool.Pool, slot string) (confirmed string, walsenderCPU float64, err error) {
	var pid int
	err = pool.QueryRow(ctx, "SELECT confirmed_flush_lsn::text, coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&confirmed, &pid)
	return confirmed, procCPU(pid), err
}

// procCPU is a process's user and system CPU seconds so far, 0 if unknown.
func procCPU(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100 // USER_HZ is 100 on Linux
}

func (b *bench) countTopic(ctx context.Context, topic string) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.kafka.ListenAddrs()...))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n, nil
}

// backlog writes txs transactions of perTx events before the relay starts,
// then times the relay, pg_recvlogical and the in-server decode over it.
func (b *bench) backlog(ctx context.Context, txs, perTx, pad int) (result, error) {
	url, pool, err := b.prepare(ctx)
	if err != nil {
		return result{}, err
	}
	defer b.dropSlots(ctx, pool)
	fmt.Fprintf(os.Stderr, "  writing %d events ...\n", txs*perTx)
	if err := writeParallel(ctx, pool, txs, perTx, pad); err != nil {
		return result{}, err
	}
	end, err := flushBacklog(ctx, pool)
	if err != nil {
		return result{}, err
	}
	events := txs * perTx
	r := result{Events: events}

	// Each pair rotates which client goes first, so that none always meets
	// a colder or a busier machine; each gets its own slot, all created at
	// the same point.
	var pairs []pair
	for k := range b.pairs {
		var pr pair
		relay := func() error {
			var err error
			pr.relay, err = b.drainWithRelay(ctx, url, pool, b.slot(role("relay", k)), fmt.Sprintf("b%d-%d", b.seq, k), end, events)
			return err
		}
		recv := func() error {
			var err error
			pr.recv, err = b.drainWithRecvlogical(ctx, url, pool, b.slot(role("recvlogical", k)), end)
			return err
		}
		stream := func() error {
			var err error
			pr.stream, err = b.drainWithStream(ctx, url, pool, b.slot(role("stream", k)), end)
			return err
		}
		clients := []func() error{relay, recv, stream}
		for i := range clients {
			if err := clients[(i+k)%len(clients)](); err != nil {
				return r, err
			}
		}
		pairs = append(pairs, pr)
	}
	summarize(&r, pairs)

	began := time.Now()
	var changes int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_logical_slot_get_binary_changes($2, $1::pg_lsn, NULL, 'proto_version', '1', 'publication_names', 'bench')`, end, b.slot("decode")).Scan(&changes); err != nil {
		return r, fmt.Errorf("in-server decode: %w", err)
	}
	r.DecodeSecs = time.Since(began).Seconds()
	r.VsDecode = r.DecodeSecs / r.Seconds
	return r, nil
}

// role names the k-th slot of a role: relay, relay1, relay2, ...
func role(name string, k int) string {
	if k == 0 {
		return name
	}
	return name + strconv.Itoa(k)
}

// drained is one client's drain of a backlog.
type drained struct {
	seconds, cpu, walsenderCPU, rssMiB float64
	// benchCPU is the broker's CPU over the drain: Apache Kafka's JVM, or
	// for kfake this process's, mostly the broker receiving the relay's
	// produce requests.
	benchCPU float64
}

// pair is the relay's and pg_recvlogical's drains of the same backlog, and
// the relay's replication stream's alone (Kafka left out).
type pair struct{ relay, recv, stream drained }

// drainWithRelay runs the relay on slot until the slot confirms end and
// checks that Kafka holds every event.
func (b *bench) drainWithRelay(ctx context.Context, url string, pool *pgxpool.Pool, slot, suffix, end string, events int, extra ...string) (drained, error) {
	var d drained
	began, cpu0 := time.Now(), b.brokerCPU()
	p, err := b.startRelay(url, slot, suffix, extra...)
	if err != nil {
		return d, err
	}
	d.walsenderCPU, err = waitConfirmed(ctx, pool, slot, lsnValue(end), 10*time.Minute)
	if err != nil {
		_, _, _ = p.stop()
		return d, err
	}
	d.seconds, d.benchCPU = time.Since(began).Seconds(), b.brokerCPU()-cpu0
	if d.rssMiB, d.cpu, err = p.stop(); err != nil {
		return d, fmt.Errorf("stopping the relay: %w", err)
	}
	if got, err := b.countTopic(ctx, "bench."+suffix+".Order"); err != nil || got < int64(events) {
		return d, fmt.Errorf("Kafka holds %d of %d events (%v)", got, events, err)
	}
	return d, nil
}

// drainWithRecvlogical runs pg_recvlogical on slot up to end, to /dev/null.
func (b *bench) drainWithRecvlogical(ctx context.Context, url string, pool *pgxpool.Pool, slot, end string) (drained, error) {
	var d drained
	began := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(b.bin, "pg_recvlogical"), "-d", url, "-S", slot, "--start",
		"-o", "proto_version=1", "-o", "publication_names=bench", "-E", end, "-f", "/dev/null", "--no-loop", "-s", "1")
	exited := make(chan struct{})
	watched := watchWalsender(ctx, pool, slot, exited)
	out, err := cmd.CombinedOutput()
	d.seconds = time.Since(began).Seconds()
	close(exited)
	d.walsenderCPU = <-watched
	if err != nil {
		return d, fmt.Errorf("pg_recvlogical: %w: %s", err, out)
	}
	return d, nil
}

// drainWithStream runs the relay's replication stream on slot, in this
// process, with a handler that acknowledges every event as it is decoded,
// until the slot confirms end.
func (b *bench) drainWithStream(ctx context.Context, url string, pool *pgxpool.Pool, slot, end string) (drained, error) {
	var d drained
	cfg := replication.DefaultConfig()
	cfg.ConnString, cfg.Slot, cfg.Publication = url, slot, "bench"
	began := time.Now()
	st, err := replication.Open(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return d, fmt.Errorf("opening the stream: %w", err)
	}
	stop := make(chan struct{})
	ran := make(chan error, 1)
	h := &streamOnly{}
	go func() { ran <- st.Run(ctx, stop, h, h) }()
	d.walsenderCPU, err = waitConfirmed(ctx, pool, slot, lsnValue(end), 10*time.Minute)
	d.seconds = time.Since(began).Seconds()
	close(stop)
	if rerr := <-ran; err == nil && rerr != nil && !errors.Is(rerr, context.Canceled) {
		err = fmt.Errorf("streaming: %w", rerr)
	}
	st.Close(context.WithoutCancel(ctx))
	return d, err
}

// streamOnly is a replication.Handler and Progress that acknowledges every
// event as soon as it is decoded; all calls come from the stream's goroutine.
type streamOnly struct{ last uint64 }

func (s *streamOnly) Relation(int, []replication.Column) error { return nil }
func (s *streamOnly) Unpublished(int, string) error            { return nil }
func (s *streamOnly) Begin(replication.Begin) error            { return nil }
func (s *streamOnly) Insert(replication.Insert) error          { return nil }
func (s *streamOnly) Commit(c replication.Commit) error        { s.last = max(s.last, c.EndLSN); return nil }
func (s *streamOnly) Heartbeat(time.Time) error                { return nil }
func (s *streamOnly) Keepalive(end uint64)                     { s.last = max(s.last, end) } // nothing is ever in flight
func (s *streamOnly) Confirmable() (uint64, bool)              { return s.last, true }
func (s *streamOnly) Full() bool                               { return false }
func (s *streamOnly) Notify() <-chan struct{}                  { return nil } // never full

// summarize fills r from the pairs: the relay's figures from the median pair
// by the relay's ratio, the stream-only figures from the median by its own.
func summarize(r *result, pairs []pair) {
	ratio := func(d drained, p pair) float64 { return p.recv.seconds / d.seconds }
	medianBy := func(by func(pair) float64) pair {
		sorted := slices.Clone(pairs)
		sort.Slice(sorted, func(i, j int) bool { return by(sorted[i]) < by(sorted[j]) })
		return sorted[len(sorted)/2]
	}
	relayRatio := func(p pair) float64 { return ratio(p.relay, p) }
	m := medianBy(relayRatio)
	per100k := func(v float64) float64 { return v / float64(r.Events) * 100_000 }
	r.Seconds, r.RecvlogicalSecs = m.relay.seconds, m.recv.seconds
	r.EventsPerSec = float64(r.Events) / m.relay.seconds
	r.VsRecvlogical = relayRatio(m)
	r.CPUPer100k, r.PeakRSSMiB = per100k(m.relay.cpu), m.relay.rssMiB
	r.BrokerCPUPer100k = per100k(m.relay.benchCPU)
	r.WalsenderCPUPer100k, r.RecvlogicalWalsenderCPUPer100k = per100k(m.relay.walsenderCPU), per100k(m.recv.walsenderCPU)
	r.WalsenderBusyPct = math.Round(m.relay.walsenderCPU / m.relay.seconds * 100)
	r.RecvlogicalWalsenderBusyPct = math.Round(m.recv.walsenderCPU / m.recv.seconds * 100)
	ms := medianBy(func(p pair) float64 { return ratio(p.stream, p) })
	r.StreamVsRecvlogical = ratio(ms.stream, ms)
	r.StreamWalsenderBusyPct = math.Round(ms.stream.walsenderCPU / ms.stream.seconds * 100)
	r.StreamWalsenderCPUPer100k = per100k(ms.stream.walsenderCPU)
	if len(pairs) > 1 {
		r.Pairs = len(pairs)
		for _, p := range pairs {
			r.Ratios = append(r.Ratios, math.Round(relayRatio(p)*100)/100)
			r.PeakRSSMiB = max(r.PeakRSSMiB, p.relay.rssMiB)
		}
		sort.Float64s(r.Ratios)
	}
}

// writeParallel writes txs transactions from up to 4 connections.
func writeParallel(ctx context.Context, pool *pgxpool.Pool, txs, perTx, pad int) error {
	workers := min(4, txs)
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		lo, hi := txs*w/workers, txs*(w+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			for start := lo; start < hi; start += 1000 {
				n := min(1000, hi-start)
				if _, err := pool.Exec(ctx, "CALL write_events($1, $2, $3, $4)", n, perTx, start*perTx, pad); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// steady writes rate single-event transactions per second for d while the
// relay runs, and measures commit-to-consumer latency with franz-go.
func (b *bench) steady(ctx context.Context, rate int, d time.Duration) (result, error) {
	url, pool, err := b.prepare(ctx)
	if err != nil {
		return result{}, err
	}
	defer b.dropSlots(ctx, pool)
	suffix := fmt.Sprintf("s%d", b.seq)
	topic := "bench." + suffix + ".Order"
	// Topics usually exist in production; creating one on the first event
	// costs a few hundred milliseconds once, which is not steady state.
	if err := b.createTopic(ctx, topic); err != nil {
		return result{}, err
	}
	p, err := b.startRelay(url, b.slot("relay"), suffix, "--http-addr", "127.0.0.1:6162")
	if err != nil {
		return result{}, err
	}
	// created_at is clock_timestamp() at the insert, just before the commit
	// of a one-event transaction.
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.kafka.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		return result{}, err
	}
	defer cl.Close()
	var lat []float64
	var latMu sync.Mutex
	cctx, stopConsumer := context.WithCancel(ctx)
	defer stopConsumer()
	consumed := make(chan struct{})
	var got atomic.Int64
	go func() {
		defer close(consumed)
		for cctx.Err() == nil {
			fs := cl.PollFetches(cctx)
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				var ev struct {
					CreatedAt string `json:"created_at"`
				}
				_ = json.Unmarshal(r.Value, &ev)
				got.Add(1)
				if t, err := time.Parse(time.RFC3339Nano, ev.CreatedAt); err == nil {
					latMu.Lock()
					lat = append(lat, now.Sub(t).Seconds()*1000)
					latMu.Unlock()
				}
			})
		}
	}()
	// Writers commit synchronously, as applications do: with
	// synchronous_commit off a commit reaches the walsender only when the WAL
	// writer flushes (every wal_writer_delay), which would be measured here.
	if _, err := pool.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{dbName(url)}.Sanitize()+" SET synchronous_commit = on"); err != nil {
		return result{}, err
	}
	pool.Reset()
	// The payload carries its own creation time for the consumer.
	if _, err := pool.Exec(ctx, `CREATE OR REPLACE PROCEDURE write_one(k int) LANGUAGE plpgsql AS $$
		DECLARE ev uuid := gen_random_uuid();
		BEGIN
		  INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (ev, 'Order', 'agg-' || (k % 1000), 'OrderCreated',
		    jsonb_build_object('orderId', k, 'created_at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'note', repeat('x', 150)));
		  DELETE FROM outbox WHERE id = ev;
		END $$`); err != nil {
		return result{}, err
	}
	waitStart := time.Now()
	for {
		var streaming bool
		_ = pool.QueryRow(ctx, harness.SlotStreamingSQL, b.slot("relay")).Scan(&streaming)
		if streaming || time.Since(waitStart) > 30*time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "  writing %d events/s for %v ...\n", rate, d)
	sampling := startSampler(p.cmd.Process.Pid, time.Second)
	events, behind := pace(ctx, pool, rate, d)
	use := sampling.finish()
	end, _ := currentLSN(ctx, pool)
	caughtUp := time.Now()
	for got.Load() < int64(events) && time.Since(caughtUp) < 30*time.Second {
		time.Sleep(time.Millisecond)
	}
	lagAtEnd := time.Since(caughtUp) // until the consumer had every event
	stopConsumer()
	<-consumed
	relayP50, relayP99 := scrapeQuantiles("http://127.0.0.1:6162/metrics", "outboxrelay_commit_to_ack_seconds")
	_, decodeP99 := scrapeQuantiles("http://127.0.0.1:6162/metrics", "outboxrelay_decode_delay_seconds")
	_, produceP99 := scrapeQuantiles("http://127.0.0.1:6162/metrics", "outboxrelay_produce_latency_seconds")
	// The slot confirms everything within a status interval or two.
	if _, err := waitConfirmed(ctx, pool, b.slot("relay"), lsnValue(end), time.Minute); err != nil {
		_, _, _ = p.stop()
		return result{}, err
	}
	rss, cpu, err := p.stop()
	if err != nil {
		return result{}, err
	}
	latMu.Lock()
	defer latMu.Unlock()
	sort.Float64s(lat)
	kept := !behind && lagAtEnd < time.Second && got.Load() >= int64(events)
	if !kept {
		fmt.Fprintf(os.Stderr, "  not kept up: writers behind the rate %v, the consumer had every event %v after the writers stopped, read %d of %d\n",
			behind, lagAtEnd.Round(time.Millisecond), got.Load(), events)
	}
	return result{
		Events: events, Seconds: d.Seconds(), EventsPerSec: float64(events) / d.Seconds(),
		CPUPer100k: cpu / float64(events) * 100_000, PeakRSSMiB: rss,
		P50ms: quantile(lat, 0.50), P95ms: quantile(lat, 0.95), P99ms: quantile(lat, 0.99), KeptUp: &kept,
		RelayP50ms: relayP50, RelayP99ms: relayP99, DecodeP99ms: decodeP99, ProduceP99ms: produceP99,
		SteadyCPUCores: use.MeanCores, SteadyCPUPeakCores: use.PeakCores, SteadyRSSMiB: use.MeanRSSMiB, SteadyRSSMaxMiB: use.MaxRSSMiB,
	}, nil
}

// pace issues single-event transactions at rate per second for d from
// several connections; behind reports that the writers could not keep the
// rate (then the figures describe the writer, not the relay).
func pace(ctx context.Context, pool *pgxpool.Pool, rate int, d time.Duration) (int, bool) {
	const workers = 8
	var issued atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pool.Acquire(ctx)
			if err != nil {
				return
			}
			defer conn.Release()
			for {
				k := issued.Add(1)
				due := start.Add(time.Duration(float64(k-1) / float64(rate) * float64(time.Second)))
				if due.Sub(start) >= d {
					issued.Add(-1)
					return
				}
				if wait := time.Until(due); wait > 0 {
					time.Sleep(wait)
				}
				if _, err := conn.Exec(ctx, "CALL write_one($1)", k); err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	behind := time.Since(start) > d+d/10
	return int(issued.Load()), behind
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

func dbName(url string) string {
	i := strings.LastIndex(url, "/")
	name, _, _ := strings.Cut(url[i+1:], "?")
	return name
}

// scrapeQuantiles reads a histogram from a Prometheus endpoint and returns
// the upper bounds of the buckets holding the 50th and 99th percentiles, ms.
func scrapeQuantiles(url, name string) (p50, p99 float64) {
	out, err := exec.Command("curl", "-s", url).Output()
	if err != nil {
		return 0, 0
	}
	type bucket struct{ le, n float64 }
	var bs []bucket
	for _, line := range strings.Split(string(out), "\n") {
		rest, ok := strings.CutPrefix(line, name+`_bucket{le="`)
		if !ok {
			continue
		}
		le, count, _ := strings.Cut(rest, `"} `)
		n, _ := strconv.ParseFloat(count, 64)
		v, err := strconv.ParseFloat(le, 64)
		if le == "+Inf" || err != nil {
			v = math.Inf(1)
		}
		bs = append(bs, bucket{v, n})
	}
	if len(bs) == 0 || bs[len(bs)-1].n == 0 {
		return 0, 0
	}
	total := bs[len(bs)-1].n
	q := func(f float64) float64 {
		for _, b := range bs {
			if b.n >= f*total {
				return b.le * 1000
			}
		}
		return math.Inf(1)
	}
	return q(0.5), q(0.99)
}

func (b *bench) createTopic(ctx context.Context, topic string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.kafka.ListenAddrs()...))
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 3, 1, nil, topic)
	if err != nil {
		return err
	}
	return resp.Err
}

// snapshotOnly runs the initial snapshot scenario on each broker kind.
func (b *bench) snapshotOnly(ctx context.Context, o options, kinds []string, l leg) error {
	b.pg = l.pg
	var rs []snapshotResult
	for _, kind := range kinds {
		stopBroker, err := b.startBroker(ctx, kind)
		if err != nil {
			return err
		}
		r, err := b.snapshotScenario(ctx, o.snapshot, l.name)
		stopBroker()
		if err != nil {
			return fmt.Errorf("initial snapshot (%s broker): %w", kind, err)
		}
		r.Broker = kind
		rs = append(rs, r)
	}
	if o.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rs)
	}
	printSnapshot(rs)
	return nil
}
