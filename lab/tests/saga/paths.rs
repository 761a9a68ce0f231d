//! The three ends of the saga: confirmed, cancelled for lack of money, compensated for lack of stock.

use notification_service::api::Notification;

use crate::helpers::*;

fn count_kind(notifications: &[Notification], kind: NotificationKind) -> usize {
    notifications.iter().filter(|n| n.kind == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_confirms_charges_once_and_reserves_once() {
    let t = spawn_lab().await;
    let c = &t.client;
    let res = c
        .http()
        .post(format!("{}/orders", c.order))
        .json(&serde_json::json!({"customer_id":"alice","items":[{"sku":"LATTE","quantity":2,"unit_price":5000}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let created: Order = res.json().await.unwrap();
    let id = created.id;
    assert_eq!(location, format!("/orders/{id}"));
    assert_eq!(created.status, OrderStatus::Pending);
    assert_eq!(created.total.get(), 10000);

    let order = c.wait_terminal(id, SAGA_TIMEOUT).await.unwrap();
    assert_eq!(order.status, OrderStatus::Confirmed, "{order:#?}");
    let order = order_with_steps(c, id, 3).await;
    assert_eq!(
        timeline_events(&order),
        ["order.created", "payment.completed", "inventory.updated"]
    );
    let notes = c
        .wait_notification(id, NotificationKind::Confirmed, SAGA_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(count_kind(&notes, NotificationKind::Confirmed), 1);
    assert_eq!(count_kind(&notes, NotificationKind::Cancelled), 0);
    assert_eq!(c.wallet_balance("alice").await.unwrap(), 90_000);
    assert_eq!(c.product("LATTE").await.unwrap(), (98, 2));
    let payments = c.payments(id).await.unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status, PaymentStatus::Captured);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_funds_cancels_without_touching_stock() {
    let t = spawn_lab().await;
    let c = &t.client;
    let order = c.place_order("bob", &[("MOCHA", 3, 5500)]).await.unwrap();
    let id = order.id;
    let order = c.wait_terminal(id, SAGA_TIMEOUT).await.unwrap();
    assert_eq!(order.status, OrderStatus::Cancelled, "{order:#?}");
    assert!(
        order
            .reason
            .as_deref()
            .unwrap()
            .contains("insufficient funds"),
        "{order:#?}"
    );
    assert_eq!(
        timeline_events(&order),
        ["order.created", "payment.failed", "order.cancelled"]
    );
    let notes = c
        .wait_notification(id, NotificationKind::Cancelled, SAGA_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(count_kind(&notes, NotificationKind::Cancelled), 1);
    assert_eq!(count_kind(&notes, NotificationKind::Confirmed), 0);
    assert_eq!(c.wallet_balance("bob").await.unwrap(), 10_000);
    assert_eq!(c.product("MOCHA").await.unwrap(), (30, 0));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_stock_charges_then_refunds() {
    let t = spawn_lab().await;
    let c = &t.client;
    let order = c
        .place_order("carol", &[("LATTE", 1, 5000), ("ICED_TEA", 2, 4500)])
        .await
        .unwrap();
    let id = order.id;
    let order = c.wait_terminal(id, SAGA_TIMEOUT).await.unwrap();
    assert_eq!(order.status, OrderStatus::Cancelled, "{order:#?}");
    let order = order_with_steps(c, id, 5).await;
    assert!(
        order
            .reason
            .as_deref()
            .unwrap()
            .contains("out of stock: ICED_TEA"),
        "{order:#?}"
    );
    assert_eq!(
        timeline_events(&order),
        [
            "order.created",
            "payment.completed",
            "inventory.failed",
            "payment.refunded",
            "order.cancelled"
        ]
    );
    // Whatever order the events arrived in, the timeline replays them in time order.
    let statuses: Vec<OrderStatus> = order.timeline.iter().map(|e| e.status).collect();
    use OrderStatus::*;
    assert_eq!(
        statuses,
        [Pending, Paid, Compensating, Cancelled, Cancelled]
    );
    c.wait_notification(id, NotificationKind::Cancelled, SAGA_TIMEOUT)
        .await
        .unwrap();
    // Charged, then refunded: the wallet is back where it was, and no stock moved.
    assert_eq!(c.wallet_balance("carol").await.unwrap(), 50_000);
    let payments = c.payments(id).await.unwrap();
    assert_eq!(payments[0].status, PaymentStatus::Refunded);
    assert_eq!(c.product("LATTE").await.unwrap(), (100, 0));
    assert_eq!(c.product("ICED_TEA").await.unwrap(), (0, 0));
    t.stop().await;
}

/// A client that did not see the answer to `POST /orders` sends it again with the same
/// `Idempotency-Key`, before and after the saga ran, and several times at once: one order, one
/// charge, and every answer is the first order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_retried_with_its_idempotency_key_is_charged_once() {
    let t = spawn_lab().await;
    let c = &t.client;
    let before = c.wallet_balance("alice").await.unwrap();
    let body = serde_json::json!({"customer_id":"alice","items":[{"sku":"LATTE","quantity":1,"unit_price":5000}]});
    let post = || {
        c.http()
            .post(format!("{}/orders", c.order))
            .header("Idempotency-Key", "e2e-retry-1")
            .json(&body)
            .send()
    };
    let answers = futures_util::future::join_all((0..4).map(|_| post())).await;
    let mut ids = std::collections::BTreeSet::new();
    for res in answers {
        let res = res.unwrap();
        assert_eq!(res.status(), 201);
        ids.insert(res.json::<Order>().await.unwrap().id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids.into_iter().next().unwrap();
    assert_eq!(
        c.wait_terminal(id, SAGA_TIMEOUT).await.unwrap().status,
        OrderStatus::Confirmed
    );

    // A retry after the saga finished answers the first order, as first answered.
    let retry = post().await.unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Order = retry.json().await.unwrap();
    assert_eq!((retry.id, retry.status), (id, OrderStatus::Pending));

    // One order exists (a charge needs one), and it was charged once.
    let orders = get_json(c.http(), format!("{}/orders?limit=500", c.order)).await;
    assert_eq!(orders.as_array().unwrap().len(), 1, "{orders:?}");
    assert_eq!(c.wallet_balance("alice").await.unwrap(), before - 5000);
    assert_eq!(c.payments(id).await.unwrap().len(), 1);
    t.stop().await;
}
