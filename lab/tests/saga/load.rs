//! A thousand concurrent orders over every path: all end terminal, money and stock conserved.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lab::Service;

use crate::helpers::*;

const SEEDED_MONEY: i64 = 100_000 + 10_000 + 50_000;
const SEEDED_STOCK: [(&str, i64); 6] = [
    ("AMERICANO", 100),
    ("LATTE", 100),
    ("VANILLA_LATTE", 50),
    ("COLD_BREW", 50),
    ("MOCHA", 30),
    ("ICED_TEA", 0),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_orders_conserve_money_and_stock() {
    let t = spawn_lab_with(|c| c.service.consumers = 2).await;
    let c = &t.client;
    let customers = ["alice", "bob", "carol", "dave"]; // dave has no wallet: payment.failed
    let started = Instant::now();
    let ids: Vec<uuid::Uuid> = futures_util::stream::iter(0..1000usize)
        .map(|i| {
            let customer = customers[i % customers.len()];
            let (sku, _) = SEEDED_STOCK[i % SEEDED_STOCK.len()];
            let quantity = (i % 3 + 1) as i64;
            async move {
                let order = c
                    .place_order_at_list_prices(customer, &[(sku, quantity)])
                    .await
                    .unwrap();
                order.id
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(ids.len(), 1000);

    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    let deadline = Duration::from_secs(90).saturating_sub(started.elapsed());
    for id in &ids {
        let order = c.wait_terminal(*id, deadline).await.unwrap();
        *statuses.entry(order.status.as_str()).or_default() += 1;
    }
    eprintln!(
        "1000 orders terminal after {:?}: {statuses:?}",
        started.elapsed()
    );
    assert_eq!(statuses.values().sum::<usize>(), 1000);
    assert!(statuses.contains_key("CONFIRMED") && statuses.contains_key("CANCELLED"));

    // Money: wallets + captured payments = what was seeded.
    let (wallets, captured) = wallets_and_captured(&t.lab).await;
    assert_eq!(wallets + captured, SEEDED_MONEY);
    assert_eq!(wallets_total(c).await, wallets);
    // Stock: available + reserved = seeded, and reserved = units of confirmed orders.
    let orders = sqlx::PgPool::connect(t.lab.db_url(Service::Order))
        .await
        .unwrap();
    let confirmed: Vec<(String, i64)> = sqlx::query_as(
        "SELECT item->>'sku', sum((item->>'quantity')::bigint)::bigint FROM orders, \
         jsonb_array_elements(items) AS item WHERE status = 'CONFIRMED' GROUP BY 1",
    )
    .fetch_all(&orders)
    .await
    .unwrap();
    let confirmed: BTreeMap<String, i64> = confirmed.into_iter().collect();
    let confirmed_money: (i64,) = sqlx::query_as(
        "SELECT coalesce(sum(total), 0)::bigint FROM orders WHERE status = 'CONFIRMED'",
    )
    .fetch_one(&orders)
    .await
    .unwrap();
    assert_eq!(
        confirmed_money.0, captured,
        "captured payments are exactly the confirmed orders"
    );
    for (sku, seeded) in SEEDED_STOCK {
        let (stock, reserved) = c.product(sku).await.unwrap();
        assert_eq!(stock + reserved, seeded, "{sku}");
        assert_eq!(reserved, confirmed.get(sku).copied().unwrap_or(0), "{sku}");
    }
    orders.close().await;
    t.stop().await;
}
