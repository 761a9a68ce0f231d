//! Moves orders through the saga as payment and inventory events arrive.

use saga_shared::consumer::{HandleError, Handler};
use saga_shared::domain::CustomerId;
use saga_shared::envelope::Envelope;
use saga_shared::events::{OrderCancelled, topics};
use saga_shared::outbox;
use saga_shared::service::SagaService;
use sqlx::PgConnection;

use crate::OrderService;
use crate::domain::OrderStatus;

/// The order service's reaction to the saga's events.
#[derive(Debug, Default)]
pub struct OrderSaga;

saga_shared::consumes! {
    /// What the order service follows: every step of its orders' sagas after their creation.
    pub enum Consumed { PaymentCompleted, PaymentFailed, InventoryUpdated, InventoryFailed, PaymentRefunded }
    ignores { OrderCreated, OrderCancelled }
}

impl Handler for OrderSaga {
    type Consumed = Consumed;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
        event: Consumed,
    ) -> Result<(), HandleError> {
        apply(conn, envelope, event).await
    }
}

async fn apply(
    conn: &mut PgConnection,
    envelope: &Envelope,
    event: Consumed,
) -> Result<(), HandleError> {
    let topic = event.topic();
    // `detail` goes to the timeline; `cause` is why the order fails, if the event says so.
    let (detail, cause): (String, Option<String>) = match event {
        Consumed::PaymentCompleted(e) => (format!("charged {} {}", e.amount, e.currency), None),
        Consumed::PaymentFailed(e) => (e.reason.clone(), Some(e.reason)),
        Consumed::InventoryUpdated(_) => ("stock reserved".into(), None),
        Consumed::InventoryFailed(e) => (e.reason.clone(), Some(e.reason)),
        Consumed::PaymentRefunded(e) => (format!("refunded {}", e.amount), Some(e.reason)),
    };
    let order_id = envelope.correlation_id;
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
    let next = current.on_event(topic);
    let after = next.unwrap_or(current);
    // The order keeps the first cause it learns (events may arrive in any order, but every
    // failure event of one saga names the same root cause).
    let new_reason = match (next, &reason) {
        (Some(OrderStatus::Cancelled | OrderStatus::Compensating), None) => cause,
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
    .bind(topic.name())
    .bind(envelope.id)
    .bind(envelope.time)
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
        let envelope = envelope.next::<OrderCancelled>(&OrderService::source());
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
