package sink

import (
	"errors"
	"strings"

	"github.com/IBM/sarama"
)

// Dead-letter record headers, beside the event's own headers.
const (
	HeaderDLQReason        = "outboxrelay.dlq.reason"
	HeaderDLQOriginalTopic = "outboxrelay.dlq.original.topic"
	HeaderDLQEventID       = "outboxrelay.dlq.event.id"
	HeaderDLQPayloadOmit   = "outboxrelay.dlq.payload.omitted"
)

// deadLetter turns a message Kafka refused for good into its dead-letter
// record: same key and headers, the reason and original topic added, the
// payload kept unless its size was the problem. The acknowledgement travels
// with it, so the event counts as delivered once the dead letter is stored.
func (s *Sink) deadLetter(pm *sarama.ProducerMessage, reason error) *sarama.ProducerMessage {
	meta, _ := pm.Metadata.(*envelope)
	dl := &sarama.ProducerMessage{Topic: s.cfg.DLQTopic, Key: pm.Key, Value: pm.Value, Timestamp: pm.Timestamp}
	dl.Headers = append(append(dl.Headers, pm.Headers...),
		sarama.RecordHeader{Key: []byte(HeaderDLQReason), Value: []byte(reason.Error())},
		sarama.RecordHeader{Key: []byte(HeaderDLQOriginalTopic), Value: []byte(pm.Topic)})
	if meta != nil {
		dl.Headers = append(dl.Headers, sarama.RecordHeader{Key: []byte(HeaderDLQEventID), Value: []byte(meta.eventID)})
		dl.Metadata = &envelope{ack: meta.ack, partition: -1, eventID: meta.eventID}
	}
	if tooLarge(reason) {
		dl.Value = nil
		dl.Headers = append(dl.Headers, sarama.RecordHeader{Key: []byte(HeaderDLQPayloadOmit), Value: []byte("too large")})
	}
	s.log.Warn("sending an event Kafka refuses to the dead-letter topic", "event_id", eventID(pm), "topic", pm.Topic, "dlq_topic", s.cfg.DLQTopic, "reason", reason.Error())
	return dl
}

func tooLarge(err error) bool {
	var ce sarama.ConfigurationError
	return errors.Is(err, sarama.ErrMessageSizeTooLarge) || (errors.As(err, &ce) && strings.Contains(string(ce), "MaxMessageBytes"))
}

// dlqFor reports whether a failed message goes to the dead-letter topic.
func (s *Sink) dlqFor(pm *sarama.ProducerMessage, err error) bool {
	return s.cfg.DLQTopic != "" && pm.Topic != s.cfg.DLQTopic && IsPermanent(err)
}
