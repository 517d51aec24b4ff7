package sink

import (
	"errors"
	"fmt"

	"github.com/IBM/sarama"
)

// ProduceError is a produce failure that survived the producer's retries.
type ProduceError struct {
	EventID string
	Topic   string
	Err     error
}

func (e *ProduceError) Error() string {
	return fmt.Sprintf("producing event %s to topic %s: %v", e.EventID, e.Topic, e.Err)
}

func (e *ProduceError) Unwrap() error { return e.Err }

// Permanent reports whether producing the same event again cannot succeed
// (the record is too large, the topic is invalid or forbidden, or missing
// with topic creation off), as opposed to a broker outage.
func (e *ProduceError) Permanent() bool { return IsPermanent(e.Err) }

// ErrTopicMissing is returned when a topic does not exist and topic creation
// is off. Its text names the flag: it also becomes a dead-letter record's
// reason, which people read.
var ErrTopicMissing = errors.New("topic does not exist and --create-topics=false")

// ErrPartitionOutOfRange is returned for a message whose explicit partition
// (a partition placement) is not below the topic's partition count, as
// fresh metadata tells it. It is permanent: waiting for partitions that
// nobody may add would stop the stream.
var ErrPartitionOutOfRange = errors.New("the chosen partition does not exist")

// outcome is what an engine does about a produce error.
type outcome int

const (
	// restart ends the session: only a new one, replaying from the slot,
	// can go on (the producer's state on the broker is not what it should
	// be, or an unknown error).
	restart outcome = iota
	// resend sends the same records again after a backoff, up to the
	// configured retries (a leader moved, a broker is down, a timeout).
	resend
	// refused means the broker will never take these records as they are:
	// they are dead-lettered or halt the relay (a bad event).
	refused
)

// Produce errors by outcome; anything else restarts.
var (
	resendErrors = []error{
		sarama.ErrInvalidMessage, sarama.ErrUnknownTopicOrPartition, sarama.ErrLeaderNotAvailable,
		sarama.ErrNotLeaderForPartition, sarama.ErrRequestTimedOut, sarama.ErrNotEnoughReplicas,
		sarama.ErrNotEnoughReplicasAfterAppend, sarama.ErrKafkaStorageError, sarama.ErrIncompleteResponse,
		sarama.ErrNetworkException, sarama.ErrBrokerNotAvailable,
	}
	refusedErrors = []error{
		sarama.ErrMessageSizeTooLarge, sarama.ErrInvalidTopic,
		sarama.ErrTopicAuthorizationFailed, sarama.ErrClusterAuthorizationFailed,
		sarama.ErrInvalidRecord, ErrTopicMissing, ErrPartitionOutOfRange,
	}
)

// classify is the one rule for a produce error, used by both engines (the
// transactional one through ProduceError.Permanent: sarama's producer has
// resent what it could before it reports an error).
func classify(err error) outcome {
	var ce sarama.ConfigurationError
	switch {
	case isAny(err, refusedErrors), errors.As(err, &ce):
		return refused
	case isAny(err, resendErrors):
		return resend
	}
	return restart
}

func isAny(err error, targets []error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// IsPermanent reports whether err is a Kafka error that a retry of the same
// record cannot fix.
func IsPermanent(err error) bool { return classify(err) == refused }
