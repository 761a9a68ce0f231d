//! The catalogue as a table (`saga_shared::catalogue`): the inventory service publishes each
//! product's state to the compacted topic `inventory.products`, the order service prices orders
//! from its copy, and an order service that starts late, on an empty database, reads the whole
//! catalogue from the compacted log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lab::Service;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use saga_shared::catalogue::TOPIC;
use serde_json::{Value, json};

use crate::helpers::*;

/// Every record now in the catalogue topic, read to the end of each partition (a compacted log
/// has gaps, so its offsets do not count its records), and each partition's first and end
/// offsets.
fn catalogue_log(brokers: &str) -> (Vec<OwnedMessage>, BTreeMap<i32, (i64, i64)>) {
    let consumer: BaseConsumer = saga_shared::kafka::client_config(brokers)
        .set("group.id", "test-catalogue-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(TOPIC), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(TOPIC, p.id(), Offset::Beginning)
            .unwrap();
        let marks = consumer
            .fetch_watermarks(TOPIC, p.id(), Duration::from_secs(10))
            .unwrap();
        ends.insert(p.id(), marks);
    }
    let mut open = tpl.count();
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while open > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "read {TOPIC} to its end"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => panic!("reading {TOPIC}: {e}"),
            None => {}
        }
    }
    (out, ends)
}

/// (SKU, price, stock) of every product, as `url`'s list shows it under `price`.
async fn table(http: &reqwest::Client, url: String, price: &str) -> BTreeMap<String, (i64, i64)> {
    get_json(http, url)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let sku = p["sku"].as_str().unwrap().to_owned();
            (
                sku,
                (p[price].as_i64().unwrap(), p["stock"].as_i64().unwrap()),
            )
        })
        .collect()
}

/// The inventory service's products, and the order service's copy at `order_url`, once the copy
/// is the same.
async fn copied(http: &reqwest::Client, inventory: &str, order_url: &str) {
    lab::client::eventually(
        "the order service's copy of the catalogue",
        SAGA_TIMEOUT,
        || async {
            let products = table(http, format!("{inventory}/products"), "price").await;
            let copy = table(http, format!("{order_url}/catalogue"), "unit_price").await;
            (products == copy).then_some(())
        },
    )
    .await
    .unwrap();
}

/// Makes the catalogue's segments roll after 100 ms and be cleaned at once, so that the test sees
/// compaction (the topic's configs all given: AlterConfigs replaces them).
async fn compact_soon(brokers: &str) {
    let admin: AdminClient<DefaultClientContext> =
        saga_shared::kafka::client_config(brokers).create().unwrap();
    let config = AlterConfig::new(ResourceSpecifier::Topic(TOPIC))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "1048576")
        .set("segment.ms", "100")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("min.compaction.lag.ms", "0");
    let results = admin
        .alter_configs(&[config], &AdminOptions::new())
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_priced_from_the_catalogue_and_a_late_service_reads_it_compacted() {
    let t = spawn_lab().await;
    let http = reqwest::Client::new();
    let (order_url, inventory) = (t.lab.url(Service::Order), t.lab.url(Service::Inventory));
    let brokers = t.lab.brokers().to_owned();
    // Once the lab is up, the copy is whole at once: the inventory service was ready (its
    // catalogue all on the topic) before the order service started, which was ready only
    // after reading that much.
    let skus = |t: BTreeMap<String, (i64, i64)>| t.into_keys().collect::<Vec<_>>();
    assert_eq!(
        skus(table(&http, format!("{order_url}/catalogue"), "unit_price").await),
        skus(table(&http, format!("{inventory}/products"), "price").await),
        "every product is listed as soon as the lab is up"
    );
    copied(&http, &inventory, &order_url).await;

    // A record the order service cannot read goes to the catalogue's DLQ, saying why, and its
    // copy keeps what it had.
    let junk = rdkafka::message::OwnedHeaders::new();
    publish(&brokers, TOPIC, "LATTE", b"{\"sku\":\"LATTE\"}", junk).await;
    let dlq = saga_shared::events::topics::dlq(TOPIC);
    let why = lab::client::eventually("the catalogue's dead letter", SAGA_TIMEOUT, || async {
        let letters = read_topic_async(&brokers, &dlq).await;
        letters
            .first()
            .and_then(|m| header(m, saga_shared::dlq::header::ERROR))
    })
    .await
    .unwrap();
    assert!(why.starts_with("the value is not a product"), "{why}");
    copied(&http, &inventory, &order_url).await;

    // A new price reaches the order service's copy, which prices the next order; the old price
    // sent by a client is refused.
    let changed = http
        .patch(format!("{inventory}/products/LATTE"))
        .json(&json!({"price": 5200}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    copied(&http, &inventory, &order_url).await;
    let post = |body: Value| http.post(format!("{order_url}/orders")).json(&body).send();
    let line = json!({"sku": "LATTE", "quantity": 2});
    let placed = post(json!({"customer_id": "alice", "items": [line]}))
        .await
        .unwrap();
    assert_eq!(placed.status(), 201);
    let placed: Value = placed.json().await.unwrap();
    assert_eq!(placed["total"], 10400);
    let old = json!({"sku": "LATTE", "quantity": 2, "unit_price": 5000});
    let refused = post(json!({"customer_id": "alice", "items": [old]}))
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("5000 is not the price of LATTE (5200)"),
        "{problem}"
    );
    let id = placed["id"].as_str().unwrap().parse().unwrap();
    let order = t.client.wait_terminal(id, SAGA_TIMEOUT).await.unwrap();
    assert_eq!(order.status.as_str(), "CONFIRMED");
    let balance = t.client.wallet_balance("alice").await.unwrap();
    assert_eq!(balance, 100_000 - 10_400, "charged the catalogue's price");

    // Many changes of one product; the cleaner keeps its latest (and the other products' only)
    // record: its partition's log has gaps, fewer records than offsets.
    compact_soon(&brokers).await;
    let inventory_db = sqlx::PgPool::connect(t.lab.db_url(Service::Inventory))
        .await
        .unwrap();
    lab::client::eventually("the catalogue compacted", SAGA_TIMEOUT, || {
        let (db, brokers) = (inventory_db.clone(), brokers.clone());
        async move {
            sqlx::query("UPDATE products SET stock = stock + 1 WHERE sku = 'MOCHA'")
                .execute(&db)
                .await
                .unwrap();
            let (records, ends) = tokio::task::spawn_blocking(move || catalogue_log(&brokers))
                .await
                .unwrap();
            let partition = records
                .iter()
                .find(|m| m.key() == Some(b"MOCHA"))?
                .partition();
            let kept = records
                .iter()
                .filter(|m| m.partition() == partition)
                .count() as i64;
            let (first, end) = ends[&partition];
            (kept < end - first).then_some(())
        }
    })
    .await
    .unwrap();
    copied(&http, &inventory, &order_url).await;

    // An order service started now, on an empty database, reads the whole catalogue from the
    // compacted log before it says it is ready.
    let database_url = lab_postgres::test_database().await.unwrap();
    let mut common = saga_shared::config::CommonConfig::new(database_url, &brokers);
    common.consumers = 1;
    common.schema_registry = Some(t.lab.schema_registry_url().to_owned());
    let late =
        saga_shared::service::build::<order_service::OrderService>(&common, 0, Arc::default())
            .await
            .unwrap();
    let late_url = format!("http://{}", late.local_addr());
    let readiness = late.readiness();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(late.run_until(async {
        let _ = stopped.await;
    }));
    readiness.wait(SAGA_TIMEOUT).await.unwrap();
    let products = table(&http, format!("{inventory}/products"), "price").await;
    let copy = table(&http, format!("{late_url}/catalogue"), "unit_price").await;
    assert_eq!(
        copy, products,
        "the late service's copy is the inventory's products"
    );
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
