//! The Kafka Streams example (`examples/streams`, `processing.guarantee=exactly_once_v2`, built
//! by `cargo xtask setup`) over a running lab's topics: each customer's net spending and the
//! orders per status per minute must match what the saga did. Streams is the hardest client
//! there is (transactions, repartition topics, internal topic creation, rebalances).

const ON_APACHE_KAFKA: bool = false;

#[path = "saga/helpers.rs"]
#[allow(dead_code)]
mod helpers;
mod jvm;

use std::collections::BTreeMap;

use helpers::*;
use jvm::JavaApp;

const CLASSES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/streams/target");

/// The last value each customer's spending line gave (`spending customer=<id> total=<n>`).
fn spending(lines: &[String]) -> BTreeMap<String, i64> {
    let mut last = BTreeMap::new();
    for l in lines {
        if let Some(rest) = l.split("spending customer=").nth(1)
            && let Some((customer, total)) = rest.split_once(" total=")
            && let Ok(total) = total.trim().parse()
        {
            last.insert(customer.to_owned(), total);
        }
    }
    last
}

/// Orders per status, over every minute window: the last count of each (status, window) line
/// (`orders status=<s> window=<w> count=<n>`), added up.
fn per_status(lines: &[String]) -> BTreeMap<String, i64> {
    let mut last: BTreeMap<(String, String), i64> = BTreeMap::new();
    for l in lines {
        let field = |name: &str| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_owned)
        };
        if l.contains("orders status=")
            && let (Some(status), Some(window), Some(count)) =
                (field("status="), field("window="), field("count="))
            && let Ok(count) = count.parse()
        {
            last.insert((status, window), count);
        }
    }
    let mut sum = BTreeMap::new();
    for ((status, _), count) in last {
        *sum.entry(status).or_default() += count;
    }
    sum
}

/// The last committed value per key of `streams.customer-spending`, read to its end (offsets
/// there include transaction markers, so the end is where the consumer says it is).
fn last_committed(brokers: &str) -> BTreeMap<String, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    const TOPIC: &str = "streams.customer-spending";
    let consumer: BaseConsumer<lab::EndIsNotAnError> = saga_shared::kafka::client_config(brokers)
        .set("group.id", "streams-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create_with_context(lab::EndIsNotAnError)
        .unwrap();
    let partitions =
        lab::kafka::partitions_of(&consumer, TOPIC, std::time::Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    // A partition is at its end from its end-of-partition event until another record of it
    // arrives.
    let mut at_end = std::collections::BTreeSet::new();
    let mut last = BTreeMap::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while at_end.len() < partitions.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "{TOPIC} read to its end"
        );
        match consumer.poll(std::time::Duration::from_millis(100)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {TOPIC}: {e}"),
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let key = String::from_utf8_lossy(m.key().unwrap()).into_owned();
                let value = String::from_utf8_lossy(m.payload().unwrap())
                    .parse()
                    .unwrap();
                last.insert(key, value);
            }
        }
    }
    last
}

async fn the_streams_app_counts_what_the_saga_did(apache_kafka: bool, changelogs: bool) {
    jvm::built(&format!("{CLASSES}/classes"), "examples/streams");
    let t = spawn_lab_on(apache_kafka, |_| {}).await;
    let brokers = t.lab.brokers().to_owned();
    let state = tempfile::tempdir().unwrap();
    let classpath = format!("{CLASSES}/classes:{CLASSES}/lib/*");
    let state_dir = state.path().display().to_string();
    let mut args = vec![
        "-Xmx384m",
        "-cp",
        &classpath,
        "dev.sagalab.streams.SagaStreamsApp",
        "--bootstrap-servers",
        &brokers,
        "--state-dir",
        &state_dir,
    ];
    if !changelogs {
        args.push("--no-changelog");
    }
    let mut app = JavaApp::start(&args);
    app.wait_for(&["state from=REBALANCING to=RUNNING"]).await;

    let c = &t.client;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let order = c.place_order("alice", &[("LATTE", 1, 5000)]).await.unwrap();
        ids.push(order.id);
    }
    // Charged, then refunded: out of stock.
    let order = c
        .place_order("carol", &[("LATTE", 1, 5000), ("ICED_TEA", 2, 4500)])
        .await
        .unwrap();
    ids.push(order.id);
    for id in &ids {
        c.wait_terminal(*id, SAGA_TIMEOUT).await.unwrap();
    }

    let want_spending: BTreeMap<String, i64> =
        [("alice".to_owned(), 15_000), ("carol".to_owned(), 0)].into();
    app.wait_until(&format!("spending {want_spending:?}"), |lines| {
        (spending(lines) == want_spending).then_some(())
    })
    .await;
    let want_counts: BTreeMap<String, i64> = [
        ("PENDING", 4),
        ("PAID", 4),
        ("CONFIRMED", 3),
        ("COMPENSATING", 1),
        ("CANCELLED", 1),
    ]
    .map(|(s, n)| (s.to_owned(), n))
    .into();
    app.wait_until(&format!("counts {want_counts:?}"), |lines| {
        (per_status(lines) == want_counts).then_some(())
    })
    .await;

    // What it wrote, in transactions, agrees: the last committed record per customer. The log
    // line comes before its transaction commits (every 100 ms), so this too is waited for.
    let deadline = std::time::Instant::now() + SAGA_TIMEOUT;
    loop {
        let brokers = brokers.clone();
        let written = tokio::task::spawn_blocking(move || last_committed(&brokers))
            .await
            .unwrap();
        if written == want_spending {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "streams.customer-spending ends with {written:?}, not {want_spending:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_workspace_broker_without_changelogs() {
    the_streams_app_counts_what_the_saga_did(false, false).await;
}

/// The full topology: the stores' changelog topics are compacted topics
/// (`cleanup.policy=compact`, the windowed one `compact,delete`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_workspace_broker_with_changelogs() {
    the_streams_app_counts_what_the_saga_did(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_apache_kafka_with_changelogs() {
    the_streams_app_counts_what_the_saga_did(true, true).await;
}
