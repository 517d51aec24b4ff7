package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/test/harness"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// broker is the Kafka a test's env runs against: kfake by default, Apache
// Kafka (a single KRaft node, or the cluster a test asks for) when the
// package runs with OUTBOXRELAY_KAFKA=real. It embeds *kfake.Cluster, nil
// under Apache Kafka, so that tests keep kfake's fault injection at hand;
// the fault-injection methods below skip the test under Apache Kafka, which
// has none.
type broker struct {
	*kfake.Cluster
	real *harness.RealKafka
	t    *testing.T
}

var _ harness.Broker = (*broker)(nil)

// brokerOpt asks for an Apache Kafka cluster of a given shape. A test that
// passes any must call requireRealKafka first.
type brokerOpt func(*harness.RealKafkaOptions)

// realNodes asks for n KRaft nodes (3: replication factor 3,
// min.insync.replicas=2).
func realNodes(n int) brokerOpt { return func(o *harness.RealKafkaOptions) { o.Nodes = n } }

// realConfig adds server.properties settings to every node.
func realConfig(kv map[string]string) brokerOpt {
	return func(o *harness.RealKafkaOptions) {
		if o.Config == nil {
			o.Config = map[string]string{}
		}
		for k, v := range kv {
			o.Config[k] = v
		}
	}
}

// realSecure adds a SECURE listener (TLS, SASL/SCRAM, ACLs) to every node.
func realSecure(sec *harness.KafkaSecurity) brokerOpt {
	return func(o *harness.RealKafkaOptions) { o.Secure = sec }
}

// startBroker starts the test's broker and stops it when the test ends.
func startBroker(t *testing.T, opts ...brokerOpt) *broker {
	t.Helper()
	if !harness.RealKafkaRequested() && len(opts) == 0 {
		kc, err := harness.StartKafka()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(kc.Close)
		return &broker{Cluster: kc, t: t}
	}
	var o harness.RealKafkaOptions
	for _, opt := range opts {
		opt(&o)
	}
	began := time.Now()
	k, err := harness.StartRealKafka(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Apache Kafka, %d node(s) at %s, up in %v", k.Nodes(), strings.Join(k.ListenAddrs(), ","), time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			keepKafkaLogs(t, k)
		}
		k.Close()
	})
	return &broker{real: k, t: t}
}

// keepKafkaLogs copies a failed test's broker logs where they outlive it.
func keepKafkaLogs(t *testing.T, k *harness.RealKafka) {
	name := regexp.MustCompile(`[^A-Za-z0-9_-]+`).ReplaceAllString(t.Name(), "_")
	f, err := os.CreateTemp("", "outboxrelay-kafka-"+name+"-*.log")
	if err != nil {
		t.Logf("keeping the Kafka logs: %v", err)
		return
	}
	defer f.Close()
	k.CopyLogs(f)
	t.Logf("Apache Kafka's logs: %s", filepath.Clean(f.Name()))
}

// ListenAddrs returns the brokers' addresses.
func (b *broker) ListenAddrs() []string {
	if b.real != nil {
		return b.real.ListenAddrs()
	}
	return b.Cluster.ListenAddrs()
}

// Close stops the broker (the test's cleanup does so too).
func (b *broker) Close() {
	if b.real != nil {
		b.real.Close()
		return
	}
	b.Cluster.Close()
}

// fake returns the kfake cluster, or skips the test under Apache Kafka.
func (b *broker) fake(what string) *kfake.Cluster {
	if b.Cluster == nil {
		b.t.Helper()
		skipUnderRealKafka(b.t, what)
	}
	return b.Cluster
}

// skipUnderRealKafka skips a test that injects faults with kfake's what
// (Control, Fault...) when the package runs against Apache Kafka.
func skipUnderRealKafka(t *testing.T, what string) {
	t.Helper()
	if harness.RealKafkaRequested() {
		t.Skipf("skipped under %s=real: this test injects faults with kfake's %s, which Apache Kafka has no equivalent of", harness.KafkaKindEnv, what)
	}
}

func (b *broker) Control(fn func(kmsg.Request) (kmsg.Response, error, bool)) {
	b.fake("Control").Control(fn)
}

func (b *broker) ControlKey(key int16, fn func(kmsg.Request) (kmsg.Response, error, bool)) {
	b.fake("ControlKey").ControlKey(key, fn)
}

func (b *broker) KeepControl()               { b.fake("KeepControl").KeepControl() }
func (b *broker) DropControl()               { b.fake("DropControl").DropControl() }
func (b *broker) SleepControl(wakeup func()) { b.fake("SleepControl").SleepControl(wakeup) }
func (b *broker) Fault(faults ...kfake.Fault) *kfake.FaultHandle {
	return b.fake("Fault").Fault(faults...)
}

// requireRealKafka skips a test written for Apache Kafka alone unless the
// package runs against it.
func requireRealKafka(t *testing.T) {
	t.Helper()
	if !harness.RealKafkaRequested() {
		t.Skipf("needs Apache Kafka: run with %s=real (test/kafka/fetch.sh fetches the broker)", harness.KafkaKindEnv)
	}
}

// kafkaDown makes Kafka unreachable until up is called: every request
// fails under kfake; every node is killed under Apache Kafka, and up starts
// them again on the same ports and storage.
func (e *env) kafkaDown() (up func()) {
	e.t.Helper()
	if k := e.kafka.real; k != nil {
		var all []int
		for i := range k.Nodes() {
			if err := k.Kill(i); err != nil {
				e.t.Fatal(err)
			}
			all = append(all, i)
		}
		return func() {
			e.t.Helper()
			if err := k.Restart(context.Background(), all...); err != nil {
				e.t.Fatal(err)
			}
		}
	}
	down := make(chan struct{})
	e.kafka.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		select {
		case <-down:
			e.kafka.DropControl()
			return nil, nil, false
		default:
			e.kafka.KeepControl()
			return nil, fmt.Errorf("broker down"), true
		}
	})
	return func() { close(down) }
}
