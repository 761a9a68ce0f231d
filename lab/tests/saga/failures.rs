//! Transient failures delay the saga but lose and dead-letter nothing.

use lab::Service;
use saga_shared::events::topics;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_database_outage_delays_orders_then_they_complete() {
    let t = spawn_lab().await;
    let c = &t.client;
    let admin = t.lab.admin().clone();
    let dead = [("outcome", "dead_lettered")];
    let dead_before = metric_sum(c, "events_consumed_total", &dead).await;
    let retries = [("service", "payment-service")];
    let retries_before = metric_sum(c, "consumer_retries_total", &retries).await;

    admin
        .block_database(t.lab.database(Service::Payment))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for customer in ["alice", "carol", "alice"] {
        let order = c
            .place_order(customer, &[("VANILLA_LATTE", 1, 5500)])
            .await
            .unwrap();
        ids.push(order.id);
    }
    // The payment consumer keeps retrying the same record while its database refuses connections,
    // well past the attempt limit that sends a failing record to the DLQ: an outage is not the
    // event's fault, so it must never be dead-lettered.
    let limit = t.lab.config().service.max_attempts as f64;
    eventually_metric(
        c,
        "consumer_retries_total",
        &retries,
        retries_before + limit + 2.0,
    )
    .await;
    for id in &ids {
        assert_eq!(c.order(*id).await.unwrap().status, OrderStatus::Pending);
    }
    let ready = c
        .http()
        .get(format!("{}/ready", c.payment))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        503,
        "payment is not ready without its database"
    );

    admin
        .unblock_database(t.lab.database(Service::Payment))
        .await
        .unwrap();
    for id in &ids {
        assert_eq!(
            c.wait_terminal(*id, SAGA_TIMEOUT).await.unwrap().status,
            OrderStatus::Confirmed
        );
    }
    assert_eq!(
        c.wallet_balance("alice").await.unwrap(),
        100_000 - 2 * 5_500
    );
    assert_eq!(c.wallet_balance("carol").await.unwrap(), 50_000 - 5_500);
    assert_eq!(c.product("VANILLA_LATTE").await.unwrap(), (47, 3));
    assert_eq!(
        metric_sum(c, "events_consumed_total", &dead).await,
        dead_before
    );
    let brokers = t.lab.brokers().to_owned();
    assert!(
        read_topic_async(&brokers, &topics::dlq(topics::ORDER_CREATED))
            .await
            .is_empty()
    );
    t.stop().await;
}
