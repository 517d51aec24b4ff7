package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestMetricsExposition(t *testing.T) {
	m := newMetrics()
	now := time.Now()
	m.acked("outbox.event.Order", now.Add(-3*time.Millisecond), now.Add(-time.Second), now.Add(-time.Second+2*time.Millisecond))
	m.acked("outbox.event.Order", now.Add(-30*time.Millisecond), now, time.Time{})
	m.acked(`we"ird`, now, now, now.Add(-time.Millisecond))
	inFlight := func() (int, int64) { return 2, 500 }
	m.inFlight.Store(&inFlight)
	m.slotLag.Store(1234)
	var b bytes.Buffer
	m.write(&b)
	out := b.String()
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
		"outboxrelay_slot_lag_bytes 1234", "outboxrelay_ready 0", "# TYPE outboxrelay_produce_latency_seconds histogram",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "slot_retained_wal_bytes") {
		t.Error("an unknown gauge was exposed")
	}
}
