//! Records a notification for each milestone of an order.

use saga_shared::consumer::{HandleError, Handler};
use saga_shared::envelope::Envelope;
use sqlx::PgConnection;

use crate::api::NotificationKind;
use uuid::Uuid;

/// The notification service's reaction to the saga's events.
#[derive(Debug, Default)]
pub struct Notifier;

saga_shared::consumes! {
    /// What the notification service tells the customer about: an order received, confirmed or
    /// cancelled.
    pub enum Consumed { OrderCreated, InventoryUpdated, OrderCancelled }
    ignores { PaymentCompleted, PaymentFailed, InventoryFailed, PaymentRefunded }
}

impl Handler for Notifier {
    type Consumed = Consumed;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
        event: Consumed,
    ) -> Result<(), HandleError> {
        let (order_id, customer, kind, message) = match event {
            Consumed::OrderCreated(e) => (
                e.order_id,
                Some(e.customer_id),
                NotificationKind::Received,
                format!("We received your order of {} {}.", e.total, e.currency),
            ),
            Consumed::InventoryUpdated(e) => (
                e.order_id,
                None,
                NotificationKind::Confirmed,
                "Your order is confirmed.".to_owned(),
            ),
            Consumed::OrderCancelled(e) => (
                e.order_id,
                Some(e.customer_id),
                NotificationKind::Cancelled,
                format!("Your order was cancelled: {}.", e.reason),
            ),
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
        .bind(envelope.id)
        .execute(&mut *conn)
        .await?;
        metrics::counter!("notifications_total", "kind" => kind.as_str()).increment(1);
        Ok(())
    }
}
