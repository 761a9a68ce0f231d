//! The order service: takes orders, follows each order's saga and keeps its timeline.
//!
//! - [`domain`]: validated order input and the saga state machine ([`domain::OrderStatus`]).
//! - [`api`]: the HTTP endpoints and their OpenAPI document.
//! - [`saga`]: the consumer of payment and inventory events that moves orders along.
//! - [`OrderService`]: its declaration as a saga service (name, port, database, schema, routes,
//!   handler), from which `saga_shared::service::build` makes it.

pub mod api;
pub mod domain;
pub mod saga;

use axum::Router;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use saga_shared::catalogue;
use saga_shared::config::CommonConfig;
use saga_shared::events::Topic;
use saga_shared::service::SagaService;

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/orders");

/// Settings of the order service.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "order-service", about = "Takes orders and follows their saga")]
pub struct Config {
    /// HTTP port.
    #[arg(long, env = "PORT", default_value_t = OrderService::DEFAULT_PORT)]
    pub port: u16,
    #[command(flatten)]
    pub common: CommonConfig,
}

/// The order-service, as the one service shape declares it.
pub struct OrderService;

impl SagaService for OrderService {
    const NAME: &'static str = "order-service";
    const DEFAULT_PORT: u16 = 8081;
    const DATABASE: &'static str = "orders";
    const MIGRATOR: &'static Migrator = &MIGRATOR;
    const ROUTER: fn(PgPool) -> Router = api::router;
    const OPENAPI: fn() -> utoipa::openapi::OpenApi = api::openapi;
    type Handler = saga::OrderSaga;
    const PUBLISHES: &'static [Topic] = &[Topic::OrderCreated, Topic::OrderCancelled];
    const CATALOGUE: catalogue::Role = catalogue::Role::Reads;
}
