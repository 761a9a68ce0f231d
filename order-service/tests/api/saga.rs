use order_service::domain::OrderStatus;
use saga_shared::consumer::HandleError;
use saga_shared::domain::{CustomerId, Won};
use saga_shared::events::{InventoryFailed, PaymentCompleted, PaymentRefunded};
use serde_json::{Value, json};
use uuid::Uuid;

async fn place(app: &saga_shared::testing::TestApp) -> Value {
    let body = json!({"customer_id": "alice", "items": [{"sku": "LATTE", "quantity": 2, "unit_price": 5000}]});
    app.post_json("/orders", &body).await.json().await.unwrap()
}

async fn status(app: &saga_shared::testing::TestApp, id: Uuid) -> (String, Option<String>) {
    sqlx::query_as("SELECT status, reason FROM orders WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn payment_then_compensation_cancels_the_order_and_announces_it() {
    let app = crate::spawn().await;
    let order = place(&app).await;
    let id: Uuid = order["id"].as_str().unwrap().parse().unwrap();
    let alice = CustomerId::parse("alice").unwrap();
    let amount = Won::parse(10000).unwrap();
    let payment_id = Uuid::now_v7();
    let paid = PaymentCompleted {
        order_id: id,
        payment_id,
        customer_id: alice.clone(),
        amount,
        currency: "KRW".into(),
        items: Vec::new(),
    };
    app.handle("/payment-service", paid).await.unwrap();
    assert_eq!(status(&app, id).await.0, OrderStatus::Paid.as_str());

    let failed = InventoryFailed {
        order_id: id,
        payment_id,
        reason: "out of stock: LATTE".into(),
    };
    app.handle("/inventory-service", failed).await.unwrap();
    assert_eq!(
        status(&app, id).await,
        ("COMPENSATING".into(), Some("out of stock: LATTE".into()))
    );

    let refunded = PaymentRefunded {
        order_id: id,
        payment_id,
        customer_id: alice,
        amount,
        reason: "out of stock: LATTE".into(),
    };
    app.handle("/payment-service", refunded).await.unwrap();
    assert_eq!(status(&app, id).await.0, "CANCELLED");
    // order.created from the request, then order.cancelled from the compensation.
    let topics: Vec<String> = app.outbox().await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(topics, ["order.created", "order.cancelled"]);
    let timeline: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM order_timeline WHERE order_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        timeline,
        [
            "order.created",
            "payment.completed",
            "inventory.failed",
            "payment.refunded",
            "order.cancelled"
        ]
    );
}

#[tokio::test]
async fn an_event_for_an_unknown_order_is_invalid_and_changes_nothing() {
    let app = crate::spawn().await;
    let failed = InventoryFailed {
        order_id: Uuid::now_v7(),
        payment_id: Uuid::now_v7(),
        reason: "forged".into(),
    };
    let err = app.handle("/inventory-service", failed).await.unwrap_err();
    assert!(
        matches!(err, HandleError::Invalid(ref r) if r.contains("unknown order")),
        "{err}"
    );
    assert!(app.outbox().await.is_empty());
}
