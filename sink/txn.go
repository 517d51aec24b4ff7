package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
)

// Kafka transactions span many PostgreSQL transactions; one commits at a
// boundary when nothing more is queued, or when it holds this many events or
// is this old.
const (
	txnMaxEvents = 2000
	txnMaxAge    = 100 * time.Millisecond
)

// transactional is the exactly-once engine: the feeder passes messages to
// sarama's transactional producer, which sends, batches and resends them in
// each partition's order, and commits a Kafka transaction at a boundary of
// the PostgreSQL transactions it holds, with the checkpoint record that
// covers them; its events are acknowledged when it commits.
type transactional struct {
	s    *Sink
	prod sarama.AsyncProducer
	txn  txnState
	last []byte // the newest checkpoint queued: a boundary's or an event's

	closeOnce sync.Once
	// Messages handed to sarama and not yet answered, and whether a commit
	// is under way: they say when Sink.OldestRequest must run.
	outstanding atomic.Int64
	committing  atomic.Bool
	progressMu  sync.Mutex // orders progressed's read and store across the feeder and the answer reader
}

func newTransactional(s *Sink, prod sarama.AsyncProducer) *transactional {
	return &transactional{s: s, prod: prod}
}

// txnState is the open Kafka transaction.
type txnState struct {
	open    bool
	began   time.Time
	pending []any // acknowledgements released when the transaction commits
}

func (t *txnState) add(p sarama.AsyncProducer, pm *sarama.ProducerMessage) error {
	if !t.open {
		if err := p.BeginTxn(); err != nil {
			return fmt.Errorf("beginning a Kafka transaction: %w", err)
		}
		t.open, t.began = true, time.Now()
	}
	if meta, ok := pm.Metadata.(*envelope); ok {
		t.pending = append(t.pending, meta.ack)
	}
	return nil
}

// run feeds the producer and commits at boundaries; a second goroutine
// drains the producer's answers.
func (e *transactional) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		once  sync.Once
		first error
	)
	fail := func(err error) {
		once.Do(func() { first = err })
		cancel()
	}
	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		if err := e.feed(ctx); err != nil {
			fail(err)
		}
	}()
	acksDone := make(chan struct{})
	go func() {
		defer close(acksDone)
		e.answers(fail)
	}()
	<-ctx.Done()
	<-feedDone // nothing may write to Input once it is closed
	e.close()
	<-acksDone // the producer closes Successes and Errors when it is done
	return first
}

func (e *transactional) feed(ctx context.Context) error {
	s := e.s
	idle := time.NewTimer(txnMaxAge)
	defer idle.Stop()
	for {
		var it item
		idle.Reset(txnMaxAge)
		select {
		case <-ctx.Done():
			return nil
		case it = <-s.queue:
		case <-idle.C:
			if err := e.idleCommit(); err != nil {
				return err
			}
			continue
		}
		if it.boundary != nil {
			e.last = it.boundary
			if err := e.boundary(it.boundary); err != nil {
				return err
			}
			continue
		}
		pm := it.msg
		if err := s.ensureTopic(ctx, pm.Topic); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return &ProduceError{EventID: eventID(pm), Topic: pm.Topic, Err: err}
		}
		if err := e.txn.add(e.prod, pm); err != nil {
			return err
		}
		e.last = pm.Metadata.(*envelope).checkpoint
		e.outstanding.Add(1)
		e.waiting()
		select {
		case e.prod.Input() <- pm:
		case <-ctx.Done():
			return nil
		}
		if len(e.txn.pending) >= txnMaxEvents {
			// A PostgreSQL transaction larger than a Kafka transaction:
			// commit what is sent, with a checkpoint that says so.
			if err := e.commit(pm.Metadata.(*envelope).checkpoint); err != nil {
				return err
			}
		}
	}
}

// idleCommit commits the open transaction when nothing has been queued for
// txnMaxAge, with the newest checkpoint queued: the last boundary's, or the
// partial one of the last event, which holds as well. Without it the relay
// could wait for ever: its events are acknowledged only at a commit, and a
// reader that reached its in-flight bound in the middle of a PostgreSQL
// transaction queues no boundary.
func (e *transactional) idleCommit() error {
	if !e.txn.open || e.last == nil {
		return nil
	}
	return e.commit(e.last)
}

// answers reports the first produce error until the producer closes both
// channels; draining them is what lets the producer close. Successes count
// for nothing here: events are acknowledged at commit.
func (e *transactional) answers(fail func(error)) {
	successes, errs := e.prod.Successes(), e.prod.Errors()
	for successes != nil || errs != nil {
		select {
		case _, ok := <-successes:
			if !ok {
				successes = nil
				continue
			}
			e.outstanding.Add(-1)
			e.progressed()
		case pe, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			e.outstanding.Add(-1)
			e.progressed()
			fail(&ProduceError{EventID: eventID(pe.Msg), Topic: pe.Msg.Topic, Err: pe.Err})
		}
	}
}

// close closes sarama's transactional producer, once.
func (e *transactional) close() { e.closeOnce.Do(e.prod.AsyncClose) }

// boundary commits the open transaction, with the checkpoint record, when it
// is due. Every event queued before the boundary is in the transaction and
// nothing after it is, so the checkpoint covers exactly what commits.
func (e *transactional) boundary(checkpoint []byte) error {
	t := &e.txn
	if !t.open {
		return nil
	}
	if len(e.s.queue) > 0 && len(t.pending) < txnMaxEvents && time.Since(t.began) < txnMaxAge {
		return nil // more is coming: let the transaction grow
	}
	return e.commit(checkpoint)
}

// commit writes the checkpoint record and commits the open transaction, then
// acknowledges its events.
func (e *transactional) commit(checkpoint []byte) error {
	s, t := e.s, &e.txn
	e.committing.Store(true)
	e.outstanding.Add(1) // the checkpoint record
	e.waiting()
	defer func() { e.committing.Store(false); e.progressed() }()
	e.prod.Input() <- &sarama.ProducerMessage{
		Topic: s.cfg.CheckpointTopic, Key: sarama.StringEncoder(s.cfg.CheckpointKey),
		Value: sarama.ByteEncoder(checkpoint), Partition: 0, Metadata: &envelope{partition: 0, eventID: "checkpoint"},
	}
	if err := e.prod.CommitTxn(); err != nil {
		if abortErr := e.prod.AbortTxn(); abortErr != nil {
			err = errors.Join(err, abortErr)
		}
		return &ProduceError{EventID: "(transaction commit)", Topic: s.cfg.CheckpointTopic, Err: fmt.Errorf("committing the Kafka transaction: %w", err)}
	}
	for _, a := range t.pending {
		s.onAck(a)
	}
	t.open, t.pending = false, t.pending[:0]
	return nil
}

// waiting records that the producer was given a message or a commit to
// answer; the wait starts now unless one is on.
func (e *transactional) waiting() {
	e.progressMu.Lock()
	defer e.progressMu.Unlock()
	if e.s.waitSince.Load() == 0 {
		e.s.waitSince.Store(time.Now().UnixNano())
	}
}

// progressed records that the producer has had an answer now.
func (e *transactional) progressed() {
	e.progressMu.Lock()
	defer e.progressMu.Unlock()
	if e.outstanding.Load() > 0 || e.committing.Load() {
		e.s.waitSince.Store(time.Now().UnixNano())
		return
	}
	e.s.waitSince.Store(0)
}

// ReadCheckpoint returns the last committed checkpoint value of this relay,
// creating the compacted checkpoint topic when it is missing. Call it after
// Open: the transactional producer's initialization has by then fenced and
// aborted any transaction a crashed instance left open, so a read_committed
// read does not wait on it.
func (s *Sink) ReadCheckpoint() ([]byte, bool, error) {
	if err := ensureCompacted(s.client, s.admin, s.cfg.CheckpointTopic, s.cfg.TopicReplicationFactor); err != nil {
		return nil, false, err
	}
	return readLast(s.client, s.cfg.CheckpointTopic, s.cfg.CheckpointKey)
}
