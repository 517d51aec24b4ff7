package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/outboxrelay/outboxrelay/test/harness"
)

// brokerKinds parses -kafka.
func brokerKinds(list string) ([]string, error) {
	var kinds []string
	for _, k := range strings.Split(list, ",") {
		switch k = strings.TrimSpace(k); k {
		case "kfake", "real":
			kinds = append(kinds, k)
		default:
			return nil, fmt.Errorf("-kafka: unknown broker %q (want kfake, real)", k)
		}
	}
	return kinds, nil
}

// startBroker starts the in-process broker (kfake) or a one-node Apache
// Kafka, sets b.kafka and b.brokerCPU, and returns what stops it.
func (b *bench) startBroker(ctx context.Context, kind string) (func(), error) {
	fmt.Fprintf(os.Stderr, "starting the %s broker ...\n", kind)
	if kind == "kfake" {
		k, err := harness.StartKafka()
		if err != nil {
			return nil, err
		}
		b.kafka, b.brokerCPU = k, selfCPU
		return k.Close, nil
	}
	// Kafka's own start script's JVM settings (kafka-server-start.sh), not
	// the harness's quick-start ones: the broker's throughput is measured.
	k, err := harness.StartRealKafka(ctx, harness.RealKafkaOptions{JVMOptions: []string{
		"-Xms1g", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"}})
	if err != nil {
		return nil, fmt.Errorf("starting Apache Kafka: %w", err)
	}
	b.kafka = k
	b.brokerCPU = func() float64 {
		var cpu float64
		for _, pid := range k.PIDs() {
			cpu += procCPU(pid)
		}
		return cpu
	}
	return k.Close, nil
}
