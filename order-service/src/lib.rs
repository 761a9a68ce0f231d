//! The order service: takes orders, follows each order's saga and keeps its timeline.
//!
//! - [`domain`]: validated order input and the saga state machine ([`domain::OrderStatus`]).
//! - [`api`]: the HTTP endpoints and their OpenAPI document.
//! - [`saga`]: the consumer of payment and inventory events that moves orders along.
//! - [`Application`]: wires them to the database, the broker and a port.

pub mod api;
pub mod domain;
pub mod saga;

use std::sync::Arc;

use saga_shared::config::CommonConfig;
use saga_shared::consumer::Faults;
use saga_shared::events::topics;
use saga_shared::service::{Backends, Consumption, HostError, ServiceHost, ServiceParts};
use sqlx::PgPool;

/// The `ce_source` of events this service publishes.
pub const SOURCE: &str = "/order-service";
/// Its consumer group.
pub const GROUP: &str = "order-service";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/orders");

/// Settings of the order service.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "order-service", about = "Takes orders and follows their saga")]
pub struct Config {
    /// HTTP port.
    #[arg(long, env = "PORT", default_value_t = 8081)]
    pub port: u16,
    #[command(flatten)]
    pub common: CommonConfig,
}

/// The built service: bound to its port, ready to run.
pub struct Application {
    host: ServiceHost,
    pool: PgPool,
    faults: Arc<Faults>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, HostError> {
        Self::build_with_faults(config, Arc::new(Faults::default())).await
    }

    /// Like [`Application::build`], with fault switches the caller keeps (the lab).
    pub async fn build_with_faults(config: Config, faults: Arc<Faults>) -> Result<Self, HostError> {
        let backends = Backends::connect(&config.common, &MIGRATOR).await?;
        let pool = backends.pool.clone();
        let consumption = Consumption {
            group: GROUP,
            topics: vec![
                topics::PAYMENT_COMPLETED,
                topics::PAYMENT_FAILED,
                topics::INVENTORY_UPDATED,
                topics::INVENTORY_FAILED,
                topics::PAYMENT_REFUNDED,
            ],
            handler: Arc::new(saga::OrderSaga),
        };
        let parts = ServiceParts {
            name: "order-service",
            port: config.port,
            routes: api::router(pool.clone()),
            openapi: api::openapi(),
            consumption: Some(consumption),
            faults: faults.clone(),
        };
        let host = ServiceHost::bind(&config.common, backends, parts).await?;
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
