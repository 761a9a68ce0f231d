//! HTTP endpoints of the payment service.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use saga_shared::domain::CustomerId;
use saga_shared::http::{ApiError, ApiJson, ApiPath, ApiQuery, Problem};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

/// Where a payment is: charged, given back by compensation, or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum PaymentStatus {
    Captured,
    Refunded,
    Failed,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 3] = [
        PaymentStatus::Captured,
        PaymentStatus::Refunded,
        PaymentStatus::Failed,
    ];

    /// As stored (the `payments.status` column checks the same three).
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Captured => "CAPTURED",
            PaymentStatus::Refunded => "REFUNDED",
            PaymentStatus::Failed => "FAILED",
        }
    }
}

impl TryFrom<String> for PaymentStatus {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        PaymentStatus::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown payment status {s:?}"))
    }
}

/// A charge (or refused charge) for one order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: String,
    pub amount: i64,
    pub currency: String,
    #[sqlx(try_from = "String")]
    pub status: PaymentStatus,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A customer's wallet.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Wallet {
    pub customer_id: String,
    pub balance: i64,
    pub currency: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PaymentParams {
    /// Only the payment of this order; without it the 100 latest payments.
    pub order_id: Option<Uuid>,
}

pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/payments", get(list_payments))
        .route("/wallets", get(list_wallets))
        .route("/wallets/{customer_id}", get(get_wallet))
        .with_state(pool)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "payment-service",
        description = "Charges wallets and refunds them"
    ),
    paths(list_payments, list_wallets, get_wallet),
    components(schemas(PaymentStatus, Payment, Wallet, Problem))
)]
struct ApiDoc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Payments, optionally of one order.
#[utoipa::path(get, path = "/payments", params(PaymentParams),
    responses((status = 200, description = "Payments", body = [Payment]), (status = 400, description = "Malformed input (problem+json)", body = Problem, content_type = "application/problem+json")))]
pub async fn list_payments(
    State(pool): State<PgPool>,
    ApiQuery(params): ApiQuery<PaymentParams>,
) -> Result<ApiJson<Vec<Payment>>, ApiError> {
    let rows = sqlx::query_as(
        "SELECT id, order_id, customer_id, amount, currency, status, reason, created_at, updated_at \
         FROM payments WHERE ($1::uuid IS NULL OR order_id = $1) ORDER BY created_at DESC LIMIT 100",
    )
    .bind(params.order_id)
    .fetch_all(&pool)
    .await?;
    Ok(ApiJson(rows))
}

/// Every wallet.
#[utoipa::path(get, path = "/wallets", responses((status = 200, description = "Every wallet", body = [Wallet])))]
pub async fn list_wallets(State(pool): State<PgPool>) -> Result<ApiJson<Vec<Wallet>>, ApiError> {
    let rows = sqlx::query_as(
        "SELECT customer_id, balance, currency, updated_at FROM wallets ORDER BY customer_id",
    )
    .fetch_all(&pool)
    .await?;
    Ok(ApiJson(rows))
}

/// One customer's wallet.
#[utoipa::path(get, path = "/wallets/{customer_id}",
    params(("customer_id" = String, Path, description = "customer id, e.g. alice")),
    responses((status = 200, description = "The wallet", body = Wallet), (status = 404, description = "No such wallet (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 400, description = "Malformed input (problem+json)", body = Problem, content_type = "application/problem+json")))]
pub async fn get_wallet(
    State(pool): State<PgPool>,
    ApiPath(customer_id): ApiPath<String>,
) -> Result<ApiJson<Wallet>, ApiError> {
    let customer_id =
        CustomerId::parse(&customer_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    sqlx::query_as(
        "SELECT customer_id, balance, currency, updated_at FROM wallets WHERE customer_id = $1",
    )
    .bind(&customer_id)
    .fetch_optional(&pool)
    .await?
    .map(ApiJson)
    .ok_or_else(|| ApiError::NotFound(format!("no wallet for customer {customer_id}")))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn bad_ids_are_400_problems() {
        let pool = saga_shared::db::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
        let app = saga_shared::http::with_middleware(router(pool));
        for uri in [
            "/payments?order_id=nope",
            "/wallets/a%20b",
            &format!("/wallets/{}", "x".repeat(65)),
        ] {
            let res = app
                .clone()
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), 400, "{uri}");
            assert_eq!(res.headers()["content-type"], "application/problem+json");
        }
    }
}
