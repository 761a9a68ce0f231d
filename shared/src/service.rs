//! [`ServiceHost`]: what runs a service: HTTP server, outbox relay and consumers, and the
//! endpoints every service has (`/health`, `/ready`, `/metrics`, `/openapi.json`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use serde_json::json;
use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};
use tokio::net::TcpListener;

use crate::config::CommonConfig;
use crate::consumer::{ConsumerRunner, Faults, Handler};
use crate::outbox::OutboxRelay;
use crate::shutdown::{self, Shutdown};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("connecting to the database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("applying migrations: {0}")]
    Migrate(#[from] MigrateError),
    #[error("creating the Kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error("binding the HTTP port: {0}")]
    Io(#[from] std::io::Error),
}

/// The consumer group of a service and what it reacts to.
pub struct Consumption {
    pub group: &'static str,
    pub topics: Vec<&'static str>,
    pub handler: Arc<dyn Handler>,
}

/// Database pool (migrated) and producer of a service, made before its routes.
pub struct Backends {
    pub pool: PgPool,
    pub producer: FutureProducer,
}

impl Backends {
    /// Connects, applies the migrations and creates the saga topics (a broker that is down is
    /// only a warning: the outbox holds events until it is back, and topics are auto-created).
    pub async fn connect(common: &CommonConfig, migrator: &Migrator) -> Result<Self, HostError> {
        let pool = crate::db::connect(&common.database_url, common.db_max_connections).await?;
        migrator.run(&pool).await?;
        let producer = crate::kafka::producer(&common.brokers)?;
        if let Err(err) =
            crate::kafka::ensure_topics(&common.brokers, common.topic_partitions).await
        {
            tracing::warn!(error = %err, "could not create topics; relying on auto-creation");
        }
        Ok(Self { pool, producer })
    }
}

/// What a service brings to its host.
pub struct ServiceParts {
    /// Service name, e.g. `order-service` (metrics label, `/health`).
    pub name: &'static str,
    /// HTTP port; 0 picks a free one.
    pub port: u16,
    /// The service's own endpoints, state applied.
    pub routes: Router,
    pub openapi: utoipa::openapi::OpenApi,
    /// What it consumes, if anything.
    pub consumption: Option<Consumption>,
    /// Fault switches handed to its consumers.
    pub faults: Arc<Faults>,
}

/// A built service, bound to its port and ready to run: what every service's
/// `Application::build` returns.
pub struct ServiceApp {
    host: ServiceHost,
    pool: PgPool,
    faults: Arc<Faults>,
}

impl ServiceApp {
    /// Connects to the database (applying `migrator`) and the broker, then binds the service
    /// that `describe` lays out given its pool.
    pub async fn build(
        common: &CommonConfig,
        migrator: &Migrator,
        faults: Arc<Faults>,
        describe: impl FnOnce(PgPool) -> ServiceParts,
    ) -> Result<Self, HostError> {
        let backends = Backends::connect(common, migrator).await?;
        let pool = backends.pool.clone();
        let host = ServiceHost::bind(common, backends, describe(pool.clone())).await?;
        Ok(Self { host, pool, faults })
    }

    pub fn port(&self) -> u16 {
        self.host.port()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Switches for fault injection (the lab uses them).
    pub fn faults(&self) -> Arc<Faults> {
        self.faults.clone()
    }

    pub async fn run_until<F>(self, signal: F) -> std::io::Result<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.host.run_until(signal).await
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.host.run_until_stopped().await
    }
}

/// A running-to-be service.
pub struct ServiceHost {
    name: &'static str,
    listener: TcpListener,
    router: Router,
    relay: OutboxRelay,
    consumers: Vec<ConsumerRunner>,
}

#[derive(Clone)]
struct Probe {
    pool: PgPool,
    producer: FutureProducer,
    name: &'static str,
}

impl ServiceHost {
    /// Binds `common.host:port` (port 0 picks a free port) and assembles the service.
    pub async fn bind(
        common: &CommonConfig,
        backends: Backends,
        parts: ServiceParts,
    ) -> Result<Self, HostError> {
        let ServiceParts {
            name,
            port,
            routes,
            openapi,
            consumption,
            faults,
        } = parts;
        // Install the recorder before anything records.
        let metrics = crate::telemetry::prometheus();
        let listener = TcpListener::bind((common.host.as_str(), port)).await?;
        let Backends { pool, producer } = backends;
        let probe = Probe {
            pool: pool.clone(),
            producer: producer.clone(),
            name,
        };
        let openapi = Arc::new(openapi);
        let common_routes = Router::new()
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
            .with_state(probe);
        let router = crate::http::with_middleware(routes.merge(common_routes));
        let relay = OutboxRelay::new(
            pool.clone(),
            producer.clone(),
            Duration::from_millis(common.outbox_poll_ms),
            name,
        );
        let consumers = match consumption {
            None => Vec::new(),
            Some(c) => (0..common.consumers.max(1))
                .map(|_| ConsumerRunner {
                    group: c.group.to_owned(),
                    topics: c.topics.clone(),
                    brokers: common.brokers.clone(),
                    pool: pool.clone(),
                    producer: producer.clone(),
                    handler: c.handler.clone(),
                    retry: common.retry_policy(),
                    faults: faults.clone(),
                    service: name,
                })
                .collect(),
        };
        Ok(Self {
            name,
            listener,
            router,
            relay,
            consumers,
        })
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
        tasks.spawn(self.relay.run(shutdown.clone()));
        for c in self.consumers {
            tasks.spawn(c.run(shutdown.clone()));
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
            _ => Ok(()),
        }
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown::ctrl_c_or_sigterm()).await
    }
}

async fn ready(State(p): State<Probe>) -> impl IntoResponse {
    let db = sqlx::query("SELECT 1").execute(&p.pool).await.is_ok();
    let broker = crate::kafka::broker_reachable(&p.producer, Duration::from_secs(1)).await;
    let status = if db && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"service": p.name, "database": db, "broker": broker})),
    )
}
