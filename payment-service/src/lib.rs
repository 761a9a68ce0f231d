//! The payment service: charges a customer's wallet for each order and refunds it when the
//! saga compensates.
//!
//! - [`api`]: the HTTP endpoints (payments, wallets) and their OpenAPI document.
//! - [`saga`]: the consumer of `order.created` (charge) and `inventory.failed` (refund).
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
pub const SOURCE: &str = "/payment-service";
/// Its consumer group.
pub const GROUP: &str = "payment-service";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/payments");

/// Settings of the payment service.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "payment-service", about = "Charges wallets and refunds them")]
pub struct Config {
    /// HTTP port.
    #[arg(long, env = "PORT", default_value_t = 8082)]
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
            topics: vec![topics::ORDER_CREATED, topics::INVENTORY_FAILED],
            handler: Arc::new(saga::PaymentSaga),
        };
        let parts = ServiceParts {
            name: "payment-service",
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
