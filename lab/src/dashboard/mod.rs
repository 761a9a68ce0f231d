//! The lab's dashboard on port 8080: a live web page (embedded in the lab binary, no CDN) that
//! shows the event chain as it runs, each order's saga, and Kafka's ideas the way Kafka UI shows
//! them (topics, partitions, offsets, consumer groups, lag, resetting a group's offsets), with
//! the lab's controls; and the JSON API it and the `lab` subcommands use.
//!
//! - [`api`]: what each route takes and answers, as types.
//! - [`observer`]: one consumer outside any group reads every topic: the live feed, each order's
//!   events, partition offsets, saga latencies.
//! - [`explorer`]: topics, configs, the message browser, producing, groups and offset resets.
//! - [`live`]: the snapshot pushed every second over Server-Sent Events.
//! - [`guard`]: the layer in front of every route that keeps other sites out (the `Host` a
//!   request names, and the `Origin` of one that changes something).
//!
//! Everything Kafka goes through the Kafka protocol, so the page works on an external broker too.

pub mod api;
pub mod explorer;
pub mod guard;
pub mod live;
pub mod observer;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use broker::link::Cut;
use order_service::api::Order;
use order_service::domain::OrderRequest;
use saga_shared::events::{Topic, topics};
use saga_shared::http::{ApiError, ApiJson, ApiPath, ApiQuery, Problem};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::client::LabClient;
use crate::dlq::DeadLetter;
use crate::system::{Lab, Service};
use api::{
    BrokerRunning, Contract, ContractService, DlqRecords, FaultSettings, GroupReset, Groups,
    IsolateParams, Isolation, LabStatus, Messages, MessagesQuery, Nodes, OrderView, OrdersQuery,
    OutboxBacklog, PoisonRequest, Produced, ReplayParams, Replayed, ResetRequest, ScaleParams,
    SchemaDiff, Schemas, ServiceRunning, ServiceScaled, ServiceStatus, TopicDetail, Topics,
};
use explorer::{Explorer, ExplorerError, NewRecord};
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
            .route("/api/services/{service}/outbox", get(outbox))
            .route("/api/services/{service}/scale", post(scale_service))
            .route("/api/broker/stop", post(stop_broker))
            .route("/api/broker/start", post(start_broker))
            .route("/api/nodes", get(nodes))
            .route("/api/nodes/{id}/stop", post(stop_node))
            .route("/api/nodes/{id}/start", post(start_node))
            .route("/api/nodes/{id}/isolate", post(isolate_node))
            .route("/api/nodes/{id}/reconnect", post(reconnect_node))
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
            .route("/api/schemas", get(schemas))
            .route("/api/schemas/{subject}/diff", get(schema_diff))
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
const ASSETS: [(&str, &str, &[u8]); 7] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../assets/dashboard/index.html"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/dashboard/i18n.js"),
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

async fn status(State(s): State<Shared>) -> Result<Json<LabStatus>, ApiError> {
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    let services = Service::ALL
        .iter()
        .map(|&svc| {
            let f = lab.faults(svc);
            ServiceStatus {
                name: svc.name().to_owned(),
                url: lab.url(svc),
                running: lab.is_running(svc),
                database_url: without_password(lab.db_url(svc)),
                faults: FaultSettings {
                    fail_handlers: f.fail_handlers.load(Ordering::Relaxed),
                    slow_ms: f.slow_ms.load(Ordering::Relaxed),
                },
            }
        })
        .collect();
    Ok(Json(LabStatus {
        brokers: lab.brokers().to_owned(),
        schema_registry: lab.schema_registry_url().to_owned(),
        services,
    }))
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
) -> Result<Json<ServiceRunning>, ApiError> {
    let svc = service(&name)?;
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    lab.stop_service(svc).await;
    Ok(Json(ServiceRunning {
        service: svc.name().to_owned(),
        running: false,
        url: None,
    }))
}

async fn start_service(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ServiceRunning>, ApiError> {
    let svc = service(&name)?;
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    lab.start_service(svc)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(ServiceRunning {
        service: svc.name().to_owned(),
        running: true,
        url: Some(lab.url(svc)),
    }))
}

/// `POST /api/services/{service}/scale?consumers=N`: the service restarts with N consumers in
/// its group (1 to 16).
async fn scale_service(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ScaleParams>,
) -> Result<Json<ServiceScaled>, ApiError> {
    let svc = service(&name)?;
    if !(1..=MAX_CONSUMERS).contains(&q.consumers) {
        return Err(ApiError::BadRequest(format!(
            "consumers must be 1 to {MAX_CONSUMERS}, not {}",
            q.consumers
        )));
    }
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    lab.scale(svc, q.consumers)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(ServiceScaled {
        service: svc.name().to_owned(),
        consumers: lab.consumers(svc),
    }))
}

/// The most consumers `lab scale` runs in one service.
const MAX_CONSUMERS: usize = 16;

/// `GET /api/services/{service}/outbox`: the events the service committed and has not
/// published yet (read from its database only, so it answers while the broker is down).
async fn outbox(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<OutboxBacklog>, ApiError> {
    let svc = service(&name)?;
    let url = {
        let mut guard = s.lab.lock().await;
        running(&mut guard)?.db_url(svc).to_owned()
    };
    let pool =
        saga_shared::db::connect_lazy(&url).map_err(|e| ApiError::Internal(e.to_string()))?;
    let pending = saga_shared::outbox::backlog(&pool)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot read {}'s outbox: {e}", svc.name())));
    pool.close().await;
    Ok(Json(OutboxBacklog {
        service: svc.name().to_owned(),
        pending: pending?,
    }))
}

/// `POST /api/broker/stop`: stops the embedded broker (every node); the services keep
/// running, their producers and consumers retrying. Refused with an external broker.
async fn stop_broker(State(s): State<Shared>) -> Result<Json<BrokerRunning>, ApiError> {
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    if lab.nodes().is_none() {
        return Err(external_broker());
    }
    lab.stop_broker().await;
    Ok(Json(BrokerRunning { running: false }))
}

/// `POST /api/broker/start`: starts the embedded broker again on its data and addresses.
async fn start_broker(State(s): State<Shared>) -> Result<Json<BrokerRunning>, ApiError> {
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    if lab.nodes().is_none() {
        return Err(external_broker());
    }
    lab.restart_broker()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(BrokerRunning { running: true }))
}

fn external_broker() -> ApiError {
    ApiError::Conflict("the lab runs on an external broker, which it does not stop or start".into())
}

/// The embedded broker's nodes (404 with an external broker).
fn described(lab: &Lab) -> Result<Json<Nodes>, ApiError> {
    lab.nodes()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("the lab runs on an external broker".into()))
}

async fn nodes(State(s): State<Shared>) -> Result<Json<Nodes>, ApiError> {
    let mut guard = s.lab.lock().await;
    described(running(&mut guard)?)
}

/// A node id of the path, one of the lab's.
fn node_id(lab: &Lab, id: &str) -> Result<i32, ApiError> {
    let nodes = lab
        .nodes()
        .ok_or_else(|| ApiError::NotFound("the lab runs on an external broker".into()))?;
    id.parse::<i32>()
        .ok()
        .filter(|id| nodes.nodes.iter().any(|n| n.id == *id))
        .ok_or_else(|| ApiError::NotFound(format!("no node {id:?}")))
}

async fn stop_node(s: State<Shared>, id: ApiPath<String>) -> Result<Json<Nodes>, ApiError> {
    act_on_node(s, id, NodeAction::Stop).await
}

async fn start_node(s: State<Shared>, id: ApiPath<String>) -> Result<Json<Nodes>, ApiError> {
    act_on_node(s, id, NodeAction::Start).await
}

async fn isolate_node(
    s: State<Shared>,
    id: ApiPath<String>,
    ApiQuery(params): ApiQuery<IsolateParams>,
) -> Result<Json<Nodes>, ApiError> {
    let cut = if params.keep_clients {
        Cut::FromNodes
    } else {
        Cut::FromAll
    };
    act_on_node(s, id, NodeAction::Isolate(cut)).await
}

async fn reconnect_node(s: State<Shared>, id: ApiPath<String>) -> Result<Json<Nodes>, ApiError> {
    act_on_node(s, id, NodeAction::Isolate(Cut::None)).await
}

/// What `POST /api/nodes/{id}/...` does to a node.
#[derive(Debug, Clone, Copy)]
enum NodeAction {
    Stop,
    Start,
    /// Isolate (or with `Cut::None` reconnect).
    Isolate(Cut),
}

/// `POST /api/nodes/{id}/stop`, `.../start`, `.../isolate` or `.../reconnect`: the nodes
/// afterwards. Isolating or reconnecting a stopped node is a 409.
async fn act_on_node(
    State(s): State<Shared>,
    ApiPath(id): ApiPath<String>,
    action: NodeAction,
) -> Result<Json<Nodes>, ApiError> {
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    let id = node_id(lab, &id)?;
    let done = match action {
        NodeAction::Stop => lab.stop_node(id).await,
        NodeAction::Start => lab.start_node(id).await,
        NodeAction::Isolate(cut) => {
            if !lab.running_nodes().contains(&id) {
                return Err(ApiError::Conflict(format!(
                    "node {id} is stopped; start it first"
                )));
            }
            lab.isolate_node(id, cut)
        }
    };
    done.map_err(|e| ApiError::Internal(e.to_string()))?;
    described(lab)
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
    let letters = crate::dlq::list(&s.brokers, &topic)
        .await
        .map_err(dlq_error)?;
    Ok((topic, letters))
}

fn dlq_error(e: crate::dlq::DlqError) -> ApiError {
    use crate::dlq::DlqError;
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

async fn list_dlq(
    State(s): State<Shared>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<DlqRecords>, ApiError> {
    let (topic, records) = read_dlq(&s, &topic).await?;
    let replayed = records.iter().filter(|d| d.replayed).count();
    Ok(Json(DlqRecords {
        topic,
        waiting: records.len() - replayed,
        replayed,
        records,
    }))
}

async fn replay_dlq(
    State(s): State<Shared>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(params): ApiQuery<ReplayParams>,
) -> Result<Json<Replayed>, ApiError> {
    use crate::dlq::Selection;
    let selection = match (params.partition, params.offset, params.group) {
        (None, None, None) => Selection::All,
        (Some(partition), Some(offset), None) => Selection::One { partition, offset },
        (None, None, Some(group)) => Selection::Group(group),
        _ => {
            return Err(ApiError::BadRequest(
                "give partition and offset (one record), or group (the waiting records one \
                 consumer group dead-lettered), or none (every waiting record)"
                    .into(),
            ));
        }
    };
    let topic = dlq_topic(&topic)?;
    let done = crate::dlq::replay(&s.brokers, &topic, selection)
        .await
        .map_err(dlq_error)?;
    Ok(Json(Replayed {
        topic,
        replayed: done.replayed,
        already_replayed: done.already_replayed,
    }))
}

/// `GET /api/contract`.
async fn contract(State(s): State<Shared>) -> Json<Contract> {
    let guard = s.lab.lock().await;
    let services = Service::ALL
        .iter()
        .map(|&svc| ContractService {
            name: svc.name(),
            short: svc.short_name(),
            url: guard.as_ref().map(|l| l.url(svc)),
            consumes: svc.consumes(),
            publishes: svc.publishes(),
        })
        .collect();
    Json(Contract {
        services,
        topics: Topic::ALL.to_vec(),
        brokers: s.brokers.clone(),
    })
}

async fn snapshot(State(s): State<Shared>) -> Json<live::Snapshot> {
    Json(live::snapshot(&s, &mut Default::default(), None).await)
}

async fn poison(
    State(s): State<Shared>,
    ApiJson(req): ApiJson<PoisonRequest>,
) -> Result<Json<Produced>, ApiError> {
    let topic = req.topic.name();
    let (partition, offset) = crate::poison::publish(s.explorer.producer(), topic, req.kind)
        .await
        .map_err(ExplorerError::from)?;
    Ok(Json(Produced {
        topic: topic.to_owned(),
        partition,
        offset,
        kind: Some(req.kind),
    }))
}

/// `GET /api/orders`: the order service's list, passed through.
async fn list_orders(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<OrdersQuery>,
) -> Result<Json<Vec<Order>>, ApiError> {
    let url = format!("{}/orders", s.client.order);
    passed_through(s.client.http().get(url).query(&q)).await
}

/// `POST /api/orders`: places an order through the order service (the page's presets).
async fn place_order(
    State(s): State<Shared>,
    ApiJson(body): ApiJson<OrderRequest>,
) -> Result<Json<Order>, ApiError> {
    let url = format!("{}/orders", s.client.order);
    passed_through(s.client.http().post(url).json(&body)).await
}

/// Sends `request` to the order service and answers what it answered, its problems kept as
/// they are.
async fn passed_through<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<Json<T>, ApiError> {
    let unavailable = || ApiError::Unavailable("the order service does not answer".into());
    let res = request.send().await.map_err(|_| unavailable())?;
    let status = res.status();
    if status.is_success() {
        return res.json().await.map(Json).map_err(|e| {
            tracing::warn!(error = %e, "dashboard: the order service's answer does not decode");
            unavailable()
        });
    }
    let detail = res
        .json::<Problem>()
        .await
        .map(|p| p.detail)
        .unwrap_or_default();
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
) -> Result<Json<OrderView>, ApiError> {
    let events = s.observer.order_events(&id.to_string());
    let order = s.client.order(id).await.ok();
    if order.is_none() && events.is_empty() {
        return Err(ApiError::NotFound(format!("no order {id}")));
    }
    Ok(Json(OrderView { order, events }))
}

async fn list_topics(State(s): State<Shared>) -> Result<Json<Topics>, ApiError> {
    let (brokers, topics) = s.explorer.cluster(&s.observer).await?;
    Ok(Json(Topics {
        bootstrap: s.brokers.clone(),
        brokers,
        topics,
    }))
}

async fn topic(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<TopicDetail>, ApiError> {
    let summary = s
        .explorer
        .topics(&s.observer)
        .await?
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no topic {name:?}")))?;
    let configs = s.explorer.configs(&name).await?;
    Ok(Json(TopicDetail {
        topic: summary,
        configs,
    }))
}

async fn messages(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> Result<Json<Messages>, ApiError> {
    let start = q.start().map_err(ApiError::BadRequest)?;
    let committed = q.isolation == Isolation::ReadCommitted;
    let mut records = s
        .explorer
        .messages(&name, q.partition, start, q.limit.unwrap_or(50), committed)
        .await?;
    label_schema_versions(&s, &name, &mut records).await;
    Ok(Json(Messages {
        topic: name,
        partition: q.partition,
        records,
    }))
}

/// Each framed record's schema version, asked of the registry once per id (left out if it
/// cannot be asked: the records are shown anyway).
async fn label_schema_versions(s: &DashState, topic: &str, records: &mut [explorer::Record]) {
    if records.iter().all(|r| r.schema_id.is_none()) {
        return;
    }
    let Ok(url) = registry_url(s).await else {
        return;
    };
    let client = schema_registry::client::RegistryClient::new(&url);
    let mut known: std::collections::HashMap<i32, Option<i32>> = Default::default();
    for r in records.iter_mut() {
        let Some(id) = r.schema_id else { continue };
        let version = match known.get(&id) {
            Some(v) => *v,
            None => crate::schemas::version_of(&client, topic, id).await,
        };
        known.insert(id, version);
        r.schema_version = version;
    }
}

/// The lab's schema registry's URL.
async fn registry_url(s: &DashState) -> Result<String, ApiError> {
    let mut guard = s.lab.lock().await;
    let url = running(&mut guard)?.schema_registry_url().to_owned();
    if url.is_empty() {
        return Err(ApiError::NotFound("the lab runs no schema registry".into()));
    }
    Ok(url)
}

/// A registry's refusal as the dashboard answers it (its own words for a 404; a registry that
/// does not answer is only named).
fn registry_error(e: schema_registry::client::ClientError) -> ApiError {
    match e {
        schema_registry::client::ClientError::Refused {
            status: 404,
            message,
            ..
        } => ApiError::NotFound(message),
        other => {
            tracing::warn!(error = %other, "the schema registry failed");
            ApiError::Unavailable("the schema registry did not answer".into())
        }
    }
}

async fn schemas(State(s): State<Shared>) -> Result<Json<Schemas>, ApiError> {
    let url = registry_url(&s).await?;
    let subjects = crate::schemas::subjects(&url)
        .await
        .map_err(registry_error)?;
    Ok(Json(Schemas {
        registry: url,
        subjects,
    }))
}

#[derive(Debug, Deserialize)]
struct DiffQuery {
    from: i32,
    to: i32,
}

async fn schema_diff(
    State(s): State<Shared>,
    ApiPath(subject): ApiPath<String>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> Result<Json<SchemaDiff>, ApiError> {
    let client = schema_registry::client::RegistryClient::new(&registry_url(&s).await?);
    let (from, to) = (q.from.to_string(), q.to.to_string());
    let from = client
        .version(&subject, &from)
        .await
        .map_err(registry_error)?;
    let to = client
        .version(&subject, &to)
        .await
        .map_err(registry_error)?;
    Ok(Json(SchemaDiff {
        lines: crate::schemas::diff(&from.schema, &to.schema),
        subject,
        from: q.from,
        to: q.to,
    }))
}

async fn produce(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
    ApiJson(record): ApiJson<NewRecord>,
) -> Result<Json<Produced>, ApiError> {
    let (partition, offset) = s.explorer.produce(&name, record).await?;
    Ok(Json(Produced {
        topic: name,
        partition,
        offset,
        kind: None,
    }))
}

async fn list_groups(State(s): State<Shared>) -> Result<Json<Groups>, ApiError> {
    let groups = s.explorer.groups(&s.observer, None).await?;
    Ok(Json(Groups { groups }))
}

async fn group(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<explorer::GroupView>, ApiError> {
    let group = s
        .explorer
        .groups(&s.observer, Some(&name))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NotFound(format!("no group {name:?}")))?;
    Ok(Json(group))
}

async fn reset_group(
    State(s): State<Shared>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<ResetRequest>,
) -> Result<Json<GroupReset>, ApiError> {
    let partitions = s
        .explorer
        .reset(
            &s.observer,
            &name,
            req.topic.as_deref(),
            req.to,
            req.dry_run,
        )
        .await?;
    Ok(Json(GroupReset {
        group: name,
        dry_run: req.dry_run,
        partitions,
    }))
}
