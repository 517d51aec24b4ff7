package main

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/outboxrelay/outboxrelay/cmd/internal/pipeline"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// latencyBuckets are the latency histograms' upper bounds, seconds.
func latencyBuckets() []float64 {
	return []float64{0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
}

// metrics is the relay's state as Prometheus and the probes see it. It owns
// the process's registry (no global one): counters and histograms are
// updated as things happen; the gauges are read from the state below when
// Prometheus scrapes (stateCollector).
type metrics struct {
	reg *prometheus.Registry

	events      *prometheus.CounterVec // by topic
	produce     prometheus.Histogram   // hand-off to acknowledgement
	commitToAck prometheus.Histogram   // commit in PostgreSQL to acknowledgement
	decodeDelay prometheus.Histogram   // commit to the walsender sending the event, server clock

	produceErrors prometheus.Counter
	reconnects    prometheus.Counter
	slotWaits     prometheus.Counter
	heartbeats    prometheus.Counter

	snapshotRunning prometheus.Gauge
	snapshotRows    *prometheus.GaugeVec // by table: rows the snapshot holds
	snapshotRead    *prometheus.GaugeVec // by table: rows handed to Kafka
	snapshotAcked   prometheus.Gauge

	slotHeld       atomic.Bool
	confirmed      atomic.Pointer[func() uint64]
	slotLag        atomic.Int64  // -1: unknown
	slotRetained   atomic.Int64  // -1: unknown
	behindSource   atomic.Uint64 // float64 bits: seconds from commit to ack of the last event
	heartbeatDelay atomic.Uint64 // float64 bits, NaN until a heartbeat arrives: seconds from emission to arrival of the last heartbeat
	lastEvent      atomic.Int64  // unix nanos of the last acknowledgement

	// inFlight is the streaming session's Tracker.InFlight, nil between
	// sessions (nothing is in flight then).
	inFlight atomic.Pointer[func() (int, int64)]
	status   atomic.Pointer[status]
	// produceWait is the streaming session's Sink.OldestRequest, nil between
	// sessions; produceStall, set by the produce watch, is why the relay is
	// not ready while Kafka does not answer (nil: it answers).
	produceWait  atomic.Pointer[func() time.Time]
	produceStall atomic.Pointer[string]

	// received is the streaming session's Stream.Received, nil between
	// sessions; unreceived (-1: unknown) and stalled are the stall rule's
	// figures.
	received   atomic.Pointer[func() (uint64, uint64)]
	unreceived atomic.Int64
	stalled    atomic.Bool
}

// status is the relay's state as /readyz tells it: ready means healthy and
// able to stream, or to take over the slot when its holder goes (a standby);
// detail says what it does, or why it is not ready.
type status struct {
	ready  bool
	detail string
}

// newMetrics makes the metrics of a relay streaming from slot, registered
// in a registry of their own with the Go runtime's and the process's
// collectors and outboxrelay_build_info.
func newMetrics(slot string) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.slotLag.Store(-1)
	m.slotRetained.Store(-1)
	m.unreceived.Store(-1)
	m.heartbeatDelay.Store(math.Float64bits(math.NaN()))
	m.setNotReady("starting")
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outboxrelay_events_total",
		Help: "Events acknowledged by Kafka, by topic."}, []string{"topic"})
	m.produce = latencyHistogram("outboxrelay_produce_latency_seconds",
		"Time from handing an event to the producer to Kafka's acknowledgement.")
	m.commitToAck = latencyHistogram("outboxrelay_commit_to_ack_seconds",
		"Time from an event's commit in PostgreSQL to Kafka's acknowledgement.")
	m.decodeDelay = latencyHistogram("outboxrelay_decode_delay_seconds",
		"Time from an event's commit to the walsender sending it, both on PostgreSQL's clock: how far logical decoding runs behind the writers.")
	m.produceErrors = counter("outboxrelay_produce_errors_total", "Produce errors that outlasted the producer's retries.")
	m.reconnects = counter("outboxrelay_reconnects_total", "Sessions restarted after a failure (waiting for a slot another relay holds is not one).")
	m.slotWaits = counter("outboxrelay_slot_waits_total", "Attempts to take the replication slot that found another connection holding it (a standby waiting).")
	m.heartbeats = counter("outboxrelay_heartbeats_total", "Heartbeats read back from the slot.")
	m.snapshotRunning = prometheus.NewGauge(prometheus.GaugeOpts{Name: "outboxrelay_snapshot_running",
		Help: "1 while an initial snapshot is read (--snapshot initial), else 0."})
	m.snapshotRows = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outboxrelay_snapshot_table_rows",
		Help: "Rows of each outbox table the current initial snapshot holds."}, []string{"table"})
	m.snapshotRead = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outboxrelay_snapshot_table_rows_sent",
		Help: "Rows of each outbox table the current initial snapshot handed to Kafka."}, []string{"table"})
	m.snapshotAcked = prometheus.NewGauge(prometheus.GaugeOpts{Name: "outboxrelay_snapshot_rows_acknowledged",
		Help: "Rows of the current initial snapshot Kafka acknowledged, all tables."})
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
		m.events, m.produce, m.commitToAck, m.decodeDelay,
		m.produceErrors, m.reconnects, m.slotWaits, m.heartbeats,
		m.snapshotRunning, m.snapshotRows, m.snapshotRead, m.snapshotAcked,
		newStateCollector(m, slot),
	)
	return m
}

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func latencyHistogram(name, help string) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: latencyBuckets()})
}

// buildInfo is outboxrelay_build_info: always 1, with the version, commit
// and Go version as labels.
func buildInfo() prometheus.Collector {
	version, commit, goVersion := readBuildInfo()
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "outboxrelay_build_info",
		Help:        "Always 1; the labels say which build of outboxrelay runs: version, VCS commit, Go version.",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit, "goversion": goVersion},
	}, func() float64 { return 1 })
}

func (m *metrics) setNotReady(why string) { m.status.Store(&status{detail: why}) }

// setReady marks the relay ready; what says what it does (streaming, or
// waiting for the slot as a standby).
func (m *metrics) setReady(what string) { m.status.Store(&status{ready: true, detail: what}) }

// readiness is /readyz's answer: ready, and what the relay does or why it is
// not ready. A produce stall makes a ready relay not ready until Kafka
// answers again.
func (m *metrics) readiness() (bool, string) {
	st := m.status.Load()
	if !st.ready {
		return false, st.detail
	}
	if why := m.produceStall.Load(); why != nil {
		return false, *why
	}
	return true, st.detail
}

// produceWaiting is how long the oldest unanswered request to Kafka of the
// streaming session has waited, 0 when none waits.
func (m *metrics) produceWaiting(now time.Time) time.Duration {
	if fn := m.produceWait.Load(); fn != nil {
		if since := (*fn)(); !since.IsZero() {
			return max(0, now.Sub(since))
		}
	}
	return 0
}

// setStall sets the stall rule's figures; unreceived -1 is unknown.
func (m *metrics) setStall(unreceived int64, stalled bool) {
	m.unreceived.Store(unreceived)
	m.stalled.Store(stalled)
}

// inFlightNow is the streaming session's events and bytes in flight.
func (m *metrics) inFlightNow() (int, int64) {
	if fn := m.inFlight.Load(); fn != nil {
		return (*fn)()
	}
	return 0, 0
}

// confirmedLSN is the last position confirmed to PostgreSQL, 0 before the
// first session.
func (m *metrics) confirmedLSN() uint64 {
	if fn := m.confirmed.Load(); fn != nil {
		return (*fn)()
	}
	return 0
}

// acked records one event Kafka acknowledged: sent is when the relay handed
// it to the producer, commit its commit time and decoded when the walsender
// sent it (both server clock; zero when unknown).
func (m *metrics) acked(topic string, sent, commit, decoded time.Time) {
	now := time.Now()
	m.events.WithLabelValues(topic).Inc()
	m.produce.Observe(now.Sub(sent).Seconds())
	m.commitToAck.Observe(now.Sub(commit).Seconds())
	if !decoded.IsZero() {
		m.decodeDelay.Observe(max(0, decoded.Sub(commit).Seconds()))
	}
	m.behindSource.Store(math.Float64bits(now.Sub(commit).Seconds()))
	m.lastEvent.Store(now.UnixNano())
}

func (m *metrics) heartbeat(sent time.Time) {
	m.heartbeats.Inc()
	m.heartbeatDelay.Store(math.Float64bits(time.Since(sent).Seconds()))
}

// snapshot records an initial snapshot's progress.
func (m *metrics) snapshot(p pipeline.SnapshotProgress) {
	if p.Done {
		m.snapshotRunning.Set(0)
	} else {
		m.snapshotRunning.Set(1)
	}
	if p.Table != "" {
		m.snapshotRows.WithLabelValues(p.Table).Set(float64(p.Rows))
		m.snapshotRead.WithLabelValues(p.Table).Set(float64(p.Read))
	}
	m.snapshotAcked.Set(float64(p.Acked))
}
