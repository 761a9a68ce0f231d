//! Records a notification for each milestone of an order.

use futures_util::future::BoxFuture;
use saga_shared::consumer::{HandleError, Handler, Incoming};
use saga_shared::events::{InventoryUpdated, OrderCancelled, OrderCreated, Topic};
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
            let (order_id, customer, kind, message) = match event.topic {
                Topic::OrderCreated => {
                    let e: OrderCreated = event.decode()?;
                    let msg = format!("We received your order of {} {}.", e.total, e.currency);
                    (
                        e.order_id,
                        Some(e.customer_id),
                        NotificationKind::Received,
                        msg,
                    )
                }
                Topic::InventoryUpdated => {
                    let e: InventoryUpdated = event.decode()?;
                    (
                        e.order_id,
                        None,
                        NotificationKind::Confirmed,
                        "Your order is confirmed.".to_owned(),
                    )
                }
                Topic::OrderCancelled => {
                    let e: OrderCancelled = event.decode()?;
                    let msg = format!("Your order was cancelled: {}.", e.reason);
                    (
                        e.order_id,
                        Some(e.customer_id),
                        NotificationKind::Cancelled,
                        msg,
                    )
                }
                other @ (Topic::PaymentCompleted
                | Topic::PaymentFailed
                | Topic::InventoryFailed
                | Topic::PaymentRefunded) => return Err(HandleError::not_consumed(other)),
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
