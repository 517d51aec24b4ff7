package io.outboxrelay.reference;

import io.debezium.embedded.Connect;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.RecordChangeEvent;
import io.debezium.engine.format.ChangeEventFormat;
import java.io.FileReader;
import java.io.IOException;
import java.io.Reader;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.json.JsonConverter;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.storage.Converter;
import org.apache.kafka.connect.storage.HeaderConverter;
import org.apache.kafka.connect.storage.SimpleHeaderConverter;

/**
 * Runs the Debezium embedded engine (PostgreSQL connector and the transforms
 * of a Kafka Connect connector configuration, such as the Outbox Event
 * Router) and produces every record into Kafka the way a Kafka Connect worker
 * does: the configured key, value and header converters, and a KafkaProducer
 * with the default partitioner (murmur2 of the key bytes) unless the record
 * names its partition.
 *
 * <p>Usage: {@code DebeziumReference <connector.properties>...}: one engine
 * per file, each with its own producer. A file holds a Kafka Connect
 * PostgreSQL connector configuration: the connector and
 * transform keys go to the engine; {@code key.converter},
 * {@code value.converter}, {@code header.converter} (and their
 * {@code .}-prefixed settings) choose the converters; {@code bootstrap.servers}
 * and {@code producer.override.*} configure the producer. Offsets stay in
 * memory: each run starts from its replication slot's confirmed position.
 * It runs until SIGTERM (or until every engine stopped) and prints
 * "debezium-reference: NAME: produced N" after every batch.
 */
public final class DebeziumReference {
    private DebeziumReference() {}

    public static void main(String[] args) throws Exception {
        if (args.length == 0) {
            System.err.println("usage: DebeziumReference <connector.properties>...");
            System.exit(2);
        }
        List<DebeziumEngine<RecordChangeEvent<SourceRecord>>> engines = new ArrayList<>();
        List<KafkaProducer<byte[], byte[]>> producers = new ArrayList<>();
        CountDownLatch done = new CountDownLatch(args.length);
        ExecutorService exec = Executors.newFixedThreadPool(args.length);
        for (String path : args) {
            Properties file = new Properties();
            try (Reader r = new FileReader(path)) {
                file.load(r);
            }
            KafkaProducer<byte[], byte[]> producer = producer(file);
            producers.add(producer);
            DebeziumEngine<RecordChangeEvent<SourceRecord>> engine = engine(file, producer, done);
            engines.add(engine);
            exec.execute(engine);
        }
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            for (DebeziumEngine<?> engine : engines) {
                try {
                    engine.close();
                } catch (IOException | RuntimeException e) { // an engine that stopped on an error
                    e.printStackTrace();
                }
            }
            try {
                done.await(20, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            producers.forEach(KafkaProducer::close);
        }));
        done.await();
        exec.shutdown();
        System.exit(0);
    }

    /** A producer as a Kafka Connect worker or Debezium Server configures it. */
    static KafkaProducer<byte[], byte[]> producer(Properties file) {
        Map<String, Object> props = new HashMap<>();
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, file.getProperty("bootstrap.servers"));
        for (String k : file.stringPropertyNames()) {
            if (k.startsWith("producer.override.")) {
                props.put(k.substring("producer.override.".length()), file.getProperty(k));
            }
        }
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        return new KafkaProducer<>(props);
    }

    static DebeziumEngine<RecordChangeEvent<SourceRecord>> engine(Properties file,
            KafkaProducer<byte[], byte[]> producer, CountDownLatch done) throws Exception {
        Properties engine = new Properties();
        for (String k : file.stringPropertyNames()) {
            if (!k.equals("bootstrap.servers") && !k.startsWith("producer.override.") && !k.startsWith("key.converter")
                    && !k.startsWith("value.converter") && !k.startsWith("header.converter")) {
                engine.setProperty(k, file.getProperty(k));
            }
        }
        engine.putIfAbsent("name", "debezium-reference");
        engine.setProperty("offset.storage", "org.apache.kafka.connect.storage.MemoryOffsetBackingStore");
        engine.putIfAbsent("offset.flush.interval.ms", "1000");
        String name = engine.getProperty("name");
        Converter keyConverter = converter(file, "key.converter", true);
        Converter valueConverter = converter(file, "value.converter", false);
        HeaderConverter headerConverter = headerConverter(file);
        long[] produced = {0};
        DebeziumEngine.ChangeConsumer<RecordChangeEvent<SourceRecord>> handler = (records, committer) -> {
            // As Debezium Server's Kafka sink: send the whole batch, then wait
            // for every acknowledgement before marking it processed.
            List<Future<RecordMetadata>> acks = new ArrayList<>(records.size());
            for (RecordChangeEvent<SourceRecord> event : records) {
                acks.add(producer.send(toProducerRecord(event.record(), keyConverter, valueConverter, headerConverter)));
            }
            for (int i = 0; i < acks.size(); i++) {
                try {
                    acks.get(i).get();
                } catch (ExecutionException e) {
                    throw new IllegalStateException("producing to " + records.get(i).record().topic(), e.getCause());
                }
                committer.markProcessed(records.get(i));
                produced[0]++;
            }
            committer.markBatchFinished();
            System.out.println("debezium-reference: " + name + ": produced " + produced[0]);
            System.out.flush();
        };
        return DebeziumEngine.create(ChangeEventFormat.of(Connect.class))
                .using(engine)
                .notifying(handler)
                .using((success, message, error) -> {
                    System.out.println("debezium-reference: " + name + ": engine stopped: success=" + success + " " + message);
                    if (error != null) {
                        error.printStackTrace();
                    }
                    done.countDown();
                })
                .build();
    }

    /** What Kafka Connect's WorkerSourceTask does with a transformed record. */
    static ProducerRecord<byte[], byte[]> toProducerRecord(SourceRecord rec, Converter keyConverter,
            Converter valueConverter, HeaderConverter headerConverter) {
        RecordHeaders headers = new RecordHeaders();
        for (Header h : rec.headers()) {
            headers.add(h.key(), headerConverter.fromConnectHeader(rec.topic(), h.key(), h.schema(), h.value()));
        }
        byte[] key = keyConverter.fromConnectData(rec.topic(), headers, rec.keySchema(), rec.key());
        byte[] value = valueConverter.fromConnectData(rec.topic(), headers, rec.valueSchema(), rec.value());
        Long ts = rec.timestamp() != null && rec.timestamp() >= 0 ? rec.timestamp() : null;
        return new ProducerRecord<>(rec.topic(), rec.kafkaPartition(), ts, key, value, headers);
    }

    static Converter converter(Properties file, String prefix, boolean isKey) throws Exception {
        String cls = file.getProperty(prefix, JsonConverter.class.getName());
        Converter c = (Converter) Class.forName(cls).getDeclaredConstructor().newInstance();
        c.configure(sub(file, prefix + "."), isKey);
        return c;
    }

    static HeaderConverter headerConverter(Properties file) throws Exception {
        String cls = file.getProperty("header.converter", SimpleHeaderConverter.class.getName());
        HeaderConverter c = (HeaderConverter) Class.forName(cls).getDeclaredConstructor().newInstance();
        c.configure(sub(file, "header.converter."));
        return c;
    }

    static Map<String, Object> sub(Properties file, String prefix) {
        Map<String, Object> out = new HashMap<>();
        for (String k : file.stringPropertyNames()) {
            if (k.startsWith(prefix)) {
                out.put(k.substring(prefix.length()), file.getProperty(k));
            }
        }
        return out;
    }
}
