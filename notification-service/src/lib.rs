//! The notification service: records a message to the customer for each milestone of an order
//! (received, confirmed, cancelled).
//!
//! - [`api`]: the HTTP endpoints and their OpenAPI document.
//! - [`saga`]: the consumer of `order.created`, `inventory.updated` and `order.cancelled`.
//! - [`NotificationService`]: its declaration as a saga service (name, port, database, schema, routes,
//!   handler), from which `saga_shared::service::build` makes it.

pub mod api;
pub mod saga;

use axum::Router;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use saga_shared::config::CommonConfig;
use saga_shared::events::Topic;
use saga_shared::service::SagaService;

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/notifications");

/// Settings of the notification service.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "notification-service",
    about = "Tells customers what happened to their orders"
)]
pub struct Config {
    /// HTTP port.
    #[arg(long, env = "PORT", default_value_t = NotificationService::DEFAULT_PORT)]
    pub port: u16,
    #[command(flatten)]
    pub common: CommonConfig,
}

/// The notification-service, as the one service shape declares it.
pub struct NotificationService;

impl SagaService for NotificationService {
    const NAME: &'static str = "notification-service";
    const DEFAULT_PORT: u16 = 8084;
    const DATABASE: &'static str = "notifications";
    const MIGRATOR: &'static Migrator = &MIGRATOR;
    const ROUTER: fn(PgPool) -> Router = api::router;
    const OPENAPI: fn() -> utoipa::openapi::OpenApi = api::openapi;
    type Handler = saga::Notifier;
    const PUBLISHES: &'static [Topic] = &[];
}
