package replication

import (
	"testing"
	"time"
)

// flow describes one second of a stream: how many bytes of WAL the server
// flushed and how many the stream received in it.
type flow struct{ flushed, received uint64 }

// replay feeds one sample a second, starting with server and stream level
// at lead bytes apart, and returns the verdicts.
func replay(lead uint64, seconds []flow) []StallState {
	var w StallWatch
	t0 := time.Unix(1_700_000_000, 0)
	server, received := lead, uint64(0)
	out := make([]StallState, len(seconds))
	for i, f := range seconds {
		server += f.flushed
		received = min(server, received+f.received)
		out[i] = w.Observe(StallSample{At: t0.Add(time.Duration(i) * time.Second), Server: server, Received: received, Bytes: received})
	}
	return out
}

func repeat(n int, f flow) []flow {
	out := make([]flow, n)
	for i := range out {
		out[i] = f
	}
	return out
}

func concat(parts ...[]flow) []flow {
	var out []flow
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

const mb = 1 << 20

func TestStallWatch(t *testing.T) {
	tests := map[string]struct {
		lead    uint64
		seconds []flow
		// the first second (index) at which the verdict is stalled, and the
		// first after that at which it is not again; -1: never
		stallAt, recoverAt int
	}{
		"keeps up with a steady writer": {0, repeat(60, flow{5 * mb, 5 * mb}), -1, -1},
		"drains a backlog at full speed": {
			600 * mb, repeat(60, flow{0, 5 * mb}), -1, -1,
		},
		"a writer slows down, nothing waits": {
			0, concat(repeat(30, flow{5 * mb, 5 * mb}), repeat(30, flow{10 << 10, 10 << 10})), -1, -1,
		},
		"idle server, a partly flushed record": {
			32 << 10, repeat(40, flow{0, 0}), -1, -1,
		},
		"a backlog crawls, then recovers": {
			600 * mb, concat(repeat(20, flow{0, 5 * mb}), repeat(30, flow{0, 60 << 10}), repeat(30, flow{0, 5 * mb})),
			// the window is ten seconds of crawl at second 29; at second 50
			// it holds one second at full speed, over a tenth of the peak
			29, 50,
		},
		"nothing arrives from the start": {
			10 * mb, repeat(20, flow{mb, 0}), 10, -1,
		},
		"a broker outage under load stops reading": {
			0, concat(repeat(20, flow{mb, mb}), repeat(30, flow{mb, 0})),
			// waiting: what was flushed by second 20 is received; second 30
			// compares against the server at second 20, 10 MB on
			30, -1,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			states := replay(tt.lead, tt.seconds)
			stallAt, recoverAt := -1, -1
			changes := 0
			for i, st := range states {
				if st.Changed {
					changes++
				}
				if st.Stalled && stallAt < 0 {
					stallAt = i
				}
				if !st.Stalled && stallAt >= 0 && recoverAt < 0 {
					recoverAt = i
				}
			}
			if stallAt != tt.stallAt || recoverAt != tt.recoverAt {
				t.Fatalf("stalled at second %d, recovered at %d; want %d and %d", stallAt, recoverAt, tt.stallAt, tt.recoverAt)
			}
			want := 0
			if tt.stallAt >= 0 {
				want++
			}
			if tt.recoverAt >= 0 {
				want++
			}
			if changes != want {
				t.Fatalf("%d changes of verdict, want %d", changes, want)
			}
		})
	}
}

// The unreceived bytes are reported from the first sample on, and the
// history forgets windows older than StallHistory.
func TestStallWatchReportsAndForgets(t *testing.T) {
	var w StallWatch
	t0 := time.Unix(0, 0)
	st := w.Observe(StallSample{At: t0, Server: 5000, Received: 1000})
	if st.Unreceived != 4000 || st.Stalled || st.Rate != -1 {
		t.Fatalf("first sample: %+v", st)
	}
	// A burst, then a long steady trickle: the burst's peak leaves the
	// history, so the trickle becomes the usual rate.
	var bytes uint64
	for i := 1; i <= 400; i++ {
		step := uint64(1 << 10)
		if i <= 10 {
			step = 100 * mb
		}
		bytes += step
		st = w.Observe(StallSample{At: t0.Add(time.Duration(i) * time.Second), Server: bytes + 100*mb, Received: bytes, Bytes: bytes})
	}
	if st.Peak > 2<<10 {
		t.Fatalf("peak %v bytes/s five minutes after the burst, want the trickle's rate", st.Peak)
	}
	if st.Stalled {
		t.Fatalf("a steady trickle is not a stall once it is the usual rate: %+v", st)
	}
	w.Reset()
	if st := w.Observe(StallSample{At: t0.Add(500 * time.Second)}); st.Rate != -1 || st.Peak != 0 {
		t.Fatalf("after Reset: %+v", st)
	}
}
