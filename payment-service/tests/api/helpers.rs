use saga_shared::domain::{CustomerId, Quantity, Sku, Won};
use saga_shared::events::{LineItem, OrderCreated, lines_total};
use saga_shared::testing::TestApp;
use uuid::Uuid;

/// An order of `quantity` lattes at 5000 won for `customer`, with its true total.
pub fn order(customer: &str, quantity: i64) -> OrderCreated {
    let items = vec![LineItem {
        sku: Sku::parse("LATTE").unwrap(),
        quantity: Quantity::parse(quantity).unwrap(),
        unit_price: Won::parse(5000).unwrap(),
    }];
    OrderCreated {
        order_id: Uuid::now_v7(),
        customer_id: CustomerId::parse(customer).unwrap(),
        total: lines_total(&items).unwrap(),
        items,
        currency: "KRW".into(),
    }
}

pub async fn balance(app: &TestApp, customer: &str) -> i64 {
    sqlx::query_scalar("SELECT balance FROM wallets WHERE customer_id = $1")
        .bind(customer)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}
