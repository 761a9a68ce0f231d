//! HTTP endpoints of the order service.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::routing::get;
use chrono::{DateTime, SubsecRound, Utc};
use saga_shared::Envelope;
use saga_shared::catalogue;
use saga_shared::domain::{CustomerId, Won};
use saga_shared::events::{CURRENCY, LineItem, OrderCreated, Topic, topics};
use saga_shared::http::{ApiError, ApiJson, ApiPath, ApiQuery, Problem};
use saga_shared::outbox;
use saga_shared::service::SagaService;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::OrderService;
use crate::domain::{LineRequest, NewOrder, OrderDraft, OrderRequest, OrderStatus};

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Order {
    pub id: Uuid,
    pub customer_id: CustomerId,
    pub status: OrderStatus,
    pub items: Vec<LineItem>,
    pub total: Won,
    pub currency: String,
    /// Why the order was cancelled (or is being compensated).
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Every saga event seen for this order, oldest first; empty in lists.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
}

impl Order {
    /// Whether a terminal order's timeline holds every step its ending implies. Events of
    /// different topics may reach the order service in any order, so an order can be terminal a
    /// moment before an earlier step is recorded.
    pub fn timeline_complete(&self) -> bool {
        let has = |topic: Topic| self.timeline.iter().any(|e| e.event == topic.name());
        match self.status {
            OrderStatus::Confirmed => has(Topic::PaymentCompleted) && has(Topic::InventoryUpdated),
            OrderStatus::Cancelled if has(Topic::PaymentFailed) => has(Topic::OrderCancelled),
            OrderStatus::Cancelled => [
                Topic::PaymentCompleted,
                Topic::InventoryFailed,
                Topic::PaymentRefunded,
                Topic::OrderCancelled,
            ]
            .into_iter()
            .all(has),
            OrderStatus::Pending | OrderStatus::Paid | OrderStatus::Compensating => false,
        }
    }
}

/// One saga step of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    /// The event type (= topic), e.g. `payment.completed`.
    pub event: String,
    pub event_id: Uuid,
    /// When the event happened (its `ce_time`).
    pub at: DateTime<Utc>,
    /// The order's status after this step, replaying the steps in time order.
    pub status: OrderStatus,
    pub detail: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// At most this many (1..=500, default 50), newest first.
    pub limit: Option<i64>,
}

pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/orders", get(list_orders).post(create_order))
        .route("/orders/{id}", get(get_order))
        .route("/catalogue", get(list_catalogue))
        .with_state(pool)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "order-service",
        description = "Takes orders and follows their saga"
    ),
    paths(create_order, get_order, list_orders, list_catalogue),
    components(schemas(
        Order,
        TimelineEntry,
        OrderRequest,
        LineRequest,
        LineItem,
        OrderStatus,
        catalogue::Listed,
        Problem
    ))
)]
struct ApiDoc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The order service's copy of the catalogue: every product it can price, with the partition
/// and offset of the `inventory.products` record it was read from.
#[utoipa::path(get, path = "/catalogue", responses((status = 200, description = "Every product, by SKU", body = [catalogue::Listed])))]
pub async fn list_catalogue(
    State(pool): State<PgPool>,
) -> Result<ApiJson<Vec<catalogue::Listed>>, ApiError> {
    Ok(ApiJson(catalogue::listed(&pool).await?))
}

/// The request header that makes `POST /orders` safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// On the answer to a retry: the order was created by an earlier request with the same key.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Place an order: it starts PENDING and `order.created` is published through the outbox.
///
/// Each line is priced from the order service's copy of the catalogue (the compacted topic
/// `inventory.products` the inventory service publishes, see `GET /catalogue`): a product it
/// does not list is refused, and a `unit_price` sent is only accepted if it is the catalogue's.
///
/// With an `Idempotency-Key` header the request can be retried safely: the key is stored with the
/// order in the same transaction, and a later request with the same key and the same order
/// answers the first order again (201, the same body, header `Idempotent-Replayed: true`) without
/// creating, publishing or charging anything. The same key with a different order is refused
/// (422). Concurrent requests with one key create one order.
#[utoipa::path(post, path = "/orders", request_body = OrderRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "A client-chosen key (1 to 255 visible ASCII characters, e.g. a UUID) that makes the request safe to retry: a request with a key already used for the same order answers that order again instead of placing another.")),
    responses((status = 201, description = "The order, PENDING; for a retry with a used Idempotency-Key, the order that key created, as first answered, with the header Idempotent-Replayed: true", body = Order), (status = 422, description = "An order the rules refuse, or an Idempotency-Key already used for a different order (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 400, description = "Malformed input, or a malformed Idempotency-Key (problem+json)", body = Problem, content_type = "application/problem+json")))]
pub async fn create_order(
    State(pool): State<PgPool>,
    price_list: Option<axum::Extension<catalogue::PriceList>>,
    request_headers: HeaderMap,
    ApiJson(req): ApiJson<OrderRequest>,
) -> Result<(StatusCode, HeaderMap, ApiJson<Order>), ApiError> {
    let key = idempotency_key(&request_headers)?;
    let draft = OrderDraft::parse(req).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    // What a retry must repeat: the order as validated (so `"currency": "KRW"` and no currency
    // are the same order).
    let request = serde_json::to_value(&draft).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(key) = &key
        && let Some(first) = created_with_key(&pool, key, &request).await?
    {
        return Ok(replayed(first));
    }
    // In memory when the service runs (its catalogue reader keeps the list), else the table.
    let prices = match price_list {
        Some(axum::Extension(list)) if list.is_loaded() => list.of(&draft.skus()),
        _ => catalogue::prices(&pool, &draft.skus()).await?,
    };
    let order = draft
        .priced(&prices)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let id = Uuid::now_v7();
    let mut envelope = Envelope::first::<OrderCreated>(&OrderService::source(), id);
    // PostgreSQL keeps microseconds: the answer shows the time as stored, so a retry's answer
    // (read back) and `GET /orders/{id}` show the same.
    envelope.time = envelope.time.trunc_subsecs(6);
    let event = OrderCreated {
        order_id: id,
        customer_id: order.customer_id.clone(),
        items: order.items.clone(),
        total: order.total,
        currency: CURRENCY.into(),
    };
    let mut tx = pool.begin().await?;
    let inserted = insert_order(&mut tx, id, &order, &envelope, key.as_deref(), &request).await?;
    if !inserted {
        tx.rollback().await?;
        let key = key.as_deref().unwrap_or_default();
        let first = created_with_key(&pool, key, &request)
            .await?
            .ok_or_else(|| ApiError::Internal(format!("idempotency key {key:?} lost")))?;
        return Ok(replayed(first));
    }
    outbox::enqueue(&mut tx, &envelope, &event)
        .await
        .map_err(|e| match e {
            outbox::OutboxError::Db(e) => ApiError::from(e),
            other => ApiError::Internal(other.to_string()),
        })?;
    tx.commit().await?;
    metrics::counter!("orders_created_total").increment(1);
    // The response is what was just committed; no need to read it back.
    let order = just_created(id, order, &envelope);
    Ok((StatusCode::CREATED, located(id), ApiJson(order)))
}

/// Inserts a new order and the first step of its timeline, in one statement; `false` if the
/// idempotency key is taken already (by a concurrent request: the insert waits for it to
/// commit), and then nothing is inserted.
async fn insert_order(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: Uuid,
    order: &NewOrder,
    envelope: &Envelope,
    key: Option<&str>,
    request: &serde_json::Value,
) -> Result<bool, ApiError> {
    let items =
        serde_json::to_value(&order.items).map_err(|e| ApiError::Internal(e.to_string()))?;
    let inserted = sqlx::query(
        "WITH new_order AS (INSERT INTO orders \
                              (id, customer_id, status, items, total, currency, created_at, updated_at, \
                               idempotency_key, idempotency_request) \
                            VALUES ($1, $2, 'PENDING', $3, $4, $5, $6, $6, $9, $10) \
                            ON CONFLICT (idempotency_key) DO NOTHING RETURNING id) \
         INSERT INTO order_timeline (order_id, event_type, event_id, occurred_at, status_after) \
         SELECT id, $7, $8, $6, 'PENDING' FROM new_order",
    )
    .bind(id)
    .bind(&order.customer_id)
    .bind(items)
    .bind(order.total)
    .bind(CURRENCY)
    .bind(envelope.time)
    .bind(topics::ORDER_CREATED)
    .bind(envelope.id)
    .bind(key)
    .bind(key.map(|_| request))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted > 0)
}

/// The answer for an order just placed: PENDING, with the first step of its timeline.
fn just_created(id: Uuid, order: NewOrder, envelope: &Envelope) -> Order {
    Order {
        id,
        customer_id: order.customer_id,
        status: OrderStatus::Pending,
        items: order.items,
        total: order.total,
        currency: CURRENCY.into(),
        reason: None,
        created_at: envelope.time,
        updated_at: envelope.time,
        timeline: vec![TimelineEntry {
            event: topics::ORDER_CREATED.into(),
            event_id: envelope.id,
            at: envelope.time,
            status: OrderStatus::Pending,
            detail: None,
        }],
    }
}

fn located(id: Uuid) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/orders/{id}")).expect("uuid is a valid header value"),
    );
    headers
}

/// The answer to a retry: the first answer again, marked as a replay.
fn replayed(first: Order) -> (StatusCode, HeaderMap, ApiJson<Order>) {
    let mut headers = located(first.id);
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    (StatusCode::CREATED, headers, ApiJson(first))
}

/// The `Idempotency-Key` header, if any: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(
            "give at most one Idempotency-Key header".into(),
        ));
    }
    match value.to_str() {
        Ok(k)
            if (1..=MAX_IDEMPOTENCY_KEY).contains(&k.len())
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(k.to_owned()))
        }
        _ => Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        ))),
    }
}

/// The order an earlier request with `key` created, as it was first answered; a 422 if that
/// request was not `request`.
async fn created_with_key(
    pool: &PgPool,
    key: &str,
    request: &serde_json::Value,
) -> Result<Option<Order>, ApiError> {
    let row: Option<(sqlx::types::Json<serde_json::Value>, Uuid)> =
        sqlx::query_as("SELECT idempotency_request, id FROM orders WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(pool)
            .await?;
    let Some((first_request, id)) = row else {
        return Ok(None);
    };
    if first_request.0 != *request {
        return Err(ApiError::Unprocessable(
            "this Idempotency-Key was already used for a different order; use a new key for a new order"
                .into(),
        ));
    }
    let order = fetch_order(pool, id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("order {id} of an idempotency key is gone")))?;
    // As first answered: PENDING, with the first step of its timeline only.
    Ok(Some(Order {
        status: OrderStatus::Pending,
        reason: None,
        updated_at: order.created_at,
        timeline: order
            .timeline
            .into_iter()
            .filter(|t| t.event == topics::ORDER_CREATED)
            .take(1)
            .map(|t| TimelineEntry {
                status: OrderStatus::Pending,
                detail: None,
                ..t
            })
            .collect(),
        ..order
    }))
}

/// An order with its status and timeline.
#[utoipa::path(get, path = "/orders/{id}", params(("id" = Uuid, Path, description = "order id")),
    responses((status = 200, description = "The order with its timeline", body = Order), (status = 404, description = "No such order (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 400, description = "Malformed input (problem+json)", body = Problem, content_type = "application/problem+json")))]
pub async fn get_order(
    State(pool): State<PgPool>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<Order>, ApiError> {
    fetch_order(&pool, id)
        .await?
        .map(ApiJson)
        .ok_or_else(|| ApiError::NotFound(format!("no order {id}")))
}

/// Recent orders, newest first (without timelines).
#[utoipa::path(get, path = "/orders", params(ListParams),
    responses((status = 200, description = "Orders, newest first", body = [Order]), (status = 400, description = "Malformed input (problem+json)", body = Problem, content_type = "application/problem+json")))]
pub async fn list_orders(
    State(pool): State<PgPool>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<ApiJson<Vec<Order>>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 500".into(),
        ));
    }
    let rows: Vec<OrderRow> = sqlx::query_as(
        "SELECT id, customer_id, status, items, total, currency, reason, created_at, updated_at \
         FROM orders WHERE ($1::text IS NULL OR status = $1) ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(params.status.map(OrderStatus::as_str))
    .bind(limit)
    .fetch_all(&pool)
    .await?;
    rows.into_iter()
        .map(|r| r.into_order(Vec::new()))
        .collect::<Result<_, _>>()
        .map(ApiJson)
}

/// event, event id, time, status after, detail.
type TimelineRow = (String, Uuid, DateTime<Utc>, String, Option<String>);

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    customer_id: CustomerId,
    status: String,
    items: sqlx::types::Json<Vec<LineItem>>,
    total: Won,
    currency: String,
    reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl OrderRow {
    fn into_order(self, timeline: Vec<TimelineEntry>) -> Result<Order, ApiError> {
        Ok(Order {
            id: self.id,
            customer_id: self.customer_id,
            status: parse_status(&self.status)?,
            items: self.items.0,
            total: self.total,
            currency: self.currency,
            reason: self.reason,
            created_at: self.created_at,
            updated_at: self.updated_at,
            timeline,
        })
    }
}

fn parse_status(s: &str) -> Result<OrderStatus, ApiError> {
    OrderStatus::parse(s).ok_or_else(|| ApiError::Internal(format!("stored status {s:?}")))
}

/// Loads one order with its timeline.
pub async fn fetch_order(pool: &PgPool, id: Uuid) -> Result<Option<Order>, ApiError> {
    let row: Option<OrderRow> = sqlx::query_as(
        "SELECT id, customer_id, status, items, total, currency, reason, created_at, updated_at \
         FROM orders WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let steps: Vec<TimelineRow> = sqlx::query_as(
        "SELECT event_type, event_id, occurred_at, status_after, detail FROM order_timeline \
         WHERE order_id = $1 ORDER BY occurred_at, id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    // Each step shows the status the saga reaches at that point in causal (ce_time) order, by
    // replaying the state machine; events may have *arrived* in another order.
    let mut status = OrderStatus::Pending;
    let timeline = steps
        .into_iter()
        .map(|(event, event_id, at, _status_when_applied, detail)| {
            status = match Topic::parse(&event) {
                Some(Topic::OrderCreated) => OrderStatus::Pending,
                Some(Topic::OrderCancelled) => OrderStatus::Cancelled,
                Some(other) => status.on_event(other).unwrap_or(status),
                None => status,
            };
            TimelineEntry {
                event,
                event_id,
                at,
                status,
                detail,
            }
        })
        .collect();
    row.into_order(timeline).map(Some)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    /// The router over a pool that is never reached: validation answers before any query.
    fn app() -> Router {
        let pool = saga_shared::db::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
        saga_shared::http::with_middleware(router(pool))
    }

    async fn send(req: Request<Body>) -> (StatusCode, String, serde_json::Value) {
        let res = app().oneshot(req).await.unwrap();
        let status = res.status();
        let ct = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            ct,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    fn post(body: impl Into<Body>) -> Request<Body> {
        Request::post("/orders")
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap()
    }

    #[tokio::test]
    async fn bad_input_is_a_4xx_problem() {
        let big = format!(
            r#"{{"customer_id":"alice","items":[{{"sku":"{}","quantity":1,"unit_price":1}}]}}"#,
            "A".repeat(100_000)
        );
        let cases: Vec<(Request<Body>, u16)> = vec![
            (post("{not json"), 400),
            (post(r#"{"customer_id":"alice","items":[]}"#), 422),
            (
                post(r#"{"customer_id":"","items":[{"sku":"LATTE","quantity":1,"unit_price":1}]}"#),
                422,
            ),
            (
                post(
                    r#"{"customer_id":"alice","items":[{"sku":"LATTE","quantity":0,"unit_price":1}]}"#,
                ),
                422,
            ),
            (
                post(
                    r#"{"customer_id":"alice","items":[{"sku":"LATTE","quantity":1,"unit_price":-5}]}"#,
                ),
                422,
            ),
            (
                post(
                    r#"{"customer_id":"alice","items":[{"sku":"LATTE","quantity":1e30,"unit_price":1}]}"#,
                ),
                422,
            ),
            (
                post(
                    r#"{"customer_id":"alice","items":[{"sku":"LATTE","quantity":99999999999999999999,"unit_price":1}]}"#,
                ),
                422,
            ),
            (post(r#"{"customer_id":"alice"}"#), 422),
            (post(r#"[1,2,3]"#), 422),
            (post(big), 413),
            (
                Request::post("/orders").body(Body::from("{}")).unwrap(),
                415,
            ),
            (
                Request::get("/orders/not-a-uuid")
                    .body(Body::empty())
                    .unwrap(),
                400,
            ),
            (
                Request::get("/orders?limit=0").body(Body::empty()).unwrap(),
                400,
            ),
            (
                Request::get("/orders?status=NOPE")
                    .body(Body::empty())
                    .unwrap(),
                400,
            ),
            (Request::get("/nowhere").body(Body::empty()).unwrap(), 404),
        ];
        for (req, expected) in cases {
            let what = format!("{} {}", req.method(), req.uri());
            let (status, ct, body) = send(req).await;
            assert_eq!(status.as_u16(), expected, "{what}: {body}");
            assert_eq!(ct, "application/problem+json", "{what}");
            assert_eq!(body["status"], expected, "{what}");
            assert!(
                body["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{what}"
            );
        }
    }
}
