use saga_shared::consumer::HandleError;
use saga_shared::domain::Won;
use saga_shared::events::InventoryFailed;

use payment_service::PaymentService;
use saga_shared::testing::TestApp;

use crate::helpers::{balance, order};

#[tokio::test]
async fn an_order_is_charged_once_and_refunded_once() {
    let app = TestApp::spawn::<PaymentService>().await;
    let order = order("alice", 2);
    app.handle("/order-service", order.clone()).await.unwrap();
    assert_eq!(balance(&app, "alice").await, 100000 - 10000);
    // The same order again (re-sent under a new event id) is not charged twice.
    app.handle("/order-service", order.clone()).await.unwrap();
    assert_eq!(balance(&app, "alice").await, 100000 - 10000);
    let outbox = app.outbox().await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].0, "payment.completed");
    assert_eq!(outbox[0].1["amount"], 10000);

    let payment_id = outbox[0].1["payment_id"].as_str().unwrap().parse().unwrap();
    let failed = InventoryFailed {
        order_id: order.order_id,
        payment_id,
        reason: "out of stock: LATTE".into(),
    };
    app.handle("/inventory-service", failed.clone())
        .await
        .unwrap();
    app.handle("/inventory-service", failed).await.unwrap();
    assert_eq!(balance(&app, "alice").await, 100000);
    let topics: Vec<String> = app.outbox().await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(topics, ["payment.completed", "payment.refunded"]);
}

#[tokio::test]
async fn a_wallet_that_cannot_pay_refuses_with_the_reason() {
    let app = TestApp::spawn::<PaymentService>().await;
    // bob holds 10000; three lattes cost 15000.
    app.handle("/order-service", order("bob", 3)).await.unwrap();
    app.handle("/order-service", order("zoe", 1)).await.unwrap();
    assert_eq!(balance(&app, "bob").await, 10000);
    let outbox = app.outbox().await;
    let reasons: Vec<(&str, &str)> = outbox
        .iter()
        .map(|(t, p)| (t.as_str(), p["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "payment.failed",
                "insufficient funds: balance 10000, order total 15000"
            ),
            ("payment.failed", "unknown customer zoe")
        ]
    );
}

#[tokio::test]
async fn a_forged_total_is_invalid_and_charges_nothing() {
    let app = TestApp::spawn::<PaymentService>().await;
    let mut forged = order("alice", 2);
    forged.total = Won::parse(1).unwrap();
    let err = app.handle("/order-service", forged).await.unwrap_err();
    assert!(
        matches!(err, HandleError::Invalid(ref r) if r.contains("does not match its lines")),
        "{err}"
    );
    assert_eq!(balance(&app, "alice").await, 100000);
    assert!(app.outbox().await.is_empty());
}
