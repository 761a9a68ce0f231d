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
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(
        c.wait_terminal(&id, SAGA_TIMEOUT).await.unwrap()["status"],
        "CONFIRMED"
    );
    c.wait_notification(&id, "confirmed", SAGA_TIMEOUT)
        .await
        .unwrap();
    let before_order = order_with_steps(c, &id, 3).await;
    let before_notes = c.notifications(&id).await.unwrap().len();

    // Every record of the chain, published again byte for byte (key, value and headers).
    let brokers = t.lab.brokers().to_owned();
    let dup_labels = [("outcome", "duplicate")];
    let baseline = metric_sum(c, "events_consumed_total", &dup_labels).await;
    let mut republished = 0;
    for topic in [
        topics::ORDER_CREATED,
        topics::PAYMENT_COMPLETED,
        topics::INVENTORY_UPDATED,
    ] {
        let records = read_topic_async(&brokers, topic).await;
        assert_eq!(records.len(), 1, "{topic}");
        for m in records {
            let mut headers = OwnedHeaders::new();
            for h in m.headers().unwrap().iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            publish(&brokers, topic, &key, m.payload().unwrap(), headers).await;
            republished += 1;
        }
    }
    assert_eq!(republished, 3);
    // Each of the three topics has two consumer groups: six duplicates must be recognised.
    let dups = eventually_metric(c, "events_consumed_total", &dup_labels, baseline + 6.0).await;
    assert_eq!(dups, baseline + 6.0);

    assert_eq!(c.wallet_balance("alice").await.unwrap(), 100_000 - 12_000);
    assert_eq!(c.product("AMERICANO").await.unwrap(), (97, 3));
    assert_eq!(c.notifications(&id).await.unwrap().len(), before_notes);
    let after_order = c.order(&id).await.unwrap();
    assert_eq!(after_order["timeline"], before_order["timeline"]);
    assert_eq!(c.payments(&id).await.unwrap().as_array().unwrap().len(), 1);
    t.stop().await;
}
