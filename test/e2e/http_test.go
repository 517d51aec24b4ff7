package e2e

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/promtool"
)

var httpAddrLine = regexp.MustCompile(`serving health and metrics"? addr=(\S+)`)

// httpAddr is the address the relay's log says it serves HTTP on.
func (p *relayProc) httpAddr(t *testing.T) string {
	t.Helper()
	var addr string
	waitUntil(t, 20*time.Second, "the HTTP address in the log", func() bool {
		m := httpAddrLine.FindStringSubmatch(p.logs.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return "http://" + addr
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns a sample's value from /metrics, or -1 when absent. A
// sample named without labels matches the first series of that name
// whatever its labels (outboxrelay_slot_held{slot="..."}).
func metric(t *testing.T, base, sample string) float64 {
	t.Helper()
	_, body := get(t, base+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if !strings.Contains(sample, "{") && strings.HasPrefix(line, sample+"{") {
			line = sample + line[strings.Index(line, "} ")+1:]
		}
		if strings.HasPrefix(line, sample+" ") {
			v, err := strconv.ParseFloat(strings.TrimPrefix(line, sample+" "), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return v
		}
	}
	return -1
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	e := newEnv(t)
	// Heartbeats need pgoutput messages (PostgreSQL 14+); below, the relay
	// refuses them at start.
	heartbeats := e.serverVersion(t) >= 140000
	if !heartbeats {
		p := e.start("--heartbeat-interval", "100ms")
		if code := p.wait(t, 30*time.Second); code != 3 || !strings.Contains(p.logs.String(), "PostgreSQL 14") {
			t.Fatalf("--heartbeat-interval before PostgreSQL 14: exit code %d:\n%s", code, p.logs.String())
		}
	}
	var first *relayProc
	if heartbeats {
		first = e.start("--heartbeat-interval", "100ms")
	} else {
		first = e.start()
	}
	base := first.httpAddr(t)
	if code, body := get(t, base+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	waitUntil(t, 20*time.Second, "/readyz to answer 200", func() bool { code, _ := get(t, base+"/readyz"); return code == 200 })

	w := newWriter(e, 3)
	for range 5 {
		if err := w.tx(t.Context(), randFor(t), 1, true, false); err != nil {
			t.Fatal(err)
		}
	}
	e.readAllOf(w, 20*time.Second)
	total := 0.0
	waitUntil(t, 10*time.Second, "events_total to count the events", func() bool {
		total = 0
		for _, topic := range allTopics {
			if v := metric(t, base, `outboxrelay_events_total{topic="`+topic+`"}`); v > 0 {
				total += v
			}
		}
		return total == 5
	})
	for sample, check := range map[string]func(float64) bool{
		"outboxrelay_produce_latency_seconds_count": func(v float64) bool { return v == 5 },
		"outboxrelay_decode_delay_seconds_count":    func(v float64) bool { return v == 5 },
		"outboxrelay_decode_delay_seconds_sum":      func(v float64) bool { return v >= 0 && v < 5*30 },
		"outboxrelay_slot_held":                     func(v float64) bool { return v == 1 },
		"outboxrelay_ready":                         func(v float64) bool { return v == 1 },
		"outboxrelay_in_flight_events":              func(v float64) bool { return v == 0 },
		"outboxrelay_confirmed_lsn_bytes":           func(v float64) bool { return v > 0 },
		"outboxrelay_slot_lag_bytes":                func(v float64) bool { return v >= 0 },
		"outboxrelay_produce_errors_total":          func(v float64) bool { return v == 0 },
		"outboxrelay_source_lag_seconds":            func(v float64) bool { return v >= 0 && v < 30 },
		"outboxrelay_build_info":                    func(v float64) bool { return v == 1 },
	} {
		if v := metric(t, base, sample); !check(v) {
			t.Errorf("%s = %v", sample, v)
		}
	}
	// What a running relay exposes passes promtool's check.
	_, exposition := get(t, base+"/metrics")
	promtool.CheckMetrics(t, exposition)
	// Heartbeats travel through the slot even though the outbox is quiet.
	if heartbeats {
		waitUntil(t, 10*time.Second, "heartbeats to arrive", func() bool { return metric(t, base, "outboxrelay_heartbeats_total") >= 3 })
		if d := metric(t, base, "outboxrelay_heartbeat_delay_seconds"); d < 0 || d > 5 {
			t.Errorf("heartbeat delay %v s", d)
		}
	}

	second := e.start()
	base2 := second.httpAddr(t)
	second.waitLog(t, "waiting for the replication slot", 20*time.Second)
	// A standby is ready (healthy, able to take over) and not streaming.
	code, body := get(t, base2+"/readyz")
	if code != 200 || !strings.Contains(body, "waiting for the replication slot") {
		t.Fatalf("standby /readyz: %d %q", code, body)
	}
	if code, body := get(t, base2+"/streaming"); code != 503 {
		t.Fatalf("standby /streaming: %d %q", code, body)
	}
	if code, body := get(t, base+"/streaming"); code != 200 {
		t.Fatalf("active /streaming: %d %q", code, body)
	}
	if v := metric(t, base2, "outboxrelay_slot_held"); v != 0 {
		t.Fatalf("standby slot_held = %v", v)
	}
	if code, _ := get(t, base2+"/healthz"); code != 200 {
		t.Fatalf("standby /healthz: %d", code)
	}
}
