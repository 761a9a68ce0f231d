//! The payment service: charges a customer's wallet for each order and refunds it when the
//! saga compensates.
//!
//! - [`api`]: the HTTP endpoints (payments, wallets) and their OpenAPI document.
//! - [`saga`]: the consumer of `order.created` (charge) and `inventory.failed` (refund).
//! - [`PaymentService`]: its declaration as a saga service (name, port, database, schema, routes,
//!   handler), from which `saga_shared::service::build` makes it.

pub mod api;
pub mod saga;

use axum::Router;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use saga_shared::config::CommonConfig;
use saga_shared::events::Topic;
use saga_shared::service::SagaService;

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/payments");

/// Settings of the payment service.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "payment-service", about = "Charges wallets and refunds them")]
pub struct Config {
    /// HTTP port.
    #[arg(long, env = "PORT", default_value_t = PaymentService::DEFAULT_PORT)]
    pub port: u16,
    #[command(flatten)]
    pub common: CommonConfig,
}

/// The payment-service, as the one service shape declares it.
pub struct PaymentService;

impl SagaService for PaymentService {
    const NAME: &'static str = "payment-service";
    const DEFAULT_PORT: u16 = 8082;
    const DATABASE: &'static str = "payments";
    const MIGRATOR: &'static Migrator = &MIGRATOR;
    const ROUTER: fn(PgPool) -> Router = api::router;
    const OPENAPI: fn() -> utoipa::openapi::OpenApi = api::openapi;
    type Handler = saga::PaymentSaga;
    const PUBLISHES: &'static [Topic] = &[
        Topic::PaymentCompleted,
        Topic::PaymentFailed,
        Topic::PaymentRefunded,
    ];
}
