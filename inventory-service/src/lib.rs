//! The inventory service: reserves stock for paid orders, all lines or none.
//!
//! - [`api`]: the HTTP endpoints (products) and their OpenAPI document.
//! - [`saga`]: the consumer of `payment.completed`.
//! - [`Application`]: wires them to the database, the broker and a port.

pub mod api;
pub mod saga;

use std::sync::Arc;

use saga_shared::config::CommonConfig;
use saga_shared::consumer::Faults;
use saga_shared::events::topics;
use saga_shared::service::{Backends, Consumption, HostError, ServiceHost, ServiceParts};
use sqlx::PgPool;

/// The `ce_source` of events this service publishes.
pub const SOURCE: &str = "/inventory-service";
/// Its consumer group.
pub const GROUP: &str = "inventory-service";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/inventory");

/// Settings of the inventory service.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "inventory-service", about = "Reserves stock for paid orders")]
pub struct Config {
    /// HTTP port.
    #[arg(long, env = "PORT", default_value_t = 8083)]
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
            topics: vec![topics::PAYMENT_COMPLETED],
            handler: Arc::new(saga::InventorySaga),
        };
        let parts = ServiceParts {
            name: "inventory-service",
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
