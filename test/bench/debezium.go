package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// debeziumClassPath builds the Debezium reference program (test/debezium)
// and fetches Debezium from Maven Central unless cached; it returns the
// class path to run it with.
func debeziumClassPath() (string, error) {
	fmt.Fprintln(os.Stderr, "fetching Debezium (test/debezium/fetch.sh) ...")
	fetch := exec.Command("bash", "test/debezium/fetch.sh")
	fetch.Stderr = os.Stderr
	out, err := fetch.Output()
	if err != nil {
		return "", fmt.Errorf("fetching Debezium (run from the repository root; needs a JDK 17 and Maven): %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// versusDebezium commits n events, 100 per transaction, after creating a
// slot for Debezium and one for outboxrelay at the same point; then it runs
// Debezium alone until its topic holds every event, then outboxrelay alone.
// Both read the same connector properties file, as a migration would.
func (b *bench) versusDebezium(ctx context.Context, n int, leg string) ([]result, error) {
	dbURL, pool, err := b.prepare(ctx)
	if err != nil {
		return nil, err
	}
	defer b.dropSlots(ctx, pool)
	dbzSlot, relaySlot := b.slot("dbz"), b.slot("relayvs")
	for _, s := range []string{dbzSlot, relaySlot} {
		if _, err := pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", s); err != nil {
			return nil, fmt.Errorf("creating slot %s: %w", s, err)
		}
	}
	const perTx = 100
	txs := (n + perTx - 1) / perTx
	fmt.Fprintf(os.Stderr, "  writing %d events ...\n", txs*perTx)
	if err := writeParallel(ctx, pool, txs, perTx, smallPad); err != nil {
		return nil, err
	}
	props, err := b.connectorProperties(dbURL, dbzSlot)
	if err != nil {
		return nil, err
	}
	events := txs * perTx
	// Topics exist, as they usually do in production (Kafka Connect's
	// producer relies on the broker creating them, which kfake does not).
	dbzTopic, relayTopic := fmt.Sprintf("bench.dbz%d.Order", b.seq), fmt.Sprintf("bench.relayvs%d.Order", b.seq)
	for _, t := range []string{dbzTopic, relayTopic} {
		if err := b.createTopic(ctx, t); err != nil {
			return nil, fmt.Errorf("creating topic %s: %w", t, err)
		}
	}
	dbz := exec.Command("java", "-Xmx384m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
		"-cp", b.dbzClass, "io.outboxrelay.reference.DebeziumReference", props)
	rd, err := b.drainProcess(ctx, "Debezium 3.6.1", dbz, dbzTopic, events)
	if err != nil {
		return nil, err
	}
	relay := exec.Command(b.relay, append([]string{"run", "--debezium-config", props, "--slot", relaySlot,
		"--route-topic-replacement", fmt.Sprintf("bench.relayvs%d.${routedByValue}", b.seq), "--http-addr", "", "--log-level", "warn"}, b.relayArgs...)...)
	rr, err := b.drainProcess(ctx, "outboxrelay", relay, relayTopic, events)
	if err != nil {
		return nil, err
	}
	for _, r := range []*result{&rd, &rr} {
		r.Scenario = "vs Debezium, 100 events/tx: " + r.Scenario
		r.Leg = leg
	}
	return []result{rd, rr}, nil
}

// connectorProperties writes a Kafka Connect PostgreSQL connector
// configuration with the Outbox Event Router and StringConverter, the
// set-up whose records outboxrelay matches byte for byte.
func (b *bench) connectorProperties(dbURL, slot string) (string, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "", err
	}
	lines := []string{
		"name=bench", "connector.class=io.debezium.connector.postgresql.PostgresConnector",
		"database.hostname=" + u.Hostname(), "database.port=" + u.Port(), "database.user=" + u.User.Username(),
		"database.dbname=" + strings.TrimPrefix(u.Path, "/"), "database.sslmode=disable",
		"topic.prefix=bench", "plugin.name=pgoutput", "slot.name=" + slot, "publication.name=bench",
		"publication.autocreate.mode=disabled", "table.include.list=public.outbox", "snapshot.mode=no_data",
		"transforms=outbox", "transforms.outbox.type=io.debezium.transforms.outbox.EventRouter",
		fmt.Sprintf("transforms.outbox.route.topic.replacement=bench.dbz%d.${routedByValue}", b.seq),
		"key.converter=org.apache.kafka.connect.storage.StringConverter",
		"value.converter=org.apache.kafka.connect.storage.StringConverter",
		"bootstrap.servers=" + strings.Join(b.kafka.ListenAddrs(), ","),
	}
	if pw, ok := u.User.Password(); ok {
		lines = append(lines, "database.password="+pw)
	}
	path := filepath.Join(b.logDir, fmt.Sprintf("connector-%d.properties", b.seq))
	return path, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

// drainProcess starts a relay process and waits until topic holds every
// event; it reports events/s from the process's start, its CPU seconds
// per 100k events, peak RSS, and the broker's CPU over the drain.
func (b *bench) drainProcess(ctx context.Context, name string, cmd *exec.Cmd, topic string, events int) (result, error) {
	fmt.Fprintf(os.Stderr, "  draining with %s ...\n", name)
	logf, err := os.Create(filepath.Join(b.logDir, fmt.Sprintf("%s-%d.log", strings.Fields(name)[0], b.seq)))
	if err != nil {
		return result{}, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	began, broker0 := time.Now(), b.brokerCPU()
	if err := cmd.Start(); err != nil {
		return result{}, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &relayProc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	for {
		got, _ := b.countTopic(ctx, topic)
		if got >= int64(events) {
			break
		}
		select {
		case err := <-p.done:
			return result{}, fmt.Errorf("%s exited with %d of %d events in Kafka: %v (logs: %s)", name, got, events, err, logf.Name())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Since(began) > 15*time.Minute {
			_, _, _ = p.stop()
			return result{}, fmt.Errorf("%s: %d of %d events after 15 minutes (logs: %s)", name, got, events, logf.Name())
		}
	}
	secs, broker := time.Since(began).Seconds(), b.brokerCPU()-broker0
	cpu := procCPU(cmd.Process.Pid)
	rss, _, _ := p.stop()
	per100k := func(v float64) float64 { return v * 100_000 / float64(events) }
	return result{Scenario: name, Events: events, Seconds: secs, EventsPerSec: float64(events) / secs,
		CPUPer100k: per100k(cpu), BrokerCPUPer100k: per100k(broker), PeakRSSMiB: rss}, nil
}
