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
use saga_shared::service::{Consumption, HostError, ServiceApp, ServiceParts};

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

/// Builds the inventory service; the result ([`ServiceApp`]) has `port()` and
/// `run_until_stopped()`.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> Result<ServiceApp, HostError> {
        Self::build_with_faults(config, Arc::new(Faults::default())).await
    }

    /// Like [`Application::build`], with fault switches the caller keeps (the lab).
    pub async fn build_with_faults(
        config: Config,
        faults: Arc<Faults>,
    ) -> Result<ServiceApp, HostError> {
        ServiceApp::build(&config.common, &MIGRATOR, |pool| {
            let consumption = Consumption {
                group: GROUP,
                handler: Arc::new(saga::InventorySaga),
            };
            ServiceParts {
                name: "inventory-service",
                port: config.port,
                routes: api::router(pool.clone()),
                openapi: api::openapi(),
                consumption: Some(consumption),
                faults: faults.clone(),
            }
        })
        .await
    }
}
