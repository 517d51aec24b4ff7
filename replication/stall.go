package replication

import "time"

// The stall rule makes a crawl visible, whatever its cause (a slow or lossy
// network, a broker that acknowledges slowly, PostgreSQL decoding a large
// transaction): delivery is stalled when
//
//   - WAL waits: more than StallMinWaiting bytes of WAL that the server had
//     flushed StallWindow ago have still not been received, and
//   - receiving runs far below its recent rate: over the last StallWindow
//     the stream received less than a tenth of the bytes per second of its
//     best StallWindow in the last StallHistory, or nothing at all.
//
// A backlog drained at full speed is not stalled (it is behind, at its
// usual rate), and neither is a relay that keeps up with a slower writer
// (nothing waits). StallMinWaiting keeps a WAL record that the server has
// flushed only in part from counting as waiting.
const (
	StallWindow     = 10 * time.Second
	StallHistory    = 5 * time.Minute
	StallMinWaiting = 64 << 10
	stallRateShare  = 10 // "far below": under 1/stallRateShare of the peak
)

// StallSample is one observation: the server's flushed WAL position, and
// the stream's received position and received bytes (Stream.Received).
type StallSample struct {
	At               time.Time
	Server, Received uint64
	Bytes            uint64
}

// StallState is the rule's verdict after a sample.
type StallState struct {
	Stalled bool
	// Changed is set when Stalled differs from the previous verdict.
	Changed bool
	// Unreceived is the server's position minus the received one.
	Unreceived uint64
	// Waiting is the WAL flushed StallWindow ago and still not received.
	Waiting uint64
	// Rate and Peak are bytes per second received over the last window and
	// over the best window of the history.
	Rate, Peak float64
}

// StallWatch applies the stall rule to samples taken every second or so.
// The zero value is ready; Reset it when a new stream starts. Not safe for
// concurrent use.
type StallWatch struct {
	samples []stallSample
	stalled bool
}

type stallSample struct {
	StallSample
	rate float64 // bytes per second over the window that ends here; -1: unknown
}

// Reset forgets every sample.
func (w *StallWatch) Reset() { w.samples, w.stalled = w.samples[:0], false }

// Observe adds a sample and returns the verdict.
func (w *StallWatch) Observe(s StallSample) StallState {
	w.trim(s.At)
	st := StallState{Rate: -1}
	if s.Server > s.Received {
		st.Unreceived = s.Server - s.Received
	}
	if old, ok := w.windowStart(s.At); ok {
		if old.Server > s.Received {
			st.Waiting = old.Server - s.Received
		}
		st.Rate = float64(s.Bytes-old.Bytes) / s.At.Sub(old.At).Seconds()
	}
	w.samples = append(w.samples, stallSample{StallSample: s, rate: st.Rate})
	for _, p := range w.samples {
		st.Peak = max(st.Peak, p.rate)
	}
	st.Stalled = st.Rate >= 0 && st.Waiting > StallMinWaiting &&
		(st.Rate == 0 || st.Rate*stallRateShare < st.Peak)
	st.Changed = st.Stalled != w.stalled
	w.stalled = st.Stalled
	return st
}

// trim drops samples older than the history, keeping the newest of them
// while it may still start a window.
func (w *StallWatch) trim(now time.Time) {
	cut := 0
	for cut < len(w.samples)-1 && now.Sub(w.samples[cut+1].At) >= StallHistory {
		cut++
	}
	w.samples = append(w.samples[:0], w.samples[cut:]...)
}

// windowStart returns the newest sample at least StallWindow before now.
func (w *StallWatch) windowStart(now time.Time) (stallSample, bool) {
	for i := len(w.samples) - 1; i >= 0; i-- {
		if now.Sub(w.samples[i].At) >= StallWindow {
			return w.samples[i], true
		}
	}
	return stallSample{}, false
}
