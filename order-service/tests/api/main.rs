//! The order service's own tests: its HTTP endpoints and its saga handler on a database of its
//! own (a fresh database per test on one PostgreSQL server), without a broker or the other services.

mod idempotency;
mod orders;
mod saga;

use saga_shared::catalogue::{self, Change, Product};
use saga_shared::testing::TestApp;

/// The order service on a database of its own, its copy of the catalogue listing LATTE (5000)
/// and MOCHA (5500), as if read from the inventory service's catalogue topic.
pub async fn spawn() -> TestApp {
    let app = TestApp::spawn::<order_service::OrderService>().await;
    list(&app, &[("LATTE", 5000), ("MOCHA", 5500)]).await;
    app
}

/// Puts `products` (SKU, unit price) in the order service's copy of the catalogue.
pub async fn list(app: &TestApp, products: &[(&str, i64)]) {
    let changes: Vec<Change> = products
        .iter()
        .enumerate()
        .map(|(offset, &(sku, price))| Change {
            partition: 0,
            offset: offset as i64,
            sku: sku.to_owned(),
            product: Some(Product {
                sku: saga_shared::domain::Sku::parse(sku).unwrap(),
                name: sku.to_lowercase(),
                unit_price: saga_shared::domain::Won::parse(price).unwrap(),
                stock: 10,
            }),
        })
        .collect();
    let mut conn = app.pool.acquire().await.unwrap();
    let read_to = std::collections::BTreeMap::from([(0, products.len() as i64)]);
    catalogue::apply(&mut conn, &changes, &read_to)
        .await
        .unwrap();
}
