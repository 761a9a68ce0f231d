package dev.sagalab.streams;

import java.nio.charset.StandardCharsets;
import java.time.OffsetDateTime;
import java.time.format.DateTimeParseException;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.streams.processor.TimestampExtractor;

/**
 * Event time for Streams' windows: the CloudEvents {@code ce_time} header (RFC 3339, set when the
 * service committed the event), not the record's timestamp (set when the outbox relay published
 * it, which can be much later if the broker was down). Falls back to the record's timestamp when
 * the header is missing or unreadable.
 */
public final class CeTimeExtractor implements TimestampExtractor {
    @Override
    public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
        Header header = record.headers().lastHeader("ce_time");
        if (header != null && header.value() != null) {
            try {
                String time = new String(header.value(), StandardCharsets.UTF_8);
                return OffsetDateTime.parse(time).toInstant().toEpochMilli();
            } catch (DateTimeParseException e) {
                // fall through to the record's own timestamp
            }
        }
        return record.timestamp() >= 0 ? record.timestamp() : partitionTime;
    }
}
