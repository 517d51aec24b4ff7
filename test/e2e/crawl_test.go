package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/replication"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// crawlWarning is the start of the WARN the relay logs when WAL waits and
// it receives far below its recent rate (docs: "Delivery stalls").
const crawlWarning = "delivery stalled"

// A large transaction on the database's own host, in the default
// configuration, with segments lost on the way to the relay. A TCP window
// that holds one loopback segment (the paced connection, tried during development and never released)
// cannot repair a lost segment by fast retransmission: with nothing sent
// behind it, no acknowledgement reports the gap, and when the tail loss
// probe is lost too, only a retransmission timeout (200 ms or more) brings
// it back. Delivery then crawls at one window per probe or timeout, with
// nothing logged. Real receive drops on a small window did this in 1 of 15
// runs under load; here nftables drops three packets in every 20 from
// PostgreSQL's port, the same packets every run. The paced connection
// drained this in 57 s (520 events/s), the default connection in 4 s: the
// bound below sits well between them. Every event must arrive, and the
// stall warning must stay silent while delivery keeps its rate.
func TestLargeTransactionOnSameHostNeverCrawls(t *testing.T) {
	e := newEnv(t)
	dropFromPort(t, e.pg.Port, 20, 3)
	p := e.start()
	e.waitStreaming("outboxrelay")
	const events = 30_000
	probes0, rtos0 := tcpRecoveries(t)
	began := time.Now()
	exec1(t, e.pool, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
		SELECT gen_random_uuid(), 'Order', (i % 100)::text, 'Created', jsonb_build_object('i', i, 'pad', repeat('x', 1000))
		FROM generate_series(1, $1) i`, events)
	end := e.currentWAL()
	deadline := time.Now().Add(crawlBound)
	for e.confirmed("outboxrelay") < end {
		if time.Now().After(deadline) || p.exited() {
			probes, rtos := tcpRecoveries(t)
			t.Fatalf("crawling: %d of %d events in Kafka after %v (tail loss probes %d, retransmission timeouts %d)",
				e.countTopic(t, "outbox.event.Order"), events, time.Since(began).Round(time.Second), probes-probes0, rtos-rtos0)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(began)
	probes, rtos := tcpRecoveries(t)
	if n := e.countTopic(t, "outbox.event.Order"); n < events {
		t.Fatalf("the slot confirmed the transaction but Kafka holds %d of %d events", n, events)
	}
	if strings.Contains(p.logs.String(), crawlWarning) {
		t.Errorf("the stall warning fired during a drain that kept its rate")
	}
	t.Logf("%d events of 1 KB in one transaction, 3 of every 20 packets lost: drained in %v (tail loss probes %d, retransmission timeouts %d)",
		events, took.Round(10*time.Millisecond), probes-probes0, rtos-rtos0)
}

// crawlBound is how long the drain may take: 7x what the default
// connection took, under half of what the paced one did.
const crawlBound = 30 * time.Second

// dropFromPort makes the kernel drop count of every period packets sent
// from TCP port on this host (nftables, numgen inc: the same packets every
// run), until the test ends.
func dropFromPort(t *testing.T, port, period, count int) {
	t.Helper()
	if os.Geteuid() != 0 && os.Getenv("CI") == "" {
		t.Skip("injecting packet loss with nftables needs root")
	}
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Fatal("this test injects packet loss with nft (Debian package nftables; .ci/run installs it) and needs root: ", err)
	}
	table := fmt.Sprintf("outboxrelay_loss_%d", port)
	rules := fmt.Sprintf(`table inet %s {
	chain out {
		type filter hook output priority 0; policy accept;
		tcp sport %d numgen inc mod %d < %d drop
	}
}`, table, port, period, count)
	cmd := exec.Command(nft, "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(nft, "delete", "table", "inet", table).CombinedOutput(); err != nil {
			t.Errorf("nft delete table: %v: %s", err, out)
		}
	})
}

// tcpRecoveries reads the kernel's counts of TCP tail loss probes and
// retransmission timeouts so far (TcpExt in /proc/net/netstat).
func tcpRecoveries(t *testing.T) (probes, timeouts int64) {
	t.Helper()
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) {
			continue
		}
		for j, n := range names {
			v, _ := strconv.ParseInt(values[j], 10, 64)
			switch n {
			case "TCPLossProbes":
				probes = v
			case "TCPTimeouts":
				timeouts = v
			}
		}
	}
	return probes, timeouts
}

// countTopic is the number of records in topic (the sum of its partitions'
// end offsets).
func (e *env) countTopic(t *testing.T, topic string) int64 {
	t.Helper()
	adm, err := newAdmin(e)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		return 0
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// A crawl is visible: with WAL waiting and nothing received (here a broker
// that stops acknowledging, so the in-flight bound stops reading), the relay
// logs the stall warning within about 10 s and exports the WAL it has not
// received; both clear by themselves once the broker answers again. Before
// that, a quiet outbox next to a busy table raises nothing.
func TestStallIsReported(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	var stalling atomic.Bool
	e.kafka.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.kafka.KeepControl()
		if stalling.Load() {
			e.kafka.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	p := e.start("--max-in-flight-events", "50")
	base := p.httpAddr(t)
	e.waitStreaming("outboxrelay")

	quiet := time.Now().Add(15 * time.Second)
	for time.Now().Before(quiet) {
		exec1(t, e.pool, `INSERT INTO other (note) SELECT repeat('y', 500) FROM generate_series(1, 20)`)
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(p.logs.String(), crawlWarning) || metric(t, base, "outboxrelay_delivery_stalled") != 0 {
		t.Fatalf("a quiet outbox next to a busy table was reported as a stall")
	}

	stalling.Store(true)
	w := newWriter(e, 10)
	stalled := time.Now()
	rng := randFor(t)
	for range 20 {
		if err := w.tx(t.Context(), rng, 100, false, false); err != nil {
			t.Fatal(err)
		}
	}
	exec1(t, e.pool, `INSERT INTO other (note) SELECT repeat('z', 1000) FROM generate_series(1, 1000)`)
	p.waitLog(t, crawlWarning, 30*time.Second)
	after := time.Since(stalled)
	if v := metric(t, base, "outboxrelay_delivery_stalled"); v != 1 {
		t.Errorf("outboxrelay_delivery_stalled = %v while the warning stands", v)
	}
	if v := metric(t, base, "outboxrelay_wal_unreceived_bytes"); v < replication.StallMinWaiting {
		t.Errorf("outboxrelay_wal_unreceived_bytes = %v while WAL waits", v)
	}

	close(release)
	p.waitLog(t, "delivery recovered", 30*time.Second)
	if dups := w.verify(t, e.readAllOf(w, 60*time.Second)); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
	waitUntil(t, 15*time.Second, "the stall gauge to clear", func() bool { return metric(t, base, "outboxrelay_delivery_stalled") == 0 })
	t.Logf("stall reported %v after the broker stopped acknowledging", after.Round(100*time.Millisecond))
}
