//! Starting a lab per test, and assertions shared by the tests.

use std::time::Duration;

use lab::dashboard::SharedLab;
use lab::{Lab, LabClient, LabConfig};
// The services' types the saga tests read answers with (the Spring and Streams tests, which
// share these helpers, use only some).
#[allow(unused_imports)]
pub use notification_service::api::NotificationKind;
pub use order_service::api::Order;
#[allow(unused_imports)]
pub use order_service::domain::OrderStatus;
#[allow(unused_imports)]
pub use payment_service::api::PaymentStatus;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use uuid::Uuid;

/// Deadline for one saga to finish in a test.
pub const SAGA_TIMEOUT: Duration = Duration::from_secs(60);

pub struct TestLab {
    pub lab: Lab,
    pub client: LabClient,
    /// The Apache Kafka the lab runs on, in the suite that runs on it (`saga_on_kafka`);
    /// otherwise the lab embeds the workspace broker.
    kafka: Option<apache_kafka::KafkaCluster>,
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
        shut_down(self.lab).await;
    }

    /// Stops the broker the lab runs on: the embedded one, or kills the Apache Kafka node.
    pub async fn stop_broker(&mut self) {
        match &mut self.kafka {
            Some(kafka) => kafka.kill(1).expect("the Kafka node stops"),
            None => self.lab.stop_broker().await,
        }
    }

    /// Starts the broker stopped by [`TestLab::stop_broker`] again, on its data.
    pub async fn restart_broker(&mut self) {
        match &mut self.kafka {
            Some(kafka) => kafka.restart(1).await.expect("the Kafka node starts again"),
            None => self
                .lab
                .restart_broker()
                .await
                .expect("the broker starts again"),
        }
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
            _kafka: self.kafka,
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
    _kafka: Option<apache_kafka::KafkaCluster>,
    _dir: tempfile::TempDir,
    _one_at_a_time: tokio::sync::OwnedMutexGuard<()>,
}

impl DashboardLab {
    /// A client of the lab's schema registry.
    pub async fn registry(&self) -> schema_registry::client::RegistryClient {
        let lab = self.shared.lock().await;
        let url = lab.as_ref().expect("the lab runs").schema_registry_url();
        schema_registry::client::RegistryClient::new(url)
    }

    pub async fn stop(self) {
        self.dashboard.shutdown().await;
        if let Some(lab) = self.shared.lock().await.take() {
            shut_down(lab).await;
        }
    }
}

/// A lab on free ports with databases of its own and a fresh broker (this suite's: see `ON_APACHE_KAFKA`);
/// `tune` adjusts service settings.
pub async fn spawn_lab_with(tune: impl FnOnce(&mut LabConfig)) -> TestLab {
    spawn_lab_on(crate::ON_APACHE_KAFKA, tune).await
}

/// Stops `lab` and drops its databases from the tests' shared PostgreSQL server.
async fn shut_down(lab: Lab) {
    let admin = lab.admin().clone();
    let databases = lab::Service::ALL.map(|svc| lab.database(svc).to_owned());
    lab.shutdown().await;
    for database in databases {
        admin.drop_database(&database).await.unwrap();
    }
}

/// A lab on free ports with databases of its own, on a single-node Apache Kafka of its own if
/// `apache_kafka`, else on the embedded workspace broker.
pub async fn spawn_lab_on(apache_kafka: bool, tune: impl FnOnce(&mut LabConfig)) -> TestLab {
    let turn = one_lab_per_process().lock_owned().await;
    saga_shared::telemetry::init_tracing("warn");
    let dir = tempfile::Builder::new()
        .prefix("saga-lab-test")
        .tempdir()
        .unwrap();
    let mut config = LabConfig::ephemeral(dir.path());
    // The test binary's PostgreSQL server (the suite's, under `cargo xtask test`), with databases
    // of this lab's own.
    config.postgres_url = Some(
        lab_postgres::test_server_url()
            .await
            .expect("the tests' PostgreSQL server"),
    );
    config.database_suffix = format!("_{}", uuid::Uuid::new_v4().simple());
    let kafka = if apache_kafka {
        let kafka =
            apache_kafka::KafkaCluster::start(dir.path(), apache_kafka::KafkaConfig::for_tests(1))
                .await
                .expect("Apache Kafka starts");
        config.brokers = Some(kafka.bootstrap());
        Some(kafka)
    } else {
        None
    };
    config.service.consumers = 1;
    config.service.topic_partitions = 3;
    config.service.retry_max_ms = 500;
    tune(&mut config);
    let lab = Lab::start(config, &mut |_| {}).await.expect("lab starts");
    let client = LabClient::new(&lab);
    TestLab {
        lab,
        client,
        kafka,
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
        .iter()
        .map(|w| w.balance)
        .sum()
}

/// Wallets and captured payments, from the payment service's database: their sum is what was
/// seeded, whatever happened.
pub async fn wallets_and_captured(lab: &lab::Lab) -> (i64, i64) {
    let payments = sqlx::PgPool::connect(lab.db_url(lab::Service::Payment))
        .await
        .unwrap();
    let sums = sqlx::query_as(
        "SELECT (SELECT sum(balance)::bigint FROM wallets), \
                (SELECT coalesce(sum(amount), 0)::bigint FROM payments WHERE status = 'CAPTURED')",
    )
    .fetch_one(&payments)
    .await
    .unwrap();
    payments.close().await;
    sums
}

/// The event types of an order's timeline, in order.
pub fn timeline_events(order: &Order) -> Vec<&str> {
    order.timeline.iter().map(|e| e.event.as_str()).collect()
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
pub async fn order_with_steps(client: &LabClient, id: Uuid, steps: usize) -> Order {
    lab::client::eventually(
        &format!("{steps} timeline steps of {id}"),
        SAGA_TIMEOUT,
        || async {
            let order = client.order(id).await.ok()?;
            (order.timeline.len() >= steps).then_some(order)
        },
    )
    .await
    .unwrap()
}
