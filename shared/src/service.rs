//! What runs a service ([`build`] lays it out, [`ServiceApp`] runs it): HTTP server, outbox
//! relay and consumers, and the endpoints every service has (`/health`, `/ready`, `/metrics`,
//! `/openapi.json`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use serde_json::json;
use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};
use tokio::net::TcpListener;

use crate::catalogue::{self, CatalogueReader};
use crate::config::CommonConfig;
use crate::consumer::{Consumed, ConsumerRunner, Handler, Subscription};
use crate::events::Topic;
use crate::faults::Faults;
use crate::outbox::OutboxRelay;
use crate::schemas::Schemas;
use crate::shutdown::{self, Shutdown};
use schema_registry::client::RegistryClient;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("connecting to the database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(
        "the database was made by another version of this service (its migration {0} differs); \
         start from an empty database (the lab: remove its data dir, or pass another --data-dir)"
    )]
    OtherSchema(i64),
    #[error("applying migrations: {0}")]
    Migrate(MigrateError),
    #[error("creating the Kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error("binding the HTTP port: {0}")]
    Io(#[from] std::io::Error),
    #[error("registering the events' schemas: {0}")]
    Registry(#[from] schema_registry::client::ClientError),
}

/// What `/ready` waits for beyond a database and a broker that answer: every consumer holds its
/// partition assignment with a fetch position for each partition, and the producer has the
/// metadata of every topic the service publishes to. Only then does the first event after
/// "ready" take a steady-state time (no group join, offset lookup or metadata request left).
#[derive(Debug, Default)]
pub struct Readiness {
    consumers: Vec<Arc<AtomicBool>>,
    producer: AtomicBool,
    /// The outbox relay listens for commits (without it, it only polls).
    relay: Arc<AtomicBool>,
    /// A service that keeps a copy of the catalogue: it has read it to the end.
    catalogue: Option<Arc<AtomicBool>>,
    /// The service that writes the catalogue: every product's state is on the topic (none
    /// left to publish, none waiting in the outbox), so a reader started now reads it whole.
    catalogue_published: Option<Arc<AtomicBool>>,
}

impl Readiness {
    /// Nothing ready yet, of service `S` as `common` configures it.
    fn of<S: SagaService>(common: &CommonConfig) -> Self {
        Self {
            consumers: (0..common.consumers.max(1))
                .map(|_| Arc::new(AtomicBool::new(false)))
                .collect(),
            producer: AtomicBool::new(false),
            relay: Arc::new(AtomicBool::new(false)),
            catalogue: (S::CATALOGUE == catalogue::Role::Reads).then(Arc::default),
            catalogue_published: (S::CATALOGUE == catalogue::Role::Writes).then(Arc::default),
        }
    }

    /// Consumers that hold their partitions, and all consumers.
    pub fn consumers(&self) -> (usize, usize) {
        let ready = self
            .consumers
            .iter()
            .filter(|c| c.load(Ordering::Acquire))
            .count();
        (ready, self.consumers.len())
    }

    /// Whether the producer knows every topic the service publishes to.
    pub fn producer(&self) -> bool {
        self.producer.load(Ordering::Acquire)
    }

    /// Whether the outbox relay is woken by each commit.
    pub fn relay(&self) -> bool {
        self.relay.load(Ordering::Acquire)
    }

    /// Whether the copy of the catalogue has been read to the end (`None`: the service keeps
    /// none).
    pub fn catalogue(&self) -> Option<bool> {
        self.catalogue.as_ref().map(|c| c.load(Ordering::Acquire))
    }

    /// Whether every product's state is on the catalogue topic (`None`: the service does not
    /// write it).
    pub fn catalogue_published(&self) -> Option<bool> {
        self.catalogue_published
            .as_ref()
            .map(|c| c.load(Ordering::Acquire))
    }

    pub fn is_ready(&self) -> bool {
        let (ready, all) = self.consumers();
        ready == all
            && self.producer()
            && self.relay()
            && self.catalogue() != Some(false)
            && self.catalogue_published() != Some(false)
    }

    /// Waits until [`Readiness::is_ready`]; on timeout, says what is missing.
    pub async fn wait(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !self.is_ready() {
            if Instant::now() > deadline {
                let (ready, all) = self.consumers();
                return Err(format!(
                    "not ready after {timeout:?}: {ready} of {all} consumers hold their \
                     partitions, producer metadata {}, outbox relay {}{}",
                    if self.producer() { "known" } else { "missing" },
                    if self.relay() {
                        "listening"
                    } else {
                        "not listening"
                    },
                    match (self.catalogue(), self.catalogue_published()) {
                        (Some(false), _) => {
                            ", the catalogue not read to its end yet (is the inventory service up?)"
                        }
                        (_, Some(false)) => ", the catalogue not published yet",
                        _ => "",
                    }
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

/// The one shape of a saga service: what each of the four declares about itself. The service
/// binaries, the lab and the tests all build a service from this declaration with [`build`].
pub trait SagaService: Send + Sync + 'static {
    /// Its name: the metrics label, `/health`, and its consumer group.
    const NAME: &'static str;
    /// Its standard HTTP port.
    const DEFAULT_PORT: u16;
    /// The name of its database (its role is [`SagaService::database_role`]).
    const DATABASE: &'static str;
    /// Its own schema (sqlx migrations from version 2; [`crate::db::migrator`] puts the tables
    /// every service has before them).
    const MIGRATOR: &'static Migrator;
    /// Its own HTTP endpoints, given its database pool.
    const ROUTER: fn(PgPool) -> Router;
    /// Their OpenAPI document ([`document`] adds the endpoints every service has).
    const OPENAPI: fn() -> utoipa::openapi::OpenApi;
    /// Its reaction to the events it consumes, whose declaration is its subscription.
    type Handler: Handler + Default;
    /// The topics it publishes to (through its outbox). Its tests check that it publishes
    /// nothing else; the lab's dashboard draws the chain from these and the handlers' topics.
    const PUBLISHES: &'static [Topic];

    /// Its part in the shop's catalogue ([`crate::catalogue`]).
    const CATALOGUE: catalogue::Role = catalogue::Role::None;

    /// The topics it writes, each with the JSON Schema of its values: what it registers with a
    /// schema registry.
    fn schemas() -> Vec<(&'static str, serde_json::Value)> {
        let events = Self::PUBLISHES.iter().map(|t| (t.name(), t.json_schema()));
        let catalogue = (Self::CATALOGUE == catalogue::Role::Writes)
            .then(|| (catalogue::TOPIC, catalogue::Product::json_schema()));
        events.chain(catalogue).collect()
    }

    /// The topics it consumes, from its handler's declaration ([`Handler::Consumed`]).
    fn consumes() -> &'static [Topic] {
        <<Self::Handler as Handler>::Consumed as Consumed>::TOPICS
    }

    /// The CloudEvents `ce_source` of the events it publishes: `/` and its name.
    fn source() -> String {
        format!("/{}", Self::NAME)
    }

    /// The database role that owns [`SagaService::DATABASE`], e.g. `payment_service`.
    fn database_role() -> String {
        Self::NAME.replace('-', "_")
    }
}

/// Builds service `S` on `port` (0: a free one), with fault switches the caller may keep:
/// connects to its database (applying its migrations) and the broker, binds its port, and lays
/// out its HTTP server, outbox relay and consumers, ready to [`ServiceApp::run_until`].
pub async fn build<S: SagaService>(
    common: &CommonConfig,
    port: u16,
    faults: Arc<Faults>,
) -> Result<ServiceApp, HostError> {
    // Install the metrics recorder before anything records.
    let metrics = crate::telemetry::prometheus();
    let pool = migrated_pool::<S>(common).await?;
    let producer = crate::kafka::producer(&common.brokers)?;
    // A broker that is down is only a warning: the outbox holds events until it is back, and
    // topics are auto-created.
    if let Err(err) = crate::kafka::ensure_topics(&common.brokers, common.topic_partitions).await {
        tracing::warn!(error = %err, "could not create topics; relying on auto-creation");
    }
    let schemas = registered_schemas::<S>(common).await?;
    let listener = TcpListener::bind((common.host.as_str(), port)).await?;
    let name = S::NAME;
    let readiness = Arc::new(Readiness::of::<S>(common));
    let probe = Probe {
        pool: pool.clone(),
        producer: producer.clone(),
        name,
        readiness: readiness.clone(),
    };
    let openapi = Arc::new(document((S::OPENAPI)()));
    let endpoints = common_routes(probe, metrics, openapi);
    // A service that keeps a copy of the catalogue finds its prices in memory.
    let prices = catalogue::PriceList::default();
    let routes = (S::ROUTER)(pool.clone()).layer(axum::Extension(prices.clone()));
    let router = crate::http::with_middleware(routes.merge(endpoints));
    let relay = OutboxRelay::new(
        pool.clone(),
        producer.clone(),
        Duration::from_millis(common.outbox_poll_ms),
        name,
    )
    .with_listening_flag(readiness.relay.clone())
    .with_schemas(schemas.clone());
    let handler: Arc<dyn Subscription> = Arc::new(S::Handler::default());
    let consumers = readiness
        .consumers
        .iter()
        .enumerate()
        .map(|(index, ready)| ConsumerRunner {
            index,
            group: name.to_owned(),
            brokers: common.brokers.clone(),
            pool: pool.clone(),
            producer: producer.clone(),
            handler: handler.clone(),
            retry: common.retry_policy(),
            faults: faults.clone(),
            service: name,
            ready: ready.clone(),
            schemas: schemas.clone(),
        })
        .collect();
    let catalogue = readiness.catalogue.clone().map(|ready| CatalogueReader {
        brokers: common.brokers.clone(),
        pool: pool.clone(),
        producer: producer.clone(),
        ready,
        retry: common.retry_policy(),
        service: name,
        prices,
    });
    let writes_catalogue = readiness.catalogue_published.clone().map(|p| (pool, p));
    Ok(ServiceApp {
        name,
        listener,
        router,
        relay,
        consumers,
        catalogue,
        writes_catalogue,
        producer,
        readiness,
    })
}

/// With a schema registry: service `S`'s schemas, registered.
async fn registered_schemas<S: SagaService>(
    common: &CommonConfig,
) -> Result<Option<Arc<Schemas>>, HostError> {
    let Some(url) = &common.schema_registry else {
        return Ok(None);
    };
    let schemas = Schemas::register(RegistryClient::new(url), &S::schemas()).await?;
    Ok(Some(Arc::new(schemas)))
}

/// Service `S`'s database pool, its migrations applied (refused if the database holds another
/// service's schema).
async fn migrated_pool<S: SagaService>(common: &CommonConfig) -> Result<PgPool, HostError> {
    // One connection per consumer, one for the relay, one for HTTP requests.
    let warm = common.consumers as u32 + 2;
    let pool = crate::db::connect(&common.database_url, warm, common.db_max_connections).await?;
    crate::db::migrator(S::MIGRATOR)
        .run(&pool)
        .await
        .map_err(|e| match e {
            MigrateError::VersionMismatch(v) | MigrateError::VersionMissing(v) => {
                HostError::OtherSchema(v)
            }
            other => HostError::Migrate(other),
        })?;
    Ok(pool)
}

/// The endpoints every service has: `/health`, `/ready`, `/metrics`, `/openapi.json`.
fn common_routes(
    probe: Probe,
    metrics: PrometheusHandle,
    openapi: Arc<utoipa::openapi::OpenApi>,
) -> Router {
    let name = probe.name;
    Router::new()
        .route(
            "/health",
            get(move || async move { Json(json!({"status": "ok", "service": name})) }),
        )
        .route("/ready", get(ready))
        .route("/metrics", get(move || async move { metrics.render() }))
        .route(
            "/openapi.json",
            get(move || async move { Json(openapi.as_ref().clone()) }),
        )
        .with_state(probe)
}

/// Runs service `S` as its own binary does, until Ctrl-C or SIGTERM.
pub async fn serve<S: SagaService>(common: &CommonConfig, port: u16) -> Result<(), HostError> {
    crate::telemetry::init_tracing("info");
    let app = build::<S>(common, port, Arc::default()).await?;
    app.run_until_stopped().await?;
    Ok(())
}

/// A built service, bound to its port: its HTTP server, outbox relay and consumers, ready to run.
pub struct ServiceApp {
    name: &'static str,
    listener: TcpListener,
    router: Router,
    relay: OutboxRelay,
    consumers: Vec<ConsumerRunner>,
    catalogue: Option<CatalogueReader>,
    /// The service writes the catalogue: its database, to queue the products' changes.
    writes_catalogue: Option<(PgPool, Arc<AtomicBool>)>,
    producer: FutureProducer,
    readiness: Arc<Readiness>,
}

#[derive(Clone)]
struct Probe {
    pool: PgPool,
    producer: FutureProducer,
    name: &'static str,
    readiness: Arc<Readiness>,
}

impl ServiceApp {
    /// What `/ready` reports, for waiting on it in-process.
    pub fn readiness(&self) -> Arc<Readiness> {
        self.readiness.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serves until `signal` resolves, then stops the relay and consumers and waits for them.
    pub async fn run_until<F>(self, signal: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (trigger, shutdown) = shutdown::channel();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(warm_producer(
            self.producer,
            self.readiness.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(self.relay.run(shutdown.clone()));
        for c in self.consumers {
            tasks.spawn(c.run(shutdown.clone()));
        }
        if let Some(reader) = self.catalogue {
            tasks.spawn(reader.run(shutdown.clone()));
        }
        if let Some((pool, published)) = self.writes_catalogue {
            tasks.spawn(catalogue::queue_changes(
                pool,
                self.name,
                published,
                shutdown.clone(),
            ));
        }
        tracing::info!(service = self.name, addr = %self.listener.local_addr()?, "listening");
        let mut http_shutdown: Shutdown = shutdown.clone();
        let serve = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { http_shutdown.wait().await });
        let server = tokio::spawn(async move { serve.await });
        signal.await;
        trigger.fire();
        // Bounded: a consumer stuck in librdkafka must not hang the process.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(result)) => result,
            // A panic in the server is this service's panic, not a clean stop.
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => {
                tracing::warn!(
                    service = self.name,
                    "HTTP connections still open 5 s after the stop; leaving them"
                );
                Ok(())
            }
        }
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown::ctrl_c_or_sigterm()).await
    }
}

/// Fetches the metadata of every topic a service may publish to (the saga topics and their
/// DLQs), retrying until the broker answers, then marks the producer ready.
async fn warm_producer(producer: FutureProducer, readiness: Arc<Readiness>, mut stop: Shutdown) {
    let mut topics = crate::events::topics::with_dlqs();
    topics.extend([
        catalogue::TOPIC.to_owned(),
        crate::events::topics::dlq(catalogue::TOPIC),
    ]);
    loop {
        if crate::kafka::fetch_topic_metadata(&producer, &topics, Duration::from_secs(5)).await {
            readiness.producer.store(true, Ordering::Release);
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait() => return,
        }
    }
}

/// A service's whole OpenAPI document: its own routes and the endpoints every service has.
pub fn document(service: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    let mut doc = service;
    doc.merge(CommonEndpoints::openapi());
    doc
}

/// The endpoints [`build`] adds to every service, as its OpenAPI document lists them. (The
/// functions below only carry the documentation; the routes are laid out in [`build`].)
#[derive(utoipa::OpenApi)]
#[openapi(paths(health_doc, ready_doc, metrics_doc, openapi_doc))]
struct CommonEndpoints;

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "`{\"status\":\"ok\",\"service\":...}`", body = Object)))]
#[allow(dead_code)]
fn health_doc() {}

/// Readiness: the database and broker answer, every consumer holds its partitions with a fetch
/// position, the producer knows its topics and the outbox relay listens; a service that keeps a
/// copy of the catalogue has read it to its end.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready; each part in the body", body = Object),
        (status = 503, description = "Not ready yet; the body says which part", body = Object)))]
#[allow(dead_code)]
fn ready_doc() {}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics", body = String, content_type = "text/plain")))]
#[allow(dead_code)]
fn metrics_doc() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this service", body = Object)))]
#[allow(dead_code)]
fn openapi_doc() {}

async fn ready(State(p): State<Probe>) -> impl IntoResponse {
    let db = sqlx::query("SELECT 1").execute(&p.pool).await.is_ok();
    let broker = crate::kafka::broker_reachable(&p.producer, Duration::from_secs(1)).await;
    let (consumers_ready, consumers) = p.readiness.consumers();
    let producer = p.readiness.producer();
    let status = if db && broker && p.readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut res = (
        status,
        Json(json!({
            "service": p.name,
            "database": db,
            "broker": broker,
            "consumers": {"assigned": consumers_ready, "total": consumers},
            "producer_metadata": producer,
            "outbox_relay_listening": p.readiness.relay(),
            "catalogue_loaded": p.readiness.catalogue(),
            "catalogue_published": p.readiness.catalogue_published(),
        })),
    )
        .into_response();
    // "Not ready" is this probe's answer while the service starts (or its database is away,
    // which the parts that need it log themselves), not a server error.
    res.extensions_mut().insert(crate::http::NotAFailure);
    res
}
