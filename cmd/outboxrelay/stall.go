package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/outboxrelay/outboxrelay/replication"
)

// stallCheckInterval is how often the stall rule is applied; with its
// ten-second window a crawl is reported within about eleven seconds.
const stallCheckInterval = time.Second

// stallRepeat is how often the warning is repeated while a stall lasts.
const stallRepeat = time.Minute

// stallWatch applies replication's stall rule to the streaming session, if
// any, exports its figures and logs a WARN when delivery stalls (again
// every stallRepeat while it lasts) and an INFO when it recovers. It runs
// on the monitor goroutine.
type stallWatch struct {
	log     *slog.Logger
	metrics *metrics
	watch   replication.StallWatch
	stream  *func() (uint64, uint64) // the session watched
	warned  time.Time
}

func (s *stallWatch) check(ctx context.Context, mon *replication.Monitor, now time.Time) {
	received := s.metrics.received.Load()
	if received != s.stream {
		s.stream = received
		s.watch.Reset()
		s.metrics.setStall(-1, false)
	}
	if received == nil {
		return
	}
	server, err := mon.ServerLSN(ctx)
	if err != nil {
		s.log.Debug("reading the server's WAL position", "err", err.Error())
		return
	}
	lsn, bytes := (*received)()
	st := s.watch.Observe(replication.StallSample{At: now, Server: server, Received: lsn, Bytes: bytes})
	s.metrics.setStall(int64(st.Unreceived), st.Stalled)
	switch {
	case st.Stalled && (st.Changed || now.Sub(s.warned) >= stallRepeat):
		s.warned = now
		events, _ := s.metrics.inFlightNow()
		s.log.Warn("delivery stalled: WAL is waiting and the relay receives it far below its recent rate",
			"waiting_bytes", st.Waiting, "unreceived_bytes", st.Unreceived,
			"received_bytes_per_second", int64(st.Rate), "recent_peak_bytes_per_second", int64(st.Peak),
			"in_flight_events", events,
			"causes", "Kafka acknowledging slowly (in_flight_events at --max-in-flight-events), a slow or lossy network to PostgreSQL, or PostgreSQL decoding a large transaction")
	case st.Changed:
		s.log.Info("delivery recovered", "received_bytes_per_second", int64(st.Rate), "unreceived_bytes", st.Unreceived)
	}
}
