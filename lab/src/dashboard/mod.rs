//! The lab's dashboard on port 8080: a live web page (embedded in the lab binary, no CDN) that
//! shows the event chain as it runs, each order's saga, and Kafka's ideas the way Kafka UI shows
//! them (topics, partitions, offsets, consumer groups, lag, resetting a group's offsets), with
//! the lab's controls; and the JSON API it and the `lab` subcommands use.
//!
//! - [`observer`]: one consumer outside any group reads every topic: the live feed, each order's
//!   events, partition offsets, saga latencies.
//! - [`explorer`]: topics, configs, the message browser, producing, groups and offset resets.
//! - [`live`]: the snapshot pushed every second over Server-Sent Events.
//! - [`guard`]: the layer in front of every route that keeps other sites out (the `Host` a
//!   request names, and the `Origin` of one that changes something).
//!
//! Everything Kafka goes through the Kafka protocol, so the page works on an external broker too.

pub mod explorer;
pub mod guard;
pub mod live;
pub mod observer;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use saga_shared::dlq::DeadLetter;
use saga_shared::events::topics;
use saga_shared::http::{ApiError, ApiJson, ApiPath, ApiQuery};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::client::LabClient;
use crate::poison::PoisonKind;
use crate::system::{Lab, Service};
use explorer::{Explorer, ExplorerError, NewRecord, ResetTo, Start};
use guard::Guard;
use live::Live;
use observer::Observer;

/// The lab, shared between the dashboard and the process that owns it.
pub type SharedLab = Arc<Mutex<Option<Lab>>>;

/// What the dashboard's handlers share.
pub struct DashState {
    lab: SharedLab,
    client: LabClient,
    brokers: String,
    observer: Arc<Observer>,
    explorer: Explorer,
    live: Arc<Live>,
}

type Shared = Arc<DashState>;

/// Fault switches of one service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultSettings {
    /// Every event handler attempt fails (retries, then the DLQ).
    #[serde(default)]
    pub fail_handlers: bool,
    /// Extra delay before each handler attempt.
    #[serde(default)]
    pub slow_ms: u64,
}

/// The running dashboard: the page and its API served on a listener, the observer reading the
/// broker, and the snapshots. [`Dashboard::shutdown`] (or dropping it) stops them.
pub struct Dashboard {
    observer: Arc<Observer>,
    ticker: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Dashboard {
    /// Starts reading the broker at `brokers` and serves the dashboard on `listener`, to
    /// requests that name it by an IP address or `localhost` (see [`guard`]).
    pub fn serve(
        lab: SharedLab,
        client: LabClient,
        brokers: String,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<Dashboard> {
        Self::serve_guarded(lab, client, brokers, listener, Guard::default())
    }

    /// [`Dashboard::serve`], also answering requests that name it as one of `guard`'s names.
    pub fn serve_guarded(
        lab: SharedLab,
        client: LabClient,
        brokers: String,
        listener: tokio::net::TcpListener,
        guard: Guard,
    ) -> anyhow::Result<Dashboard> {
        let observer = Observer::start(&brokers)?;
        let state = Arc::new(DashState {
            explorer: Explorer::new(&brokers)?,
            lab,
            client,
            brokers,
            observer: observer.clone(),
            live: Live::new(),
        });
        let ticker = tokio::spawn(live::run(state.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router(state, guard))
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Dashboard {
            observer,
            ticker,
            server,
            stop: Some(stop),
        })
    }

    /// Stops serving (open live streams end with it) and reading the broker, and closes its Kafka
    /// clients, so that none of them is left talking to a broker that stops next.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.ticker.abort();
        let _ = (&mut self.ticker).await;
        // Open event streams never end on their own: give them a moment, then cut them.
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
            let _ = (&mut self.server).await;
        }
        self.observer.stop_and_wait().await;
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.ticker.abort();
        self.observer.stop();
        self.server.abort();
    }
}

fn router(state: Shared, guard: Guard) -> Router {
    let routes = saga_shared::http::with_middleware(
        Router::new()
            .route("/", get(|| asset("index.html")))
            .route(
                "/assets/{file}",
                get(|ApiPath(file): ApiPath<String>| asset_owned(file)),
            )
            .route("/api/status", get(status))
            .route("/api/contract", get(contract))
            .route(
                "/api/live",
                get(|State(s): State<Shared>| async move { live::stream(s) }),
            )
            .route("/api/snapshot", get(snapshot))
            .route("/api/services/{service}/stop", post(stop_service))
            .route("/api/services/{service}/start", post(start_service))
            .route("/api/faults/{service}", post(set_faults))
            .route("/api/poison", post(poison))
            .route("/api/orders", get(list_orders).post(place_order))
            .route("/api/orders/{id}", get(order))
            .route("/api/topics", get(list_topics))
            .route("/api/topics/{topic}", get(topic))
            .route("/api/topics/{topic}/messages", get(messages).post(produce))
            .route("/api/groups", get(list_groups))
            .route("/api/groups/{group}", get(group))
            .route("/api/groups/{group}/reset", post(reset_group))
            .route("/api/dlq/{topic}", get(list_dlq))
            .route("/api/dlq/{topic}/replay", post(replay_dlq))
            .with_state(state),
    );
    // Outermost, so that a refused request reaches nothing, not even the fallback.
    routes.layer(axum::middleware::from_fn_with_state(
        Arc::new(guard),
        guard::check,
    ))
}

/// The page's files, embedded in the binary.
const ASSETS: [(&str, &str, &[u8]); 6] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../assets/dashboard/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/dashboard/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/dashboard/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/vendor/uplot/uPlot.min.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../assets/dashboard/favicon.svg"),
    ),
];

async fn asset(name: &str) -> Result<impl IntoResponse + use<>, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| ApiError::NotFound(format!("no file {name:?}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *body,
    ))
}

async fn asset_owned(name: String) -> Result<impl IntoResponse, ApiError> {
    asset(&name).await
}

impl From<ExplorerError> for ApiError {
    fn from(e: ExplorerError) -> Self {
        match e {
            ExplorerError::NoTopic(_) | ExplorerError::NoPartition { .. } => {
                ApiError::NotFound(e.to_string())
            }
            ExplorerError::GroupActive { .. } | ExplorerError::NothingToReset(_) => {
                ApiError::Conflict(e.to_string())
            }
            ExplorerError::Kafka(err) => {
                tracing::warn!(error = %err, "dashboard: the broker refused or did not answer");
                ApiError::Unavailable(
                    "the broker refused the request or did not answer; see the lab's log".into(),
                )
            }
            ExplorerError::Other(_) | ExplorerError::Join(_) => ApiError::Internal(e.to_string()),
        }
    }
}

fn service(name: &str) -> Result<Service, ApiError> {
    Service::parse(name).ok_or_else(|| ApiError::NotFound(format!("no service {name:?}")))
}

fn dlq_topic(topic: &str) -> Result<String, ApiError> {
    let base = topic.trim_end_matches(".dlq");
    if !topics::ALL.contains(&base) {
        return Err(ApiError::NotFound(format!("no topic {topic:?}")));
    }
    Ok(topics::dlq(base))
}

/// The lab behind the lock, unless it is shutting down.
fn running(slot: &mut Option<Lab>) -> Result<&mut Lab, ApiError> {
    slot.as_mut()
        .ok_or_else(|| ApiError::Unavailable("the lab is stopping".into()))
}

async fn status(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    let services: Vec<Value> = Service::ALL
        .iter()
        .map(|svc| {
            let f = lab.faults(*svc);
            json!({
                "name": svc.name(),
                "url": lab.url(*svc),
                "running": lab.is_running(*svc),
                "database_url": without_password(lab.db_url(*svc)),
                "faults": FaultSettings {
                    fail_handlers: f.fail_handlers.load(Ordering::Relaxed),
                    slow_ms: f.slow_ms.load(Ordering::Relaxed),
                },
            })
        })
        .collect();
    Ok(Json(
        json!({"brokers": lab.brokers(), "services": services}),
    ))
}

/// `url` with its password, if any, replaced by `***`: a web route never shows one (`lab env`
/// puts the lab's own back for the user's shell).
pub fn without_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(not shown)".to_owned(),
    }
}

async fn stop_service(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&name)?;
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    lab.stop_service(svc).await;
    Ok(Json(json!({"service": svc.name(), "running": false})))
}

async fn start_service(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&name)?;
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    lab.start_service(svc)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(
        json!({"service": svc.name(), "running": true, "url": lab.url(svc)}),
    ))
}

async fn set_faults(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
    ApiJson(settings): ApiJson<FaultSettings>,
) -> Result<Json<FaultSettings>, ApiError> {
    let svc = service(&name)?;
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    let f = lab.faults(svc);
    f.fail_handlers
        .store(settings.fail_handlers, Ordering::Relaxed);
    f.slow_ms.store(settings.slow_ms, Ordering::Relaxed);
    Ok(Json(settings))
}

/// The records of the DLQ named by `topic` (`order.created` or `order.created.dlq`), each
/// marked replayed or not.
async fn read_dlq(s: &DashState, topic: &str) -> Result<(String, Vec<DeadLetter>), ApiError> {
    let topic = dlq_topic(topic)?;
    let letters = saga_shared::dlq::list(&s.brokers, &topic)
        .await
        .map_err(dlq_error)?;
    Ok((topic, letters))
}

fn dlq_error(e: saga_shared::dlq::DlqError) -> ApiError {
    use saga_shared::dlq::DlqError;
    match e {
        DlqError::NoRecord { .. } => ApiError::NotFound(e.to_string()),
        DlqError::MissingHeader { .. } => ApiError::Conflict(e.to_string()),
        DlqError::Kafka(_) | DlqError::Timeout(_) => {
            tracing::warn!(error = %e, "dashboard: reading or replaying a DLQ failed");
            ApiError::Unavailable(
                "the broker refused the request or did not answer; see the lab's log".into(),
            )
        }
    }
}

/// Which records `POST /api/dlq/{topic}/replay` sends back: one (both given), or every record
/// still waiting (neither).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayParams {
    partition: Option<i32>,
    offset: Option<i64>,
}

async fn list_dlq(
    State(s): State<Shared>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (topic, letters) = read_dlq(&s, &topic).await?;
    let replayed = letters.iter().filter(|d| d.replayed).count();
    Ok(Json(json!({
        "topic": topic,
        "waiting": letters.len() - replayed,
        "replayed": replayed,
        "records": letters,
    })))
}

async fn replay_dlq(
    State(s): State<Shared>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(params): ApiQuery<ReplayParams>,
) -> Result<Json<Value>, ApiError> {
    use saga_shared::dlq::Selection;
    let selection = match (params.partition, params.offset) {
        (None, None) => Selection::All,
        (Some(partition), Some(offset)) => Selection::One { partition, offset },
        _ => {
            return Err(ApiError::BadRequest(
                "give both partition and offset (one record), or neither (every waiting record)"
                    .into(),
            ));
        }
    };
    let topic = dlq_topic(&topic)?;
    let done = saga_shared::dlq::replay(&s.brokers, &topic, selection)
        .await
        .map_err(dlq_error)?;
    Ok(Json(json!({
        "topic": topic,
        "replayed": done.replayed,
        "already_replayed": done.already_replayed,
    })))
}

/// `GET /api/contract`: the services, what each consumes and publishes (from their
/// declarations), and the topics: what the chain diagram is drawn from.
async fn contract(State(s): State<Shared>) -> Json<Value> {
    let guard = s.lab.lock().await;
    let services: Vec<Value> = Service::ALL
        .iter()
        .map(|&svc| {
            json!({
                "name": svc.name(),
                "short": svc.short_name(),
                "url": guard.as_ref().map(|l| l.url(svc)),
                "consumes": svc.consumes().iter().map(|t| t.name()).collect::<Vec<_>>(),
                "publishes": svc.publishes().iter().map(|t| t.name()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let topics: Vec<&str> = topics::ALL.to_vec();
    Json(json!({"services": services, "topics": topics, "brokers": s.brokers}))
}

async fn snapshot(State(s): State<Shared>) -> Json<live::Snapshot> {
    Json(live::snapshot(&s, &mut Default::default(), None).await)
}

#[derive(Debug, Deserialize)]
struct PoisonRequest {
    topic: String,
    kind: PoisonKind,
}

async fn poison(
    State(s): State<Shared>,
    ApiJson(req): ApiJson<PoisonRequest>,
) -> Result<Json<Value>, ApiError> {
    if !topics::ALL.contains(&req.topic.as_str()) {
        return Err(ApiError::NotFound(format!("no saga topic {:?}", req.topic)));
    }
    let (partition, offset) = crate::poison::publish(s.explorer.producer(), &req.topic, req.kind)
        .await
        .map_err(ExplorerError::from)?;
    Ok(Json(
        json!({"topic": req.topic, "kind": req.kind.name(), "partition": partition, "offset": offset}),
    ))
}

#[derive(Debug, Deserialize, Serialize)]
struct OrdersQuery {
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/orders`: the order service's list, passed through.
async fn list_orders(
    State(s): State<Shared>,
    Query(q): Query<OrdersQuery>,
) -> Result<Json<Value>, ApiError> {
    let url = format!("{}/orders", s.client.order);
    passed_through(s.client.http().get(url).query(&q)).await
}

/// `POST /api/orders`: places an order through the order service (the page's presets).
async fn place_order(
    State(s): State<Shared>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let url = format!("{}/orders", s.client.order);
    passed_through(s.client.http().post(url).json(&body)).await
}

/// Sends `request` to the order service and answers what it answered, its problems kept as
/// they are.
async fn passed_through(request: reqwest::RequestBuilder) -> Result<Json<Value>, ApiError> {
    let res = request
        .send()
        .await
        .map_err(|_| ApiError::Unavailable("the order service does not answer".into()))?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(Json(body));
    }
    let detail = body["detail"].as_str().unwrap_or("").to_owned();
    Err(match status {
        StatusCode::NOT_FOUND => ApiError::NotFound(detail),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(detail),
        StatusCode::BAD_REQUEST => ApiError::BadRequest(detail),
        _ => ApiError::Unavailable(format!("the order service answered {status}")),
    })
}

/// `GET /api/orders/{id}`: the order (from the order service, if it answers) and every record
/// of it the dashboard saw, with topic, partition, offset and causation.
async fn order(
    State(s): State<Shared>,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> Result<Json<Value>, ApiError> {
    let events = s.observer.order_events(&id.to_string());
    let order = s.client.order(&id.to_string()).await.ok();
    if order.is_none() && events.is_empty() {
        return Err(ApiError::NotFound(format!("no order {id}")));
    }
    Ok(Json(json!({"order": order, "events": events})))
}

async fn list_topics(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let (brokers, topics) = s.explorer.cluster(&s.observer).await?;
    Ok(Json(
        json!({"bootstrap": s.brokers, "brokers": brokers, "topics": topics}),
    ))
}

async fn topic(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let summary = s
        .explorer
        .topics(&s.observer)
        .await?
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no topic {name:?}")))?;
    let configs = s.explorer.configs(&name).await?;
    Ok(Json(json!({"topic": summary, "configs": configs})))
}

#[derive(Debug, Deserialize)]
struct MessagesQuery {
    #[serde(default)]
    partition: i32,
    /// `earliest`, `latest`, `offset` or `timestamp`.
    from: Option<String>,
    /// The offset or the time (ms since the epoch) for `offset` / `timestamp`.
    value: Option<i64>,
    limit: Option<usize>,
    /// `read_committed` (the default, as librdkafka's) or `read_uncommitted`.
    isolation: Option<String>,
}

async fn messages(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<Value>, ApiError> {
    let need = |what: &str| {
        q.value
            .ok_or_else(|| ApiError::BadRequest(format!("from={what} needs a value")))
    };
    let start = match q.from.as_deref().unwrap_or("latest") {
        "earliest" => Start::Earliest,
        "latest" => Start::Latest,
        "offset" => Start::Offset(need("offset")?),
        "timestamp" => Start::Timestamp(need("timestamp")?),
        other => {
            return Err(ApiError::BadRequest(format!(
                "from must be earliest, latest, offset or timestamp, not {other:?}"
            )));
        }
    };
    let committed = match q.isolation.as_deref().unwrap_or("read_committed") {
        "read_committed" => true,
        "read_uncommitted" => false,
        other => {
            return Err(ApiError::BadRequest(format!(
                "isolation must be read_committed or read_uncommitted, not {other:?}"
            )));
        }
    };
    let records = s
        .explorer
        .messages(&name, q.partition, start, q.limit.unwrap_or(50), committed)
        .await?;
    Ok(Json(
        json!({"topic": name, "partition": q.partition, "records": records}),
    ))
}

async fn produce(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
    ApiJson(record): ApiJson<NewRecord>,
) -> Result<Json<Value>, ApiError> {
    let (partition, offset) = s.explorer.produce(&name, record).await?;
    Ok(Json(
        json!({"topic": name, "partition": partition, "offset": offset}),
    ))
}

async fn list_groups(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let groups = s.explorer.groups(&s.observer, None).await?;
    Ok(Json(json!({"groups": groups})))
}

async fn group(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let group = s
        .explorer
        .groups(&s.observer, Some(&name))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NotFound(format!("no group {name:?}")))?;
    Ok(Json(json!(group)))
}

#[derive(Debug, Deserialize)]
struct ResetRequest {
    #[serde(flatten)]
    to: ResetTo,
    /// Only this topic (default: every topic the group has committed on).
    topic: Option<String>,
}

async fn reset_group(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<ResetRequest>,
) -> Result<Json<Value>, ApiError> {
    let moved = s
        .explorer
        .reset(&s.observer, &name, req.topic.as_deref(), req.to)
        .await?;
    let partitions: Vec<Value> = moved
        .into_iter()
        .map(|(t, p, o)| json!({"topic": t, "partition": p, "offset": o}))
        .collect();
    Ok(Json(json!({"group": name, "partitions": partitions})))
}
