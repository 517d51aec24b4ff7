package sink

import (
	"fmt"
	"strings"

	"github.com/IBM/sarama"
)

// Codecs names the record batch compression codecs, as Kafka's
// compression.type does.
var Codecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// codecs maps a codec name onto sarama's, which encodes the batches.
var codecs = map[string]sarama.CompressionCodec{
	"none":   sarama.CompressionNone,
	"gzip":   sarama.CompressionGZIP,
	"snappy": sarama.CompressionSnappy,
	"lz4":    sarama.CompressionLZ4,
	"zstd":   sarama.CompressionZSTD,
}

// levelRange is the span of CompressionLevel a codec accepts, as Kafka's
// compression.gzip.level and compression.zstd.level do. Codecs not listed
// have no level in sarama's encoders (its lz4 writer has one setting).
var levelRange = map[string][2]int{
	"gzip": {1, 9},
	"zstd": {-131072, 22},
}

// validateCompression checks Compression and CompressionLevel; version is
// the Kafka protocol version when it parses.
func (c Config) validateCompression(version *sarama.KafkaVersion) []error {
	codec := c.codecName()
	if _, ok := codecs[codec]; !ok {
		return []error{fmt.Errorf("kafka-compression: %q is not one of %s", c.Compression, strings.Join(Codecs, ", "))}
	}
	var errs []error
	if r, ok := levelRange[codec]; ok && c.CompressionLevel != 0 && (c.CompressionLevel < r[0] || c.CompressionLevel > r[1]) {
		errs = append(errs, fmt.Errorf("kafka-compression-level: %d is outside %s's levels %d to %d (0: the codec's default)", c.CompressionLevel, codec, r[0], r[1]))
	}
	if _, ok := levelRange[codec]; !ok && c.CompressionLevel != 0 {
		errs = append(errs, fmt.Errorf("kafka-compression-level: %s has no levels; a level applies to gzip (1 to 9) and zstd (up to 22)", codec))
	}
	if version != nil && codec == "zstd" && !version.IsAtLeast(sarama.V2_1_0_0) {
		errs = append(errs, fmt.Errorf("kafka-compression: zstd needs kafka-version 2.1.0 or later, not %s", c.Version))
	}
	return errs
}

// codecName is Compression in lower case, none when empty.
func (c Config) codecName() string {
	if c.Compression == "" {
		return "none"
	}
	return strings.ToLower(c.Compression)
}

// applyCompression sets sarama's producer codec and level, which every
// producer built from sc uses: sarama's own (exactly-once, checkpoint and
// origin records) and ours (produce.go copies them into each batch).
func (c Config) applyCompression(sc *sarama.Config) {
	sc.Producer.Compression = codecs[c.codecName()]
	sc.Producer.CompressionLevel = sarama.CompressionLevelDefault
	if c.CompressionLevel != 0 {
		sc.Producer.CompressionLevel = c.CompressionLevel
	}
}
