package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// /readyz means healthy and able to stream or take over; /streaming means
// holding the slot. A standby is ready and not streaming; a produce stall
// makes a streaming relay not ready while it still holds the slot.
func TestReadinessAndStreaming(t *testing.T) {
	stalled := "Kafka has not answered a request for 6s"
	tests := map[string]struct {
		set                  func(m *metrics)
		readyz, streaming    int
		readyBody            string
		slotHeld, readyGauge string
	}{
		"starting": {set: func(*metrics) {}, readyz: 503, streaming: 503, readyBody: "not ready: starting",
			slotHeld: `outboxrelay_slot_held{slot="s"} 0`, readyGauge: "outboxrelay_ready 0"},
		"streaming": {set: func(m *metrics) { m.slotHeld.Store(true); m.setReady("streaming from slot s") }, readyz: 200, streaming: 200,
			readyBody: "ready: streaming from slot s", slotHeld: `outboxrelay_slot_held{slot="s"} 1`, readyGauge: "outboxrelay_ready 1"},
		"standby": {set: func(m *metrics) { m.setReady("standby: waiting for the replication slot s, held by walsender PID 7") }, readyz: 200, streaming: 503,
			readyBody: "ready: standby: waiting for the replication slot s", slotHeld: `outboxrelay_slot_held{slot="s"} 0`, readyGauge: "outboxrelay_ready 1"},
		"reconnecting": {set: func(m *metrics) { m.setNotReady("reconnecting: boom") }, readyz: 503, streaming: 503,
			readyBody: "not ready: reconnecting: boom", slotHeld: `outboxrelay_slot_held{slot="s"} 0`, readyGauge: "outboxrelay_ready 0"},
		"halted": {set: func(m *metrics) { m.setNotReady("halted on a bad event: x") }, readyz: 503, streaming: 503,
			readyBody: "not ready: halted", slotHeld: `outboxrelay_slot_held{slot="s"} 0`, readyGauge: "outboxrelay_ready 0"},
		"streaming, Kafka stalled": {set: func(m *metrics) {
			m.slotHeld.Store(true)
			m.setReady("streaming from slot s")
			m.produceStall.Store(&stalled)
		}, readyz: 503, streaming: 200, readyBody: "not ready: Kafka has not answered", slotHeld: `outboxrelay_slot_held{slot="s"} 1`, readyGauge: "outboxrelay_ready 0"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := newMetrics("s")
			tc.set(m)
			srv := httptest.NewServer(m.handler(false))
			defer srv.Close()
			code, body := httpGet(t, srv.URL+"/readyz")
			if code != tc.readyz || !strings.HasPrefix(body, tc.readyBody) {
				t.Errorf("/readyz = %d %q, want %d %q...", code, body, tc.readyz, tc.readyBody)
			}
			if code, body := httpGet(t, srv.URL+"/streaming"); code != tc.streaming {
				t.Errorf("/streaming = %d %q, want %d", code, body, tc.streaming)
			}
			_, exposition := httpGet(t, srv.URL+"/metrics")
			for _, want := range []string{tc.slotHeld, tc.readyGauge} {
				if !strings.Contains(exposition, want+"\n") {
					t.Errorf("metrics lack %q", want)
				}
			}
		})
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// The produce watch turns readiness false and warns once a request to Kafka
// has waited produceStallAfter, repeats the warning only every stallRepeat,
// and recovers by itself; a session that ends clears it.
func TestProduceWatch(t *testing.T) {
	m := newMetrics("s")
	m.setReady("streaming from slot s")
	var logs bytes.Buffer
	w := &produceWatch{log: slog.New(slog.NewTextHandler(&logs, nil)), metrics: m}
	t0 := time.Unix(1_000_000, 0)
	var since time.Time
	wait := func() time.Time { return since }
	m.produceWait.Store(&wait)
	inFlight := func() (int, int64) { return 3, 300 }
	m.inFlight.Store(&inFlight)
	count := func(s string) int { return strings.Count(logs.String(), s) }
	ready := func() bool { ok, _ := m.readiness(); return ok }

	w.check(t0) // nothing waits
	since = t0
	w.check(t0.Add(produceStallAfter - time.Millisecond))
	if !ready() || count("Kafka stopped answering") != 0 {
		t.Fatalf("reported a stall before the bound: ready %v\n%s", ready(), logs.String())
	}
	w.check(t0.Add(produceStallAfter))
	if ready() || count("Kafka stopped answering") != 1 || !strings.Contains(logs.String(), "in_flight_events=3") {
		t.Fatalf("stall at the bound: ready %v\n%s", ready(), logs.String())
	}
	if v := m.produceWaiting(t0.Add(7 * time.Second)); v != 7*time.Second {
		t.Errorf("produceWaiting = %v, want 7s", v)
	}
	w.check(t0.Add(produceStallAfter + 10*time.Second))
	if count("Kafka stopped answering") != 1 {
		t.Fatalf("warned again within stallRepeat:\n%s", logs.String())
	}
	w.check(t0.Add(produceStallAfter + stallRepeat))
	if count("Kafka stopped answering") != 2 {
		t.Fatalf("no repeated warning after stallRepeat:\n%s", logs.String())
	}
	since = time.Time{} // answered
	w.check(t0.Add(2 * stallRepeat))
	if !ready() || count("Kafka answers again") != 1 {
		t.Fatalf("no recovery: ready %v\n%s", ready(), logs.String())
	}
	since = t0
	w.check(t0.Add(3 * stallRepeat))
	if ready() {
		t.Fatal("second stall not reported")
	}
	m.produceWait.Store(nil) // the session ended
	w.check(t0.Add(3*stallRepeat + time.Second))
	if !ready() || m.produceStall.Load() != nil {
		t.Fatal("a stall outlived its session")
	}
}

// Waiting for a slot another relay holds is a standby's normal state: it is
// ready, is not a reconnect, and is logged at info only when it begins.
func TestWaitingForTheSlotIsNotAReconnect(t *testing.T) {
	var logs bytes.Buffer
	r := &relay{log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), metrics: newMetrics("s")}
	inUse := fmt.Errorf("starting replication: %w", &replication.SlotInUseError{Slot: "s", PID: 42})
	for range 3 {
		r.retrying(inUse, time.Second)
	}
	if ok, why := r.metrics.readiness(); !ok || !strings.Contains(why, "standby") {
		t.Errorf("standby readiness = %v %q, want ready", ok, why)
	}
	if n, w := testutil.ToFloat64(r.metrics.reconnects), testutil.ToFloat64(r.metrics.slotWaits); n != 0 || w != 3 {
		t.Errorf("reconnects %v, slot waits %v; want 0 and 3", n, w)
	}
	if n := strings.Count(logs.String(), `level=INFO msg="waiting for the replication slot"`); n != 1 {
		t.Errorf("%d info lines about waiting, want 1:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), `level=DEBUG msg="waiting for the replication slot"`); n != 2 {
		t.Errorf("%d debug lines about waiting, want 2:\n%s", n, logs.String())
	}
	r.retrying(errors.New("connection refused"), time.Second)
	if ok, _ := r.metrics.readiness(); ok || testutil.ToFloat64(r.metrics.reconnects) != 1 {
		t.Errorf("a failure: ready %v, reconnects %v; want not ready and 1", ok, testutil.ToFloat64(r.metrics.reconnects))
	}
	r.retrying(inUse, time.Second)
	if n := strings.Count(logs.String(), `level=INFO msg="waiting for the replication slot"`); n != 2 {
		t.Errorf("waiting again after a failure is not announced at info:\n%s", logs.String())
	}
}

// The default HTTP address does not take 8080 (the usual application port),
// stays in the exporters' 9100-9999 range on every interface, and a taken
// port is a usage error that names the flag and its environment variable.
func TestHTTPAddrDefaultAndCollision(t *testing.T) {
	addr := defaultRunOptions().httpAddr
	if addr != fmt.Sprintf(":%d", defaultHTTPPort) || defaultHTTPPort == 8080 || defaultHTTPPort < 9100 || defaultHTTPPort > 9999 {
		t.Errorf("default --http-addr %q", addr)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = serveHTTP(context.Background(), taken.Addr().String(), newMetrics("s").handler(false), slog.New(slog.NewTextHandler(io.Discard, nil)))
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitUsage {
		t.Fatalf("serveHTTP on a taken port: %v; want a usage error", err)
	}
	for _, want := range []string{"--http-addr " + taken.Addr().String(), "address already in use", "OUTBOXRELAY_HTTP_ADDR", "another process on this host"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %q", err, want)
		}
	}
}
