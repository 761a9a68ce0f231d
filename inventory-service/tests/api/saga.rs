use saga_shared::domain::{CustomerId, Quantity, Sku, Won};
use saga_shared::events::{LineItem, PaymentCompleted, SagaEvent, Topic, lines_total};
use saga_shared::testing::TestApp;
use serde_json::{Value, json};
use uuid::Uuid;

use inventory_service::InventoryService;

fn paid(lines: &[(&str, i64)]) -> PaymentCompleted {
    let items: Vec<LineItem> = lines
        .iter()
        .map(|&(sku, q)| LineItem {
            sku: Sku::parse(sku).unwrap(),
            quantity: Quantity::parse(q).unwrap(),
            unit_price: Won::parse(5000).unwrap(),
        })
        .collect();
    PaymentCompleted {
        order_id: Uuid::now_v7(),
        payment_id: Uuid::now_v7(),
        customer_id: CustomerId::parse("alice").unwrap(),
        amount: lines_total(&items).unwrap(),
        currency: "KRW".into(),
        items,
    }
}

async fn product(app: &TestApp, sku: &str) -> (i64, i64) {
    let p: Value = app.get_json(&format!("/products/{sku}")).await;
    (
        p["stock"].as_i64().unwrap(),
        p["reserved"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn every_line_is_reserved_once_and_shown_by_the_api() {
    let app = TestApp::spawn::<InventoryService>().await;
    // The same SKU on two lines counts once: 2 + 3 lattes.
    let event = paid(&[("LATTE", 2), ("MOCHA", 1), ("LATTE", 3)]);
    app.handle("/payment-service", event.clone()).await.unwrap();
    app.handle("/payment-service", event).await.unwrap();
    assert_eq!(product(&app, "LATTE").await, (95, 5));
    assert_eq!(product(&app, "MOCHA").await, (29, 1));
    let topics: Vec<String> = app.outbox().await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(topics, ["inventory.updated"]);
}

#[tokio::test]
async fn a_shortage_reserves_nothing_and_says_which_line() {
    let app = TestApp::spawn::<InventoryService>().await;
    app.handle("/payment-service", paid(&[("LATTE", 1), ("ICED_TEA", 1)]))
        .await
        .unwrap();
    assert_eq!(product(&app, "LATTE").await, (100, 0));
    let outbox = app.outbox().await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].0, "inventory.failed");
    assert_eq!(
        outbox[0].1["reason"],
        "out of stock: ICED_TEA (wanted 1, available 0)"
    );
    let res = app.get("/products/NOPE").await;
    assert_eq!(res.status(), 404);
}

/// A payment.completed whose quantities could overflow a sum never reaches the handler: its
/// payload does not decode (the consumer sends it to the DLQ).
#[test]
fn forged_quantities_fail_at_decode() {
    let line = |q: i64| json!({"sku": "LATTE", "quantity": q, "unit_price": 1});
    let forged = json!({
        "order_id": Uuid::now_v7(), "payment_id": Uuid::now_v7(), "customer_id": "alice",
        "amount": 5000, "currency": "KRW", "items": [line(i64::MAX), line(1)],
    });
    let err =
        SagaEvent::decode(Topic::PaymentCompleted, forged.to_string().as_bytes()).unwrap_err();
    assert!(
        err.to_string()
            .contains("quantity must be between 1 and 1000"),
        "{err}"
    );
    let honest = json!({
        "order_id": Uuid::now_v7(), "payment_id": Uuid::now_v7(), "customer_id": "alice",
        "amount": 2, "currency": "KRW", "items": [line(1), line(1)],
    });
    assert!(SagaEvent::decode(Topic::PaymentCompleted, honest.to_string().as_bytes()).is_ok());
}

/// The catalogue's records (shared/src/catalogue.rs): every product once at the start, then the
/// new state of each product a reservation or a new price changed, moved into the outbox by
/// `publish_catalogue()` (what the relay calls): its latest state only, however many changes
/// came since. Each is read as a product under its own SKU, as the order service reads it.
#[tokio::test]
async fn every_change_of_a_product_puts_its_latest_state_in_the_outbox() {
    use saga_shared::catalogue;
    let app = TestApp::spawn::<InventoryService>().await;
    let read = |(key, value): &(String, Value)| {
        let bytes = serde_json::to_vec(value).unwrap();
        catalogue::read(0, 0, Some(key.as_bytes()), Some(&bytes))
            .unwrap()
            .product
            .unwrap()
    };
    // What the relay does: the changes into the outbox; the new records, oldest first.
    let published = |from: usize| {
        let app = &app;
        async move {
            sqlx::query("SELECT publish_catalogue()")
                .execute(&app.pool)
                .await
                .unwrap();
            let records = app.catalogue_outbox().await;
            let new: Vec<(String, i64, i64)> = records[from..]
                .iter()
                .map(read)
                .map(|p| (p.sku.to_string(), p.unit_price.get(), p.stock))
                .collect();
            (records.len(), new)
        }
    };
    let (seen, seeded) = published(0).await;
    let skus: Vec<&str> = seeded.iter().map(|(sku, _, _)| sku.as_str()).collect();
    assert_eq!(
        skus,
        [
            "AMERICANO",
            "COLD_BREW",
            "ICED_TEA",
            "LATTE",
            "MOCHA",
            "VANILLA_LATTE"
        ]
    );
    assert_eq!(seeded[3], ("LATTE".into(), 5000, 100));

    // Two reservations of LATTE, one of MOCHA: one record each, their latest state. A shortage
    // changes nothing, so it publishes nothing.
    for lines in [
        &[("LATTE", 2), ("MOCHA", 1)][..],
        &[("LATTE", 1)],
        &[("ICED_TEA", 1)],
    ] {
        app.handle("/payment-service", paid(lines)).await.unwrap();
    }
    let (seen, changed) = published(seen).await;
    assert_eq!(
        changed,
        [("LATTE".into(), 5000, 97), ("MOCHA".into(), 5500, 29)]
    );

    // A new price is published too; a change of nothing is not, nor a refused one.
    let patch = |sku: &str, body: Value| {
        let path = format!("/products/{sku}");
        let app = &app;
        async move { app.patch_json(&path, &body).await }
    };
    let changed = patch("LATTE", json!({"price": 5200})).await;
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["price"], 5200);
    assert_eq!(patch("LATTE", json!({"price": 0})).await.status(), 422);
    assert_eq!(patch("NOPE", json!({"price": 1})).await.status(), 404);
    sqlx::query("UPDATE products SET updated_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, changed) = published(seen).await;
    assert_eq!(changed, [("LATTE".into(), 5200, 97)]);
}
