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
use saga_shared::service::{Consumption, HostError, ServiceApp, ServiceParts};

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

/// Builds the payment service; the result ([`ServiceApp`]) has `port()` and
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
                handler: Arc::new(saga::PaymentSaga),
            };
            ServiceParts {
                name: "payment-service",
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
