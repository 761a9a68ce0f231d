//! HTTP endpoints of the notification service.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use saga_shared::http::{ApiError, ApiJson, ApiQuery, Problem};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

/// Which milestone of an order a notification tells about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotificationKind {
    Received,
    Confirmed,
    Cancelled,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 3] = [
        NotificationKind::Received,
        NotificationKind::Confirmed,
        NotificationKind::Cancelled,
    ];

    /// As stored, and as the `kind` label of `notifications_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Received => "received",
            NotificationKind::Confirmed => "confirmed",
            NotificationKind::Cancelled => "cancelled",
        }
    }
}

impl TryFrom<String> for NotificationKind {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        NotificationKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown notification kind {s:?}"))
    }
}

/// A message to a customer about an order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Notification {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Option<String>,
    #[sqlx(try_from = "String")]
    pub kind: NotificationKind,
    pub message: String,
    /// The `ce_id` of the event that caused it.
    pub event_id: Uuid,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NotificationParams {
    /// Only notifications of this order; without it the 100 latest.
    pub order_id: Option<Uuid>,
}

pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/notifications", get(list_notifications))
        .with_state(pool)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "notification-service",
        description = "Tells customers what happened to their orders"
    ),
    paths(list_notifications),
    components(schemas(NotificationKind, Notification, Problem))
)]
struct ApiDoc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Notifications, oldest first when filtered by order, else the latest 100.
#[utoipa::path(get, path = "/notifications", params(NotificationParams),
    responses((status = 200, description = "Notifications", body = [Notification]), (status = 400, description = "Malformed input (problem+json)", body = Problem, content_type = "application/problem+json")))]
pub async fn list_notifications(
    State(pool): State<PgPool>,
    ApiQuery(params): ApiQuery<NotificationParams>,
) -> Result<ApiJson<Vec<Notification>>, ApiError> {
    let rows = match params.order_id {
        Some(id) => {
            sqlx::query_as(
                "SELECT id, order_id, customer_id, kind, message, event_id, created_at \
                 FROM notifications WHERE order_id = $1 ORDER BY created_at, id",
            )
            .bind(id)
            .fetch_all(&pool)
            .await?
        }
        None => {
            sqlx::query_as(
                "SELECT id, order_id, customer_id, kind, message, event_id, created_at \
                 FROM notifications ORDER BY created_at DESC, id DESC LIMIT 100",
            )
            .fetch_all(&pool)
            .await?
        }
    };
    Ok(ApiJson(rows))
}
