package dev.sagalab.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.UnsupportedVersionException;
import org.junit.jupiter.api.Test;

/** Consumer groups with the classic protocol: sharing, cooperative rebalancing, static members, offsets, seeking. */
class ConsumerGroupTest {

    private static String topicWith(int partitions) {
        String topic = Kafka.unique("group-topic");
        try (Admin admin = Kafka.admin()) {
            Kafka.createTopic(admin, topic, partitions);
        }
        return topic;
    }

    private static void produce(String topic, int partitions, int perPartition) {
        try (KafkaProducer<String, String> p = Kafka.producer(Map.of())) {
            for (int i = 0; i < perPartition; i++) {
                for (int part = 0; part < partitions; part++) {
                    p.send(new ProducerRecord<>(topic, part, "k", "p" + part + "-" + i));
                }
            }
        }
    }

    @Test
    void twoConsumersShareThePartitions() {
        String topic = topicWith(4);
        String group = Kafka.unique("share");
        try (GroupMember a = new GroupMember("a", group, topic, Map.of());
             GroupMember b = new GroupMember("b", group, topic, Map.of())) {
            Kafka.until("a and b hold two partitions each", () ->
                    a.partitions().size() == 2 && b.partitions().size() == 2);
            Set<Integer> all = new HashSet<>(a.partitions());
            all.addAll(b.partitions());
            assertEquals(Set.of(0, 1, 2, 3), all, "together they hold every partition");

            produce(topic, 4, 10);
            Kafka.until("all 40 records consumed", () -> a.records.size() + b.records.size() >= 40);
            for (GroupMember m : List.of(a, b)) {
                for (ConsumerRecord<String, String> r : m.records) {
                    assertTrue(m.partitions().contains(r.partition()), m.name + " read only its partitions: " + r);
                }
            }
            Set<String> values = new HashSet<>();
            a.records.forEach(r -> values.add(r.value()));
            b.records.forEach(r -> values.add(r.value()));
            assertEquals(40, values.size(), "each record once");
            assertEquals(40, a.records.size() + b.records.size(), "no record twice");
        }
    }

    @Test
    void cooperativeStickyMovesOnlyThePartitionsThatChangeOwner() {
        String topic = topicWith(4);
        String group = Kafka.unique("cooperative");
        Map<String, Object> cooperative = Map.of(
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, CooperativeStickyAssignor.class.getName());
        try (GroupMember a = new GroupMember("a", group, topic, cooperative)) {
            Kafka.until("a holds all four partitions", () -> a.partitions().equals(Set.of(0, 1, 2, 3)));
            int eventsBefore = a.events.size();
            try (GroupMember b = new GroupMember("b", group, topic, cooperative)) {
                Kafka.until("b joins and gets two partitions", () ->
                        b.partitions().size() == 2 && a.partitions().size() == 2);
                Set<Integer> moved = b.partitions();
                List<String> aEvents = a.events.subList(eventsBefore, a.events.size());
                assertTrue(aEvents.contains("revoked " + moved),
                        "a gives up exactly the partitions b gets (" + moved + "): " + aEvents);
                assertTrue(aEvents.stream().noneMatch(e -> e.equals("revoked [0, 1, 2, 3]") || e.startsWith("lost")),
                        "a never gives up everything: " + aEvents);
            }
            int eventsAfterLeave = a.events.size();
            Kafka.until("a holds all four again after b left", () -> a.partitions().equals(Set.of(0, 1, 2, 3)));
            List<String> back = a.events.subList(eventsAfterLeave, a.events.size());
            assertTrue(back.stream().noneMatch(e -> e.startsWith("revoked [") && !e.equals("revoked []")),
                    "a revokes nothing when b leaves: " + back);
        }
    }

    @Test
    void aRestartedStaticMemberGetsItsPartitionsBackWithoutARebalance() {
        String topic = topicWith(4);
        String group = Kafka.unique("static");
        Map<String, Object> staticA = Map.of(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "instance-a",
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 30_000);
        Map<String, Object> staticB = Map.of(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "instance-b",
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 30_000);
        try (Admin admin = Kafka.admin();
             GroupMember b = new GroupMember("b", group, topic, staticB)) {
            Set<Integer> before;
            try (GroupMember a = new GroupMember("a", group, topic, staticA)) {
                Kafka.until("a and b hold two partitions each", () ->
                        a.partitions().size() == 2 && b.partitions().size() == 2);
                before = a.partitions();
            }
            int bEvents = b.events.size();
            int bGeneration = b.generation();
            // a closed without leaving (a static member doesn't): the group still counts it.
            ConsumerGroupDescription described = Kafka.get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
            Set<String> instances = new HashSet<>();
            for (MemberDescription m : described.members()) {
                instances.add(m.groupInstanceId().orElse("none"));
            }
            assertEquals(Set.of("instance-a", "instance-b"), instances, "both static members are still in the group");

            try (GroupMember again = new GroupMember("a again", group, topic, staticA)) {
                Kafka.until("the restarted a holds " + before, () -> again.partitions().equals(before));
                assertEquals(bGeneration, again.generation(), "same generation: no rebalance");
                assertEquals(bGeneration, b.generation(), "b stays in its generation");
                assertEquals(bEvents, b.events.size(), "b saw no rebalance: " + b.events);
                described = Kafka.get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
                assertEquals(2, described.members().size(), "the old a was replaced, not added to: " + described);
            }
        }
    }

    @Test
    void committedOffsetsAreWhereTheGroupResumes() {
        String topic = topicWith(2);
        String group = Kafka.unique("commits");
        produce(topic, 2, 5);
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        try (KafkaConsumer<String, String> c = Kafka.consumer(group, Map.of())) {
            c.subscribe(List.of(topic));
            Kafka.poll(c, 10);
            c.commitSync(Map.of(p0, new OffsetAndMetadata(3, "three"), p1, new OffsetAndMetadata(5)));
            Map<TopicPartition, OffsetAndMetadata> committed = c.committed(Set.of(p0, p1));
            assertEquals(3, committed.get(p0).offset());
            assertEquals("three", committed.get(p0).metadata());
            assertEquals(5, committed.get(p1).offset());
        }
        try (KafkaConsumer<String, String> c = Kafka.consumer(group, Map.of())) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<String, String>> rest = Kafka.poll(c, 2);
            List<String> values = new ArrayList<>();
            rest.forEach(r -> values.add(r.value()));
            assertEquals(List.of("p0-3", "p0-4"), values, "the group resumes at its committed offsets");
            assertTrue(c.poll(Duration.ofMillis(300)).isEmpty(), "nothing before the committed offsets again");
        }
    }

    @Test
    void seekingByTimeAndToBothEnds() {
        String topic = topicWith(1);
        TopicPartition tp = new TopicPartition(topic, 0);
        long t0 = System.currentTimeMillis() - 3_600_000;
        try (KafkaProducer<String, String> p = Kafka.producer(Map.of())) {
            for (int i = 0; i < 10; i++) {
                p.send(new ProducerRecord<>(topic, 0, t0 + i * 1000L, "k", "at-" + i));
            }
        }
        try (KafkaConsumer<String, String> c = Kafka.consumer(null, Map.of())) {
            c.assign(List.of(tp));
            Map<TopicPartition, OffsetAndTimestamp> at = c.offsetsForTimes(Map.of(tp, t0 + 5_500));
            assertEquals(6, at.get(tp).offset(), "the first record at or after the time");
            assertEquals(t0 + 6_000, at.get(tp).timestamp());
            assertEquals(0, c.offsetsForTimes(Map.of(tp, 0L)).get(tp).offset());
            assertNull(c.offsetsForTimes(Map.of(tp, System.currentTimeMillis() + 3_600_000)).get(tp),
                    "no record after a future time");
            assertEquals(0, c.beginningOffsets(List.of(tp)).get(tp));
            assertEquals(10, c.endOffsets(List.of(tp)).get(tp));

            c.seek(tp, at.get(tp).offset());
            assertEquals("at-6", Kafka.poll(c, 1).get(0).value());
            c.seekToEnd(List.of(tp));
            assertEquals(10, c.position(tp));
            c.seekToBeginning(List.of(tp));
            assertEquals(0, c.position(tp));
            assertEquals("at-0", Kafka.poll(c, 1).get(0).value());
        }
    }

    /**
     * The broker serves the classic protocol only (no ConsumerGroupHeartbeat): a consumer that
     * asks for KIP-848's protocol must fail plainly, not hang. The Java client's default
     * (group.protocol=classic) works unchanged.
     */
    @Test
    void theConsumerProtocolIsRefusedPlainly() {
        String topic = topicWith(1);
        Map<String, Object> kip848 = new HashMap<>();
        kip848.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
        try (KafkaConsumer<String, String> c = Kafka.consumer(Kafka.unique("kip848"), kip848)) {
            c.subscribe(List.of(topic));
            UnsupportedVersionException e = assertThrows(UnsupportedVersionException.class, () -> {
                long deadline = System.nanoTime() + Kafka.TIMEOUT.toNanos();
                while (System.nanoTime() < deadline) {
                    c.poll(Duration.ofMillis(100));
                }
            });
            assertTrue(e.getMessage().contains("group.protocol=classic"), e.getMessage());
        }
    }
}
