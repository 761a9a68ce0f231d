//! Poison records go to the DLQ with their provenance, and the partition moves on; a
//! dead-lettered record replayed later is processed exactly once.

use std::sync::atomic::Ordering;

use rdkafka::Message;
use rdkafka::message::OwnedHeaders;
use saga_shared::Envelope;
use saga_shared::dlq::header as dlq_header;
use saga_shared::events::topics;
use uuid::Uuid;

use crate::helpers::*;
use lab::Service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_land_in_the_dlq_and_later_orders_complete() {
    let t = spawn_lab().await;
    let c = &t.client;
    let brokers = t.lab.brokers().to_owned();

    // Garbage bytes with no headers at all.
    let garbage: &[u8] = b"\x00\xff\xfe not json at all";
    publish(
        &brokers,
        topics::ORDER_CREATED,
        "poison-1",
        garbage,
        OwnedHeaders::new(),
    )
    .await;
    // A perfect envelope around JSON that is not an order.created.
    let order_id = Uuid::now_v7();
    let env = Envelope::new(topics::ORDER_CREATED, "/test", order_id);
    let invalid = br#"{"order_id":"not-a-uuid","items":"many"}"#;
    publish(
        &brokers,
        topics::ORDER_CREATED,
        &order_id.to_string(),
        invalid,
        env.to_headers(),
    )
    .await;

    // Orders placed afterwards still complete.
    let order = c.place_order("alice", &[("LATTE", 1, 5000)]).await.unwrap();
    let id = order["id"].as_str().unwrap();
    assert_eq!(
        c.wait_terminal(id, SAGA_TIMEOUT).await.unwrap()["status"],
        "CONFIRMED"
    );

    // Both poison records, once per consuming group (payment and notification).
    let dlq = topics::dlq(topics::ORDER_CREATED);
    let records =
        lab::client::eventually("4 records in order.created.dlq", SAGA_TIMEOUT, || async {
            let r = read_topic_async(&brokers, &dlq).await;
            (r.len() >= 4).then_some(r)
        })
        .await
        .unwrap();
    assert_eq!(records.len(), 4);
    let mut groups = Vec::new();
    for m in &records {
        assert_eq!(
            header(m, dlq_header::ORIGINAL_TOPIC).as_deref(),
            Some(topics::ORDER_CREATED)
        );
        assert!(
            header(m, dlq_header::ORIGINAL_PARTITION)
                .unwrap()
                .parse::<i32>()
                .is_ok()
        );
        assert!(
            header(m, dlq_header::ORIGINAL_OFFSET)
                .unwrap()
                .parse::<i64>()
                .is_ok()
        );
        assert!(
            header(m, dlq_header::ATTEMPTS)
                .unwrap()
                .parse::<u32>()
                .unwrap()
                >= 1
        );
        let error = header(m, dlq_header::ERROR).unwrap();
        let payload = m.payload().unwrap();
        if m.key() == Some(b"poison-1".as_slice()) {
            assert_eq!(payload, garbage, "the original bytes are kept");
            assert!(error.contains("envelope"), "{error}");
        } else {
            assert_eq!(payload, invalid.as_slice());
            assert!(error.contains("not a valid order.created"), "{error}");
            assert_eq!(
                header(m, "ce_id"),
                Some(env.id.to_string()),
                "original headers are kept"
            );
        }
        groups.push(header(m, dlq_header::CONSUMER_GROUP).unwrap());
    }
    groups.sort();
    assert_eq!(
        groups,
        [
            "notification-service",
            "notification-service",
            "payment-service",
            "payment-service"
        ]
    );
    // The poison never reached a wallet.
    assert_eq!(c.wallet_balance("alice").await.unwrap(), 95_000);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_is_processed_once() {
    let t = spawn_lab_with(|c| {
        c.service.max_attempts = 2;
        c.service.retry_max_ms = 100;
    })
    .await;
    let c = &t.client;
    let brokers = t.lab.brokers().to_owned();
    let dlq = topics::dlq(topics::ORDER_CREATED);

    // Payment fails every attempt: after 2 the order.created goes to the DLQ.
    let faults = t.lab.faults(Service::Payment);
    faults.fail_handlers.store(true, Ordering::SeqCst);
    let order = c
        .place_order("carol", &[("COLD_BREW", 2, 5000)])
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    let letters = lab::client::eventually("the order in the DLQ", SAGA_TIMEOUT, || async {
        let l = saga_shared::dlq::list(&brokers, &dlq).await.unwrap();
        (!l.is_empty()).then_some(l)
    })
    .await
    .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].header(dlq_header::CONSUMER_GROUP),
        Some("payment-service")
    );
    assert_eq!(letters[0].header(dlq_header::ATTEMPTS), Some("2"));
    assert_eq!(letters[0].error(), Some("injected fault"));
    assert_eq!(c.order(&id).await.unwrap()["status"], "PENDING");
    assert_eq!(c.wallet_balance("carol").await.unwrap(), 50_000);

    // The fault is gone: replay, and the saga completes, charging once.
    faults.fail_handlers.store(false, Ordering::SeqCst);
    let notif_dups = [
        ("outcome", "duplicate"),
        ("service", "notification-service"),
    ];
    let pay_dups = [("outcome", "duplicate"), ("service", "payment-service")];
    let notif_base = metric_sum(c, "events_consumed_total", &notif_dups).await;
    let pay_base = metric_sum(c, "events_consumed_total", &pay_dups).await;
    assert_eq!(
        saga_shared::dlq::replay_all(&brokers, &dlq).await.unwrap(),
        1
    );
    assert_eq!(
        c.wait_terminal(&id, SAGA_TIMEOUT).await.unwrap()["status"],
        "CONFIRMED"
    );
    assert_eq!(c.wallet_balance("carol").await.unwrap(), 40_000);
    // The notification service had processed the original; the replayed copy is a duplicate to it.
    eventually_metric(c, "events_consumed_total", &notif_dups, notif_base + 1.0).await;

    // Replaying again changes nothing.
    assert_eq!(
        saga_shared::dlq::replay_all(&brokers, &dlq).await.unwrap(),
        1
    );
    eventually_metric(c, "events_consumed_total", &pay_dups, pay_base + 1.0).await;
    assert_eq!(c.wallet_balance("carol").await.unwrap(), 40_000);
    assert_eq!(c.payments(&id).await.unwrap().as_array().unwrap().len(), 1);
    assert_eq!(c.product("COLD_BREW").await.unwrap(), (48, 2));
    let received = c
        .notifications(&id)
        .await
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "received")
        .count();
    assert_eq!(received, 1);
    t.stop().await;
}

/// Events with a valid envelope whose content cannot be true: a total that is not what the lines
/// add up to, quantities whose product or sum would overflow. The typed payloads cannot even hold
/// such values, so they are forged as JSON. They go to the DLQ (refused at decode, or by the
/// payment's check of the total); no wallet is charged and no stock moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_events_go_to_the_dlq_and_change_no_wallet_or_stock() {
    use serde_json::json;

    let t = spawn_lab().await;
    let c = &t.client;
    let brokers = t.lab.brokers().to_owned();
    let wallet_before = c.wallet_balance("alice").await.unwrap();
    let stock_before = c.product("LATTE").await.unwrap();
    let line = |quantity: i64, unit_price: i64| json!({"sku": "LATTE", "quantity": quantity, "unit_price": unit_price});
    let forge = |topic: &'static str, payload: serde_json::Value, order_id: Uuid| {
        let brokers = brokers.clone();
        async move {
            let env = Envelope::new(topic, "/forger", order_id);
            let bytes = serde_json::to_vec(&payload).unwrap();
            publish(
                &brokers,
                topic,
                &order_id.to_string(),
                &bytes,
                env.to_headers(),
            )
            .await;
        }
    };
    let order_created = |items: Vec<serde_json::Value>, total: i64| {
        let order_id = Uuid::now_v7();
        let event = json!({
            "order_id": order_id, "customer_id": "alice", "items": items, "total": total,
            "currency": "KRW",
        });
        (event, order_id)
    };

    // A total that is not what the lines add up to: charging it would take the wrong amount.
    let (cheap, cheap_id) = order_created(vec![line(1, 5000)], 1);
    forge(topics::ORDER_CREATED, cheap, cheap_id).await;
    // Quantity times price overflows i64.
    let (huge, huge_id) = order_created(vec![line(i64::MAX, 2)], 5000);
    forge(topics::ORDER_CREATED, huge, huge_id).await;
    // A payment.completed whose quantities overflow when the lines of one SKU are added up.
    let paid_id = Uuid::now_v7();
    let paid = json!({
        "order_id": paid_id, "payment_id": Uuid::now_v7(), "customer_id": "alice",
        "amount": 5000, "currency": "KRW", "items": [line(i64::MAX, 1), line(1, 1)],
    });
    forge(topics::PAYMENT_COMPLETED, paid, paid_id).await;

    let from_group = |records: &[rdkafka::message::OwnedMessage], group: &str| {
        records
            .iter()
            .filter(|m| header(m, dlq_header::CONSUMER_GROUP).as_deref() == Some(group))
            .map(|m| {
                (
                    header(m, "ce_correlationid").unwrap_or_default(),
                    header(m, dlq_header::ERROR).unwrap_or_default(),
                )
            })
            .collect::<Vec<_>>()
    };
    let created_dlq = topics::dlq(topics::ORDER_CREATED);
    let refused_by_payment =
        lab::client::eventually("payment dead-letters both orders", SAGA_TIMEOUT, || async {
            let r = read_topic_async(&brokers, &created_dlq).await;
            let refused = from_group(&r, "payment-service");
            (refused.len() >= 2).then_some(refused)
        })
        .await
        .unwrap();
    assert_eq!(refused_by_payment.len(), 2, "{refused_by_payment:?}");
    for (order, error) in &refused_by_payment {
        if *order == cheap_id.to_string() {
            assert!(error.contains("does not match its lines"), "{error}");
        } else {
            assert_eq!(*order, huge_id.to_string());
            assert!(error.contains("quantity must be between 1 and"), "{error}");
        }
    }
    let paid_dlq = topics::dlq(topics::PAYMENT_COMPLETED);
    let refused_by_inventory = lab::client::eventually(
        "inventory dead-letters the payment",
        SAGA_TIMEOUT,
        || async {
            let r = read_topic_async(&brokers, &paid_dlq).await;
            let refused = from_group(&r, "inventory-service");
            (!refused.is_empty()).then_some(refused)
        },
    )
    .await
    .unwrap();
    assert_eq!(refused_by_inventory.len(), 1, "{refused_by_inventory:?}");
    assert_eq!(refused_by_inventory[0].0, paid_id.to_string());
    assert!(
        refused_by_inventory[0]
            .1
            .contains("quantity must be between 1 and"),
        "{:?}",
        refused_by_inventory[0]
    );

    // An honest order after them is served as usual; the forged ones moved nothing.
    let order = c.place_order("alice", &[("LATTE", 1, 5000)]).await.unwrap();
    let id = order["id"].as_str().unwrap();
    assert_eq!(
        c.wait_terminal(id, SAGA_TIMEOUT).await.unwrap()["status"],
        "CONFIRMED"
    );
    assert_eq!(
        c.wallet_balance("alice").await.unwrap(),
        wallet_before - 5000
    );
    let (stock, _) = c.product("LATTE").await.unwrap();
    assert_eq!(stock, stock_before.0 - 1);
    t.stop().await;
}
