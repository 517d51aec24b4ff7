// Package sink produces records to Kafka and reports each acknowledgement.
//
// Send never waits on Kafka: it hands the record to a buffered queue whose
// capacity the caller bounds. Behind the queue one engine (the engine
// interface, chosen once in Open) produces with acks=all and calls the
// AckFunc for every record Kafka stored, in each partition's order:
//
//   - at least once (produce.go): our idempotent producer on sarama's
//     protocol layer; a resent batch keeps its sequence numbers, so it is
//     never stored twice and per-partition order survives retries;
//   - exactly once (txn.go): sarama's transactional producer; records are
//     acknowledged when their Kafka transaction commits, together with the
//     checkpoint that covers them.
//
// Both classify a produce error the same way (classify, in errors.go): resend,
// refused for good (a bad event), or a restart. The first error that
// survives the retries ends Run: the caller must then stop confirming and
// replay from the replication slot. Nothing is ever skipped.
//
// This is the only package that imports sarama.
package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/outboxrelay/outboxrelay/router"
)

// Message is one record to produce: the router's record (a nil Value is a
// tombstone, a Partition of -1 hashes the key), and what travels with it.
type Message struct {
	router.Record
	// Ack is passed back to the AckFunc once Kafka has stored the message.
	Ack any
	// Checkpoint, in exactly-once mode, is the checkpoint value that holds if
	// the Kafka transaction commits right after this message.
	Checkpoint []byte
}

// AckFunc is called once per message that Kafka stored, from the Sink's
// feeder goroutine: in each partition's order as Kafka stores them, and in
// exactly-once mode when their Kafka transaction commits.
type AckFunc func(ack any)

// PlacedAck is implemented by a Message's Ack that wants to know where Kafka
// stored the message. In at-least-once mode Placed is called just before the
// AckFunc, on the same goroutine, when the broker's answer gave the offset;
// exactly-once mode does not call it.
type PlacedAck interface {
	Placed(partition int32, offset int64)
}

// Config configures the producer. Defaults are safe for an outbox relay;
// Validate rejects settings that would lose or reorder events.
type Config struct {
	Brokers []string
	// Version is the Kafka protocol version to speak, e.g. "2.8.0".
	Version string
	// ClientID is sent to the brokers.
	ClientID string
	// CreateTopics creates a missing topic through the admin API; when false
	// a missing topic is a permanent error.
	CreateTopics bool
	// TopicPartitions and TopicReplicationFactor apply to created topics;
	// -1 means the broker's default.
	TopicPartitions        int32
	TopicReplicationFactor int16
	// Retries is how many times the producer retries a failed request before
	// the error ends the stream.
	Retries int
	// RetryBackoffMax caps the exponential backoff between retries.
	RetryBackoffMax time.Duration
	// MaxMessageBytes is the largest record the producer accepts; it must not
	// exceed the broker's message.max.bytes.
	MaxMessageBytes int
	// Compression is the codec of the record batches produced: none (the
	// default, also when empty), gzip, snappy, lz4 or zstd (Kafka 2.1+).
	// sarama encodes them; consumers decompress on their own.
	Compression string
	// CompressionLevel is the codec's level, 0 for its default: gzip 1 to 9,
	// zstd up to 22 (sarama's zstd encoder has four speeds: below 3, 3 to 5,
	// 6 to 9, 10 and up). The other codecs take no level.
	CompressionLevel int
	// Linger is the least time between two produce requests to one broker:
	// a record that finds its broker idle for that long goes at once, and
	// under load records gather into fewer, larger batches.
	Linger time.Duration
	// QueueSize bounds messages handed to Send and not yet acknowledged; it
	// must be at least the caller's in-flight bound.
	QueueSize int
	// DialTimeout bounds connecting to a broker.
	DialTimeout time.Duration
	// TransactionalID, when set, turns on exactly-once delivery: events are
	// produced in Kafka transactions together with a checkpoint record, and
	// acknowledged only when the transaction commits. A second instance with
	// the same id fences the first.
	TransactionalID string
	// CheckpointTopic holds the checkpoint records in exactly-once mode
	// (one partition, compacted, created if missing).
	CheckpointTopic string
	// CheckpointKey keys this relay's checkpoint records.
	CheckpointKey string
	// DLQTopic, when set, receives events Kafka refuses for good (too large,
	// invalid or forbidden topic, missing topic with creation off) instead
	// of stopping the stream.
	DLQTopic string
	// TLS encrypts broker connections.
	TLS TLSConfig
	// SASL authenticates to the brokers.
	SASL SASLConfig
}

// DefaultConfig returns the defaults: Kafka 2.8 protocol, topic creation on
// with broker defaults, 10 retries with backoff up to 1 s.
func DefaultConfig() Config {
	return Config{
		Version:                "2.8.0",
		ClientID:               "outboxrelay",
		CreateTopics:           true,
		TopicPartitions:        -1,
		TopicReplicationFactor: -1,
		Retries:                10,
		RetryBackoffMax:        time.Second,
		MaxMessageBytes:        1 << 20,
		Linger:                 time.Millisecond,
		QueueSize:              10000,
		DialTimeout:            10 * time.Second,
	}
}

// Validate reports every problem at once, including those sarama would find.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: at least one Kafka broker address is required"))
	}
	for _, b := range c.Brokers {
		if !strings.Contains(b, ":") {
			errs = append(errs, fmt.Errorf("brokers: %q has no port (want host:port)", b))
		}
	}
	if c.TopicPartitions == 0 || c.TopicPartitions < -1 {
		errs = append(errs, fmt.Errorf("topic-partitions: %d is not positive (use -1 for the broker default)", c.TopicPartitions))
	}
	if c.TopicReplicationFactor == 0 || c.TopicReplicationFactor < -1 {
		errs = append(errs, fmt.Errorf("topic-replication-factor: %d is not positive (use -1 for the broker default)", c.TopicReplicationFactor))
	}
	if c.Retries < 1 {
		errs = append(errs, fmt.Errorf("kafka-retries: %d; the idempotent producer needs at least 1", c.Retries))
	}
	if c.Linger < 0 {
		errs = append(errs, fmt.Errorf("kafka-linger: %s is negative", c.Linger))
	}
	if c.QueueSize < 1 {
		errs = append(errs, fmt.Errorf("queue size %d must be positive", c.QueueSize))
	}
	if c.TransactionalID != "" && c.DLQTopic != "" {
		errs = append(errs, errors.New("a dead-letter topic is not supported with exactly-once delivery: a refused event aborts the Kafka transaction it is in"))
	}
	if c.TransactionalID != "" && (c.CheckpointTopic == "" || c.CheckpointKey == "") {
		errs = append(errs, errors.New("exactly-once delivery needs a checkpoint topic and key"))
	}
	var version *sarama.KafkaVersion
	if v, err := sarama.ParseKafkaVersion(c.Version); err == nil {
		version = &v
	}
	errs = append(errs, c.validateCompression(version)...)
	errs = append(errs, c.TLS.validate()...)
	errs = append(errs, c.SASL.validate()...)
	if len(errs) == 0 {
		if _, err := c.sarama(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c Config) sarama() (*sarama.Config, error) {
	v, err := sarama.ParseKafkaVersion(c.Version)
	if err != nil {
		return nil, fmt.Errorf("kafka-version: %w", err)
	}
	sc := sarama.NewConfig()
	sc.Version = v
	sc.ClientID = c.ClientID
	sc.MetricRegistry = discardMetrics{}
	sc.Net.DialTimeout = c.DialTimeout
	sc.Net.MaxOpenRequests = 1
	if c.TLS.Enabled {
		tc, err := c.TLS.build()
		if err != nil {
			return nil, err
		}
		sc.Net.TLS.Enable = true
		sc.Net.TLS.Config = tc
	}
	if err := c.SASL.apply(sc); err != nil {
		return nil, err
	}
	sc.Metadata.AllowAutoTopicCreation = false
	sc.Metadata.Retry.Max = 2
	sc.Metadata.Retry.Backoff = 100 * time.Millisecond
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Idempotent = true
	sc.Producer.Retry.Max = c.Retries
	sc.Producer.Retry.BackoffFunc = backoff(50*time.Millisecond, c.RetryBackoffMax)
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.MaxMessageBytes = c.MaxMessageBytes
	sc.Producer.Partitioner = newPartitioner
	c.applyCompression(sc)
	if c.TransactionalID != "" {
		sc.Producer.Transaction.ID = c.TransactionalID
		sc.Producer.Transaction.Timeout = time.Minute
		sc.Consumer.IsolationLevel = sarama.ReadCommitted
		sc.Consumer.Return.Errors = true
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("kafka producer settings: %w", err)
	}
	return sc, nil
}

func backoff(lo, hi time.Duration) func(int, int) time.Duration {
	return func(retries, _ int) time.Duration {
		d := lo << min(retries, 20)
		return min(d, hi)
	}
}

// partitioner places a message on its explicit partition when it has one
// (a partition placement) and otherwise hashes the key with murmur2, exactly
// as Java clients and Debezium do.
type partitioner struct{ hash sarama.Partitioner }

func newPartitioner(topic string) sarama.Partitioner {
	return partitioner{hash: sarama.NewMurmur2Partitioner(topic)}
}

func (p partitioner) Partition(m *sarama.ProducerMessage, n int32) (int32, error) {
	if meta, ok := m.Metadata.(*envelope); ok && meta.partition >= 0 {
		if meta.partition >= n {
			return -1, fmt.Errorf("event %s chooses partition %d but topic %s has %d partitions: %w", meta.eventID, meta.partition, m.Topic, n, ErrPartitionOutOfRange)
		}
		return meta.partition, nil
	}
	return p.hash.Partition(m, n)
}

func (p partitioner) RequiresConsistency() bool { return true }

// envelope travels in ProducerMessage.Metadata.
type envelope struct {
	ack        any
	partition  int32
	eventID    string
	checkpoint []byte
}

// Sink is one producer session. Run must be called once; Send may be called
// before and during Run from one goroutine.
type Sink struct {
	cfg     Config
	log     *slog.Logger
	onAck   AckFunc
	sc      *sarama.Config
	client  sarama.Client
	admin   sarama.ClusterAdmin
	queue   chan item
	topics  map[string]bool   // touched only by the feeder goroutine
	hdrKeys map[string][]byte // touched only by Send's caller

	// engine produces what the queue holds: the at-least-once producer or
	// the exactly-once transactional one, chosen in Open.
	engine engine

	// waitSince (unix nanoseconds, 0: nothing waits) is when the oldest
	// produce request still waiting for a broker's answer was sent, or in
	// exactly-once mode when the producer last made progress while messages
	// or a commit were outstanding; the engine keeps it, OldestRequest
	// reads it.
	waitSince atomic.Int64
}

// engine produces the records Send and Boundary queue. Each keeps every
// partition's order, calls the Sink's AckFunc for each record Kafka stored
// in that order, and classifies produce errors with classify.
type engine interface {
	// run produces until ctx ends (nil) or a produce error survives the
	// retries.
	run(ctx context.Context) error
	// close releases what the engine holds; Close calls it after run.
	close()
}

// OldestRequest returns when the oldest request to Kafka that is still
// unanswered was sent, or the zero time when none waits; safe to call from
// any goroutine. In at-least-once mode that is the oldest produce request
// in flight. In exactly-once mode, where sarama's producer sends the
// requests, it is when the producer last had an answer while messages or a
// commit were outstanding. A caller compares its age with a bound to tell
// a broker that stopped answering from one that is merely busy.
func (s *Sink) OldestRequest() time.Time {
	if ns := s.waitSince.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Open connects to the brokers and obtains a producer ID. The error is
// retryable: brokers may be down.
func Open(cfg Config, log *slog.Logger, onAck AckFunc) (*Sink, error) {
	sc, err := cfg.sarama()
	if err != nil {
		return nil, err
	}
	client, err := sarama.NewClient(cfg.Brokers, sc)
	if err != nil {
		return nil, fmt.Errorf("connecting to Kafka brokers %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("starting the Kafka admin client: %w", err)
	}
	s := &Sink{
		cfg: cfg, log: log, onAck: onAck, sc: sc, client: client, admin: admin,
		// Boundaries follow only transactions with events, so at most
		// QueueSize of each are queued.
		queue:   make(chan item, 2*cfg.QueueSize),
		topics:  map[string]bool{},
		hdrKeys: map[string][]byte{},
	}
	if cfg.TransactionalID != "" {
		prod, err := sarama.NewAsyncProducerFromClient(client)
		if err != nil {
			admin.Close()
			return nil, fmt.Errorf("starting the Kafka producer: %w", err)
		}
		s.engine = newTransactional(s, prod)
		return s, nil
	}
	resp, err := initProducerID(client, time.Sleep)
	if err != nil {
		admin.Close()
		return nil, fmt.Errorf("obtaining a Kafka producer ID: %w", err)
	}
	s.engine = newProducer(s, resp.ProducerID, resp.ProducerEpoch)
	return s, nil
}

// item is a message to produce or, in exactly-once mode, a boundary: the
// checkpoint value after a PostgreSQL transaction's last event.
type item struct {
	msg      *sarama.ProducerMessage
	boundary []byte
}

// Send queues a message without waiting on Kafka. The caller guarantees that
// fewer than QueueSize messages are unacknowledged. Send keeps m's Key,
// Value and Checkpoint until the message is acknowledged, but not m.Headers.
func (s *Sink) Send(m Message) {
	o := &outgoing{env: envelope{ack: m.Ack, partition: m.Partition, eventID: m.EventID, checkpoint: m.Checkpoint}}
	o.pm = sarama.ProducerMessage{Topic: m.Topic, Timestamp: m.Timestamp, Metadata: &o.env}
	if m.Key != nil {
		o.key = m.Key
		o.pm.Key = &o.key
	}
	if m.Value != nil {
		o.val = m.Value
		o.pm.Value = &o.val
	}
	if len(m.Headers) > 0 {
		hs := o.hdrs[:0]
		for _, h := range m.Headers {
			hs = append(hs, sarama.RecordHeader{Key: s.headerKey(h.Key), Value: h.Value})
		}
		o.pm.Headers = hs
	}
	s.queue <- item{msg: &o.pm}
}

// outgoing holds everything Send hands the producer for one message, so that
// a message costs one allocation: the producer message, its envelope, the key
// and value encoders, and room for the usual number of headers.
type outgoing struct {
	pm       sarama.ProducerMessage
	env      envelope
	key, val bytesEncoder
	hdrs     [2]sarama.RecordHeader
}

// bytesEncoder is sarama.ByteEncoder used through a pointer, so that it can
// live inside outgoing.
type bytesEncoder []byte

func (b *bytesEncoder) Encode() ([]byte, error) { return *b, nil }
func (b *bytesEncoder) Length() int             { return len(*b) }

// headerKey returns key as bytes, converted once per distinct key: header
// names come from the configuration, so there are few, and the producer only
// reads them.
func (s *Sink) headerKey(key string) []byte {
	if b, ok := s.hdrKeys[key]; ok {
		return b
	}
	b := []byte(key)
	if len(s.hdrKeys) < maxCachedHeaderKeys {
		s.hdrKeys[key] = b
	}
	return b
}

// maxCachedHeaderKeys bounds headerKey's cache should header names ever come
// from the data.
const maxCachedHeaderKeys = 64

// Boundary marks the end of a PostgreSQL transaction that had events, in
// exactly-once mode: checkpoint is the record value that proves everything
// sent so far delivered. The feeder commits Kafka transactions only at
// boundaries.
func (s *Sink) Boundary(checkpoint []byte) {
	s.queue <- item{boundary: checkpoint}
}

// Run feeds queued messages to Kafka and reports acknowledgements until ctx
// is done or a produce error survives the retries. It returns nil only when
// ctx ended it; what is queued or in flight then is neither acknowledged nor
// lost: the caller has not confirmed it.
func (s *Sink) Run(ctx context.Context) error {
	return s.engine.run(ctx)
}

// ensureTopic makes sure topic exists, creating it when allowed. Only the
// feeder goroutine calls it, so the receive loop never waits on the admin API.
func (s *Sink) ensureTopic(ctx context.Context, topic string) error {
	if s.topics[topic] {
		return nil
	}
	// One metadata request: the client's own lookup retries an unknown
	// topic Metadata.Retry.Max times before saying so.
	md, err := s.admin.DescribeTopics([]string{topic})
	if err == nil && len(md) != 1 {
		err = fmt.Errorf("the broker described %d topics, asked for one", len(md))
	}
	if err != nil {
		return fmt.Errorf("reading metadata of topic %s: %w", topic, err)
	}
	switch md[0].Err {
	case sarama.ErrNoError:
		s.topics[topic] = true
		return nil
	case sarama.ErrUnknownTopicOrPartition:
	default:
		return fmt.Errorf("reading metadata of topic %s: %w", topic, md[0].Err)
	}
	if !s.cfg.CreateTopics {
		return fmt.Errorf("topic %s: %w", topic, ErrTopicMissing)
	}
	detail := &sarama.TopicDetail{NumPartitions: s.cfg.TopicPartitions, ReplicationFactor: s.cfg.TopicReplicationFactor}
	switch err := s.admin.CreateTopic(topic, detail, false); {
	case err == nil:
		s.log.Info("created topic", "topic", topic, "partitions", s.cfg.TopicPartitions, "replication_factor", s.cfg.TopicReplicationFactor)
	case !errors.Is(err, sarama.ErrTopicAlreadyExists):
		return fmt.Errorf("creating topic %s: %w", topic, err)
	}
	for i := 0; ; i++ {
		if err := s.client.RefreshMetadata(topic); err == nil {
			if _, err := s.client.Partitions(topic); err == nil {
				s.topics[topic] = true
				return nil
			}
		}
		if i == 250 {
			return fmt.Errorf("topic %s was created but does not appear in metadata after 5s", topic)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close releases the producer, the admin client and the broker connections;
// call it after Run has returned.
func (s *Sink) Close() error {
	s.engine.close()
	return s.admin.Close() // closes the shared client too
}
