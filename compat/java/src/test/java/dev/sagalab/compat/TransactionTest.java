package dev.sagalab.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.junit.jupiter.api.Test;

/** Exactly-once: commit, abort, offsets committed with a transaction, and fencing. */
class TransactionTest {

    private static KafkaProducer<String, String> transactional(String id) {
        KafkaProducer<String, String> p = Kafka.producer(Map.of(
                ProducerConfig.TRANSACTIONAL_ID_CONFIG, id,
                ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, 60_000));
        p.initTransactions();
        return p;
    }

    private static KafkaConsumer<String, String> reader(String isolation, String group) {
        return Kafka.consumer(group, Map.of(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation));
    }

    /** Every value a consumer with {@code isolation} reads from partition 0 up to its end. */
    private static List<String> readAll(String topic, String isolation) {
        try (KafkaConsumer<String, String> consumer = reader(isolation, null)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            long end = consumer.endOffsets(List.of(tp)).get(tp);
            List<String> values = new ArrayList<>();
            Kafka.until(topic + " read to its end (" + end + ") " + isolation, () -> {
                consumer.poll(Duration.ofMillis(100)).forEach(r -> values.add(r.value()));
                return consumer.position(tp) >= end;
            });
            return values;
        }
    }

    @Test
    void committedTransactionIsReadOnceCommitted() {
        String topic = Kafka.unique("txn-commit");
        try (Admin admin = Kafka.admin()) {
            Kafka.createTopic(admin, topic, 1);
        }
        try (KafkaProducer<String, String> p = transactional(Kafka.unique("tx"))) {
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, "a", "one"));
            p.send(new ProducerRecord<>(topic, "b", "two"));
            p.commitTransaction();
        }
        assertEquals(List.of("one", "two"), readAll(topic, "read_committed"));
    }

    @Test
    void abortedTransactionIsSeenOnlyReadUncommitted() {
        String topic = Kafka.unique("txn-abort");
        try (Admin admin = Kafka.admin()) {
            Kafka.createTopic(admin, topic, 1);
        }
        try (KafkaProducer<String, String> p = transactional(Kafka.unique("tx"))) {
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, "k", "aborted-1"));
            p.send(new ProducerRecord<>(topic, "k", "aborted-2"));
            p.flush();
            p.abortTransaction();
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, "k", "committed"));
            p.commitTransaction();
        }
        assertEquals(List.of("committed"), readAll(topic, "read_committed"));
        assertEquals(List.of("aborted-1", "aborted-2", "committed"), readAll(topic, "read_uncommitted"));
    }

    @Test
    void consumeTransformProduceCommitsOffsetsWithTheTransaction() {
        String input = Kafka.unique("txn-in");
        String output = Kafka.unique("txn-out");
        String group = Kafka.unique("txn-group");
        try (Admin admin = Kafka.admin()) {
            Kafka.createTopic(admin, input, 1);
            Kafka.createTopic(admin, output, 1);
            try (KafkaProducer<String, String> p = Kafka.producer(Map.of())) {
                for (int i = 0; i < 10; i++) {
                    p.send(new ProducerRecord<>(input, "k" + i, "word" + i));
                }
            }
            TopicPartition in = new TopicPartition(input, 0);
            try (KafkaConsumer<String, String> consumer = reader("read_committed", group);
                 KafkaProducer<String, String> producer = transactional(Kafka.unique("tx"))) {
                consumer.subscribe(List.of(input));
                // A first round that aborts: its offsets must not reach the group.
                List<ConsumerRecord<String, String>> first = Kafka.poll(consumer, 1);
                producer.beginTransaction();
                producer.send(new ProducerRecord<>(output, first.get(0).key(), "ABORTED"));
                producer.sendOffsetsToTransaction(
                        Map.of(in, new OffsetAndMetadata(first.get(first.size() - 1).offset() + 1)),
                        consumer.groupMetadata());
                producer.abortTransaction();
                assertTrue(Kafka.get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata())
                                .isEmpty(), "an aborted transaction commits no offset");
                consumer.seek(in, 0);

                int done = 0;
                long deadline = System.nanoTime() + Kafka.TIMEOUT.toNanos();
                while (done < 10 && System.nanoTime() < deadline) {
                    ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(100));
                    if (records.isEmpty()) {
                        continue;
                    }
                    producer.beginTransaction();
                    Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                    for (ConsumerRecord<String, String> r : records) {
                        producer.send(new ProducerRecord<>(output, r.key(), r.value().toUpperCase()));
                        offsets.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                        done++;
                    }
                    producer.sendOffsetsToTransaction(offsets, consumer.groupMetadata());
                    producer.commitTransaction();
                }
                assertEquals(10, done, "records transformed");
            }
            Map<TopicPartition, OffsetAndMetadata> committed =
                    Kafka.get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
            assertEquals(10, committed.get(new TopicPartition(input, 0)).offset(), "offsets committed by the transactions");
        }
        List<String> expected = new ArrayList<>();
        for (int i = 0; i < 10; i++) {
            expected.add("WORD" + i);
        }
        assertEquals(expected, readAll(output, "read_committed"));
    }

    @Test
    void aNewProducerWithTheSameTransactionalIdFencesTheOld() {
        String topic = Kafka.unique("txn-fence");
        String id = Kafka.unique("tx");
        try (Admin admin = Kafka.admin()) {
            Kafka.createTopic(admin, topic, 1);
        }
        try (KafkaProducer<String, String> old = transactional(id)) {
            old.beginTransaction();
            old.send(new ProducerRecord<>(topic, "k", "from the fenced producer"));
            old.flush();
            try (KafkaProducer<String, String> current = transactional(id)) {
                Exception e = assertThrows(Exception.class, () -> {
                    old.send(new ProducerRecord<>(topic, "k", "after fencing")).get();
                    old.commitTransaction();
                });
                assertTrue(Kafka.causedBy(e, ProducerFencedException.class, InvalidProducerEpochException.class),
                        "the old producer is fenced, got " + e);
                current.beginTransaction();
                current.send(new ProducerRecord<>(topic, "k", "from the new producer"));
                current.commitTransaction();
            }
        }
        assertEquals(List.of("from the new producer"), readAll(topic, "read_committed"));
        Set<String> uncommitted = Set.copyOf(readAll(topic, "read_uncommitted"));
        assertTrue(uncommitted.contains("from the fenced producer"), "the fenced write is in the log, aborted");
    }
}
