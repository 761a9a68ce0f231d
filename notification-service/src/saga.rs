//! Records a notification for each milestone of an order.

use futures_util::future::BoxFuture;
use saga_shared::consumer::{HandleError, Handler, Incoming};
use saga_shared::events::{SagaEvent, Topic};
use sqlx::PgConnection;

use crate::api::NotificationKind;
use uuid::Uuid;

/// The notification service's reaction to the saga's events.
#[derive(Debug, Default)]
pub struct Notifier;

impl Handler for Notifier {
    fn topics(&self) -> &'static [Topic] {
        &[
            Topic::OrderCreated,
            Topic::InventoryUpdated,
            Topic::OrderCancelled,
        ]
    }

    fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let (order_id, customer, kind, message) = match &event.event {
                SagaEvent::OrderCreated(e) => (
                    e.order_id,
                    Some(&e.customer_id),
                    NotificationKind::Received,
                    format!("We received your order of {} {}.", e.total, e.currency),
                ),
                SagaEvent::InventoryUpdated(e) => (
                    e.order_id,
                    None,
                    NotificationKind::Confirmed,
                    "Your order is confirmed.".to_owned(),
                ),
                SagaEvent::OrderCancelled(e) => (
                    e.order_id,
                    Some(&e.customer_id),
                    NotificationKind::Cancelled,
                    format!("Your order was cancelled: {}.", e.reason),
                ),
                SagaEvent::PaymentCompleted(_)
                | SagaEvent::PaymentFailed(_)
                | SagaEvent::InventoryFailed(_)
                | SagaEvent::PaymentRefunded(_) => {
                    return Err(HandleError::not_consumed(event.topic()));
                }
            };
            sqlx::query(
                "INSERT INTO notifications (id, order_id, customer_id, kind, message, event_id) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(Uuid::now_v7())
            .bind(order_id)
            .bind(customer)
            .bind(kind.as_str())
            .bind(message)
            .bind(event.envelope.id)
            .execute(&mut *conn)
            .await?;
            metrics::counter!("notifications_total", "kind" => kind.as_str()).increment(1);
            Ok(())
        })
    }
}
