package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// produceStallAfter is how long a request to Kafka may wait for its answer
// before the relay reports the stall: not ready, a WARN, and
// outboxrelay_produce_stalled 1. Kafka answers a produce request in
// milliseconds, and in seconds when it is overloaded; a broker that holds a
// request longer has most likely stopped answering (a frozen broker, a
// network partition), which the client notices only at its 30 s read
// timeout.
const produceStallAfter = 5 * time.Second

// produceCheckInterval is how often the watch looks: a stall is reported
// within produceStallAfter plus this.
const produceCheckInterval = 500 * time.Millisecond

// watchProduce applies the produce stall rule until ctx ends.
func (r *relay) watchProduce(ctx context.Context) {
	w := &produceWatch{log: r.log, metrics: r.metrics}
	t := time.NewTicker(produceCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.check(now)
		}
	}
}

// produceWatch reports the streaming session's requests to Kafka that wait
// longer than produceStallAfter: it makes the relay not ready and logs a
// WARN (again every stallRepeat while the stall lasts), and undoes both,
// with an INFO, when Kafka answers again. A session that ends clears it
// silently: the next one starts over.
type produceWatch struct {
	log     *slog.Logger
	metrics *metrics
	session *func() time.Time
	began   time.Time // zero: not stalled
	warned  time.Time
}

func (w *produceWatch) check(now time.Time) {
	if fn := w.metrics.produceWait.Load(); fn != w.session {
		w.session, w.began = fn, time.Time{}
		w.metrics.produceStall.Store(nil)
	}
	waited := w.metrics.produceWaiting(now)
	switch {
	case waited >= produceStallAfter:
		why := fmt.Sprintf("Kafka has not answered a request for %s (stalled after %s)", waited.Round(100*time.Millisecond), produceStallAfter)
		w.metrics.produceStall.Store(&why)
		if !w.began.IsZero() && now.Sub(w.warned) < stallRepeat {
			return
		}
		if w.began.IsZero() {
			w.began = now.Add(-waited)
		}
		w.warned = now
		events, bytes := w.metrics.inFlightNow()
		w.log.Warn("Kafka stopped answering: a produce request has waited longer than the stall bound; nothing unacknowledged is confirmed, and reading pauses at the in-flight bound",
			"waited", waited.Round(time.Millisecond).String(), "bound", produceStallAfter.String(), "in_flight_events", events, "in_flight_bytes", bytes)
	case !w.began.IsZero():
		w.metrics.produceStall.Store(nil)
		w.log.Info("Kafka answers again", "stalled_for", now.Sub(w.began).Round(time.Millisecond).String())
		w.began = time.Time{}
	}
}
