//! HTTP endpoints of the inventory service.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use saga_shared::domain::{MAX_UNIT_PRICE, Sku};
use saga_shared::http::{ApiError, ApiJson, ApiPath, Problem};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{OpenApi, ToSchema};

/// A product with its available stock and the units reserved by confirmed orders.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Product {
    pub sku: String,
    pub name: String,
    /// List price in won.
    pub price: i64,
    /// Units still available.
    pub stock: i64,
    /// Units reserved by orders.
    pub reserved: i64,
    pub updated_at: DateTime<Utc>,
}

/// The body of `PATCH /products/{sku}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductChange {
    /// The new list price in won, 1 to 10,000,000.
    #[schema(example = 5200)]
    pub price: i64,
}

pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/products", get(list_products))
        .route("/products/{sku}", get(get_product).patch(change_product))
        .with_state(pool)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "inventory-service",
        description = "Reserves stock for paid orders"
    ),
    paths(list_products, get_product, change_product),
    components(schemas(Product, ProductChange, Problem))
)]
struct ApiDoc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Every product.
#[utoipa::path(get, path = "/products", responses((status = 200, description = "Every product", body = [Product])))]
pub async fn list_products(State(pool): State<PgPool>) -> Result<ApiJson<Vec<Product>>, ApiError> {
    let rows = sqlx::query_as(
        "SELECT sku, name, price, stock, reserved, updated_at FROM products ORDER BY sku",
    )
    .fetch_all(&pool)
    .await?;
    Ok(ApiJson(rows))
}

/// One product.
#[utoipa::path(get, path = "/products/{sku}", params(("sku" = String, Path, description = "e.g. LATTE")),
    responses((status = 200, description = "The product", body = Product), (status = 404, description = "No such product (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 400, description = "Malformed input (problem+json)", body = Problem, content_type = "application/problem+json")))]
pub async fn get_product(
    State(pool): State<PgPool>,
    ApiPath(sku): ApiPath<String>,
) -> Result<ApiJson<Product>, ApiError> {
    let sku = Sku::parse(&sku).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    sqlx::query_as(
        "SELECT sku, name, price, stock, reserved, updated_at FROM products WHERE sku = $1",
    )
    .bind(&sku)
    .fetch_optional(&pool)
    .await?
    .map(ApiJson)
    .ok_or_else(|| ApiError::NotFound(format!("no product {sku}")))
}

/// Change a product's price. Like every change of a product, it is published to the catalogue
/// topic `inventory.products` in the same transaction (through the outbox), and the order
/// service prices the next orders with it.
#[utoipa::path(patch, path = "/products/{sku}", params(("sku" = String, Path, description = "e.g. LATTE")), request_body = ProductChange,
    responses((status = 200, description = "The product, changed", body = Product), (status = 404, description = "No such product (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "A price out of bounds (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 400, description = "Malformed input (problem+json)", body = Problem, content_type = "application/problem+json")))]
pub async fn change_product(
    State(pool): State<PgPool>,
    ApiPath(sku): ApiPath<String>,
    ApiJson(change): ApiJson<ProductChange>,
) -> Result<ApiJson<Product>, ApiError> {
    let sku = Sku::parse(&sku).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if !(1..=MAX_UNIT_PRICE).contains(&change.price) {
        return Err(ApiError::Unprocessable(format!(
            "price must be between 1 and {MAX_UNIT_PRICE}"
        )));
    }
    sqlx::query_as(
        "UPDATE products SET price = $2, updated_at = now() WHERE sku = $1 \
         RETURNING sku, name, price, stock, reserved, updated_at",
    )
    .bind(&sku)
    .bind(change.price)
    .fetch_optional(&pool)
    .await?
    .map(ApiJson)
    .ok_or_else(|| ApiError::NotFound(format!("no product {sku}")))
}
