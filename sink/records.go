package sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// The checkpoint topic is compacted and has one partition: the last record
// of each key is what holds. Besides the exactly-once checkpoints (keyed by
// slot) it keeps each slot's origin record (OriginKey), in both delivery
// modes.

// OriginKey is the checkpoint topic's key of a slot's origin record: the
// proof, outside PostgreSQL, that a relay has delivered from that slot.
func OriginKey(slot string) string { return "origin/" + slot }

// ReadRecord returns the value last written under key in the checkpoint
// topic, and whether there is one; a missing topic holds none. It opens and
// closes its own connection.
func ReadRecord(ctx context.Context, cfg Config, key string) ([]byte, bool, error) {
	cfg.TransactionalID = "" // a plain reader; read_committed needs no producer
	sc, err := cfg.sarama()
	if err != nil {
		return nil, false, err
	}
	sc.Consumer.IsolationLevel = sarama.ReadCommitted
	sc.Consumer.Return.Errors = true
	client, err := sarama.NewClient(cfg.Brokers, sc)
	if err != nil {
		return nil, false, fmt.Errorf("connecting to Kafka to read %s: %w", cfg.CheckpointTopic, err)
	}
	defer client.Close()
	if _, err := client.Partitions(cfg.CheckpointTopic); errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return nil, false, nil
	} else if err != nil {
		return nil, false, fmt.Errorf("reading topic %s: %w", cfg.CheckpointTopic, err)
	}
	return readLast(client, cfg.CheckpointTopic, key)
}

// WriteRecord writes value under key to the checkpoint topic, creating the
// compacted topic when it is missing, and waits for Kafka's
// acknowledgement (acks=all). It opens and closes its own connection.
func WriteRecord(ctx context.Context, cfg Config, key string, value []byte) error {
	cfg.TransactionalID = ""
	sc, err := cfg.sarama()
	if err != nil {
		return err
	}
	sc.Producer.Idempotent, sc.Net.MaxOpenRequests = false, 5
	client, err := sarama.NewClient(cfg.Brokers, sc)
	if err != nil {
		return fmt.Errorf("connecting to Kafka to write %s: %w", cfg.CheckpointTopic, err)
	}
	defer client.Close()
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return fmt.Errorf("starting the Kafka admin client: %w", err)
	}
	if err := ensureCompacted(client, admin, cfg.CheckpointTopic, cfg.TopicReplicationFactor); err != nil {
		return err
	}
	prod, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		return fmt.Errorf("starting a Kafka producer: %w", err)
	}
	defer prod.Close()
	_, _, err = prod.SendMessage(&sarama.ProducerMessage{Topic: cfg.CheckpointTopic, Partition: 0,
		Key: sarama.StringEncoder(key), Value: sarama.ByteEncoder(value), Metadata: &envelope{partition: 0, eventID: key}})
	if err != nil {
		return fmt.Errorf("writing %s to %s: %w", key, cfg.CheckpointTopic, err)
	}
	return nil
}

// ensureCompacted creates the compacted one-partition topic when it is
// missing and waits until the client sees it.
func ensureCompacted(client sarama.Client, admin sarama.ClusterAdmin, topic string, rf int16) error {
	if _, err := client.Partitions(topic); !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return nil
	}
	compact := "compact"
	detail := &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: rf,
		ConfigEntries: map[string]*string{"cleanup.policy": &compact}}
	if err := admin.CreateTopic(topic, detail, false); err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return fmt.Errorf("creating the compacted topic %s: %w", topic, err)
	}
	for i := 0; i < 250; i++ {
		if err := client.RefreshMetadata(topic); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// readLast reads the compacted one-partition topic from its start and
// returns the last value written under key.
func readLast(client sarama.Client, topic, key string) ([]byte, bool, error) {
	stable, err := stableOffset(client, topic)
	if err != nil {
		return nil, false, fmt.Errorf("reading topic %s: %w", topic, err)
	}
	if stable == 0 {
		return nil, false, nil
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return nil, false, fmt.Errorf("reading topic %s: %w", topic, err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(topic, 0, sarama.OffsetOldest)
	if err != nil {
		return nil, false, fmt.Errorf("reading topic %s: %w", topic, err)
	}
	defer pc.Close()
	return lastOf(pc, topic, key, stable)
}

// stableOffset asks the partition's leader for the last stable offset (a
// read_committed ListOffsets): every record below it is committed or
// aborted, so a read_committed reader needs nothing beyond it.
func stableOffset(client sarama.Client, topic string) (int64, error) {
	version := client.Config().Version
	if !version.IsAtLeast(sarama.V0_11_0_0) {
		return client.GetOffset(topic, 0, sarama.OffsetNewest)
	}
	leader, err := client.Leader(topic, 0)
	if err != nil {
		return 0, err
	}
	req := sarama.NewOffsetRequest(version)
	req.IsolationLevel = sarama.ReadCommitted
	req.AddBlock(topic, 0, sarama.OffsetNewest, 1)
	resp, err := leader.GetAvailableOffsets(req)
	if err != nil {
		return 0, err
	}
	block := resp.GetBlock(topic, 0)
	if block == nil {
		return 0, sarama.ErrIncompleteResponse
	}
	if !errors.Is(block.Err, sarama.ErrNoError) {
		return 0, block.Err
	}
	return block.Offset, nil // the request is version 2 or newer
}

// How long a read waits, once it has read a record, for the next one before
// it takes the records below the stable offset it has not seen for
// transaction markers or aborted records (which read_committed never
// delivers), and how long it waits for the first record at all.
const (
	readQuiet     = time.Second
	readFirstWait = 30 * time.Second
)

// lastOf consumes until the record just below the stable offset, or until
// the partition has been quiet for readQuiet after the last record. A quiet
// period the process did not live through (stopped, or starved of CPU, so
// that the timer fired late) proves nothing and is waited again: returning
// early would hand back an older value, and an older checkpoint means
// duplicates in exactly-once mode.
func lastOf(pc sarama.PartitionConsumer, topic, key string, stable int64) ([]byte, bool, error) {
	var last []byte
	found := false
	idle := time.NewTimer(readFirstWait)
	defer idle.Stop()
	armed, wait := time.Now(), readFirstWait
	for {
		select {
		case m := <-pc.Messages():
			if string(m.Key) == key {
				last, found = m.Value, true
			}
			if m.Offset >= stable-1 {
				return last, found, nil
			}
			idle.Reset(readQuiet)
			armed, wait = time.Now(), readQuiet
		case err := <-pc.Errors():
			return nil, false, fmt.Errorf("reading topic %s: %w", topic, err)
		case <-idle.C:
			if time.Since(armed) > wait+wait/2 {
				idle.Reset(wait)
				armed = time.Now()
				continue
			}
			return last, found, nil
		}
	}
}
