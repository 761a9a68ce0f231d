package dev.sagalab.streams;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Instant;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TestInputTopic;
import org.apache.kafka.streams.TestOutputTopic;
import org.apache.kafka.streams.TopologyTestDriver;
import org.apache.kafka.streams.test.TestRecord;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The topology's logic without a broker: TopologyTestDriver feeds records through it
 * synchronously (repartition topics included) and collects what it writes.
 */
class SagaTopologyTest {
    private static final Instant T0 = Instant.parse("2025-12-04T10:00:05Z");

    @TempDir
    Path stateDir;

    private TopologyTestDriver driver;
    private final Map<String, TestInputTopic<String, String>> inputs = new HashMap<>();
    private TestOutputTopic<String, String> counts;
    private TestOutputTopic<String, String> spending;

    @BeforeEach
    void start() {
        open(true);
    }

    @AfterEach
    void stop() {
        driver.close();
    }

    private void open(boolean changelogs) {
        if (driver != null) {
            driver.close();
        }
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, "saga-streams-test");
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "unused:9092");
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        driver = new TopologyTestDriver(SagaTopology.build(changelogs), props);
        inputs.clear();
        for (String topic : SagaTopology.INPUT_TOPICS) {
            inputs.put(topic, driver.createInputTopic(topic, new StringSerializer(), new StringSerializer()));
        }
        counts = driver.createOutputTopic(SagaTopology.STATUS_COUNTS_TOPIC, new StringDeserializer(), new StringDeserializer());
        spending = driver.createOutputTopic(SagaTopology.SPENDING_TOPIC, new StringDeserializer(), new StringDeserializer());
    }

    /** Sends one saga event as the services do: keyed by order id, CloudEvents headers. */
    private String send(String topic, String orderId, String json, Instant ceTime) {
        String eventId = UUID.randomUUID().toString();
        send(topic, orderId, json, ceTime, eventId);
        return eventId;
    }

    private void send(String topic, String orderId, String json, Instant ceTime, String eventId) {
        RecordHeaders headers = new RecordHeaders();
        headers.add("ce_id", eventId.getBytes(StandardCharsets.UTF_8));
        headers.add("ce_type", topic.getBytes(StandardCharsets.UTF_8));
        headers.add("ce_time", ceTime.toString().getBytes(StandardCharsets.UTF_8));
        // The record timestamp (publish time) is a minute later: windows must follow ce_time.
        inputs.get(topic).pipeInput(new TestRecord<>(orderId, json, headers, ceTime.plusSeconds(60)));
    }

    private static String created(String order, String customer, long total) {
        return "{\"order_id\":\"" + order + "\",\"customer_id\":\"" + customer + "\",\"items\":[{\"sku\":\"LATTE\","
                + "\"quantity\":1,\"unit_price\":" + total + "}],\"total\":" + total + ",\"currency\":\"KRW\"}";
    }

    private static String paid(String order, String customer, long amount) {
        return "{\"order_id\":\"" + order + "\",\"payment_id\":\"" + UUID.randomUUID() + "\",\"customer_id\":\""
                + customer + "\",\"amount\":" + amount + ",\"currency\":\"KRW\",\"items\":[]}";
    }

    private static String refunded(String order, String customer, long amount) {
        return "{\"order_id\":\"" + order + "\",\"payment_id\":\"" + UUID.randomUUID() + "\",\"customer_id\":\""
                + customer + "\",\"amount\":" + amount + ",\"reason\":\"out of stock\"}";
    }

    private static String plain(String order) {
        return "{\"order_id\":\"" + order + "\",\"customer_id\":\"x\",\"reason\":\"r\",\"items\":[],"
                + "\"payment_id\":\"" + UUID.randomUUID() + "\"}";
    }

    /** The last value written per key: what a reader of the output topic ends up with. */
    private static Map<String, String> latest(TestOutputTopic<String, String> topic) {
        Map<String, String> last = new HashMap<>();
        topic.readKeyValuesToList().forEach(kv -> last.put(kv.key, kv.value));
        return last;
    }

    private static Map<String, Long> countsOf(Map<String, String> latest) {
        Map<String, Long> counts = new HashMap<>();
        latest.forEach((key, json) -> {
            long count = Long.parseLong(json.replaceAll(".*\"count\":(\\d+).*", "$1"));
            counts.put(key, count);
        });
        return counts;
    }

    @Test
    void a_confirmed_order_counts_once_per_status_and_charges_its_customer() {
        String order = UUID.randomUUID().toString();
        send(SagaTopology.ORDER_CREATED, order, created(order, "alice", 10000), T0);
        send(SagaTopology.PAYMENT_COMPLETED, order, paid(order, "alice", 10000), T0.plusMillis(10));
        send(SagaTopology.INVENTORY_UPDATED, order, plain(order), T0.plusMillis(20));

        assertEquals(Map.of(
                "PENDING@2025-12-04T10:00:00Z", 1L,
                "PAID@2025-12-04T10:00:00Z", 1L,
                "CONFIRMED@2025-12-04T10:00:00Z", 1L), countsOf(latest(counts)));
        assertEquals(Map.of("alice", "10000"), latest(spending));
    }

    @Test
    void the_count_value_names_its_window() {
        String order = UUID.randomUUID().toString();
        send(SagaTopology.ORDER_CREATED, order, created(order, "alice", 5000), T0);
        assertEquals("{\"status\":\"PENDING\",\"window_start\":\"2025-12-04T10:00:00Z\","
                + "\"window_end\":\"2025-12-04T10:01:00Z\",\"count\":1}",
                counts.readValue());
    }

    @Test
    void a_compensated_order_nets_to_zero_spending() {
        String order = UUID.randomUUID().toString();
        send(SagaTopology.ORDER_CREATED, order, created(order, "carol", 4000), T0);
        send(SagaTopology.PAYMENT_COMPLETED, order, paid(order, "carol", 4000), T0.plusMillis(1));
        send(SagaTopology.INVENTORY_FAILED, order, plain(order), T0.plusMillis(2));
        send(SagaTopology.PAYMENT_REFUNDED, order, refunded(order, "carol", 4000), T0.plusMillis(3));
        send(SagaTopology.ORDER_CANCELLED, order, plain(order), T0.plusMillis(4));

        assertEquals(Map.of(
                "PENDING@2025-12-04T10:00:00Z", 1L,
                "PAID@2025-12-04T10:00:00Z", 1L,
                "COMPENSATING@2025-12-04T10:00:00Z", 1L,
                "CANCELLED@2025-12-04T10:00:00Z", 1L), countsOf(latest(counts)));
        assertEquals(Map.of("carol", "0"), latest(spending));
    }

    @Test
    void a_failed_payment_is_one_cancellation_and_no_spending() {
        String order = UUID.randomUUID().toString();
        send(SagaTopology.ORDER_CREATED, order, created(order, "bob", 900000), T0);
        send(SagaTopology.PAYMENT_FAILED, order, plain(order), T0.plusMillis(1));
        send(SagaTopology.ORDER_CANCELLED, order, plain(order), T0.plusMillis(2));

        assertEquals(Map.of(
                "PENDING@2025-12-04T10:00:00Z", 1L,
                "CANCELLED@2025-12-04T10:00:00Z", 1L), countsOf(latest(counts)));
        assertTrue(spending.isEmpty());
    }

    @Test
    void spending_adds_up_per_customer_across_orders() {
        for (int i = 0; i < 3; i++) {
            String order = UUID.randomUUID().toString();
            send(SagaTopology.PAYMENT_COMPLETED, order, paid(order, "alice", 1000 * (i + 1)), T0.plusSeconds(i));
        }
        String other = UUID.randomUUID().toString();
        send(SagaTopology.PAYMENT_COMPLETED, other, paid(other, "dave", 700), T0);

        assertEquals(Map.of("alice", "6000", "dave", "700"), latest(spending));
    }

    @Test
    void windows_follow_ce_time_not_the_record_timestamp() {
        String a = UUID.randomUUID().toString();
        String b = UUID.randomUUID().toString();
        send(SagaTopology.ORDER_CREATED, a, created(a, "alice", 1), Instant.parse("2025-12-04T10:00:59.999999Z"));
        send(SagaTopology.ORDER_CREATED, b, created(b, "alice", 1), Instant.parse("2025-12-04T10:01:00.000001Z"));

        assertEquals(Map.of(
                "PENDING@2025-12-04T10:00:00Z", 1L,
                "PENDING@2025-12-04T10:01:00Z", 1L), countsOf(latest(counts)));
    }

    @Test
    void an_event_delivered_twice_counts_once() {
        // The outbox relay may publish an event again after a crash, and a DLQ replay sends a
        // copy to the group that dead-lettered it: same ce_id both times.
        String order = UUID.randomUUID().toString();
        String payment = paid(order, "alice", 2500);
        String eventId = send(SagaTopology.PAYMENT_COMPLETED, order, payment, T0);
        send(SagaTopology.PAYMENT_COMPLETED, order, payment, T0, eventId);

        assertEquals(Map.of("PAID@2025-12-04T10:00:00Z", 1L), countsOf(latest(counts)));
        assertEquals(Map.of("alice", "2500"), latest(spending));
    }

    @Test
    void a_record_that_does_not_decode_is_skipped_and_the_next_one_counts() {
        String order = UUID.randomUUID().toString();
        send(SagaTopology.PAYMENT_COMPLETED, order, "not json", T0);
        send(SagaTopology.PAYMENT_COMPLETED, order, "{\"customer_id\":\"alice\",\"amount\":-5}", T0);
        send(SagaTopology.PAYMENT_COMPLETED, order, paid(order, "alice", 300), T0);

        assertEquals(Map.of("PAID@2025-12-04T10:00:00Z", 1L), countsOf(latest(counts)));
        assertEquals(Map.of("alice", "300"), latest(spending));
    }

    @Test
    void changelog_topics_are_written_only_with_changelogs_on() {
        String order = UUID.randomUUID().toString();
        send(SagaTopology.PAYMENT_COMPLETED, order, paid(order, "alice", 300), T0);
        Set<String> withLogs = driver.producedTopicNames();
        assertTrue(withLogs.contains("saga-streams-test-customer-spending-changelog"), withLogs.toString());
        assertTrue(withLogs.contains("saga-streams-test-orders-per-status-per-minute-changelog"), withLogs.toString());
        assertTrue(withLogs.contains("saga-streams-test-seen-event-ids-changelog"), withLogs.toString());

        open(false);
        send(SagaTopology.PAYMENT_COMPLETED, order, paid(order, "alice", 300), T0);
        Set<String> without = driver.producedTopicNames();
        assertFalse(without.stream().anyMatch(t -> t.endsWith("-changelog")), without.toString());
        // The repartition topics stay: they are ordinary (cleanup.policy=delete) topics.
        assertTrue(without.contains("saga-streams-test-spending-by-customer-repartition"), without.toString());
        assertEquals(Map.of("alice", "300"), latest(spending));
    }
}
