package dev.sagalab.streams;

import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs {@link SagaTopology} against a broker:
 *
 * <pre>
 * java -cp 'target/classes:target/lib/*' dev.sagalab.streams.SagaStreamsApp \
 *     --bootstrap-servers 127.0.0.1:9092 [--application-id saga-streams] [--state-dir DIR] [--no-changelog]
 * </pre>
 *
 * Start it once the saga's topics exist (the lab creates them when it starts): Streams stops
 * with MissingSourceTopicException when an input topic is missing.
 */
public final class SagaStreamsApp {
    private static final Logger log = LoggerFactory.getLogger(SagaStreamsApp.class);
    private static final CloseOptions LEAVE_GROUP = CloseOptions
            .groupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP)
            .withTimeout(Duration.ofSeconds(10));

    private static final String USAGE = """
            usage: SagaStreamsApp --bootstrap-servers HOST:PORT [--application-id ID] [--state-dir DIR] [--no-changelog] [--config KEY=VALUE]...
              --bootstrap-servers  the broker (the lab's, or Apache Kafka)
              --application-id     Streams' application.id: consumer group, transactional id prefix and
                                   internal topic prefix (default saga-streams)
              --state-dir          where the local state stores live (default: Streams' own, under java.io.tmpdir)
              --no-changelog       materialise the stores without changelog topics, for a broker that does not
                                   serve cleanup.policy=compact; state is then local only (see README.md)
              --config KEY=VALUE   any other Streams or client setting (repeatable), e.g. commit.interval.ms=1000
            """;

    record Options(String bootstrapServers, String applicationId, String stateDir, boolean changelogs,
            Properties extra) {
        static Options parse(String[] args) {
            String bootstrap = null;
            String applicationId = "saga-streams";
            String stateDir = null;
            boolean changelogs = true;
            Properties extra = new Properties();
            for (int i = 0; i < args.length; i++) {
                switch (args[i]) {
                    case "--bootstrap-servers" -> bootstrap = value(args, ++i);
                    case "--application-id" -> applicationId = value(args, ++i);
                    case "--state-dir" -> stateDir = value(args, ++i);
                    case "--no-changelog" -> changelogs = false;
                    case "--config" -> {
                        String setting = value(args, ++i);
                        int eq = setting.indexOf('=');
                        if (eq <= 0) {
                            fail("--config takes KEY=VALUE, not " + setting);
                        }
                        extra.put(setting.substring(0, eq), setting.substring(eq + 1));
                    }
                    case "-h", "--help" -> {
                        System.out.print(USAGE);
                        System.exit(0);
                    }
                    default -> fail("unknown argument " + args[i]);
                }
            }
            if (bootstrap == null) {
                fail("--bootstrap-servers is required");
            }
            return new Options(bootstrap, applicationId, stateDir, changelogs, extra);
        }

        private static String value(String[] args, int i) {
            if (i >= args.length) {
                fail(args[i - 1] + " needs a value");
            }
            return args[i];
        }

        private static void fail(String message) {
            System.err.print("error: " + message + "\n" + USAGE);
            System.exit(2);
        }
    }

    static Properties config(Options options) {
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, options.applicationId());
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, options.bootstrapServers());
        if (options.stateDir() != null) {
            props.put(StreamsConfig.STATE_DIR_CONFIG, options.stateDir());
        }
        // Exactly-once (KIP-447): each stream thread has one transactional producer. Every
        // commit interval (100 ms under exactly-once) it commits one transaction holding its
        // output records, repartition records, changelog records and, through
        // sendOffsetsToTransaction, the input offsets it consumed. Its consumers read with
        // isolation.level=read_committed. A crash aborts the open transaction: the output, the
        // state changes and the input position all roll back together.
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.putAll(options.extra());
        return props;
    }

    /** Creates the two output topics (one partition each, so a reader sees updates in order). */
    static void createOutputTopics(Options options) throws InterruptedException, ExecutionException {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, options.bootstrapServers());
        try (Admin admin = Admin.create(props)) {
            for (String topic : List.of(SagaTopology.STATUS_COUNTS_TOPIC, SagaTopology.SPENDING_TOPIC)) {
                try {
                    admin.createTopics(List.of(new NewTopic(topic, Optional.of(1), Optional.empty())))
                            .all().get();
                } catch (ExecutionException e) {
                    if (!(e.getCause() instanceof TopicExistsException)) {
                        throw e;
                    }
                }
            }
        }
    }

    public static void main(String[] args) throws Exception {
        Options options = Options.parse(args);
        createOutputTopics(options);

        Topology topology = SagaTopology.build(options.changelogs());
        log.info("topology{}\n{}", options.changelogs() ? "" : " (no changelog topics)", topology.describe());

        KafkaStreams streams = new KafkaStreams(topology, config(options));
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setStateListener((to, from) -> {
            log.info("state from={} to={}", from, to);
            if (to == KafkaStreams.State.ERROR || to == KafkaStreams.State.NOT_RUNNING) {
                stopped.countDown();
            }
        });
        // A thread that fails stops the whole application, so a test or a person sees it at
        // once (the default would replace the thread and retry, possibly forever).
        streams.setUncaughtExceptionHandler(e -> {
            log.error("stream thread failed; stopping", e);
            return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        // On Ctrl-C or SIGTERM, leave the consumer group as we go. Streams' default close stays
        // in the group, so the tasks of a stopped instance would wait session.timeout.ms (45 s)
        // before another instance, or this one restarted, could take them over.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(LEAVE_GROUP);
            stopped.countDown();
        }));

        streams.start();
        stopped.await();
        boolean failed = streams.state() == KafkaStreams.State.ERROR;
        streams.close(LEAVE_GROUP);
        // Give the shutdown hook's close (if it runs) a moment; exit 1 if the app failed.
        TimeUnit.MILLISECONDS.sleep(50);
        if (failed) {
            System.exit(1);
        }
    }
}
