package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// latencyBuckets are the latency histograms' upper bounds, seconds.
var latencyBuckets = []float64{0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// histogram is a Prometheus histogram; the caller holds the lock.
type histogram struct {
	buckets []uint64 // per bucket, not cumulative
	sum     float64
	count   uint64
}

func (h *histogram) observe(v float64) {
	if h.buckets == nil {
		h.buckets = make([]uint64, len(latencyBuckets))
	}
	for i, b := range latencyBuckets {
		if v <= b {
			h.buckets[i]++
			break
		}
	}
	h.sum += v
	h.count++
}

func (h *histogram) lines() []string {
	var out []string
	var cum uint64
	for i, b := range latencyBuckets {
		if h.buckets != nil {
			cum += h.buckets[i]
		}
		out = append(out, fmt.Sprintf(`_bucket{le="%s"} %d`, strconvFloat(b), cum))
	}
	return append(out, fmt.Sprintf(`_bucket{le="+Inf"} %d`, h.count), "_sum "+strconvFloat(h.sum), fmt.Sprintf("_count %d", h.count))
}

// metrics is the relay's state as Prometheus sees it. Counters only go up
// for the life of the process; gauges are set as things happen.
type metrics struct {
	mu          sync.Mutex
	byTopic     map[string]uint64
	produce     histogram // hand-off to acknowledgement
	commitToAck histogram // commit in PostgreSQL to acknowledgement
	decodeDelay histogram // commit to the walsender sending the event, server clock

	produceErrors  atomic.Uint64
	reconnects     atomic.Uint64
	slotWaits      atomic.Uint64
	heartbeats     atomic.Uint64
	slotHeld       atomic.Bool
	confirmed      atomic.Pointer[func() uint64]
	slotLag        atomic.Int64 // -1: unknown
	slotRetained   atomic.Int64
	behindSource   atomic.Uint64 // float64 bits: seconds from commit to ack of the last event
	heartbeatDelay atomic.Uint64 // float64 bits: seconds from emission to arrival of the last heartbeat
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

func newMetrics() *metrics {
	m := &metrics{byTopic: map[string]uint64{}}
	m.slotLag.Store(-1)
	m.slotRetained.Store(-1)
	m.unreceived.Store(-1)
	m.setNotReady("starting")
	return m
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

// acked records one event Kafka acknowledged: sent is when the relay handed
// it to the producer, commit its commit time and decoded when the walsender
// sent it (both server clock; zero when unknown).
func (m *metrics) acked(topic string, sent, commit, decoded time.Time) {
	now := time.Now()
	m.mu.Lock()
	m.byTopic[topic]++
	m.produce.observe(now.Sub(sent).Seconds())
	m.commitToAck.observe(now.Sub(commit).Seconds())
	if !decoded.IsZero() {
		m.decodeDelay.observe(max(0, decoded.Sub(commit).Seconds()))
	}
	m.mu.Unlock()
	m.behindSource.Store(math.Float64bits(now.Sub(commit).Seconds()))
	m.lastEvent.Store(now.UnixNano())
}

func (m *metrics) heartbeat(sent time.Time) {
	m.heartbeats.Add(1)
	m.heartbeatDelay.Store(math.Float64bits(time.Since(sent).Seconds()))
}

func (m *metrics) write(w io.Writer) {
	p := func(name, typ, help string, lines ...string) {
		fmt.Fprintf(w, "# HELP outboxrelay_%s %s\n# TYPE outboxrelay_%s %s\n", name, help, name, typ)
		for _, l := range lines {
			fmt.Fprintf(w, "outboxrelay_%s%s\n", name, l)
		}
	}
	f := func(v float64) string { return " " + strconvFloat(v) }
	m.mu.Lock()
	topics := make([]string, 0, len(m.byTopic))
	for t := range m.byTopic {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	var events []string
	for _, t := range topics {
		events = append(events, fmt.Sprintf(`{topic=%q} %d`, t, m.byTopic[t]))
	}
	produce, commitToAck, decodeDelay := m.produce.lines(), m.commitToAck.lines(), m.decodeDelay.lines()
	m.mu.Unlock()

	p("events_total", "counter", "Events acknowledged by Kafka, by topic.", events...)
	p("produce_errors_total", "counter", "Produce errors that outlasted the producer's retries.", fmt.Sprintf(" %d", m.produceErrors.Load()))
	p("reconnects_total", "counter", "Sessions restarted after a failure (waiting for a slot another relay holds is not one).", fmt.Sprintf(" %d", m.reconnects.Load()))
	p("slot_waits_total", "counter", "Attempts to take the replication slot that found another connection holding it (a standby waiting).", fmt.Sprintf(" %d", m.slotWaits.Load()))
	p("produce_latency_seconds", "histogram", "Time from handing an event to the producer to Kafka's acknowledgement.", produce...)
	p("commit_to_ack_seconds", "histogram", "Time from an event's commit in PostgreSQL to Kafka's acknowledgement.", commitToAck...)
	p("decode_delay_seconds", "histogram", "Time from an event's commit to the walsender sending it, both on PostgreSQL's clock: how far logical decoding runs behind the writers.", decodeDelay...)
	ev, by := m.inFlightNow()
	p("in_flight_events", "gauge", "Events read and not yet acknowledged.", fmt.Sprintf(" %d", ev))
	p("in_flight_bytes", "gauge", "Bytes of events read and not yet acknowledged.", fmt.Sprintf(" %d", by))
	var lsn uint64
	if fn := m.confirmed.Load(); fn != nil {
		lsn = (*fn)()
	}
	p("confirmed_lsn", "gauge", "Last position confirmed to PostgreSQL, as a number.", fmt.Sprintf(" %d", lsn))
	if v := m.slotLag.Load(); v >= 0 {
		p("slot_lag_bytes", "gauge", "WAL bytes from the slot's confirmed position to the server's current position.", fmt.Sprintf(" %d", v))
	}
	if v := m.slotRetained.Load(); v >= 0 {
		p("slot_retained_wal_bytes", "gauge", "WAL bytes the slot keeps on the server (from restart_lsn).", fmt.Sprintf(" %d", v))
	}
	if v := m.unreceived.Load(); v >= 0 {
		p("wal_unreceived_bytes", "gauge", "WAL bytes the server has flushed and the relay has not yet received (the server's position minus the stream's).", fmt.Sprintf(" %d", v))
	}
	stalled := 0
	if m.stalled.Load() {
		stalled = 1
	}
	p("delivery_stalled", "gauge", "1 while WAL waits and the relay receives it far below its recent rate (docs/operations.md, Delivery stalls).", fmt.Sprintf(" %d", stalled))
	p("seconds_behind_source", "gauge", "Seconds from the commit of the last acknowledged event to its acknowledgement.", f(math.Float64frombits(m.behindSource.Load())))
	if m.heartbeats.Load() > 0 {
		p("heartbeat_delay_seconds", "gauge", "Seconds from emitting the last heartbeat to reading it from the slot.", f(math.Float64frombits(m.heartbeatDelay.Load())))
	}
	p("heartbeats_total", "counter", "Heartbeats read back from the slot.", fmt.Sprintf(" %d", m.heartbeats.Load()))
	if t := m.lastEvent.Load(); t > 0 {
		p("last_event_timestamp_seconds", "gauge", "When the last event was acknowledged, unix time.", f(float64(t)/1e9))
	}
	held, ready, stalledKafka := 0, 0, 0
	if m.slotHeld.Load() {
		held = 1
	}
	if ok, _ := m.readiness(); ok {
		ready = 1
	}
	if m.produceStall.Load() != nil {
		stalledKafka = 1
	}
	p("produce_request_wait_seconds", "gauge", "How long the oldest unanswered request to Kafka has waited; 0 when none waits.", f(m.produceWaiting(time.Now()).Seconds()))
	p("produce_stalled", "gauge", "1 while a request to Kafka has waited longer than "+produceStallAfter.String()+" for its answer (the relay is then not ready).", fmt.Sprintf(" %d", stalledKafka))
	p("slot_held", "gauge", "1 when this instance holds the replication slot and streams from it (/streaming answers 200).", fmt.Sprintf(" %d", held))
	p("ready", "gauge", "1 when healthy and able to stream or to take over: streaming, or a standby waiting for the slot (/readyz answers 200).", fmt.Sprintf(" %d", ready))
}

// listenError explains a failure to listen on --http-addr.
func listenError(addr string, err error) error {
	hint := ""
	if errors.Is(err, syscall.EADDRINUSE) {
		hint = " (another process on this host listens on it: the application beside this relay, or a second relay)"
	}
	return fmt.Errorf("listening on --http-addr %s: %w%s; set --http-addr (or %s) to a free address such as :%d, or to \"\" to serve no HTTP",
		addr, err, hint, envName("http-addr"), defaultHTTPPort+1)
}

func strconvFloat(v float64) string {
	s := fmt.Sprintf("%g", v)
	if strings.Contains(s, "e+") || strings.Contains(s, "e-") {
		return fmt.Sprintf("%f", v)
	}
	return s
}

// handler serves /healthz, /readyz and /metrics, and the profiler when asked.
func (m *metrics) handler(profile bool) http.Handler {
	mux := http.NewServeMux()
	if profile {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, detail := m.readiness()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", detail)
			return
		}
		fmt.Fprintf(w, "ready: %s\n", detail)
	})
	// /streaming tells which instance holds the slot; /readyz whether an
	// instance is healthy. A standby is ready and not streaming.
	mux.HandleFunc("GET /streaming", func(w http.ResponseWriter, _ *http.Request) {
		_, detail := m.readiness()
		if !m.slotHeld.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not streaming: %s\n", detail)
			return
		}
		fmt.Fprintf(w, "streaming: %s\n", detail)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.write(w)
	})
	return mux
}

// serveHTTP listens on addr and serves until ctx ends. Listening errors are
// usage errors, returned at once, so that a taken port is reported before
// anything is created, with the flag that changes it.
func serveHTTP(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (func() error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usageError(listenError(addr, err))
	}
	log.Info("serving health and metrics", "addr", ln.Addr().String())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	return func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving HTTP: %w", err)
		}
		return nil
	}, nil
}
