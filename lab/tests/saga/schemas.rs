//! The services and the schema registry: every record they write carries the id of its topic's
//! schema (Confluent's wire format), and a consumer reads a record only if its schema id is a
//! version of the topic's subject that this service's schema can read; any other goes to the
//! DLQ, saying why. A compatible new version (an optional field) is read by the old services.

use rdkafka::Message;
use saga_shared::dlq::header as dlq_header;
use saga_shared::events::topics;
use saga_shared::schemas::{frame, unframe};
use schema_registry::client::RegistryClient;
use serde_json::json;

use crate::helpers::*;

/// The payment service's dead letters of order.created: their errors, by original offset.
async fn payment_refusals(brokers: &str, at_least: usize) -> Vec<String> {
    let dlq = topics::dlq(topics::ORDER_CREATED);
    lab::client::eventually(
        &format!("{at_least} dead letters of payment-service"),
        SAGA_TIMEOUT,
        || async {
            let records = read_topic_async(brokers, &dlq).await;
            let errors: Vec<String> = records
                .iter()
                .filter(|m| {
                    header(m, dlq_header::CONSUMER_GROUP).as_deref() == Some("payment-service")
                })
                .filter_map(|m| header(m, dlq_header::ERROR))
                .collect();
            (errors.len() >= at_least).then_some(errors)
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_carry_their_schema_and_a_record_no_service_can_read_goes_to_the_dlq() {
    let t = spawn_lab().await;
    let c = &t.client;
    let brokers = t.lab.brokers().to_owned();
    let registry = RegistryClient::new(t.lab.schema_registry_url());
    let order = c.place_order("alice", &[("LATTE", 1, 5000)]).await.unwrap();
    c.wait_terminal(order.id, SAGA_TIMEOUT).await.unwrap();

    // Each topic's records carry the id of its subject's first version.
    for topic in [topics::ORDER_CREATED, topics::PAYMENT_COMPLETED] {
        let registered = registry
            .version(&format!("{topic}-value"), "1")
            .await
            .unwrap();
        let records = read_topic_async(&brokers, topic).await;
        assert!(!records.is_empty(), "{topic} has records");
        for m in &records {
            let (id, payload) = unframe(m.payload().unwrap()).expect("a framed value");
            assert_eq!(id, registered.id, "{topic}");
            serde_json::from_slice::<serde_json::Value>(payload).expect("JSON after the frame");
        }
    }
    let created = read_topic_async(&brokers, topics::ORDER_CREATED).await;
    let original = &created[0];
    let (_, payload) = unframe(original.payload().unwrap()).unwrap();
    let event: serde_json::Value = serde_json::from_slice(payload).unwrap();
    let key = original
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned());
    let again = |value: Vec<u8>| {
        let (brokers, key) = (brokers.clone(), key.clone().unwrap());
        let headers = original.headers().unwrap().clone();
        async move { publish(&brokers, topics::ORDER_CREATED, &key, &value, headers).await }
    };

    // A compatible new version, an optional field: the services (built with version 1) read
    // the same event written with it, and find it is one they processed already.
    let subject = "order.created-value";
    let mut v2 = registry.version(subject, "1").await.unwrap().schema;
    v2["properties"]["note"] = json!({"type": "string"});
    let v2_id = registry.register(subject, &v2).await.unwrap();
    let mut with_note = event.clone();
    with_note["note"] = json!("extra hot");
    let duplicates = [("service", "payment-service"), ("outcome", "duplicate")];
    let before = metric_sum(c, "events_consumed_total", &duplicates).await;
    again(frame(v2_id, &serde_json::to_vec(&with_note).unwrap())).await;
    eventually_metric(c, "events_consumed_total", &duplicates, before + 1.0).await;

    // An id the registry never gave, one of another subject, and a version the services
    // cannot read (registered past the check, the subject's level set to NONE).
    again(frame(987_654, payload)).await;
    let paid = registry
        .version("payment.completed-value", "1")
        .await
        .unwrap();
    again(frame(paid.id, payload)).await;
    registry.set_level(subject, "NONE").await.unwrap();
    let mut v3 = v2.clone();
    v3["properties"]["total"] = json!({"type": "string"});
    let v3_id = registry.register(subject, &v3).await.unwrap();
    let mut retyped = event.clone();
    retyped["total"] = json!(retyped["total"].to_string());
    again(frame(v3_id, &serde_json::to_vec(&retyped).unwrap())).await;

    let errors = payment_refusals(&brokers, 3).await;
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].contains("schema id 987654 is unknown to the schema registry"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains(&format!(
            "schema id {} is not a version of subject order.created-value",
            paid.id
        )),
        "{errors:?}"
    );
    assert!(
        errors[2].contains(&format!("schema id {v3_id} cannot be read"))
            && errors[2].contains("total"),
        "{errors:?}"
    );
    // Nothing was charged twice.
    let (wallets, captured) = wallets_and_captured(&t.lab).await;
    assert_eq!(captured, 5000, "one charge; wallets total {wallets}");
    t.stop().await;
}
