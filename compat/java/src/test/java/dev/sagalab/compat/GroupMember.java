package dev.sagalab.compat;

import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;

/**
 * A consumer in a group, polling on a thread of its own (a KafkaConsumer belongs to one thread),
 * recording what the group gives it: its assignment, every rebalance callback, its records and
 * its generation. {@link #close()} closes the consumer as an application would.
 */
final class GroupMember implements AutoCloseable {
    final String name;
    /** Rebalance callbacks in order: "assigned [..]", "revoked [..]", "lost [..]". */
    final List<String> events = new CopyOnWriteArrayList<>();
    final List<ConsumerRecord<String, String>> records = new CopyOnWriteArrayList<>();
    private volatile Set<TopicPartition> assignment = Set.of();
    private volatile int generation = -1;
    private volatile boolean stop;
    private final AtomicReference<Throwable> failure = new AtomicReference<>();
    private final Thread thread;

    GroupMember(String name, String group, String topic, Map<String, Object> config) {
        this.name = name;
        KafkaConsumer<String, String> consumer = Kafka.consumer(group, config);
        thread = new Thread(() -> run(consumer, topic), "member-" + name);
        thread.setDaemon(true);
        thread.start();
    }

    private void run(KafkaConsumer<String, String> consumer, String topic) {
        try (consumer) {
            consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                    events.add("revoked " + sorted(partitions));
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                    events.add("assigned " + sorted(partitions));
                }

                @Override
                public void onPartitionsLost(Collection<TopicPartition> partitions) {
                    events.add("lost " + sorted(partitions));
                }
            });
            while (!stop) {
                consumer.poll(Duration.ofMillis(100)).forEach(records::add);
                // The generation first: whoever sees the new assignment sees its generation.
                generation = consumer.groupMetadata().generationId();
                assignment = Set.copyOf(consumer.assignment());
            }
        } catch (Throwable t) {
            failure.set(t);
        }
    }

    static Set<Integer> sorted(Collection<TopicPartition> partitions) {
        Set<Integer> s = new TreeSet<>();
        partitions.forEach(p -> s.add(p.partition()));
        return s;
    }

    /** The partition numbers currently assigned. */
    Set<Integer> partitions() {
        check();
        return sorted(assignment);
    }

    int generation() {
        check();
        return generation;
    }

    /** Fails the test if the polling thread died. */
    void check() {
        Throwable t = failure.get();
        if (t != null) {
            throw new AssertionError("consumer " + name + " failed: " + t, t);
        }
    }

    @Override
    public void close() {
        stop = true;
        try {
            thread.join(Kafka.TIMEOUT.toMillis());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (thread.isAlive()) {
            throw new AssertionError("consumer " + name + " did not close in time");
        }
        check();
    }
}
