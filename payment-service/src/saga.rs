//! Charges wallets on `order.created` and refunds them on `inventory.failed`.

use saga_shared::consumer::{HandleError, Handler};
use saga_shared::domain::{CustomerId, Won};
use saga_shared::envelope::Envelope;
use saga_shared::events::{
    CURRENCY, InventoryFailed, OrderCreated, PaymentCompleted, PaymentFailed, PaymentRefunded,
    lines_total,
};
use saga_shared::outbox;
use saga_shared::service::SagaService;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::PaymentService;
use crate::api::PaymentStatus;

/// The payment service's reaction to the saga's events.
#[derive(Debug, Default)]
pub struct PaymentSaga;

saga_shared::consumes! {
    /// What the payment service reacts to: a new order is charged, a failed reservation refunded.
    pub enum Consumed { OrderCreated, InventoryFailed }
    ignores { PaymentCompleted, PaymentFailed, InventoryUpdated, PaymentRefunded, OrderCancelled }
}

impl Handler for PaymentSaga {
    type Consumed = Consumed;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
        event: Consumed,
    ) -> Result<(), HandleError> {
        match event {
            Consumed::OrderCreated(order) => charge(conn, envelope, &order).await,
            Consumed::InventoryFailed(failed) => refund(conn, envelope, &failed).await,
        }
    }
}

async fn charge(
    conn: &mut PgConnection,
    envelope: &Envelope,
    order: &OrderCreated,
) -> Result<(), HandleError> {
    // The charge is the total; it must be what the lines add up to, or the event is invalid.
    if lines_total(&order.items) != Some(order.total) {
        return Err(HandleError::Invalid(format!(
            "order total {} does not match its lines",
            order.total
        )));
    }
    // One payment per order, whatever the event id: a re-sent order is never charged twice. The
    // row goes in first as CAPTURED and is marked FAILED below if the wallet can't pay.
    let payment_id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO payments (id, order_id, customer_id, amount, currency, status) \
         VALUES ($1, $2, $3, $4, $5, 'CAPTURED') ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(payment_id)
    .bind(order.order_id)
    .bind(&order.customer_id)
    .bind(order.total)
    .bind(&order.currency)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(());
    }
    // Debit only if the wallet covers the total: the check and the debit are one statement, so
    // two orders of one customer can never both spend the same money.
    let debited: Option<i64> = if order.currency == CURRENCY {
        sqlx::query_scalar(
            "UPDATE wallets SET balance = balance - $2, updated_at = now() \
             WHERE customer_id = $1 AND balance >= $2 RETURNING balance",
        )
        .bind(&order.customer_id)
        .bind(order.total)
        .fetch_optional(&mut *conn)
        .await?
    } else {
        None
    };
    if debited.is_some() {
        let completed = PaymentCompleted {
            order_id: order.order_id,
            payment_id,
            customer_id: order.customer_id.clone(),
            amount: order.total,
            currency: order.currency.clone(),
            items: order.items.clone(),
        };
        let env = envelope.next::<PaymentCompleted>(&PaymentService::source());
        outbox::enqueue(conn, &env, &completed).await?;
        metrics::counter!("payments_total", "outcome" => "captured").increment(1);
        return Ok(());
    }
    refuse(conn, envelope, order, payment_id).await
}

/// A payment the wallet cannot make (unknown customer, another currency, too little money):
/// recorded as FAILED with the reason, and `payment.failed` published (through the outbox).
async fn refuse(
    conn: &mut PgConnection,
    envelope: &Envelope,
    order: &OrderCreated,
    payment_id: Uuid,
) -> Result<(), HandleError> {
    let balance: Option<i64> =
        sqlx::query_scalar("SELECT balance FROM wallets WHERE customer_id = $1")
            .bind(&order.customer_id)
            .fetch_optional(&mut *conn)
            .await?;
    let reason = match balance {
        _ if order.currency != CURRENCY => format!("unsupported currency {}", order.currency),
        None => format!("unknown customer {}", order.customer_id),
        Some(b) => format!(
            "insufficient funds: balance {b}, order total {}",
            order.total
        ),
    };
    sqlx::query("UPDATE payments SET status = 'FAILED', reason = $2 WHERE id = $1")
        .bind(payment_id)
        .bind(&reason)
        .execute(&mut *conn)
        .await?;
    let failed = PaymentFailed {
        order_id: order.order_id,
        customer_id: order.customer_id.clone(),
        reason,
    };
    let env = envelope.next::<PaymentFailed>(&PaymentService::source());
    outbox::enqueue(conn, &env, &failed).await?;
    metrics::counter!("payments_total", "outcome" => "failed").increment(1);
    Ok(())
}

async fn refund(
    conn: &mut PgConnection,
    envelope: &Envelope,
    failed: &InventoryFailed,
) -> Result<(), HandleError> {
    // The row holds values that were checked when they were written.
    let payment: Option<(Uuid, CustomerId, Won, String)> = sqlx::query_as(
        "SELECT id, customer_id, amount, status FROM payments WHERE order_id = $1 FOR UPDATE",
    )
    .bind(failed.order_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((payment_id, customer_id, amount, status)) = payment else {
        return Err(HandleError::Invalid(format!(
            "no payment for order {}",
            failed.order_id
        )));
    };
    if PaymentStatus::try_from(status).ok() != Some(PaymentStatus::Captured) {
        // Already refunded (or never charged): nothing to give back.
        return Ok(());
    }
    sqlx::query(
        "UPDATE payments SET status = 'REFUNDED', reason = $2, updated_at = now() WHERE id = $1",
    )
    .bind(payment_id)
    .bind(&failed.reason)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE wallets SET balance = balance + $2, updated_at = now() WHERE customer_id = $1",
    )
    .bind(&customer_id)
    .bind(amount)
    .execute(&mut *conn)
    .await?;
    let refunded = PaymentRefunded {
        order_id: failed.order_id,
        payment_id,
        customer_id,
        amount,
        reason: failed.reason.clone(),
    };
    let env = envelope.next::<PaymentRefunded>(&PaymentService::source());
    outbox::enqueue(conn, &env, &refunded).await?;
    metrics::counter!("payments_total", "outcome" => "refunded").increment(1);
    Ok(())
}
