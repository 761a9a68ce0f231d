//! Starting a lab per test, and assertions shared by the tests.

use std::time::Duration;

use lab::dashboard::SharedLab;
use lab::{Lab, LabClient, LabConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

/// Deadline for one saga to finish in a test.
pub const SAGA_TIMEOUT: Duration = Duration::from_secs(60);

pub struct TestLab {
    pub lab: Lab,
    pub client: LabClient,
    _dir: tempfile::TempDir,
    _one_at_a_time: tokio::sync::OwnedMutexGuard<()>,
}

/// cargo-nextest runs each test in its own process. Under plain `cargo test` the tests of this
/// binary share one process, and with it the metrics recorder the assertions read, so there they
/// take turns.
fn one_lab_per_process() -> std::sync::Arc<tokio::sync::Mutex<()>> {
    static LOCK: std::sync::OnceLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
        std::sync::OnceLock::new();
    LOCK.get_or_init(Default::default).clone()
}

impl TestLab {
    pub async fn stop(self) {
        self.lab.shutdown().await;
    }

    /// Serves the lab's dashboard on a free port, as the `lab` binary does.
    pub async fn with_dashboard(self) -> DashboardLab {
        let brokers = self.lab.brokers().to_owned();
        let shared: SharedLab = std::sync::Arc::new(tokio::sync::Mutex::new(Some(self.lab)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let dashboard = lab::dashboard::Dashboard::serve(
            shared.clone(),
            self.client.clone(),
            brokers,
            listener,
        )
        .unwrap();
        DashboardLab {
            url,
            shared,
            client: self.client,
            dashboard,
            _dir: self._dir,
            _one_at_a_time: self._one_at_a_time,
        }
    }
}

/// A [`TestLab`] behind its dashboard.
pub struct DashboardLab {
    pub url: String,
    pub shared: SharedLab,
    pub client: LabClient,
    dashboard: lab::dashboard::Dashboard,
    _dir: tempfile::TempDir,
    _one_at_a_time: tokio::sync::OwnedMutexGuard<()>,
}

impl DashboardLab {
    pub async fn stop(self) {
        self.dashboard.shutdown().await;
        if let Some(lab) = self.shared.lock().await.take() {
            lab.shutdown().await;
        }
    }
}

/// A lab on free ports with a fresh PostgreSQL and broker; `tune` adjusts service settings.
pub async fn spawn_lab_with(tune: impl FnOnce(&mut LabConfig)) -> TestLab {
    let turn = one_lab_per_process().lock_owned().await;
    saga_shared::telemetry::init_tracing("warn");
    let dir = tempfile::Builder::new()
        .prefix("saga-lab-test")
        .tempdir()
        .unwrap();
    let mut config = LabConfig::ephemeral(dir.path());
    config.service.consumers = 1;
    config.service.topic_partitions = 3;
    config.service.retry_max_ms = 500;
    tune(&mut config);
    let lab = Lab::start(config, &mut |_| {}).await.expect("lab starts");
    let client = LabClient::new(&lab);
    TestLab {
        lab,
        client,
        _dir: dir,
        _one_at_a_time: turn,
    }
}

pub async fn spawn_lab() -> TestLab {
    spawn_lab_with(|_| {}).await
}

/// Sum of every wallet and every captured payment: constant whatever happens.
pub async fn wallets_total(client: &LabClient) -> i64 {
    client
        .wallets()
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["balance"].as_i64().unwrap())
        .sum()
}

/// The event types of an order's timeline, in order.
pub fn timeline_events(order: &serde_json::Value) -> Vec<String> {
    order["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

/// Every record currently in `topic` (all partitions), read without a group.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = saga_shared::kafka::client_config(brokers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(topic), timeout).unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut expected = 0;
    for p in md.topics()[0].partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout).unwrap();
        if high > low {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))
                .unwrap();
            expected += (high - low) as usize;
        }
    }
    let mut out = Vec::new();
    if expected == 0 {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.len() < expected && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.unwrap().detach());
        }
    }
    assert_eq!(out.len(), expected, "read every record of {topic}");
    out
}

pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// Publishes raw records (key, value, headers) and waits for the broker's acknowledgement.
pub async fn publish(brokers: &str, topic: &str, key: &str, value: &[u8], headers: OwnedHeaders) {
    let producer: FutureProducer = saga_shared::kafka::producer(brokers).unwrap();
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(value)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// GET `url` and its JSON body, failing the test on any error.
pub async fn get_json(http: &reqwest::Client, url: impl reqwest::IntoUrl) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// Sum of the Prometheus series `name` whose labels include every `labels` pair (all services of
/// the lab share one recorder, so any service's `/metrics` shows them all).
pub async fn metric_sum(client: &LabClient, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = client
        .http()
        .get(format!("{}/metrics", client.order))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `read_topic` off the async workers (librdkafka calls block).
pub async fn read_topic_async(brokers: &str, topic: &str) -> Vec<OwnedMessage> {
    let (b, t) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_topic(&b, &t))
        .await
        .unwrap()
}

/// Waits until `metric_sum` reaches `at_least`; returns the value then.
pub async fn eventually_metric(
    client: &LabClient,
    name: &str,
    labels: &[(&str, &str)],
    at_least: f64,
) -> f64 {
    lab::client::eventually(
        &format!("{name} {labels:?} >= {at_least}"),
        SAGA_TIMEOUT,
        || async {
            let v = metric_sum(client, name, labels).await;
            (v >= at_least).then_some(v)
        },
    )
    .await
    .unwrap()
}

/// The order once its timeline has `steps` entries. Events of different topics may reach the
/// order service in any order, so the last status can be reached before an earlier step is recorded.
pub async fn order_with_steps(client: &LabClient, id: &str, steps: usize) -> serde_json::Value {
    lab::client::eventually(
        &format!("{steps} timeline steps of {id}"),
        SAGA_TIMEOUT,
        || async {
            let order = client.order(id).await.ok()?;
            (order["timeline"].as_array()?.len() >= steps).then_some(order)
        },
    )
    .await
    .unwrap()
}
