package main

import (
	"github.com/outboxrelay/outboxrelay/cmd/internal/pipeline"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/promtool"
)

// populated is a relay's metrics with every series present: events on two
// topics, a session streaming with events in flight, the slot's figures, a
// heartbeat, a stalled stream and a stalled produce request.
func populated(t *testing.T) *metrics {
	t.Helper()
	m := newMetrics("outboxrelay")
	now := time.Now()
	m.acked("outbox.event.Order", now.Add(-3*time.Millisecond), now.Add(-time.Second), now.Add(-time.Second+2*time.Millisecond))
	m.acked("outbox.event.Order", now.Add(-30*time.Millisecond), now, time.Time{})
	m.acked(`we"ird`, now, now, now.Add(-time.Millisecond))
	inFlight := func() (int, int64) { return 2, 500 }
	m.inFlight.Store(&inFlight)
	confirmed := func() uint64 { return 0x16B3748 }
	m.confirmed.Store(&confirmed)
	wait := func() time.Time { return now.Add(-6 * time.Second) }
	m.produceWait.Store(&wait)
	why := "Kafka has not answered a request for 6s"
	m.produceStall.Store(&why)
	m.slotLag.Store(1234)
	m.slotRetained.Store(4096)
	m.setStall(70000, true)
	m.heartbeat(now.Add(-20 * time.Millisecond))
	m.slotHeld.Store(true)
	m.setReady("streaming from slot outboxrelay")
	m.produceErrors.Inc()
	m.reconnects.Inc()
	m.slotWaits.Inc()
	m.snapshot(pipeline.SnapshotProgress{Table: "public.outbox", Rows: 10, Read: 4, Sent: 4, Acked: 3})
	return m
}

// scrape is what GET /metrics answers.
func scrape(t *testing.T, m *metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.handler(false))
	defer srv.Close()
	code, body := httpGet(t, srv.URL+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d: %s", code, body)
	}
	return body
}

func TestMetricsExposition(t *testing.T) {
	out := scrape(t, populated(t))
	for _, want := range []string{
		`outboxrelay_events_total{topic="outbox.event.Order"} 2`,
		`outboxrelay_events_total{topic="we\"ird"} 1`,
		`outboxrelay_produce_latency_seconds_bucket{le="0.0005"} 1`,
		`outboxrelay_produce_latency_seconds_bucket{le="0.003"} 1`,
		`outboxrelay_produce_latency_seconds_bucket{le="0.005"} 2`,
		`outboxrelay_produce_latency_seconds_bucket{le="0.05"} 3`,
		`outboxrelay_commit_to_ack_seconds_bucket{le="0.0005"} 2`,
		`outboxrelay_commit_to_ack_seconds_count 3`,
		`outboxrelay_decode_delay_seconds_bucket{le="0.0005"} 1`,
		`outboxrelay_decode_delay_seconds_bucket{le="0.003"} 2`,
		`outboxrelay_decode_delay_seconds_count 2`,
		`outboxrelay_produce_latency_seconds_bucket{le="+Inf"} 3`,
		"outboxrelay_produce_latency_seconds_count 3",
		"outboxrelay_in_flight_events 2", "outboxrelay_in_flight_bytes 500",
		`outboxrelay_slot_lag_bytes{slot="outboxrelay"} 1234`,
		`outboxrelay_slot_retained_wal_bytes{slot="outboxrelay"} 4096`,
		`outboxrelay_slot_held{slot="outboxrelay"} 1`,
		"outboxrelay_confirmed_lsn_bytes 2.380372e+07", "outboxrelay_confirmed_lsn 2.380372e+07",
		"outboxrelay_wal_unreceived_bytes 70000", "outboxrelay_delivery_stalled 1",
		"outboxrelay_produce_stalled 1", "outboxrelay_ready 0", "outboxrelay_produce_errors_total 1",
		"# TYPE outboxrelay_produce_latency_seconds histogram",
		`outboxrelay_build_info{commit="`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q:\n%s", want, out)
		}
	}
}

// A figure not known yet is left out, not exported as 0.
func TestUnknownGaugesAreLeftOut(t *testing.T) {
	out := scrape(t, newMetrics("s"))
	for _, name := range []string{"slot_lag_bytes", "slot_retained_wal_bytes", "wal_unreceived_bytes", "heartbeat_delay_seconds", "last_event_timestamp_seconds"} {
		if strings.Contains(out, "\noutboxrelay_"+name) {
			t.Errorf("the unknown outboxrelay_%s was exported:\n%s", name, out)
		}
	}
	for _, want := range []string{"outboxrelay_ready 0", `outboxrelay_slot_held{slot="s"} 0`, "outboxrelay_in_flight_events 0", "outboxrelay_confirmed_lsn_bytes 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q:\n%s", want, out)
		}
	}
}

// The relay's series, exactly: a rename or a new series must change this
// list, the documentation (docs/metrics.md) and, for a rename, keep the old
// name as a deprecated alias for a release.
func TestMetricNames(t *testing.T) {
	want := []string{
		"outboxrelay_build_info",
		"outboxrelay_commit_to_ack_seconds",
		"outboxrelay_confirmed_lsn", // deprecated alias
		"outboxrelay_confirmed_lsn_bytes",
		"outboxrelay_decode_delay_seconds",
		"outboxrelay_delivery_stalled",
		"outboxrelay_events_total",
		"outboxrelay_heartbeat_delay_seconds",
		"outboxrelay_heartbeats_total",
		"outboxrelay_in_flight_bytes",
		"outboxrelay_in_flight_events",
		"outboxrelay_last_event_timestamp_seconds",
		"outboxrelay_produce_errors_total",
		"outboxrelay_produce_latency_seconds",
		"outboxrelay_produce_request_wait_seconds",
		"outboxrelay_produce_stalled",
		"outboxrelay_ready",
		"outboxrelay_reconnects_total",
		"outboxrelay_seconds_behind_source", // deprecated alias
		"outboxrelay_slot_held",
		"outboxrelay_slot_lag_bytes",
		"outboxrelay_slot_retained_wal_bytes",
		"outboxrelay_slot_waits_total",
		"outboxrelay_snapshot_rows_acknowledged",
		"outboxrelay_snapshot_running",
		"outboxrelay_snapshot_table_rows",
		"outboxrelay_snapshot_table_rows_sent",
		"outboxrelay_source_lag_seconds",
		"outboxrelay_wal_unreceived_bytes",
	}
	names := exportedNames(t, populated(t))
	var got []string
	for _, n := range names {
		if strings.HasPrefix(n, "outboxrelay_") {
			got = append(got, n)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("metric names changed:\n got %q\nwant %q", got, want)
	}
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range got {
		if !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("docs/metrics.md does not document %s", n)
		}
	}
	standard := []string{"go_goroutines", "go_memstats_heap_inuse_bytes"}
	if runtime.GOOS == "linux" {
		standard = append(standard, "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds")
	}
	for _, n := range standard {
		if !slices.Contains(names, n) {
			t.Errorf("the standard collectors' %s is missing from %q", n, names)
		}
	}
}

// exportedNames are the metric families m's registry gathers, sorted.
func exportedNames(t *testing.T, m *metrics) []string {
	t.Helper()
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	return names
}

// Every deprecated alias carries its replacement's value.
func TestDeprecatedAliasesFollowTheirReplacement(t *testing.T) {
	out := scrape(t, populated(t))
	value := func(name string) string {
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				return v
			}
		}
		return "missing"
	}
	for old, current := range map[string]string{
		"outboxrelay_seconds_behind_source": "outboxrelay_source_lag_seconds",
		"outboxrelay_confirmed_lsn":         "outboxrelay_confirmed_lsn_bytes",
	} {
		if value(old) == "missing" || value(old) != value(current) {
			t.Errorf("%s = %s, %s = %s", old, value(old), current, value(current))
		}
		if !strings.Contains(out, "# HELP "+old+" Deprecated: the same series as "+current) {
			t.Errorf("%s's help does not say it is deprecated", old)
		}
	}
}

// The scrape passes promtool's check: well-formed, and names and help texts
// that follow Prometheus's conventions.
func TestMetricsPassPromtool(t *testing.T) {
	promtool.CheckMetrics(t, scrape(t, populated(t)))
	promtool.CheckMetrics(t, scrape(t, newMetrics("s")))
}

func TestReadBuildInfo(t *testing.T) {
	version, commit, goVersion := readBuildInfo()
	if version == "" || commit == "" || goVersion != runtime.Version() {
		t.Errorf("readBuildInfo() = %q, %q, %q", version, commit, goVersion)
	}
}
