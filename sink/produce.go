package sink

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// producer is the idempotent producer of at-least-once mode.
//
// sarama's AsyncProducer hands every message through four goroutines on its
// way to the broker and a fifth on its way back. This producer runs on the
// feeder goroutine alone, and Linger spaces its requests so that batches grow
// under load; with the replication socket read outside Go's poller it halves
// the relay's CPU per event at 5,000 events/s (README, Performance). It picks each record's
// partition, gathers the records of a partition into one batch, sends at most
// one produce request per broker at a time through sarama's
// Broker.AsyncProduce, and handles each answer on the feeder goroutine.
//
// Order holds because a partition has at most one batch outstanding: the
// next is built only once Kafka stored the previous one. A batch that fails
// for a reason that may pass (a lost connection, a leader change, a timeout)
// is resent unchanged, with the same producer ID and sequence numbers, so a
// broker that already wrote it answers with the original offset instead of
// writing it twice. A batch the broker refuses for good has consumed no
// sequence numbers: its records are sent again one at a time, so the record
// at fault is found and every other one is delivered.
type producer struct {
	s       *Sink
	pid     int64
	epoch   int16
	version int16 // produce request version
	timeout int32 // broker-side wait for acks=all, in milliseconds

	topics map[string]*topicInfo
	queues map[partitionKey]*partitionQueue
	work   []*partitionQueue   // queues with a batch to send or records to batch
	busy   map[int32]bool      // broker ID: a request is in flight
	sentAt map[int32]time.Time // broker ID: when the last request went out
	// Answers arrive on sarama's response goroutines, which must never
	// wait on the feeder: the feeder may itself be waiting on one of those
	// brokers (a metadata refresh). So answers go on a list, with a
	// signal.
	mu       sync.Mutex
	answered []produceResult
	signal   chan struct{} // capacity 1: something is on the list
	now      func() time.Time
}

type partitionKey struct {
	topic string
	id    int32
}

// partitionQueue is one partition's records in order: buf waits to be
// batched, out is the batch sent and not yet stored.
type partitionQueue struct {
	key    partitionKey
	seq    int32 // sequence number of the next record batched
	buf    []*sarama.ProducerMessage
	out    *batch
	solo   int  // records at the head of buf to send one per batch
	listed bool // on the producer's work list
}

type batch struct {
	q        *partitionQueue
	msgs     []*sarama.ProducerMessage
	rb       *sarama.RecordBatch
	inFlight bool
	failures int       // failed sends so far
	due      time.Time // earliest resend after a failure
}

type topicInfo struct {
	partitions []int32
	hash       sarama.Partitioner
	read       time.Time
}

// produceResult is a broker's answer to one request, or the error that
// ended it.
type produceResult struct {
	broker  *sarama.Broker
	batches []*batch
	resp    *sarama.ProduceResponse
	err     error
}

// topicRecheck is how often a topic's partition list is read again from the
// client's metadata, so that added partitions are used.
const topicRecheck = 10 * time.Second

// newProducer returns the at-least-once engine, producing with the producer
// ID and epoch the brokers know this session's batches by.
func newProducer(s *Sink, pid int64, epoch int16) *producer {
	return &producer{
		s: s, pid: pid, epoch: epoch,
		version: produceVersion(s.sc.Version),
		timeout: int32(s.sc.Producer.Timeout / time.Millisecond),
		topics:  map[string]*topicInfo{},
		queues:  map[partitionKey]*partitionQueue{},
		busy:    map[int32]bool{},
		sentAt:  map[int32]time.Time{},
		signal:  make(chan struct{}, 1),
		now:     time.Now,
	}
}

// produceVersion is the newest produce request version the configured Kafka
// version speaks, as sarama's own producer chooses it.
func produceVersion(v sarama.KafkaVersion) int16 {
	for _, pv := range []struct {
		kafka   sarama.KafkaVersion
		request int16
	}{
		{sarama.V3_7_0_0, 10}, {sarama.V2_8_0_0, 9}, {sarama.V2_4_0_0, 8},
		{sarama.V2_1_0_0, 7}, {sarama.V2_0_0_0, 6}, {sarama.V1_0_0_0, 5},
	} {
		if v.IsAtLeast(pv.kafka) {
			return pv.request
		}
	}
	return 3 // 0.11, the first with record batches and idempotence
}

// close releases nothing: the producer's requests use the Sink's client.
func (p *producer) close() {}

// run feeds queued messages to Kafka and acknowledges what it stores until
// ctx ends (nil) or a produce error survives the retries.
func (p *producer) run(ctx context.Context) error {
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case it := <-p.s.queue:
			if err := p.add(ctx, it.msg); err != nil {
				return err
			}
			// Take what else is queued, so that it goes in the same
			// batches; a bound keeps answers from waiting behind it.
			for range 4096 {
				var more bool
				select {
				case it = <-p.s.queue:
					more = true
				default:
				}
				if !more {
					break
				}
				if err := p.add(ctx, it.msg); err != nil {
					return err
				}
			}
		case <-p.signal:
			p.mu.Lock()
			answered := p.answered
			p.answered = nil
			p.mu.Unlock()
			for _, r := range answered {
				if err := p.handle(ctx, r); err != nil {
					return err
				}
			}
		case <-retry.C:
		}
		if ctx.Err() != nil {
			return nil
		}
		wake, err := p.flush(ctx)
		if err != nil {
			return err
		}
		if !wake.IsZero() {
			retry.Reset(max(wake.Sub(p.now()), time.Millisecond))
		}
	}
}

// add places a message on its partition's queue, or sends it to the
// dead-letter topic when Kafka cannot take it. Boundaries (nil) mean nothing
// outside exactly-once mode.
func (p *producer) add(ctx context.Context, pm *sarama.ProducerMessage) error {
	if pm == nil {
		return nil
	}
	err := p.s.ensureTopic(ctx, pm.Topic)
	if err == nil {
		err = p.checkSize(pm)
	}
	var key partitionKey
	if err == nil {
		key, err = p.partition(pm)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return p.refused(ctx, pm, err)
	}
	q := p.queues[key]
	if q == nil {
		q = &partitionQueue{key: key}
		p.queues[key] = q
	}
	q.buf = append(q.buf, pm)
	p.list(q)
	return nil
}

// refused handles a message Kafka refuses for good: its dead letter when a
// dead-letter topic is set, otherwise the error that ends the stream.
func (p *producer) refused(ctx context.Context, pm *sarama.ProducerMessage, err error) error {
	if !p.s.dlqFor(pm, err) {
		return &ProduceError{EventID: eventID(pm), Topic: pm.Topic, Err: err}
	}
	return p.add(ctx, p.s.deadLetter(pm, err))
}

func eventID(pm *sarama.ProducerMessage) string {
	if meta, ok := pm.Metadata.(*envelope); ok {
		return meta.eventID
	}
	return ""
}

// checkSize refuses a record that cannot fit a batch of MaxMessageBytes.
func (p *producer) checkSize(pm *sarama.ProducerMessage) error {
	if n := recordBatchOverhead + recordSize(pm); n > p.s.cfg.MaxMessageBytes {
		return sarama.ConfigurationError(fmt.Sprintf("the record takes up to %d bytes, more than MaxMessageBytes %d", n, p.s.cfg.MaxMessageBytes))
	}
	return nil
}

// Sizes of a record batch's header and of a record's fixed fields at their
// largest, as sarama counts them.
const (
	recordBatchOverhead   = 61
	maximumRecordOverhead = 5*binary.MaxVarintLen32 + binary.MaxVarintLen64 + 1
)

// recordSize bounds the encoded size of pm as a record.
func recordSize(pm *sarama.ProducerMessage) int {
	n := maximumRecordOverhead
	if pm.Key != nil {
		n += pm.Key.Length()
	}
	if pm.Value != nil {
		n += pm.Value.Length()
	}
	for _, h := range pm.Headers {
		n += len(h.Key) + len(h.Value) + 2*binary.MaxVarintLen32
	}
	return n
}

// partition chooses pm's partition from the client's metadata, by explicit
// choice or by the key's murmur2 hash. An explicit partition beyond the
// partitions known is checked against fresh metadata before it is refused
// with ErrPartitionOutOfRange, so partitions added a moment ago are used.
func (p *producer) partition(pm *sarama.ProducerMessage) (partitionKey, error) {
	ti := p.topics[pm.Topic]
	if ti == nil || p.now().Sub(ti.read) > topicRecheck {
		if err := p.readPartitions(pm.Topic, false); err != nil {
			return partitionKey{}, err
		}
		ti = p.topics[pm.Topic]
	}
	i, err := ti.hash.Partition(pm, int32(len(ti.partitions)))
	if errors.Is(err, ErrPartitionOutOfRange) {
		if err := p.readPartitions(pm.Topic, true); err != nil {
			return partitionKey{}, err
		}
		i, err = ti.hash.Partition(pm, int32(len(ti.partitions)))
	}
	if err != nil {
		return partitionKey{}, err
	}
	pm.Partition = ti.partitions[i]
	return partitionKey{topic: pm.Topic, id: pm.Partition}, nil
}

// readPartitions reads topic's partitions from the client's metadata,
// refreshed from the brokers first when fresh is set.
func (p *producer) readPartitions(topic string, fresh bool) error {
	if fresh {
		_ = p.s.client.RefreshMetadata(topic) // a failure shows as Partitions' error
	}
	parts, err := p.s.client.Partitions(topic)
	if err == nil && len(parts) == 0 {
		err = sarama.ErrLeaderNotAvailable
	}
	if err != nil {
		return fmt.Errorf("reading the partitions of topic %s: %w", topic, err)
	}
	ti := p.topics[topic]
	if ti == nil {
		ti = &topicInfo{hash: newPartitioner(topic)}
		p.topics[topic] = ti
	}
	ti.partitions, ti.read = parts, p.now()
	return nil
}

func (p *producer) list(q *partitionQueue) {
	if !q.listed {
		q.listed = true
		p.work = append(p.work, q)
	}
}

// pending is one request being put together for a broker.
type pending struct {
	broker  *sarama.Broker
	req     *sarama.ProduceRequest
	batches []*batch
}

// flush sends a batch for every listed partition whose leader has no request
// in flight. It returns the earliest time a batch waits for to be resent.
func (p *producer) flush(ctx context.Context) (time.Time, error) {
	var (
		reqs []*pending
		wake time.Time
		now  = p.now()
	)
	kept := p.work[:0]
	for _, q := range p.work {
		if (q.out == nil && len(q.buf) == 0) || (q.out != nil && q.out.inFlight) {
			q.listed = false // listed again when its batch is answered
			continue
		}
		if q.out != nil && now.Before(q.out.due) {
			kept = append(kept, q)
			wake = earliest(wake, q.out.due)
			continue
		}
		leader, err := p.s.client.Leader(q.key.topic, q.key.id)
		if err != nil {
			if q.out == nil {
				q.out = p.build(q)
			}
			if err := p.failed(q.out, fmt.Errorf("finding the leader of %s/%d: %w", q.key.topic, q.key.id, err)); err != nil {
				return time.Time{}, err
			}
			kept = append(kept, q)
			wake = earliest(wake, q.out.due)
			continue
		}
		if p.busy[leader.ID()] {
			kept = append(kept, q)
			continue
		}
		if next := p.sentAt[leader.ID()].Add(p.s.cfg.Linger); now.Before(next) {
			// Sent a moment ago: let the batch grow.
			kept = append(kept, q)
			wake = earliest(wake, next)
			continue
		}
		if q.out == nil {
			q.out = p.build(q)
		}
		var r *pending
		for _, c := range reqs {
			if c.broker.ID() == leader.ID() {
				r = c
			}
		}
		if r == nil {
			r = &pending{broker: leader, req: &sarama.ProduceRequest{RequiredAcks: sarama.WaitForAll, Timeout: p.timeout, Version: p.version}}
			reqs = append(reqs, r)
		}
		r.req.AddBatch(q.key.topic, q.key.id, q.out.rb)
		r.batches = append(r.batches, q.out)
		q.out.inFlight = true
		q.listed = false
	}
	p.work = kept
	defer p.publishWait()
	for _, r := range reqs {
		p.busy[r.broker.ID()] = true
		p.sentAt[r.broker.ID()] = now
		broker, batches := r.broker, r.batches
		err := broker.AsyncProduce(r.req, func(resp *sarama.ProduceResponse, err error) {
			p.mu.Lock()
			p.answered = append(p.answered, produceResult{broker: broker, batches: batches, resp: resp, err: err})
			p.mu.Unlock()
			select {
			case p.signal <- struct{}{}:
			default: // a signal is pending
			}
		})
		if err != nil {
			// Not sent, so no answer will come.
			if err := p.handle(ctx, produceResult{broker: broker, batches: batches, err: err}); err != nil {
				return time.Time{}, err
			}
			for _, b := range batches {
				wake = earliest(wake, b.due)
			}
		}
	}
	return wake, nil
}

// publishWait publishes when the oldest produce request in flight was sent,
// for Sink.OldestRequest.
func (p *producer) publishWait() {
	var oldest int64
	for id, busy := range p.busy {
		if at := p.sentAt[id].UnixNano(); busy && (oldest == 0 || at < oldest) {
			oldest = at
		}
	}
	p.s.waitSince.Store(oldest)
}

// earliest is the earlier of two wake-up times; the zero time means none.
func earliest(wake, t time.Time) time.Time {
	if wake.IsZero() || t.Before(wake) {
		return t
	}
	return wake
}

// maxBatchRecords bounds a batch's records besides MaxMessageBytes.
const maxBatchRecords = 10000

// build takes the next batch off q.buf and gives it its sequence numbers.
func (p *producer) build(q *partitionQueue) *batch {
	limit := p.s.cfg.MaxMessageBytes - recordBatchOverhead
	n, size := 0, 0
	for n < len(q.buf) && n < maxBatchRecords {
		size += recordSize(q.buf[n])
		if n > 0 && size > limit {
			break
		}
		n++
		if q.solo > 0 {
			q.solo--
			break
		}
	}
	msgs := q.buf[:n:n]
	q.buf = q.buf[n:]
	if len(q.buf) == 0 {
		q.buf = nil // let the backing array go
	}

	recs := make([]sarama.Record, n)
	ptrs := make([]*sarama.Record, n)
	headers := 0
	for _, pm := range msgs {
		headers += len(pm.Headers)
	}
	hdrs := make([]*sarama.RecordHeader, headers)
	first := timestamp(msgs[0])
	var maxDelta time.Duration
	for i, pm := range msgs {
		r := &recs[i]
		if pm.Key != nil {
			r.Key, _ = pm.Key.Encode() // Send's encoders cannot fail
		}
		if pm.Value != nil {
			r.Value, _ = pm.Value.Encode()
		}
		r.TimestampDelta = timestamp(pm).Sub(first)
		maxDelta = max(maxDelta, r.TimestampDelta)
		r.OffsetDelta = int64(i)
		if len(pm.Headers) > 0 {
			r.Headers, hdrs = hdrs[:len(pm.Headers):len(pm.Headers)], hdrs[len(pm.Headers):]
			for j := range pm.Headers {
				r.Headers[j] = &pm.Headers[j]
			}
		}
		ptrs[i] = r
	}
	rb := &sarama.RecordBatch{
		Version:         2,
		FirstTimestamp:  first,
		MaxTimestamp:    first.Add(maxDelta),
		LastOffsetDelta: int32(n - 1),
		ProducerID:      p.pid,
		ProducerEpoch:   p.epoch,
		FirstSequence:   q.seq,
		Records:         ptrs,
		// sarama compresses the records once, when the batch is first
		// encoded; a resend sends the same bytes.
		Codec:            p.s.sc.Producer.Compression,
		CompressionLevel: p.s.sc.Producer.CompressionLevel,
	}
	q.seq = nextSequence(q.seq, n)
	return &batch{q: q, msgs: msgs, rb: rb}
}

// nextSequence advances a sequence number by n, wrapping past MaxInt32 to 0
// as Kafka does.
func nextSequence(seq int32, n int) int32 {
	if int64(seq)+int64(n) > math.MaxInt32 {
		return int32(int64(seq) + int64(n) - math.MaxInt32 - 1)
	}
	return seq + int32(n)
}

func timestamp(pm *sarama.ProducerMessage) time.Time {
	if pm.Timestamp.IsZero() {
		pm.Timestamp = time.Now()
	}
	return pm.Timestamp.Truncate(time.Millisecond)
}

// handle applies a broker's answer: it acknowledges stored batches, schedules
// resends, and splits or dead-letters refused ones.
func (p *producer) handle(ctx context.Context, r produceResult) error {
	p.busy[r.broker.ID()] = false
	p.publishWait()
	refreshed := false // the metadata, once per answer that needs it
	if r.err != nil {
		// The connection is in doubt: reconnect on the next send, and
		// learn whether leadership moved.
		_ = r.broker.Close()
		p.refresh(r.batches)
		refreshed = true
	}
	for _, b := range r.batches {
		b.inFlight = false
		err := r.err
		if err == nil {
			block := r.resp.GetBlock(b.q.key.topic, b.q.key.id)
			switch {
			case block == nil:
				err = sarama.ErrIncompleteResponse
			case block.Err == sarama.ErrNoError, block.Err == sarama.ErrDuplicateSequenceNumber:
				p.stored(b, block.Offset)
				continue
			default:
				err = block.Err
			}
		}
		switch outcome := classify(err); {
		case r.err != nil || outcome == resend:
			if !refreshed {
				p.refresh(r.batches)
				refreshed = true
			}
			if err := p.failed(b, err); err != nil {
				return err
			}
		case outcome == refused:
			if err := p.refusedBatch(ctx, b, err); err != nil {
				return err
			}
		default:
			// The producer's state on the broker is not what it should
			// be (an unknown producer ID, a sequence gap): only a new
			// session, replaying from the slot, can go on.
			return &ProduceError{EventID: eventID(b.msgs[0]), Topic: b.q.key.topic, Err: err}
		}
	}
	return nil
}

func (p *producer) refresh(batches []*batch) {
	topics := make([]string, 0, len(batches))
	for _, b := range batches {
		topics = append(topics, b.q.key.topic)
	}
	_ = p.s.client.RefreshMetadata(topics...) // a failure shows as the next send's error
}

// stored acknowledges a batch Kafka holds, in order; base is the offset of
// its first record, -1 when the broker did not say.
func (p *producer) stored(b *batch, base int64) {
	for i, pm := range b.msgs {
		if meta, ok := pm.Metadata.(*envelope); ok {
			if pa, ok := meta.ack.(PlacedAck); ok && base >= 0 {
				pa.Placed(b.q.key.id, base+int64(i))
			}
			p.s.onAck(meta.ack)
		}
	}
	b.q.out = nil
	p.list(b.q)
}

// failed schedules b to be resent unchanged after a backoff, or ends the
// stream once the retries are spent.
func (p *producer) failed(b *batch, err error) error {
	b.failures++
	if b.failures > p.s.cfg.Retries {
		return &ProduceError{EventID: eventID(b.msgs[0]), Topic: b.q.key.topic, Err: fmt.Errorf("after %d attempts: %w", b.failures, err)}
	}
	b.due = p.now().Add(backoff(50*time.Millisecond, p.s.cfg.RetryBackoffMax)(b.failures-1, 0))
	p.s.log.Debug("resending a batch", "topic", b.q.key.topic, "partition", b.q.key.id, "records", len(b.msgs), "attempt", b.failures+1, "err", err.Error())
	p.list(b.q)
	return nil
}

// refusedBatch handles a batch the broker refused for good. The broker took
// none of its records and consumed none of its sequence numbers, so they are
// handed out again: a batch of several records goes back to the head of the
// queue to be sent one record per batch; a single record is the culprit.
func (p *producer) refusedBatch(ctx context.Context, b *batch, err error) error {
	q := b.q
	q.out = nil
	q.seq = b.rb.FirstSequence
	p.list(q)
	if len(b.msgs) > 1 {
		q.buf = append(b.msgs[:len(b.msgs):len(b.msgs)], q.buf...)
		q.solo = len(b.msgs)
		return nil
	}
	return p.refused(ctx, b.msgs[0], err)
}
