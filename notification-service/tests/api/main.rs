//! The notification service's own tests: its handler records one notification per milestone,
//! shown by its API, on a database of its own, without a broker or the other services.

use notification_service::NotificationService;
use saga_shared::domain::{CustomerId, Quantity, Sku, Won};
use saga_shared::events::{InventoryUpdated, LineItem, OrderCancelled, OrderCreated};
use saga_shared::testing::TestApp;
use serde_json::Value;
use uuid::Uuid;

#[tokio::test]
async fn each_milestone_is_one_notification_of_its_kind() {
    let app = TestApp::spawn::<NotificationService>().await;
    let alice = CustomerId::parse("alice").unwrap();
    let items = vec![LineItem {
        sku: Sku::parse("LATTE").unwrap(),
        quantity: Quantity::parse(1).unwrap(),
        unit_price: Won::parse(5000).unwrap(),
    }];
    let confirmed = Uuid::now_v7();
    let cancelled = Uuid::now_v7();
    let created = OrderCreated {
        order_id: confirmed,
        customer_id: alice.clone(),
        items: items.clone(),
        total: Won::parse(5000).unwrap(),
        currency: "KRW".into(),
    };
    app.handle("/order-service", created).await.unwrap();
    app.handle(
        "/inventory-service",
        InventoryUpdated {
            order_id: confirmed,
            items,
        },
    )
    .await
    .unwrap();
    let cancel = OrderCancelled {
        order_id: cancelled,
        customer_id: alice,
        reason: "insufficient funds".into(),
    };
    app.handle("/order-service", cancel).await.unwrap();

    let kinds = |order: Uuid| {
        let app = &app;
        async move {
            let list: Vec<Value> = app
                .get_json(&format!("/notifications?order_id={order}"))
                .await;
            list.iter()
                .map(|n| {
                    (
                        n["kind"].as_str().unwrap().to_owned(),
                        n["message"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        kinds(confirmed).await,
        [
            (
                "received".into(),
                "We received your order of 5000 KRW.".into()
            ),
            ("confirmed".into(), "Your order is confirmed.".into())
        ]
    );
    assert_eq!(
        kinds(cancelled).await,
        [(
            "cancelled".into(),
            "Your order was cancelled: insufficient funds.".into()
        )]
    );
}
