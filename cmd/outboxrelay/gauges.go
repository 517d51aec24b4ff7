package main

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// stateGauge is one gauge read from the relay's state when Prometheus
// scrapes; value reports false while the figure is unknown, and the gauge
// is then left out rather than exported as a made-up 0.
type stateGauge struct {
	desc  *prometheus.Desc
	value func() (float64, bool)
}

// stateCollector exports the gauges computed from the relay's state at
// scrape time: what is in flight, positions, the slot's WAL figures, the
// stall rules, readiness.
type stateCollector struct{ gauges []stateGauge }

// deprecated is the help text of a name kept for one release after its
// rename (docs/metrics.md, Deprecated names).
func deprecated(name string) string {
	return "Deprecated: the same series as " + name + ", under its name before the rename to Prometheus conventions; removed in the release after next."
}

func newStateCollector(m *metrics, slot string) *stateCollector {
	onSlot := prometheus.Labels{"slot": slot}
	g := func(name, help string, labels prometheus.Labels, value func() (float64, bool)) stateGauge {
		return stateGauge{desc: prometheus.NewDesc(name, help, nil, labels), value: value}
	}
	known := func(f func() float64) func() (float64, bool) { return func() (float64, bool) { return f(), true } }
	ifKnown := func(v int64) (float64, bool) { return float64(v), v >= 0 }
	sourceLag := known(func() float64 { return math.Float64frombits(m.behindSource.Load()) })
	confirmed := known(func() float64 { return float64(m.confirmedLSN()) })
	return &stateCollector{gauges: []stateGauge{
		g("outboxrelay_in_flight_events", "Events read and not yet acknowledged.", nil,
			known(func() float64 { ev, _ := m.inFlightNow(); return float64(ev) })),
		g("outboxrelay_in_flight_bytes", "Bytes of events read and not yet acknowledged.", nil,
			known(func() float64 { _, by := m.inFlightNow(); return float64(by) })),
		g("outboxrelay_confirmed_lsn_bytes", "Last position confirmed to PostgreSQL (its LSN as a byte position in the WAL).", nil, confirmed),
		g("outboxrelay_slot_lag_bytes", "WAL bytes from the slot's confirmed position to the server's current position (read every 10 s).", onSlot,
			func() (float64, bool) { return ifKnown(m.slotLag.Load()) }),
		g("outboxrelay_slot_retained_wal_bytes", "WAL bytes the slot keeps on the server (from restart_lsn; read every 10 s).", onSlot,
			func() (float64, bool) { return ifKnown(m.slotRetained.Load()) }),
		g("outboxrelay_wal_unreceived_bytes", "WAL bytes the server has flushed and the relay has not yet received (the server's position minus the stream's).", nil,
			func() (float64, bool) { return ifKnown(m.unreceived.Load()) }),
		g("outboxrelay_delivery_stalled", "1 while WAL waits and the relay receives it far below its recent rate (docs/operations.md, Delivery stalls).", nil,
			known(func() float64 { return bit(m.stalled.Load()) })),
		g("outboxrelay_source_lag_seconds", "Seconds from the commit of the last acknowledged event to its acknowledgement.", nil, sourceLag),
		g("outboxrelay_heartbeat_delay_seconds", "Seconds from emitting the last heartbeat to reading it from the slot.", nil,
			func() (float64, bool) { v := math.Float64frombits(m.heartbeatDelay.Load()); return v, !math.IsNaN(v) }),
		g("outboxrelay_last_event_timestamp_seconds", "When the last event was acknowledged, unix time.", nil,
			func() (float64, bool) { t := m.lastEvent.Load(); return float64(t) / 1e9, t > 0 }),
		g("outboxrelay_produce_request_wait_seconds", "How long the oldest unanswered request to Kafka has waited; 0 when none waits.", nil,
			known(func() float64 { return m.produceWaiting(time.Now()).Seconds() })),
		g("outboxrelay_produce_stalled", "1 while a request to Kafka has waited longer than "+produceStallAfter.String()+" for its answer (the relay is then not ready).", nil,
			known(func() float64 { return bit(m.produceStall.Load() != nil) })),
		g("outboxrelay_slot_held", "1 when this instance holds the replication slot and streams from it (/streaming answers 200).", onSlot,
			known(func() float64 { return bit(m.slotHeld.Load()) })),
		g("outboxrelay_ready", "1 when healthy and able to stream or to take over: streaming, or a standby waiting for the slot (/readyz answers 200).", nil,
			known(func() float64 { ok, _ := m.readiness(); return bit(ok) })),
		g("outboxrelay_seconds_behind_source", deprecated("outboxrelay_source_lag_seconds"), nil, sourceLag),
		g("outboxrelay_confirmed_lsn", deprecated("outboxrelay_confirmed_lsn_bytes"), nil, confirmed),
	}}
}

func bit(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Describe sends every gauge's description, so the registry checks them.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range c.gauges {
		ch <- g.desc
	}
}

// Collect reads each gauge whose value is known.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range c.gauges {
		if v, ok := g.value(); ok {
			ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v)
		}
	}
}
