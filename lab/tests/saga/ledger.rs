//! The ledger, the saga's consume-transform-produce step with Kafka transactions: one entry per
//! money movement, read by a `read_committed` consumer, and its input offsets committed with it.

use std::time::Duration;

use lab::ledger::{Entry, GROUP, TOPIC};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use saga_shared::events::topics;
use uuid::Uuid;

use crate::helpers::{OrderStatus, SAGA_TIMEOUT, header, publish, read_topic_async, spawn_lab};

/// What a `read_committed` consumer reads of `topic` from its start up to the last stable offset.
fn committed_entries(brokers: &str, topic: &str) -> Vec<Entry> {
    let consumer: BaseConsumer = saga_shared::kafka::client_config(brokers)
        .set("group.id", "test-ledger-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(serde_json::from_slice(m.payload().unwrap()).unwrap()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_writes_one_entry_per_money_movement_in_transactions() {
    let t = spawn_lab().await;
    let c = &t.client;
    let brokers = t.lab.brokers().to_owned();
    let happy = c.place_order("alice", &[("LATTE", 1, 5000)]).await.unwrap();
    let compensated = c
        .place_order("carol", &[("ICED_TEA", 1, 4500)])
        .await
        .unwrap();
    let (happy, compensated) = (happy.id, compensated.id);
    let (happy_id, compensated_id) = (happy.to_string(), compensated.to_string());
    assert_eq!(
        c.wait_terminal(happy, SAGA_TIMEOUT).await.unwrap().status,
        OrderStatus::Confirmed
    );
    assert_eq!(
        c.wait_terminal(compensated, SAGA_TIMEOUT)
            .await
            .unwrap()
            .status,
        OrderStatus::Cancelled
    );

    // A charge for each order and the refund: three entries, each once.
    let entries = lab::client::eventually("three ledger entries", SAGA_TIMEOUT, || {
        let brokers = brokers.clone();
        async move {
            let e = tokio::task::spawn_blocking(move || committed_entries(&brokers, TOPIC))
                .await
                .ok()?;
            (e.len() >= 3).then_some(e)
        }
    })
    .await
    .unwrap();
    let mut seen: Vec<(String, String, String, i64)> = entries
        .iter()
        .map(|e| {
            (
                e.order_id.clone(),
                e.customer_id.clone(),
                e.kind.clone(),
                e.amount,
            )
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (
            happy_id.clone(),
            "alice".to_owned(),
            "debit".to_owned(),
            5000,
        ),
        (
            compensated_id.clone(),
            "carol".to_owned(),
            "debit".to_owned(),
            4500,
        ),
        (
            compensated_id.clone(),
            "carol".to_owned(),
            "credit".to_owned(),
            4500,
        ),
    ];
    expected.sort();
    assert_eq!(seen, expected);

    // Its input offsets were committed with its output: the group stands at the end of the
    // money topics (the offset store answers with the committed offsets).
    let positions = ledger_positions(&brokers).await;
    assert!(!positions.is_empty());
    for (p, at, high) in positions {
        assert_eq!(at, Some(Offset::Offset(high)), "partition {p}");
    }
    t.stop().await;
}

/// For each partition of `payment.completed` with records: the ledger group's committed offset
/// and the partition's end.
async fn ledger_positions(brokers: &str) -> Vec<(i32, Option<Offset>, i64)> {
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = saga_shared::kafka::client_config(&brokers)
            .set("group.id", GROUP)
            .create()
            .unwrap();
        let md = consumer
            .fetch_metadata(Some("payment.completed"), Duration::from_secs(5))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        let mut ends = Vec::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition("payment.completed", p.id());
            let (_, high) = consumer
                .fetch_watermarks("payment.completed", p.id(), Duration::from_secs(5))
                .unwrap();
            ends.push((p.id(), high));
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(5))
            .unwrap();
        ends.into_iter()
            .filter(|(_, high)| *high > 0)
            .map(|(p, high)| {
                let at = committed
                    .find_partition("payment.completed", p)
                    .map(|e| e.offset());
                (p, at, high)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap()
}

/// Waits until the ledger has committed every record of `payment.completed`: what was published
/// before is processed.
async fn ledger_caught_up(brokers: &str) {
    lab::client::eventually(
        "the ledger at the end of payment.completed",
        SAGA_TIMEOUT,
        || async {
            let positions = ledger_positions(brokers).await;
            (!positions.is_empty()
                && positions
                    .iter()
                    .all(|(_, at, high)| *at == Some(Offset::Offset(*high))))
            .then_some(())
        },
    )
    .await
    .unwrap();
}

async fn entries(brokers: &str) -> Vec<Entry> {
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || committed_entries(&brokers, TOPIC))
        .await
        .unwrap()
}

/// A `payment.completed` published again with its `ce_id` (as a DLQ replay, a producer's retry or
/// a forger would) is one money movement: the ledger writes one entry for it, also after it
/// restarts and rebuilds what it counted from `ledger.entries`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_payment_is_counted_once() {
    let mut t = spawn_lab().await;
    let brokers = t.lab.brokers().to_owned();
    let order = t
        .client
        .place_order("alice", &[("LATTE", 2, 5000)])
        .await
        .unwrap();
    let id = order.id;
    assert_eq!(
        t.client
            .wait_terminal(id, SAGA_TIMEOUT)
            .await
            .unwrap()
            .status,
        OrderStatus::Confirmed
    );
    let paid = read_topic_async(&brokers, topics::PAYMENT_COMPLETED)
        .await
        .into_iter()
        .find(|m| header(m, "ce_correlationid").as_deref() == Some(id.to_string().as_str()))
        .expect("the order's payment.completed");
    let event_id: Uuid = header(&paid, "ce_id").unwrap().parse().unwrap();
    let of_event = |entries: &[Entry]| entries.iter().filter(|e| e.event_id == event_id).count();
    lab::client::eventually("the payment's entry", SAGA_TIMEOUT, || async {
        (of_event(&entries(&brokers).await) == 1).then_some(())
    })
    .await
    .unwrap();

    let republish = || async {
        publish(
            &brokers,
            topics::PAYMENT_COMPLETED,
            std::str::from_utf8(paid.key().unwrap()).unwrap(),
            paid.payload().unwrap(),
            paid.headers().cloned().unwrap(),
        )
        .await;
    };
    // Twice while the ledger runs: it reads both copies (its offsets pass them), writes nothing.
    republish().await;
    republish().await;
    ledger_caught_up(&brokers).await;
    let after = entries(&brokers).await;
    assert_eq!(of_event(&after), 1, "{after:?}");

    // A new ledger knows the event from ledger.entries alone.
    t.lab.restart_ledger().await.unwrap();
    republish().await;
    ledger_caught_up(&brokers).await;
    let after_restart = entries(&brokers).await;
    assert_eq!(of_event(&after_restart), 1, "{after_restart:?}");
    assert_eq!(after_restart.len(), after.len(), "{after_restart:?}");
    let entry = &after_restart[0];
    assert_eq!(
        (entry.kind.as_str(), entry.amount, entry.order_id.as_str()),
        ("debit", 10_000, id.to_string().as_str())
    );
    t.stop().await;
}
