package dev.sagalab.compat;

import static org.junit.jupiter.api.Assertions.fail;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.function.Supplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/** What every test needs: the broker's address, clients configured for it, waiting with a deadline. */
final class Kafka {
    /** How long any one wait in a test may take before it fails. */
    static final Duration TIMEOUT = Duration.ofSeconds(30);

    private Kafka() {}

    /** The broker under test, from {@code -Dbootstrap.servers=HOST:PORT}. */
    static String bootstrap() {
        String servers = System.getProperty("bootstrap.servers");
        if (servers == null || servers.isBlank()) {
            throw new IllegalStateException(
                    "no broker to test: run with -Dbootstrap.servers=HOST:PORT "
                            + "(broker/tests/it/java_client.rs starts one and passes it)");
        }
        return servers;
    }

    /** A name no other test (or earlier run on the same broker) uses. */
    static String unique(String prefix) {
        return prefix + "-" + UUID.randomUUID();
    }

    static Admin admin() {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap());
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, (int) TIMEOUT.toMillis());
        return Admin.create(p);
    }

    static KafkaProducer<String, String> producer(Map<String, Object> extra) {
        Map<String, Object> p = new HashMap<>();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap());
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 2 * (int) TIMEOUT.toMillis());
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, TIMEOUT.toMillis());
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    /** A classic-protocol consumer reading from the earliest offset, committing only when told. */
    static KafkaConsumer<String, String> consumer(String group, Map<String, Object> extra) {
        Map<String, Object> p = new HashMap<>();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap());
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        }
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 10_000);
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 500);
        p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, 100);
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, (int) TIMEOUT.toMillis());
        p.putAll(extra);
        if ("consumer".equals(p.get(ConsumerConfig.GROUP_PROTOCOL_CONFIG))) {
            // KIP-848's protocol leaves these to the broker and refuses them.
            p.remove(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG);
            p.remove(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG);
        }
        return new KafkaConsumer<>(p);
    }

    static void createTopic(Admin admin, String name, int partitions) {
        get(admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1))).all());
    }

    /** The future's value; its failure fails the test with the cause. */
    static <T> T get(KafkaFuture<T> future) {
        try {
            return future.get(TIMEOUT.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            throw new AssertionError("request failed: " + e.getCause(), e.getCause());
        } catch (Exception e) {
            throw new AssertionError("request did not finish: " + e, e);
        }
    }

    /** The exception the future fails with; fails the test if it succeeds. */
    static Throwable failure(KafkaFuture<?> future) {
        try {
            future.get(TIMEOUT.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            return e.getCause();
        } catch (Exception e) {
            throw new AssertionError("request did not finish: " + e, e);
        }
        return fail("expected the request to fail, it succeeded");
    }

    /** Polls until {@code n} records have arrived; fails with what came if they don't in time. */
    static List<ConsumerRecord<String, String>> poll(KafkaConsumer<String, String> consumer, int n) {
        List<ConsumerRecord<String, String>> out = new ArrayList<>();
        long deadline = System.nanoTime() + TIMEOUT.toNanos();
        while (out.size() < n) {
            if (System.nanoTime() > deadline) {
                fail("timed out with " + out.size() + " of " + n + " records: " + out);
            }
            consumer.poll(Duration.ofMillis(100)).forEach(out::add);
        }
        return out;
    }

    /** Polls {@code check} until it returns a value, failing the test after {@link #TIMEOUT}. */
    static <T> T eventually(String what, Supplier<Optional<T>> check) {
        long deadline = System.nanoTime() + TIMEOUT.toNanos();
        while (true) {
            Optional<T> v = check.get();
            if (v.isPresent()) {
                return v.get();
            }
            if (System.nanoTime() > deadline) {
                return fail("timed out waiting for: " + what);
            }
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return fail("interrupted waiting for: " + what);
            }
        }
    }

    /** Waits until {@code condition} holds. */
    static void until(String what, Supplier<Boolean> condition) {
        eventually(what, () -> condition.get() ? Optional.of(true) : Optional.empty());
    }

    /** True if {@code t} or one of its causes is of one of {@code types}. */
    @SafeVarargs
    static boolean causedBy(Throwable t, Class<? extends Throwable>... types) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            for (Class<? extends Throwable> type : types) {
                if (type.isInstance(c)) {
                    return true;
                }
            }
        }
        return false;
    }
}
