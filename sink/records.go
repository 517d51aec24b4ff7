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
	newest, err := client.GetOffset(topic, 0, sarama.OffsetNewest)
	if err != nil {
		return nil, false, fmt.Errorf("reading topic %s: %w", topic, err)
	}
	if newest == 0 {
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
	var last []byte
	found := false
	idle := time.NewTimer(time.Second)
	defer idle.Stop()
	for {
		select {
		case m := <-pc.Messages():
			if string(m.Key) == key {
				last, found = m.Value, true
			}
			if m.Offset >= newest-1 {
				return last, found, nil
			}
			idle.Reset(time.Second)
		case err := <-pc.Errors():
			return nil, false, fmt.Errorf("reading topic %s: %w", topic, err)
		case <-idle.C:
			// The newest offsets are transaction markers or aborted records,
			// which read_committed does not deliver.
			return last, found, nil
		}
	}
}
