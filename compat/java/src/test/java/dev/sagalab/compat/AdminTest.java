package dev.sagalab.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.DeletedRecords;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.InvalidPartitionsException;
import org.apache.kafka.common.errors.InvalidRequestException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.junit.jupiter.api.Test;

/** The Admin client: topics, configs, partitions, records, consumer groups, the cluster. */
class AdminTest {

    @Test
    void createDescribeAndDeleteTopics() {
        String topic = Kafka.unique("admin-topic");
        try (Admin admin = Kafka.admin()) {
            Kafka.get(admin.createTopics(List.of(
                    new NewTopic(topic, 3, (short) 1).configs(Map.of("retention.ms", "3600000")))).all());
            assertTrue(Kafka.get(admin.listTopics().names()).contains(topic));
            TopicDescription d = Kafka.get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic);
            assertEquals(3, d.partitions().size());
            d.partitions().forEach(p -> {
                assertNotNull(p.leader(), "partition " + p.partition() + " has a leader");
                assertEquals(List.of(p.leader()), p.replicas());
                assertEquals(List.of(p.leader()), p.isr());
            });
            assertFalse(d.isInternal());
            assertNotNull(d.topicId());

            Throwable again = Kafka.failure(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all());
            assertTrue(again instanceof TopicExistsException, "creating it again: " + again);

            Kafka.get(admin.deleteTopics(List.of(topic)).all());
            Kafka.until("the topic is gone from the list", () -> !Kafka.get(admin.listTopics().names()).contains(topic));
            Throwable gone = Kafka.failure(admin.describeTopics(List.of(topic)).allTopicNames());
            assertTrue(gone instanceof UnknownTopicOrPartitionException, "describing a deleted topic: " + gone);
        }
    }

    @Test
    void describeAndAlterTopicConfigs() {
        String topic = Kafka.unique("admin-config");
        ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        try (Admin admin = Kafka.admin()) {
            Kafka.get(admin.createTopics(List.of(
                    new NewTopic(topic, 1, (short) 1).configs(Map.of("retention.ms", "3600000")))).all());
            Config config = Kafka.get(admin.describeConfigs(List.of(resource)).all()).get(resource);
            ConfigEntry retention = config.get("retention.ms");
            assertEquals("3600000", retention.value());
            assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, retention.source());
            ConfigEntry maxMessage = config.get("max.message.bytes");
            assertNotNull(maxMessage, "max.message.bytes is described");
            assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, maxMessage.source());
            assertEquals("delete", config.get("cleanup.policy").value());

            Kafka.get(admin.incrementalAlterConfigs(Map.of(resource, List.of(
                    new AlterConfigOp(new ConfigEntry("max.message.bytes", "500000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE)))).all());
            config = Kafka.get(admin.describeConfigs(List.of(resource)).all()).get(resource);
            assertEquals("500000", config.get("max.message.bytes").value());
            assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, config.get("max.message.bytes").source());
            assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, config.get("retention.ms").source(),
                    "a deleted config is back to its default");

            Throwable bad = Kafka.failure(admin.incrementalAlterConfigs(Map.of(resource, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "soon"), AlterConfigOp.OpType.SET)))).all());
            assertTrue(bad instanceof InvalidConfigurationException || bad instanceof InvalidRequestException,
                    "a value that isn't a number: " + bad);
        }
    }

    @Test
    void createPartitionsGrowsATopic() throws Exception {
        String topic = Kafka.unique("admin-partitions");
        try (Admin admin = Kafka.admin()) {
            Kafka.createTopic(admin, topic, 2);
            Kafka.get(admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(5))).all());
            TopicDescription d = Kafka.get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic);
            assertEquals(5, d.partitions().size());
            Throwable shrink = Kafka.failure(admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all());
            assertTrue(shrink instanceof InvalidPartitionsException, "shrinking: " + shrink);
        }
        try (KafkaProducer<String, String> p = Kafka.producer(Map.of())) {
            assertEquals(4, p.send(new ProducerRecord<>(topic, 4, "k", "in a new partition")).get().partition());
        }
    }

    @Test
    void deleteRecordsMovesTheLogStart() throws Exception {
        String topic = Kafka.unique("admin-delete-records");
        TopicPartition tp = new TopicPartition(topic, 0);
        try (Admin admin = Kafka.admin()) {
            Kafka.createTopic(admin, topic, 1);
            try (KafkaProducer<String, String> p = Kafka.producer(Map.of())) {
                for (int i = 0; i < 10; i++) {
                    p.send(new ProducerRecord<>(topic, "k", "v" + i));
                }
            }
            Map<TopicPartition, org.apache.kafka.common.KafkaFuture<DeletedRecords>> deleted =
                    admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(4))).lowWatermarks();
            assertEquals(4, Kafka.get(deleted.get(tp)).lowWatermark());
        }
        try (KafkaConsumer<String, String> c = Kafka.consumer(null, Map.of())) {
            c.assign(List.of(tp));
            assertEquals(4, c.beginningOffsets(List.of(tp)).get(tp));
            c.seekToBeginning(List.of(tp));
            assertEquals("v4", Kafka.poll(c, 1).get(0).value());
        }
    }

    @Test
    @SuppressWarnings("deprecation")
    void consumerGroupsAreListedDescribedAlteredAndDeleted() {
        String topic = Kafka.unique("admin-groups");
        String group = Kafka.unique("admin-group");
        TopicPartition tp = new TopicPartition(topic, 0);
        try (Admin admin = Kafka.admin()) {
            Kafka.createTopic(admin, topic, 1);
            try (KafkaProducer<String, String> p = Kafka.producer(Map.of())) {
                for (int i = 0; i < 5; i++) {
                    p.send(new ProducerRecord<>(topic, "k", "v" + i));
                }
            }
            try (KafkaConsumer<String, String> c = Kafka.consumer(group, Map.of())) {
                c.subscribe(List.of(topic));
                Kafka.poll(c, 5);
                c.commitSync();

                Collection<ConsumerGroupListing> listed = Kafka.get(admin.listConsumerGroups().all());
                assertTrue(listed.stream().anyMatch(g -> g.groupId().equals(group)), "listed: " + listed);
                ConsumerGroupDescription d = Kafka.get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
                assertEquals(GroupState.STABLE, d.groupState());
                assertEquals(1, d.members().size());
                assertEquals(Set.of(tp), d.members().iterator().next().assignment().topicPartitions());
                assertFalse(d.isSimpleConsumerGroup());
                assertEquals(5, Kafka.get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata())
                        .get(tp).offset());

                Throwable busy = Kafka.failure(admin.deleteConsumerGroups(List.of(group)).all());
                assertTrue(busy instanceof GroupNotEmptyException, "deleting a group with members: " + busy);
            }
            Kafka.until("the group is empty", () -> Kafka.get(admin.describeConsumerGroups(List.of(group)).all())
                    .get(group).groupState() == GroupState.EMPTY);

            Kafka.get(admin.alterConsumerGroupOffsets(group, Map.of(tp, new OffsetAndMetadata(2))).all());
            assertEquals(2, Kafka.get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata())
                    .get(tp).offset());

            Kafka.get(admin.deleteConsumerGroups(List.of(group)).all());
            assertTrue(Kafka.get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata()).isEmpty(),
                    "a deleted group has no offsets");
            assertTrue(Kafka.get(admin.listConsumerGroups().all()).stream().noneMatch(g -> g.groupId().equals(group)),
                    "a deleted group is not listed");
        }
    }

    @Test
    void describeClusterShowsTheOneNode() {
        try (Admin admin = Kafka.admin()) {
            DescribeClusterResult cluster = admin.describeCluster();
            Collection<Node> nodes = Kafka.get(cluster.nodes());
            assertEquals(1, nodes.size());
            Node node = nodes.iterator().next();
            assertEquals(node, Kafka.get(cluster.controller()));
            String clusterId = Kafka.get(cluster.clusterId());
            assertNotNull(clusterId);
            assertFalse(clusterId.isEmpty());
            String[] hostPort = Kafka.bootstrap().split(",")[0].split(":");
            assertEquals(Integer.parseInt(hostPort[hostPort.length - 1]), node.port(), "the node is the bootstrap broker");
        }
    }
}
