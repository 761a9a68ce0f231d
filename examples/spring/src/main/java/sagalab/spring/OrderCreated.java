package sagalab.spring;

import java.util.List;
import java.util.UUID;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonProperty;

/**
 * The JSON payload of an {@code order.created} event, as the lab's order service writes it
 * (docs/services.md; the Rust type is {@code OrderCreated} in shared/src/events.rs):
 *
 * <pre>
 * {"order_id":"01a2...","customer_id":"alice",
 *  "items":[{"sku":"LATTE","quantity":2,"unit_price":5000}],"total":10000,"currency":"KRW"}
 * </pre>
 *
 * The event's metadata (its id, type, source, time) is not in the payload: it travels in the
 * record's CloudEvents headers ({@code ce_id}, {@code ce_type}, ...), read by the listener.
 * Unknown fields are ignored, so a producer may add one without breaking this consumer.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record OrderCreated(
        @JsonProperty("order_id") UUID orderId,
        @JsonProperty("customer_id") String customerId,
        List<LineItem> items,
        long total,
        String currency) {

    /** One line of the order. Amounts are whole won: KRW has no minor unit. */
    @JsonIgnoreProperties(ignoreUnknown = true)
    public record LineItem(String sku, long quantity, @JsonProperty("unit_price") long unitPrice) {}

    /**
     * The checks that JSON alone cannot make, the way the lab's payment service makes them: every
     * field is there and the total is what the lines add up to. Throws {@link InvalidOrderException}.
     */
    public void validate() {
        if (orderId == null || customerId == null || customerId.isBlank() || currency == null) {
            throw new InvalidOrderException("order_id, customer_id and currency are required");
        }
        if (items == null || items.isEmpty()) {
            throw new InvalidOrderException("order " + orderId + " has no items");
        }
        long sum = items.stream().mapToLong(i -> i.quantity() * i.unitPrice()).sum();
        if (sum != total) {
            throw new InvalidOrderException(
                    "order " + orderId + ": total " + total + " is not the lines' sum " + sum);
        }
    }

    /** A record that was valid JSON but not a valid order. */
    public static class InvalidOrderException extends RuntimeException {
        public InvalidOrderException(String message) {
            super(message);
        }
    }
}
