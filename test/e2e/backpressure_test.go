package e2e

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// A small in-flight bound pauses reading while Kafka acknowledges slowly, and
// costs nothing in correctness: every event arrives, in order per aggregate,
// and the slot never confirms past what Kafka holds.
func TestInFlightBoundPausesReading(t *testing.T) {
	tests := []struct {
		name  string
		flags []string
		gauge string
		bound float64
		slack float64 // how far the last event read may overshoot the bound
	}{
		{"events", []string{"--max-in-flight-events", "8"}, "outboxrelay_in_flight_events", 8, 0},
		// Reading pauses once the bytes reach the bound, so the event read
		// last may cross it by its own size (under 300 bytes here).
		{"bytes", []string{"--max-in-flight-bytes", "2048"}, "outboxrelay_in_flight_bytes", 2048, 512},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			// Each produce request waits 30 ms in the broker, without holding
			// up its other connections: Kafka is the bottleneck.
			e.kafka.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
				e.kafka.KeepControl()
				e.kafka.SleepControl(func() { time.Sleep(30 * time.Millisecond) })
				return nil, nil, false
			})
			p := e.start(tt.flags...)
			base := p.httpAddr(t)
			e.waitStreaming("outboxrelay")
			w := newWriter(e, 5)
			rng := randFor(t)
			if err := w.tx(t.Context(), rng, 300, false, false); err != nil {
				t.Fatal(err)
			}
			for range 200 {
				if err := w.tx(t.Context(), rng, 1, true, false); err != nil {
					t.Fatal(err)
				}
			}
			end := e.currentWAL()

			var peak float64
			checked := false
			deadline := time.Now().Add(90 * time.Second)
			for e.confirmed("outboxrelay") < end {
				if time.Now().After(deadline) {
					t.Fatalf("the slot did not reach %X within 90 s", end)
				}
				v := metric(t, base, tt.gauge)
				if v > tt.bound+tt.slack {
					t.Fatalf("%s = %v, above the bound %v", tt.gauge, v, tt.bound)
				}
				peak = max(peak, v)
				if !checked && peak >= tt.bound/2 {
					// Mid-drain, with reading paused: the confirmed position
					// covers only what Kafka holds.
					e.checkNotAhead(t, false)
					checked = true
				}
				time.Sleep(5 * time.Millisecond)
			}
			if peak < tt.bound/2 {
				t.Fatalf("%s peaked at %v: the bound %v was never approached, so this run proves nothing", tt.gauge, peak, tt.bound)
			}
			if !checked {
				t.Fatal("the drain ended before the mid-drain check")
			}
			if dups := w.verify(t, e.readAllOf(w, 30*time.Second)); dups != 0 {
				t.Errorf("%d duplicates without any failure", dups)
			}
			t.Logf("%s peaked at %v (bound %v)", tt.gauge, peak, tt.bound)
		})
	}
}
