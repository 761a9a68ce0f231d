//! The services and the schema registry: every record they write carries the id of its topic's
//! schema (Confluent's wire format), and a consumer reads a record only if its schema id is a
//! version of the topic's subject that this service's schema can read; any other goes to the
//! DLQ, saying why. A compatible new version (an optional field) is read by the old services.

use std::collections::BTreeMap;
use std::time::Duration;

use order_service::domain::OrderStatus;
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

/// `lab --schema-registry URL`: given another registry (as it would be given Confluent's), the
/// lab serves none of its own; the services register their schemas there and frame their records
/// with its ids, and the lab reports that registry to the dashboard and `lab schema`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_given_another_registry_registers_and_frames_with_it() {
    let (url, _registry_broker) = registry_elsewhere().await;
    let elsewhere = RegistryClient::new(&url);
    // A subject of its own first, so that its ids are not the ones the lab's would give.
    let taken = elsewhere
        .register("elsewhere-value", &json!({"type": "object"}))
        .await
        .unwrap();
    let t = spawn_lab_with(|c| c.service.schema_registry = Some(url.clone())).await;
    assert_eq!(t.lab.schema_registry_url(), url);
    let order = t
        .client
        .place_order_at_list_prices("alice", &[("LATTE", 1)])
        .await
        .unwrap();
    let done = t
        .client
        .wait_terminal(order.id, SAGA_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(done.status, OrderStatus::Confirmed);

    let subjects = elsewhere.subjects().await.unwrap();
    for topic in topics::ALL.iter().chain([&saga_shared::catalogue::TOPIC]) {
        assert!(subjects.contains(&format!("{topic}-value")), "{subjects:?}");
    }
    let created = elsewhere.version("order.created-value", "1").await.unwrap();
    assert_ne!(created.id, taken);
    let records = read_topic_async(t.lab.brokers(), topics::ORDER_CREATED).await;
    assert!(!records.is_empty());
    for m in &records {
        let (id, _) = unframe(m.payload().unwrap()).expect("a framed value");
        assert_eq!(id, created.id, "framed with the given registry's id");
    }
    t.stop().await;
}

/// A registry that is not the lab's: the workspace's, on a broker of its own, served on a free
/// port (Confluent's would do the same, were it available to the tests). Its URL, and the
/// broker to keep while it is used.
async fn registry_elsewhere() -> (String, (broker::BrokerHandle, tempfile::TempDir)) {
    let dir = tempfile::tempdir().unwrap();
    let config = broker::BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = broker::spawn(listener, config).await.unwrap();
    let registry = tokio::time::timeout(
        Duration::from_secs(60),
        schema_registry::Registry::open(&handle.bootstrap()),
    )
    .await
    .expect("the registry opens within a minute")
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    schema_registry::api::spawn(listener, registry);
    (url, (handle, dir))
}

/// Confluent's own client library (confluent-kafka for Python: its `SchemaRegistryClient`, its
/// JSON Schema serializer and deserializer, its consumer; `lab/tests/compat/`) against the lab:
/// it decodes every record the services wrote, frames an event exactly as they do, and the
/// registry answers its compatibility checks and refusals as Confluent's registry would.
/// (`.ci/run` installs it: `pip install confluent-kafka[schemaregistry,json]`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluents_client_decodes_every_record_and_checks_changes_with_the_lab_registry() {
    let t = spawn_lab().await;
    let c = &t.client;
    let order = c
        .place_order_at_list_prices("alice", &[("LATTE", 1)])
        .await
        .unwrap();
    assert_eq!(
        c.wait_terminal(order.id, SAGA_TIMEOUT)
            .await
            .unwrap()
            .status,
        OrderStatus::Confirmed
    );
    let saga = [
        topics::ORDER_CREATED,
        topics::PAYMENT_COMPLETED,
        topics::INVENTORY_UPDATED,
    ];
    let read = [&saga[..], &[saga_shared::catalogue::TOPIC]].concat();
    let out = confluent_client(t.lab.brokers(), t.lab.schema_registry_url(), &read).await;
    let registry = RegistryClient::new(t.lab.schema_registry_url());

    let subjects: Vec<String> = serde_json::from_value(out["subjects"].clone()).unwrap();
    for topic in &read {
        assert!(subjects.contains(&format!("{topic}-value")), "{subjects:?}");
    }
    // Every record decoded by Confluent's deserializer (the writer's schema fetched by the id in
    // its frame, the payload checked against it), and that id is the subject's first version.
    for topic in read {
        let first = registry
            .version(&format!("{topic}-value"), "1")
            .await
            .unwrap();
        let records = out["records"][topic].as_array().unwrap();
        assert!(!records.is_empty(), "{topic}");
        for r in records {
            assert_eq!(r["schema_id"], first.id, "{topic}: {r}");
        }
    }
    for topic in saga {
        let ours = out["records"][topic]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["value"]["order_id"] == order.id.to_string());
        assert!(
            ours.is_some(),
            "{topic} has the order: {}",
            out["records"][topic]
        );
    }
    // The catalogue as Confluent's tools see it: each SKU's latest record holds its price.
    let mut listed = BTreeMap::new();
    for r in out["records"][saga_shared::catalogue::TOPIC]
        .as_array()
        .unwrap()
    {
        listed.insert(
            r["key"].as_str().unwrap().to_owned(),
            r["value"]["unit_price"].clone(),
        );
    }
    let products = c.products().await.unwrap();
    assert_eq!(listed.len(), products.len(), "{listed:?}");
    for p in products {
        assert_eq!(listed[p.sku.as_str()], p.price, "{}", p.sku);
    }

    let v1 = registry.version("order.created-value", "1").await.unwrap();
    assert_eq!(
        out["latest"],
        json!({"version": 1, "id": v1.id, "type": "JSON"})
    );
    assert_eq!(
        out["serialized"],
        json!({"magic": 0, "schema_id": v1.id, "same_payload": true}),
        "Confluent's serializer frames an event as the services do"
    );
    // Schema evolution through Confluent's client: an optional field passes, a retyped one is
    // refused with Confluent's 409 and nothing is kept for it.
    assert_eq!(out["compatible"], true);
    assert_eq!(out["incompatible"], false);
    assert_eq!(
        out["retyped_refused"],
        json!({"http_status": 409, "error_code": 409})
    );
    let v2 = registry.version("order.created-value", "2").await.unwrap();
    assert_eq!(out["with_note_id"], v2.id);
    assert_eq!(out["versions"], json!([1, 2]));
    assert_eq!(out["scratch_level"], "FULL");
    assert_eq!(
        out["unknown_subject"],
        json!({"http_status": 404, "error_code": 40401})
    );
    t.stop().await;
}

/// Runs `lab/tests/compat/confluent_registry_client.py` and reads the JSON it prints.
async fn confluent_client(brokers: &str, registry: &str, topics: &[&str]) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/compat/confluent_registry_client.py"
    );
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .args([brokers, registry])
        .args(topics)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("Confluent's client finished in time")
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "Confluent's client failed (is it installed? \
         pip install 'confluent-kafka[schemaregistry,json]'):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}
