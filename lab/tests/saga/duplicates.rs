//! Re-publishing the very same records changes nothing.

use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use saga_shared::events::topics;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republished_records_change_no_wallet_stock_or_notification() {
    let t = spawn_lab().await;
    let c = &t.client;
    let order = c
        .place_order("alice", &[("AMERICANO", 3, 4000)])
        .await
        .unwrap();
    let id = order.id;
    assert_eq!(
        c.wait_terminal(id, SAGA_TIMEOUT).await.unwrap().status,
        OrderStatus::Confirmed
    );
    c.wait_notification(id, NotificationKind::Confirmed, SAGA_TIMEOUT)
        .await
        .unwrap();
    let before_order = order_with_steps(c, id, 3).await;
    let before_notes = c.notifications(id).await.unwrap().len();

    // Every record of the chain, published again byte for byte (key, value and headers).
    let brokers = t.lab.brokers().to_owned();
    let dup_labels = [("outcome", "duplicate")];
    let baseline = metric_sum(c, "events_consumed_total", &dup_labels).await;
    let republished = republish(
        &brokers,
        &[
            topics::ORDER_CREATED,
            topics::PAYMENT_COMPLETED,
            topics::INVENTORY_UPDATED,
        ],
    )
    .await;
    assert_eq!(republished, 3);
    // Each of the three topics has two consumer groups: six duplicates must be recognised.
    let dups = eventually_metric(c, "events_consumed_total", &dup_labels, baseline + 6.0).await;
    assert_eq!(dups, baseline + 6.0);

    assert_eq!(c.wallet_balance("alice").await.unwrap(), 100_000 - 12_000);
    assert_eq!(c.product("AMERICANO").await.unwrap(), (97, 3));
    assert_eq!(c.notifications(id).await.unwrap().len(), before_notes);
    let after_order = c.order(id).await.unwrap();
    assert_eq!(after_order.timeline, before_order.timeline);
    assert_eq!(c.payments(id).await.unwrap().len(), 1);
    t.stop().await;
}

/// Publishes every record of `topics` again, byte for byte (key, value and headers); returns how
/// many records that was.
async fn republish(brokers: &str, topic_names: &[&str]) -> usize {
    let mut republished = 0;
    for topic in topic_names {
        for m in read_topic_async(brokers, topic).await {
            let mut headers = OwnedHeaders::new();
            for h in m.headers().unwrap().iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            publish(brokers, topic, &key, m.payload().unwrap(), headers).await;
            republished += 1;
        }
    }
    republished
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republished_compensation_events_refund_and_cancel_only_once() {
    let t = spawn_lab().await;
    let c = &t.client;
    // Out of stock: charged, then refunded. Too poor: payment refused.
    let refunded = c
        .place_order("alice", &[("ICED_TEA", 1, 4500)])
        .await
        .unwrap();
    let refused = c.place_order("bob", &[("LATTE", 4, 5000)]).await.unwrap();
    let ids = [refunded.id, refused.id];
    for id in &ids {
        assert_eq!(
            c.wait_terminal(*id, SAGA_TIMEOUT).await.unwrap().status,
            OrderStatus::Cancelled
        );
        c.wait_notification(*id, NotificationKind::Cancelled, SAGA_TIMEOUT)
            .await
            .unwrap();
    }
    let timelines = [
        c.order(ids[0]).await.unwrap().timeline.clone(),
        c.order(ids[1]).await.unwrap().timeline.clone(),
    ];
    let notes = [
        c.notifications(ids[0]).await.unwrap().len(),
        c.notifications(ids[1]).await.unwrap().len(),
    ];

    let brokers = t.lab.brokers().to_owned();
    let dup_labels = [("outcome", "duplicate")];
    let baseline = metric_sum(c, "events_consumed_total", &dup_labels).await;
    let republished = republish(
        &brokers,
        &[
            topics::ORDER_CREATED,
            topics::PAYMENT_COMPLETED,
            topics::PAYMENT_FAILED,
            topics::INVENTORY_FAILED,
            topics::PAYMENT_REFUNDED,
            topics::ORDER_CANCELLED,
        ],
    )
    .await;
    assert_eq!(republished, 2 + 1 + 1 + 1 + 1 + 2);
    // Consumer groups per record (docs/services.md): order.created 2 x 2, payment.completed 2,
    // payment.failed 1, inventory.failed 2, payment.refunded 1, order.cancelled 1 x 2.
    let dups = eventually_metric(c, "events_consumed_total", &dup_labels, baseline + 12.0).await;
    assert_eq!(dups, baseline + 12.0);

    assert_eq!(
        c.wallet_balance("alice").await.unwrap(),
        100_000,
        "refunded once, charged once"
    );
    assert_eq!(
        c.wallet_balance("bob").await.unwrap(),
        10_000,
        "never charged"
    );
    assert_eq!(c.product("ICED_TEA").await.unwrap(), (0, 0));
    assert_eq!(c.product("LATTE").await.unwrap(), (100, 0));
    let payments = c.payments(ids[0]).await.unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status, PaymentStatus::Refunded);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(c.order(*id).await.unwrap().timeline, timelines[i]);
        assert_eq!(c.notifications(*id).await.unwrap().len(), notes[i]);
    }
    t.stop().await;
}
