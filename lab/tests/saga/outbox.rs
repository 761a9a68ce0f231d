//! The outbox keeps the events of orders taken while the broker is down.

use saga_shared::outbox;

use crate::helpers::*;
use lab::Service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_taken_while_the_broker_is_down_complete_once_it_returns() {
    let mut t = spawn_lab().await;
    // One order before, so every consumer group has joined and committed.
    let first = t
        .client
        .place_order("alice", &[("LATTE", 1, 5000)])
        .await
        .unwrap();
    let first = first.id;
    t.client.wait_terminal(first, SAGA_TIMEOUT).await.unwrap();

    t.stop_broker().await;
    let mut ids = Vec::new();
    for customer in ["alice", "carol"] {
        // POST still answers 201: the event waits in the outbox.
        let order = t
            .client
            .place_order(customer, &[("MOCHA", 2, 5500)])
            .await
            .unwrap();
        assert_eq!(order.status, OrderStatus::Pending);
        ids.push(order.id);
    }
    let orders_db = sqlx::PgPool::connect(t.lab.db_url(Service::Order))
        .await
        .unwrap();
    assert_eq!(
        outbox::backlog(&orders_db).await.unwrap(),
        2,
        "both events wait in the outbox"
    );

    t.restart_broker().await;
    let c = &t.client;
    for id in &ids {
        assert_eq!(
            c.wait_terminal(*id, SAGA_TIMEOUT).await.unwrap().status,
            OrderStatus::Confirmed
        );
        let notes = c
            .wait_notification(*id, NotificationKind::Confirmed, SAGA_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(
            notes
                .iter()
                .filter(|n| n.kind == NotificationKind::Confirmed)
                .count(),
            1
        );
        assert_eq!(c.payments(*id).await.unwrap().len(), 1);
    }
    // Charged once each.
    assert_eq!(
        c.wallet_balance("alice").await.unwrap(),
        100_000 - 5_000 - 11_000
    );
    assert_eq!(c.wallet_balance("carol").await.unwrap(), 50_000 - 11_000);
    assert_eq!(c.product("MOCHA").await.unwrap(), (26, 4));
    assert_eq!(outbox::backlog(&orders_db).await.unwrap(), 0);
    orders_db.close().await;
    t.stop().await;
}
