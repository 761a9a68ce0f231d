//! Moves orders through the saga as payment and inventory events arrive.

use futures_util::future::BoxFuture;
use saga_shared::consumer::{HandleError, Handler, Incoming};
use saga_shared::domain::CustomerId;
use saga_shared::events::{OrderCancelled, SagaEvent, Topic, topics};
use saga_shared::outbox;
use sqlx::PgConnection;

use crate::SOURCE;
use crate::domain::OrderStatus;

/// The order service's reaction to the saga's events.
#[derive(Debug, Default)]
pub struct OrderSaga;

impl Handler for OrderSaga {
    fn topics(&self) -> &'static [Topic] {
        &[
            Topic::PaymentCompleted,
            Topic::PaymentFailed,
            Topic::InventoryUpdated,
            Topic::InventoryFailed,
            Topic::PaymentRefunded,
        ]
    }

    fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(apply(conn, event))
    }
}

async fn apply(conn: &mut PgConnection, event: &Incoming) -> Result<(), HandleError> {
    // The runner decoded the payload by its topic. `detail` goes to the timeline;
    // `cause` is why the order fails, if the event says so.
    let (detail, cause): (String, Option<&str>) = match &event.event {
        SagaEvent::PaymentCompleted(e) => (format!("charged {} {}", e.amount, e.currency), None),
        SagaEvent::PaymentFailed(e) => (e.reason.clone(), Some(&e.reason)),
        SagaEvent::InventoryUpdated(_) => ("stock reserved".into(), None),
        SagaEvent::InventoryFailed(e) => (e.reason.clone(), Some(&e.reason)),
        SagaEvent::PaymentRefunded(e) => (format!("refunded {}", e.amount), Some(&e.reason)),
        SagaEvent::OrderCreated(_) | SagaEvent::OrderCancelled(_) => {
            return Err(HandleError::not_consumed(event.topic()));
        }
    };
    let order_id = event.envelope.correlation_id;
    let row: Option<(String, CustomerId, Option<String>)> =
        sqlx::query_as("SELECT status, customer_id, reason FROM orders WHERE id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((status, customer_id, reason)) = row else {
        return Err(HandleError::Invalid(format!("unknown order {order_id}")));
    };
    let current = OrderStatus::parse(&status)
        .ok_or_else(|| HandleError::Transient(format!("order {order_id} has status {status}")))?;
    let next = current.on_event(event.topic());
    let after = next.unwrap_or(current);
    // The order keeps the first cause it learns (events may arrive in any order, but every
    // failure event of one saga names the same root cause).
    let new_reason = match (next, &reason) {
        (Some(OrderStatus::Cancelled | OrderStatus::Compensating), None) => {
            cause.map(str::to_owned)
        }
        (_, r) => r.clone(),
    };
    // Timeline entry and status change in one statement.
    sqlx::query(
        "WITH step AS (INSERT INTO order_timeline \
                         (order_id, event_type, event_id, occurred_at, status_after, detail) \
                       VALUES ($1, $2, $3, $4, $5, $6)) \
         UPDATE orders SET status = $5, reason = $7, updated_at = now() \
         WHERE id = $1 AND $8",
    )
    .bind(order_id)
    .bind(event.topic().name())
    .bind(event.envelope.id)
    .bind(event.envelope.time)
    .bind(after.as_str())
    .bind(&detail)
    .bind(&new_reason)
    .bind(next.is_some())
    .execute(&mut *conn)
    .await?;
    let Some(next) = next else { return Ok(()) };
    let reason = new_reason;
    metrics::counter!("orders_transitions_total", "to" => next.as_str()).increment(1);
    if next == OrderStatus::Cancelled {
        let cancelled = OrderCancelled {
            order_id,
            customer_id,
            reason: reason.unwrap_or_else(|| "cancelled".into()),
        };
        let envelope = event.envelope.next::<OrderCancelled>(SOURCE);
        outbox::enqueue(conn, &envelope, &cancelled).await?;
        sqlx::query(
            "INSERT INTO order_timeline (order_id, event_type, event_id, occurred_at, status_after, detail) \
             VALUES ($1, $2, $3, $4, 'CANCELLED', $5)",
        )
        .bind(order_id)
        .bind(topics::ORDER_CANCELLED)
        .bind(envelope.id)
        .bind(envelope.time)
        .bind(&cancelled.reason)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
