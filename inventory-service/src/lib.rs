//! The inventory service: reserves stock for paid orders, all lines or none.
//!
//! - [`api`]: the HTTP endpoints (products) and their OpenAPI document.
//! - [`saga`]: the consumer of `payment.completed`.
//! - [`InventoryService`]: its declaration as a saga service (name, port, database, schema, routes,
//!   handler), from which `saga_shared::service::build` makes it.

pub mod api;
pub mod saga;

use axum::Router;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use saga_shared::catalogue;
use saga_shared::config::CommonConfig;
use saga_shared::events::Topic;
use saga_shared::service::SagaService;

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/inventory");

/// Settings of the inventory service.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "inventory-service", about = "Reserves stock for paid orders")]
pub struct Config {
    /// HTTP port.
    #[arg(long, env = "PORT", default_value_t = InventoryService::DEFAULT_PORT)]
    pub port: u16,
    #[command(flatten)]
    pub common: CommonConfig,
}

/// The inventory-service, as the one service shape declares it.
pub struct InventoryService;

impl SagaService for InventoryService {
    const NAME: &'static str = "inventory-service";
    const DEFAULT_PORT: u16 = 8083;
    const DATABASE: &'static str = "inventory";
    const MIGRATOR: &'static Migrator = &MIGRATOR;
    const ROUTER: fn(PgPool) -> Router = api::router;
    const OPENAPI: fn() -> utoipa::openapi::OpenApi = api::openapi;
    type Handler = saga::InventorySaga;
    const PUBLISHES: &'static [Topic] = &[Topic::InventoryUpdated, Topic::InventoryFailed];
    const CATALOGUE: catalogue::Role = catalogue::Role::Writes;
}
