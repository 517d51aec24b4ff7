package sink

import (
	"errors"
	"time"

	"github.com/IBM/sarama"
)

// initProducerIDAttempts bounds initProducerID's tries: with its backoff,
// about 3.5 s.
const initProducerIDAttempts = 8

// initProducerID obtains the idempotent producer's ID and epoch. A broker
// answers COORDINATOR_LOAD_IN_PROGRESS while it has no block of producer IDs
// from the KRaft controller yet (a cluster that has just started, a
// controller changing), and COORDINATOR_NOT_AVAILABLE or NOT_COORDINATOR in
// similar passing states. Java's producer retries those; so does this, with
// a short backoff, rather than failing the session and restarting the
// stream. sleep is time.Sleep outside tests.
func initProducerID(client sarama.Client, sleep func(time.Duration)) (*sarama.InitProducerIDResponse, error) {
	delay := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		resp, err := client.InitProducerID()
		if err == nil && resp.Err != sarama.ErrNoError {
			err = resp.Err
		}
		if err == nil {
			return resp, nil
		}
		if attempt == initProducerIDAttempts || !producerIDPending(err) {
			return nil, err
		}
		sleep(delay)
		delay = min(2*delay, time.Second)
	}
}

// producerIDPending reports an InitProducerId error that passes by itself.
func producerIDPending(err error) bool {
	return errors.Is(err, sarama.ErrOffsetsLoadInProgress) || errors.Is(err, sarama.ErrConsumerCoordinatorNotAvailable) ||
		errors.Is(err, sarama.ErrNotCoordinatorForConsumer)
}
