package dev.sagalab.streams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.state.KeyValueBytesStoreSupplier;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.StoreBuilder;
import org.apache.kafka.streams.state.Stores;
import org.apache.kafka.streams.state.WindowStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The topology: what the application computes from the saga's topics.
 *
 * <pre>
 *  order.created ─┐
 *  payment.*     ─┼─▶ decode + drop duplicates ─┬─▶ status ─▶ repartition ─▶ count per 1-min window ─▶ streams.order-status-counts
 *  inventory.*   ─┤   (store seen-event-ids)    │
 *  order.cancelled┘                             └─▶ ±amount ─▶ repartition ─▶ sum per customer (KTable) ─▶ streams.customer-spending
 * </pre>
 *
 * Every saga record is keyed by its order id and carries CloudEvents headers ({@code ce_id},
 * {@code ce_time}, ...; docs/services.md), with a JSON payload (shared/src/events.rs).
 */
public final class SagaTopology {
    private static final Logger log = LoggerFactory.getLogger(SagaTopology.class);
    private static final ObjectMapper JSON = new ObjectMapper();

    /** The saga's event topics (shared/src/events.rs, {@code saga_contract!}). */
    public static final String ORDER_CREATED = "order.created";
    public static final String PAYMENT_COMPLETED = "payment.completed";
    public static final String PAYMENT_FAILED = "payment.failed";
    public static final String INVENTORY_UPDATED = "inventory.updated";
    public static final String INVENTORY_FAILED = "inventory.failed";
    public static final String PAYMENT_REFUNDED = "payment.refunded";
    public static final String ORDER_CANCELLED = "order.cancelled";
    public static final List<String> INPUT_TOPICS = List.of(ORDER_CREATED, PAYMENT_COMPLETED,
            PAYMENT_FAILED, INVENTORY_UPDATED, INVENTORY_FAILED, PAYMENT_REFUNDED, ORDER_CANCELLED);

    /**
     * The order status each event moves an order into (the order service's state machine,
     * docs/services.md "The saga in the order service"). Each order enters each status at most
     * once, so counting these events counts orders. {@code payment.failed} and
     * {@code payment.refunded} are left out: the order service answers each with one
     * {@code order.cancelled}, which is the event counted as CANCELLED.
     */
    public static final Map<String, String> STATUS_OF_TOPIC = Map.of(
            ORDER_CREATED, "PENDING",
            PAYMENT_COMPLETED, "PAID",
            INVENTORY_UPDATED, "CONFIRMED",
            INVENTORY_FAILED, "COMPENSATING",
            ORDER_CANCELLED, "CANCELLED");

    /** Output: key {@code STATUS@window-start}, value JSON {status, window_start, window_end, count}. */
    public static final String STATUS_COUNTS_TOPIC = "streams.order-status-counts";
    /** Output: key customer id, value the customer's net spending in won, as a decimal string. */
    public static final String SPENDING_TOPIC = "streams.customer-spending";

    /** Store names; the internal topics are {@code <application.id>-<name>-changelog|-repartition}. */
    public static final String SEEN_STORE = "seen-event-ids";
    public static final String STATUS_COUNTS_STORE = "orders-per-status-per-minute";
    public static final String SPENDING_STORE = "customer-spending";
    public static final String BY_STATUS = "orders-by-status";
    public static final String BY_CUSTOMER = "spending-by-customer";

    public static final Duration WINDOW = Duration.ofMinutes(1);
    /** How late (in event time) an event may arrive and still be counted in its minute. */
    public static final Duration GRACE = Duration.ofMinutes(10);

    private SagaTopology() {}

    /**
     * What one saga event means to this application: the status it moves its order into (or
     * null) and, for money movements, the customer and the signed amount.
     */
    record Step(String status, String customerId, long spendingDelta) {}

    /**
     * Builds the topology.
     *
     * @param changelogs false materialises every store with logging disabled: no
     *     {@code -changelog} topics (which need {@code cleanup.policy=compact}), so the state
     *     lives only in the local state directory and is not restored after a crash.
     */
    public static Topology build(boolean changelogs) {
        StreamsBuilder builder = new StreamsBuilder();

        // 1. Read every saga topic as one stream. Keys (order ids) are strings, values bytes
        //    (JSON, framed with its schema id when the services use a schema registry: payload);
        //    the event time is the envelope's ce_time (CeTimeExtractor), not the produce time.
        //    A processor that keeps a store needs its input topics co-partitioned: the saga's
        //    topics all have the same partition count and are all keyed by the order id.
        KeyValueBytesStoreSupplier seenSupplier = Stores.persistentKeyValueStore(SEEN_STORE);
        StoreBuilder<KeyValueStore<String, Long>> seen =
                Stores.keyValueStoreBuilder(seenSupplier, Serdes.String(), Serdes.Long());
        if (!changelogs) {
            seen = seen.withLoggingDisabled();
        }
        builder.addStateStore(seen);
        var steps = builder
                .stream(INPUT_TOPICS, Consumed.with(Serdes.String(), Serdes.ByteArray())
                        .withTimestampExtractor(new CeTimeExtractor())
                        .withName("saga-events"))
                // 2. Decode, and drop an event seen before (same ce_id): the outbox delivers at
                //    least once and a DLQ redrive repeats a record. exactly_once_v2 makes *our*
                //    reads, state and writes atomic; it cannot know that two input records are
                //    one event. The store of seen ids commits in the same transaction.
                .processValues(DecodeOnce::new, Named.as("decode-once"), SEEN_STORE)
                .filter((orderId, step) -> step != null);

        // 3. Orders per status per minute: re-key by status (a repartition topic, so that all
        //    counts of one status meet in one task), then a tumbling one-minute windowed count.
        Materialized<String, Long, WindowStore<Bytes, byte[]>> countStore =
                Materialized.<String, Long, WindowStore<Bytes, byte[]>>as(STATUS_COUNTS_STORE)
                        .withKeySerde(Serdes.String())
                        .withValueSerde(Serdes.Long());
        if (!changelogs) {
            countStore = countStore.withLoggingDisabled();
        }
        steps.filter((orderId, step) -> step.status() != null)
                .map((orderId, step) -> KeyValue.pair(step.status(), orderId))
                .groupByKey(Grouped.with(BY_STATUS, Serdes.String(), Serdes.String()))
                .windowedBy(TimeWindows.ofSizeAndGrace(WINDOW, GRACE))
                .count(countStore)
                .toStream()
                .map((window, count) -> KeyValue.pair(countKey(window), countJson(window, count)))
                .peek((key, json) -> log.info("orders status={} window={} count={}",
                        key.substring(0, key.indexOf('@')), key.substring(key.indexOf('@') + 1),
                        json.get("count")))
                .mapValues(JsonNode::toString)
                .to(STATUS_COUNTS_TOPIC, Produced.with(Serdes.String(), Serdes.String()));

        // 4. Each customer's net spending: +amount on payment.completed, -amount on
        //    payment.refunded, re-keyed by customer (another repartition topic) and summed into
        //    a KTable. Its changelog is the table's durable copy; every update also goes to the
        //    output topic and to the log, one greppable line per update.
        Materialized<String, Long, KeyValueStore<Bytes, byte[]>> spendingStore =
                Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as(SPENDING_STORE)
                        .withKeySerde(Serdes.String())
                        .withValueSerde(Serdes.Long());
        if (!changelogs) {
            spendingStore = spendingStore.withLoggingDisabled();
        }
        KTable<String, Long> spending = steps
                .filter((orderId, step) -> step.customerId() != null)
                .map((orderId, step) -> KeyValue.pair(step.customerId(), step.spendingDelta()))
                .groupByKey(Grouped.with(BY_CUSTOMER, Serdes.String(), Serdes.Long()))
                .reduce(Long::sum, spendingStore);
        spending.toStream()
                .peek((customer, total) -> log.info("spending customer={} total={}", customer, total))
                .mapValues(total -> Long.toString(total))
                .to(SPENDING_TOPIC, Produced.with(Serdes.String(), Serdes.String()));

        return builder.build();
    }

    static String countKey(Windowed<String> window) {
        return window.key() + "@" + Instant.ofEpochMilli(window.window().start());
    }

    static ObjectNode countJson(Windowed<String> window, long count) {
        ObjectNode json = JSON.createObjectNode();
        json.put("status", window.key());
        json.put("window_start", Instant.ofEpochMilli(window.window().start()).toString());
        json.put("window_end", Instant.ofEpochMilli(window.window().end()).toString());
        json.put("count", count);
        return json;
    }

    /**
     * The JSON of a record's value. The lab's services write Confluent's wire format when they
     * use a schema registry: a zero byte, the schema's id (4 bytes, big endian), then the JSON
     * (Confluent's own deserializers read it the same way); a value that starts otherwise is the
     * JSON itself.
     */
    static byte[] payload(byte[] value) {
        if (value.length >= 5 && value[0] == 0) {
            return java.util.Arrays.copyOfRange(value, 5, value.length);
        }
        return value;
    }

    /** The Step of one event, or null for an event that counts nowhere. Throws on bad JSON. */
    static Step decode(String topic, byte[] value) throws java.io.IOException {
        JsonNode event = JSON.readTree(payload(value));
        if (event == null || !event.isObject()) {
            throw new java.io.IOException("not a JSON object");
        }
        String status = STATUS_OF_TOPIC.get(topic);
        return switch (topic) {
            case PAYMENT_COMPLETED -> new Step(status, text(event, "customer_id"), amount(event));
            case PAYMENT_REFUNDED -> new Step(status, text(event, "customer_id"), -amount(event));
            default -> status == null ? null : new Step(status, null, 0);
        };
    }

    private static String text(JsonNode event, String field) throws java.io.IOException {
        JsonNode node = event.get(field);
        if (node == null || !node.isTextual() || node.asText().isEmpty()) {
            throw new java.io.IOException("no " + field);
        }
        return node.asText();
    }

    private static long amount(JsonNode event) throws java.io.IOException {
        JsonNode node = event.get("amount");
        if (node == null || !node.canConvertToLong() || !node.isIntegralNumber() || node.asLong() <= 0) {
            throw new java.io.IOException("no positive integer amount");
        }
        return node.asLong();
    }

    /**
     * Decodes each record by its topic and forwards it once per {@code ce_id}. A record that does
     * not decode (a poison record the services dead-lettered) is logged and skipped: one bad
     * record must not stop the application (Streams' default for a failing processor is to
     * stop the thread).
     */
    static final class DecodeOnce implements FixedKeyProcessor<String, byte[], Step> {
        private FixedKeyProcessorContext<String, Step> context;
        private KeyValueStore<String, Long> seen;

        @Override
        public void init(FixedKeyProcessorContext<String, Step> context) {
            this.context = context;
            this.seen = context.getStateStore(SEEN_STORE);
        }

        @Override
        public void process(FixedKeyRecord<String, byte[]> record) {
            String topic = context.recordMetadata().map(m -> m.topic()).orElse("");
            String eventId = header(record, "ce_id");
            if (eventId != null && seen.get(eventId) != null) {
                log.info("duplicate event_id={} topic={} skipped", eventId, topic);
                return;
            }
            Step step;
            try {
                step = decode(topic, record.value() == null ? new byte[0] : record.value());
            } catch (java.io.IOException e) {
                log.warn("undecodable record topic={} key={} skipped: {}", topic, record.key(), e.getMessage());
                return;
            }
            if (eventId != null) {
                seen.put(eventId, record.timestamp());
            }
            context.forward(record.withValue(step));
        }

        private static String header(FixedKeyRecord<String, byte[]> record, String name) {
            Header header = record.headers().lastHeader(name);
            return header == null || header.value() == null
                    ? null
                    : new String(header.value(), StandardCharsets.UTF_8);
        }
    }
}
