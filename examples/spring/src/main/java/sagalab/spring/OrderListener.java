package sagalab.spring;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.support.KafkaHeaders;
import org.springframework.messaging.handler.annotation.Header;
import org.springframework.stereotype.Component;

/**
 * Reads every {@code order.created} event of the lab, in its own consumer group.
 *
 * <p>A consumer group is one application's view of a topic: the lab's payment and notification
 * services read {@code order.created} in their groups ({@code payment-service},
 * {@code notification-service}), this app in {@code spring-notes} (application.yml,
 * {@code spring.kafka.consumer.group-id}). Each group gets every record and keeps its own committed
 * offsets, so this app neither takes records from the services nor slows them down.
 */
@Component
public class OrderListener {

    private static final Logger log = LoggerFactory.getLogger(OrderListener.class);

    /**
     * Called once per record. The value arrives as bytes (application.yml) and Spring's
     * {@code JacksonJsonMessageConverter} (see {@link KafkaConfig}) turns it into an
     * {@link OrderCreated} before this method runs: the parameter's type says what to build.
     *
     * <p>The CloudEvents headers are ordinary Kafka record headers; {@code @Header} reads one by
     * name (their bytes become a String). They are optional here, so a record without them is judged
     * by its payload alone.
     *
     * <p>Spring commits the offsets after the records of a poll have been handled (or sent to the
     * dead-letter topic): an exception thrown here means "not done", and the error handler decides
     * what happens next (retry, then dead-letter topic; see {@link KafkaConfig}).
     */
    @KafkaListener(topics = "order.created")
    public void onOrderCreated(
            OrderCreated order,
            @Header(name = "ce_id", required = false) String ceId,
            @Header(name = "ce_type", required = false) String ceType,
            @Header(KafkaHeaders.RECEIVED_TOPIC) String topic,
            @Header(KafkaHeaders.RECEIVED_PARTITION) int partition,
            @Header(KafkaHeaders.OFFSET) long offset) {
        order.validate();
        // One line per order; "consumed order <order_id>" is what a test can wait for.
        log.info("consumed order {} customer={} amount={} {} items={} ce_id={} ce_type={} from {}[{}]@{}",
                order.orderId(), order.customerId(), order.total(), order.currency(),
                order.items().size(), ceId, ceType, topic, partition, offset);
    }
}
