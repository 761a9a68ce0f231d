//! Reserves stock on `payment.completed`: every line or none.

use std::collections::BTreeMap;

use saga_shared::consumer::{HandleError, Handler};
use saga_shared::envelope::Envelope;
use saga_shared::events::{InventoryFailed, InventoryUpdated, PaymentCompleted};
use saga_shared::outbox;
use saga_shared::service::SagaService;
use sqlx::PgConnection;

use crate::InventoryService;

/// The inventory service's reaction to the saga's events.
#[derive(Debug, Default)]
pub struct InventorySaga;

saga_shared::consumes! {
    /// What the inventory service reacts to: a paid order's stock is reserved.
    pub enum Consumed { PaymentCompleted }
    ignores { OrderCreated, PaymentFailed, InventoryUpdated, InventoryFailed, PaymentRefunded, OrderCancelled }
}

impl Handler for InventorySaga {
    type Consumed = Consumed;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
        event: Consumed,
    ) -> Result<(), HandleError> {
        match event {
            Consumed::PaymentCompleted(paid) => reserve(conn, envelope, &paid).await,
        }
    }
}

async fn reserve(
    conn: &mut PgConnection,
    envelope: &Envelope,
    paid: &PaymentCompleted,
) -> Result<(), HandleError> {
    if paid.items.is_empty() {
        return Err(HandleError::Invalid(
            "payment.completed has no items".into(),
        ));
    }
    // Same SKU on two lines counts once; lock rows in SKU order so concurrent orders can't deadlock.
    // Each quantity is at most MAX_QUANTITY (checked at decode), so the sums cannot overflow.
    let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
    for item in &paid.items {
        *wanted.entry(item.sku.as_str()).or_default() += item.quantity.get();
    }
    let skus: Vec<&str> = wanted.keys().copied().collect();
    let quantities: Vec<i64> = wanted.values().copied().collect();
    // The same statement tells whether this order was reserved before (a payment.completed
    // re-sent under another event id): then there is nothing to do.
    let rows: Vec<(String, i64, bool)> = sqlx::query_as(
        "SELECT sku, stock, EXISTS (SELECT 1 FROM reservations WHERE order_id = $2) \
         FROM products WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
    )
    .bind(&skus)
    .bind(paid.order_id)
    .fetch_all(&mut *conn)
    .await?;
    if rows.iter().any(|(_, _, reserved)| *reserved) {
        return Ok(());
    }
    let stock: BTreeMap<String, i64> = rows.into_iter().map(|(sku, s, _)| (sku, s)).collect();
    let shortage = wanted
        .iter()
        .find_map(|(&sku, &quantity)| match stock.get(sku) {
            None => Some(format!("unknown product {sku}")),
            Some(&s) if s < quantity => Some(format!(
                "out of stock: {sku} (wanted {quantity}, available {s})"
            )),
            Some(_) => None,
        });
    if let Some(reason) = shortage {
        let failed = InventoryFailed {
            order_id: paid.order_id,
            payment_id: paid.payment_id,
            reason,
        };
        let env = envelope.next::<InventoryFailed>(&InventoryService::source());
        outbox::enqueue(conn, &env, &failed).await?;
        metrics::counter!("reservations_total", "outcome" => "failed").increment(1);
        return Ok(());
    }
    // Every line in one statement: move the units from stock to reserved, record the reservation.
    sqlx::query(
        "WITH wanted AS (SELECT * FROM unnest($2::text[], $3::bigint[]) AS w (sku, quantity)), \
              moved AS (UPDATE products p SET stock = p.stock - w.quantity, \
                               reserved = p.reserved + w.quantity, updated_at = now() \
                        FROM wanted w WHERE p.sku = w.sku) \
         INSERT INTO reservations (order_id, sku, quantity) SELECT $1, sku, quantity FROM wanted",
    )
    .bind(paid.order_id)
    .bind(&skus)
    .bind(&quantities)
    .execute(&mut *conn)
    .await?;
    let updated = InventoryUpdated {
        order_id: paid.order_id,
        items: paid.items.clone(),
    };
    let env = envelope.next::<InventoryUpdated>(&InventoryService::source());
    outbox::enqueue(conn, &env, &updated).await?;
    metrics::counter!("reservations_total", "outcome" => "reserved").increment(1);
    Ok(())
}
