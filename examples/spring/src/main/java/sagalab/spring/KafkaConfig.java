package sagalab.spring;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.listener.DeadLetterPublishingRecoverer;
import org.springframework.kafka.listener.DefaultErrorHandler;
import org.springframework.kafka.listener.RetryListener;
import org.springframework.kafka.support.converter.JacksonJsonMessageConverter;
import org.springframework.kafka.support.converter.RecordMessageConverter;
import org.springframework.util.backoff.FixedBackOff;

/**
 * The two beans Spring Boot wires into its auto-configured listener container factory: how a
 * record's value becomes the listener's parameter, and what happens when the listener fails.
 */
@Configuration
public class KafkaConfig {

    private static final Logger log = LoggerFactory.getLogger("sagalab.spring.DeadLetters");

    /** Retry delay and count: 3 attempts in all, 1 s apart, then the dead-letter topic. */
    static final long BACKOFF_MS = 1000;
    static final long RETRIES = 2;

    /**
     * JSON to record, in the listener rather than in the Kafka deserializer. The consumer reads
     * plain bytes ({@code ByteArrayDeserializer}), which never fails; the conversion happens when the
     * listener is called, so a record that is not an order's JSON is an exception like any other,
     * seen by the error handler below, and the dead-letter topic receives its original bytes.
     *
     * <p>(The other common setup, {@code ErrorHandlingDeserializer} around a JSON deserializer, ends
     * the same way, but its dead-letter producer then needs a serializer for bytes and one for
     * objects.)
     */
    @Bean
    RecordMessageConverter messageConverter() {
        return new FramedJsonMessageConverter();
    }

    /**
     * Jackson's converter, reading past Confluent's wire format: the lab's services write each
     * value as a zero byte, the id of its schema in the schema registry (4 bytes, big endian),
     * then the JSON. (Confluent's {@code KafkaJsonSchemaDeserializer} reads it the same way and
     * fetches the schema; it is not on Maven Central, so this example skips the five bytes.) A
     * value that does not start with the zero byte is taken as plain JSON.
     */
    static class FramedJsonMessageConverter extends JacksonJsonMessageConverter {
        @Override
        protected Object extractAndConvertValue(ConsumerRecord<?, ?> record, java.lang.reflect.Type type) {
            if (record.value() instanceof byte[] bytes && bytes.length >= 5 && bytes[0] == 0) {
                var payload = java.util.Arrays.copyOfRange(bytes, 5, bytes.length);
                var unframed = new ConsumerRecord<>(record.topic(), record.partition(), record.offset(),
                        record.key(), payload);
                return super.extractAndConvertValue(unframed, type);
            }
            return super.extractAndConvertValue(record, type);
        }
    }

    /**
     * Retries, then the dead-letter topic (DLT).
     *
     * <p>{@link DefaultErrorHandler} runs when the listener throws. It calls the listener again with
     * the same record ({@link FixedBackOff}: {@value #RETRIES} retries, {@value #BACKOFF_MS} ms apart;
     * the consumer stays on that record, so the partition does not move on), and once the retries are
     * spent it hands the record to the recoverer, then commits its offset and goes on with the next.
     *
     * <p>Some failures will never pass, so Spring does not retry them: a value that cannot be
     * converted ({@code MessageConversionException}) or deserialised ({@code DeserializationException})
     * goes to the recoverer at the first failure. Anything else, here an
     * {@link OrderCreated.InvalidOrderException}, is retried. (A total that does not add up will not
     * add up on a retry either: a real app would add
     * {@code handler.addNotRetryableExceptions(InvalidOrderException.class)}; it stays retryable
     * here so you can watch the retries.)
     *
     * <p>{@link DeadLetterPublishingRecoverer} publishes the failed record, with its key, value and
     * headers, to {@code <topic>-dlt} (Spring Kafka 4's default name: {@code order.created-dlt}),
     * in the same partition number if the DLT has it (any partition otherwise), and adds
     * {@code kafka_dlt-*} headers saying where it came from and why (original topic, partition,
     * offset, consumer group, exception class and message). It waits for the broker's
     * acknowledgement: if the DLT publish fails, the record is not skipped but tried again.
     */
    @Bean
    DefaultErrorHandler errorHandler(KafkaTemplate<Object, Object> template) {
        var recoverer = new DeadLetterPublishingRecoverer(template);
        var handler = new DefaultErrorHandler(recoverer, new FixedBackOff(BACKOFF_MS, RETRIES));
        handler.setRetryListeners(new LoggingRetryListener());
        return handler;
    }

    /** One log line per failed attempt, and one when a record went to the DLT. */
    static class LoggingRetryListener implements RetryListener {

        @Override
        public void failedDelivery(ConsumerRecord<?, ?> record, Exception ex, int deliveryAttempt) {
            log.warn("attempt {} failed for {}: {}", deliveryAttempt, where(record), reason(ex));
        }

        @Override
        public void recovered(ConsumerRecord<?, ?> record, Exception ex) {
            // "dead-lettered <topic>[<partition>]@<offset> to <dlt>" is what a test can wait for.
            log.warn("dead-lettered {} to {}-dlt: {}", where(record), record.topic(), reason(ex));
        }

        @Override
        public void recoveryFailed(ConsumerRecord<?, ?> record, Exception original, Exception failure) {
            log.error("could not dead-letter {} (it will be tried again): {}", where(record), reason(failure));
        }

        private static String where(ConsumerRecord<?, ?> record) {
            return record.topic() + "[" + record.partition() + "]@" + record.offset();
        }

        /** The innermost cause, on one line: the listener's exception wraps the real one. */
        private static String reason(Throwable ex) {
            Throwable root = ex;
            while (root.getCause() != null && root.getCause() != root) {
                root = root.getCause();
            }
            String message = String.valueOf(root.getMessage()).lines().findFirst().orElse("");
            if (message.length() > 200) {
                message = message.substring(0, 200) + "...";
            }
            return root.getClass().getSimpleName() + ": " + message;
        }
    }
}
