package dev.sagalab.compat;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Future;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.InvalidRecordException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.TimestampType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Producing: idempotence with acks=all, keys, headers, timestamps, and every compression codec. */
class ProducerTest {

    @Test
    void idempotentProducerKeepsKeysHeadersTimestampsAndOrder() throws Exception {
        String topic = Kafka.unique("producer-idempotent");
        try (Admin admin = Kafka.admin()) {
            Kafka.createTopic(admin, topic, 3);
        }
        long base = System.currentTimeMillis() - 60_000;
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<String, String> producer = Kafka.producer(Map.of(
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true,
                ProducerConfig.ACKS_CONFIG, "all",
                ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, 5))) {
            for (int i = 0; i < 30; i++) {
                List<Header> headers = List.of(
                        new RecordHeader("seq", Integer.toString(i).getBytes(StandardCharsets.UTF_8)),
                        new RecordHeader("empty", new byte[0]));
                sent.add(producer.send(new ProducerRecord<>(topic, null, base + i, "key-" + (i % 5), "value-" + i, headers)));
            }
            producer.flush();
        }
        Map<TopicPartition, Long> lastOffset = new HashMap<>();
        Map<String, Integer> partitionOfKey = new HashMap<>();
        for (int i = 0; i < sent.size(); i++) {
            RecordMetadata md = sent.get(i).get();
            assertEquals(base + i, md.timestamp(), "acknowledged timestamp of record " + i);
            TopicPartition tp = new TopicPartition(topic, md.partition());
            Long previous = lastOffset.put(tp, md.offset());
            assertTrue(previous == null || md.offset() == previous + 1,
                    "offsets of " + tp + " go up by one: " + previous + " then " + md.offset());
            Integer p = partitionOfKey.putIfAbsent("key-" + (i % 5), md.partition());
            assertTrue(p == null || p == md.partition(), "one key, one partition");
        }

        try (KafkaConsumer<String, String> consumer = Kafka.consumer(null, Map.of())) {
            List<TopicPartition> partitions = List.of(
                    new TopicPartition(topic, 0), new TopicPartition(topic, 1), new TopicPartition(topic, 2));
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            List<ConsumerRecord<String, String>> got = Kafka.poll(consumer, 30);
            assertEquals(30, got.size());
            Map<String, Integer> lastSeqOfKey = new HashMap<>();
            for (ConsumerRecord<String, String> r : got) {
                int seq = Integer.parseInt(r.value().substring("value-".length()));
                assertEquals("key-" + (seq % 5), r.key());
                assertEquals(partitionOfKey.get(r.key()), r.partition(), "partition of " + r.key());
                assertEquals(base + seq, r.timestamp());
                assertEquals(TimestampType.CREATE_TIME, r.timestampType());
                Header[] hs = r.headers().toArray();
                assertEquals(2, hs.length, "headers of " + r);
                assertEquals("seq", hs[0].key());
                assertArrayEquals(Integer.toString(seq).getBytes(StandardCharsets.UTF_8), hs[0].value());
                assertEquals("empty", hs[1].key());
                assertArrayEquals(new byte[0], hs[1].value());
                Integer before = lastSeqOfKey.put(r.key(), seq);
                assertTrue(before == null || before < seq, "records of one key arrive in order");
            }
        }
    }

    @Test
    void nullKeysAndNullValuesRoundTrip() throws Exception {
        String topic = Kafka.unique("producer-nulls");
        try (Admin admin = Kafka.admin()) {
            Kafka.createTopic(admin, topic, 1);
        }
        try (KafkaProducer<String, String> producer = Kafka.producer(Map.of())) {
            producer.send(new ProducerRecord<>(topic, null, "no key")).get();
            producer.send(new ProducerRecord<>(topic, "tombstone", null)).get();
        }
        try (KafkaConsumer<String, String> consumer = Kafka.consumer(null, Map.of())) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<String, String>> got = Kafka.poll(consumer, 2);
            assertNull(got.get(0).key());
            assertEquals("no key", got.get(0).value());
            assertEquals("tombstone", got.get(1).key());
            assertNull(got.get(1).value());
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"gzip", "snappy", "lz4", "zstd"})
    void compressedBatchesRoundTrip(String codec) throws Exception {
        String topic = Kafka.unique("producer-" + codec);
        try (Admin admin = Kafka.admin()) {
            Kafka.createTopic(admin, topic, 1);
        }
        int n = 500;
        try (KafkaProducer<String, String> producer = Kafka.producer(Map.of(
                ProducerConfig.COMPRESSION_TYPE_CONFIG, codec,
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true,
                ProducerConfig.LINGER_MS_CONFIG, 50,
                ProducerConfig.BATCH_SIZE_CONFIG, 256 * 1024))) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, "k" + i, "the same words again and again " + i)));
            }
            producer.flush();
            for (Future<RecordMetadata> f : sent) {
                f.get();
            }
        }
        try (KafkaConsumer<String, String> consumer = Kafka.consumer(null, Map.of())) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<String, String>> got = Kafka.poll(consumer, n);
            assertEquals(n, got.size());
            for (int i = 0; i < n; i++) {
                assertEquals(i, got.get(i).offset());
                assertEquals("k" + i, got.get(i).key());
                assertEquals("the same words again and again " + i, got.get(i).value());
            }
            assertEquals(n, consumer.endOffsets(List.of(tp)).get(tp));
        }
    }

    /**
     * A deliberate difference (docs/broker-limits.md): the broker decodes zstd windows up to
     * 8 MiB. The Java client compresses a batch as a stream of unknown size, so at levels 20-22
     * every frame asks for 32-128 MiB however small the batch; the broker refuses it with
     * INVALID_RECORD, which fails the send at once instead of retrying until the delivery timeout.
     */
    @Test
    void zstdAboveLevel19IsRefusedAtOnce() throws Exception {
        String topic = Kafka.unique("producer-zstd-22");
        try (Admin admin = Kafka.admin()) {
            Kafka.createTopic(admin, topic, 1);
        }
        try (KafkaProducer<String, String> producer = Kafka.producer(Map.of(
                ProducerConfig.COMPRESSION_TYPE_CONFIG, "zstd",
                ProducerConfig.COMPRESSION_ZSTD_LEVEL_CONFIG, 22))) {
            long start = System.nanoTime();
            Exception e = assertThrows(Exception.class,
                    () -> producer.send(new ProducerRecord<>(topic, "k", "small")).get());
            assertTrue(Kafka.causedBy(e, InvalidRecordException.class), "refused as an invalid record: " + e);
            assertTrue(e.getMessage().contains("window"), e.getMessage());
            long tookMs = (System.nanoTime() - start) / 1_000_000;
            assertTrue(tookMs < 10_000, "refused at once, not retried: " + tookMs + " ms");
        }
        try (KafkaProducer<String, String> producer = Kafka.producer(Map.of(
                ProducerConfig.COMPRESSION_TYPE_CONFIG, "zstd",
                ProducerConfig.COMPRESSION_ZSTD_LEVEL_CONFIG, 19))) {
            assertEquals(0, producer.send(new ProducerRecord<>(topic, "k", "level 19")).get().offset());
        }
    }
}
