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
    let id = order.id;
    assert_eq!(
        c.wait_terminal(id, SAGA_TIMEOUT).await.unwrap().status,
        OrderStatus::Confirmed
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
    let id = order.id;
    let letters = lab::client::eventually("the order in the DLQ", SAGA_TIMEOUT, || async {
        let l = lab::dlq::list(&brokers, &dlq).await.unwrap();
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
    assert_eq!(c.order(id).await.unwrap().status, OrderStatus::Pending);
    assert_eq!(c.wallet_balance("carol").await.unwrap(), 50_000);

    // The fault is gone: replay, and the saga completes, charging once. The redrive is addressed
    // to payment-service: the notification service, which had processed the original, skips it
    // (no duplicate to count, no second notification).
    faults.fail_handlers.store(false, Ordering::SeqCst);
    let notif_dups = [
        ("outcome", "duplicate"),
        ("service", "notification-service"),
    ];
    let notif_skips = [("outcome", "skipped"), ("service", "notification-service")];
    let pay_dups = [("outcome", "duplicate"), ("service", "payment-service")];
    let pay_skips = [("outcome", "skipped"), ("service", "payment-service")];
    let notif_base = metric_sum(c, "events_consumed_total", &notif_dups).await;
    let pay_base = metric_sum(c, "events_consumed_total", &pay_dups).await;
    let notif_skip_base = metric_sum(c, "events_consumed_total", &notif_skips).await;
    assert_eq!(lab::dlq::replay_all(&brokers, &dlq).await.unwrap(), 1);
    assert_eq!(
        c.wait_terminal(id, SAGA_TIMEOUT).await.unwrap().status,
        OrderStatus::Confirmed
    );
    assert_eq!(c.wallet_balance("carol").await.unwrap(), 40_000);
    eventually_metric(
        c,
        "events_consumed_total",
        &notif_skips,
        notif_skip_base + 1.0,
    )
    .await;
    assert_eq!(
        metric_sum(c, "events_consumed_total", &notif_dups).await,
        notif_base,
        "the notification service does not see the redrive as a duplicate"
    );
    assert_eq!(
        metric_sum(c, "events_consumed_total", &pay_skips).await,
        0.0
    );

    // The listing shows it replayed; replaying again sends nothing.
    let letters = lab::dlq::list(&brokers, &dlq).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].replayed);
    assert_eq!(lab::dlq::replay_all(&brokers, &dlq).await.unwrap(), 0);
    // Nothing new reached order.created: the redrive is its last record, read by both groups.
    let created = read_topic_async(&brokers, topics::ORDER_CREATED).await;
    let redrives: Vec<_> = created
        .iter()
        .filter(|m| header(m, dlq_header::REDRIVE_GROUP).is_some())
        .collect();
    assert_eq!(redrives.len(), 1);
    assert_eq!(
        header(redrives[0], dlq_header::REDRIVE_GROUP).as_deref(),
        Some("payment-service")
    );
    assert_eq!(
        header(redrives[0], dlq_header::REDRIVE_FROM),
        Some(format!(
            "{dlq}/{}/{}",
            letters[0].partition, letters[0].offset
        ))
    );
    assert_eq!(
        metric_sum(c, "events_consumed_total", &pay_dups).await,
        pay_base
    );
    assert_eq!(c.wallet_balance("carol").await.unwrap(), 40_000);
    assert_eq!(c.payments(id).await.unwrap().len(), 1);
    assert_eq!(c.product("COLD_BREW").await.unwrap(), (48, 2));
    let received = c
        .notifications(id)
        .await
        .unwrap()
        .iter()
        .filter(|n| n.kind == NotificationKind::Received)
        .count();
    assert_eq!(received, 1);
    t.stop().await;
}

/// A poison record is dead-lettered by both groups of `order.created`. Replaying one of the two
/// DLQ records by partition and offset redrives just that one, to its group only: payment
/// dead-letters it again (a new DLQ record), notification skips it. A second single replay sends
/// nothing; a bulk replay sends what is still waiting, and then nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_goes_only_to_the_group_that_dead_lettered_the_record() {
    use lab::dlq::{Replay, Selection, replay};

    let t = spawn_lab().await;
    let c = &t.client;
    let brokers = t.lab.brokers().to_owned();
    let dlq = topics::dlq(topics::ORDER_CREATED);
    let order_id = Uuid::now_v7();
    let env = Envelope::new(topics::ORDER_CREATED, "/test", order_id);
    publish(
        &brokers,
        topics::ORDER_CREATED,
        &order_id.to_string(),
        br#"{"order_id":"not-a-uuid"}"#,
        env.to_headers(),
    )
    .await;
    let letters = lab::client::eventually("dead-lettered by both groups", SAGA_TIMEOUT, || async {
        let l = lab::dlq::list(&brokers, &dlq).await.unwrap();
        (l.len() >= 2).then_some(l)
    })
    .await
    .unwrap();
    assert_eq!(letters.len(), 2);
    assert!(letters.iter().all(|d| !d.replayed));
    let by_payment = letters
        .iter()
        .find(|d| d.consumer_group() == Some("payment-service"))
        .unwrap();
    let counted = |service: &'static str, outcome: &'static str| {
        let labels = [
            ("service", service),
            ("outcome", outcome),
            ("topic", topics::ORDER_CREATED),
        ];
        async move { metric_sum(c, "events_consumed_total", &labels).await }
    };
    let pay_dead = counted("payment-service", "dead_lettered").await;
    let notif_dead = counted("notification-service", "dead_lettered").await;
    let notif_skipped = counted("notification-service", "skipped").await;
    let notif_dups = counted("notification-service", "duplicate").await;
    assert_eq!((pay_dead, notif_dead), (1.0, 1.0));

    // Just payment's record.
    let one = Selection::One {
        partition: by_payment.partition,
        offset: by_payment.offset,
    };
    assert_eq!(
        replay(&brokers, &dlq, one.clone()).await.unwrap(),
        Replay {
            replayed: 1,
            already_replayed: 0
        }
    );
    // Payment processes it (and, the record being poison, dead-letters it again); notification
    // skips it.
    eventually_metric(
        c,
        "events_consumed_total",
        &[("service", "payment-service"), ("outcome", "dead_lettered")],
        pay_dead + 1.0,
    )
    .await;
    eventually_metric(
        c,
        "events_consumed_total",
        &[("service", "notification-service"), ("outcome", "skipped")],
        notif_skipped + 1.0,
    )
    .await;
    assert_eq!(
        counted("notification-service", "dead_lettered").await,
        notif_dead
    );
    assert_eq!(
        counted("notification-service", "duplicate").await,
        notif_dups
    );
    let letters =
        lab::client::eventually("the record dead-lettered again", SAGA_TIMEOUT, || async {
            let l = lab::dlq::list(&brokers, &dlq).await.unwrap();
            (l.len() >= 3).then_some(l)
        })
        .await
        .unwrap();
    assert_eq!(letters.len(), 3);
    let state: Vec<(Option<&str>, bool)> = letters
        .iter()
        .map(|d| (d.consumer_group(), d.replayed))
        .collect();
    assert_eq!(
        state.iter().filter(|s| s.1).collect::<Vec<_>>(),
        [&(Some("payment-service"), true)],
        "only the replayed record is marked: {state:?}"
    );
    let again = letters
        .iter()
        .find(|d| d.offset > by_payment.offset && d.consumer_group() == Some("payment-service"));
    let again = again.expect("payment's second dead letter");
    assert_eq!(
        again.header(dlq_header::REDRIVE_FROM),
        Some(format!("{dlq}/{}/{}", by_payment.partition, by_payment.offset).as_str())
    );

    // The same record again: nothing is sent.
    assert_eq!(
        replay(&brokers, &dlq, one).await.unwrap(),
        Replay {
            replayed: 0,
            already_replayed: 1
        }
    );
    // A record that does not exist.
    assert!(matches!(
        replay(
            &brokers,
            &dlq,
            Selection::One {
                partition: 0,
                offset: 1_000
            }
        )
        .await,
        Err(lab::dlq::DlqError::NoRecord { .. })
    ));
    // Bulk: the two still waiting. Being poison, both come back as new dead letters, which are
    // the only ones waiting then.
    assert_eq!(
        replay(&brokers, &dlq, Selection::All).await.unwrap(),
        Replay {
            replayed: 2,
            already_replayed: 1
        }
    );
    let letters = lab::client::eventually("both dead-lettered again", SAGA_TIMEOUT, || async {
        let l = lab::dlq::list(&brokers, &dlq).await.unwrap();
        (l.len() >= 5).then_some(l)
    })
    .await
    .unwrap();
    assert_eq!(letters.len(), 5);
    let replayed: Vec<bool> = letters.iter().map(|d| d.replayed).collect();
    assert_eq!(replayed, [true, true, true, false, false], "{letters:?}");
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
    let id = order.id;
    assert_eq!(
        c.wait_terminal(id, SAGA_TIMEOUT).await.unwrap().status,
        OrderStatus::Confirmed
    );
    assert_eq!(
        c.wallet_balance("alice").await.unwrap(),
        wallet_before - 5000
    );
    let (stock, _) = c.product("LATTE").await.unwrap();
    assert_eq!(stock, stock_before.0 - 1);
    t.stop().await;
}
