package harness

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

var (
	_ Broker = (*kfake.Cluster)(nil)
	_ Broker = (*RealKafka)(nil)
)

func requireReal(t *testing.T) {
	t.Helper()
	if !RealKafkaRequested() {
		t.Skipf("starts Apache Kafka: run with %s=real", KafkaKindEnv)
	}
}

func TestFreePortsAreDistinct(t *testing.T) {
	ports, err := freePorts(50)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}

func TestClusterIDIsKafkas(t *testing.T) {
	for range 100 {
		id, err := clusterID()
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 22 || strings.HasPrefix(id, "-") || strings.ContainsAny(id, "+/=") {
			t.Fatalf("cluster ID %q is not 22 characters of URL-safe base64 without a leading '-'", id)
		}
	}
}

// produce writes n records to topic with acks=all and returns the first
// error.
func produce(ctx context.Context, addrs []string, topic string, n int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topic), kgo.RecordRetries(20))
	if err != nil {
		return err
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Key: []byte{byte(i)}, Value: []byte("v")})
	}
	return cl.ProduceSync(ctx, recs...).FirstErr()
}

func TestRealKafkaSingleNode(t *testing.T) {
	requireReal(t)
	began := time.Now()
	k, err := StartRealKafka(t.Context(), RealKafkaOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	t.Logf("one node up in %v", time.Since(began).Round(time.Millisecond))
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(t.Context(), 3, 1, nil, "t"); err != nil {
		t.Fatal(err)
	}
	if err := produce(t.Context(), k.ListenAddrs(), "t", 10); err != nil {
		t.Fatal(err)
	}
	// A clean stop and a restart keep what was stored.
	began = time.Now()
	if err := k.Stop(0); err != nil {
		t.Fatal(err)
	}
	if err := k.Restart(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped and restarted in %v", time.Since(began).Round(time.Millisecond))
	recs, err := ReadAll(t.Context(), k.ListenAddrs(), []string{"t"}, Count(10), 30*time.Second)
	if err != nil || len(recs) != 10 {
		t.Fatalf("read %d records (%v), want 10", len(recs), err)
	}
}

func TestRealKafkaThreeNodesSurviveALeaderKill(t *testing.T) {
	requireReal(t)
	began := time.Now()
	k, err := StartRealKafka(t.Context(), RealKafkaOptions{Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	t.Logf("three nodes up in %v", time.Since(began).Round(time.Millisecond))
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Broker defaults: three replicas.
	if _, err := kadm.NewClient(cl).CreateTopic(t.Context(), 1, -1, nil, "t"); err != nil {
		t.Fatal(err)
	}
	if err := produce(t.Context(), k.ListenAddrs(), "t", 10); err != nil {
		t.Fatal(err)
	}
	leader, isr, err := k.Leader(t.Context(), "t", 0)
	if err != nil || len(isr) != 3 {
		t.Fatalf("leader %d, ISR %v (%v); want three in-sync replicas", leader, isr, err)
	}
	if err := k.Kill(leader); err != nil {
		t.Fatal(err)
	}
	if k.Running(leader) {
		t.Fatal("killed node still running")
	}
	// Two of three replicas meet min.insync.replicas=2.
	if err := produce(t.Context(), k.ListenAddrs(), "t", 10); err != nil {
		t.Fatalf("producing with the leader down: %v", err)
	}
	if err := k.Restart(t.Context(), leader); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, isr, err := k.Leader(t.Context(), "t", 0)
		if err == nil && len(isr) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted node not back in the ISR: %v (%v)", isr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	recs, err := ReadAll(t.Context(), k.ListenAddrs(), []string{"t"}, Count(20), 30*time.Second)
	if err != nil || len(recs) != 20 {
		t.Fatalf("read %d records (%v), want 20", len(recs), err)
	}
}
