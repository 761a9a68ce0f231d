//! What the page shows live, pushed with Server-Sent Events: once a second a [`Snapshot`] (offsets
//! and rates per topic, each service's lag, outbox backlog and faults, orders by status, the
//! latency distribution), and the records as the observer reads them, in small batches.
//!
//! Snapshots are computed only while a page listens, so a lab nobody watches pays nothing.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};

use super::observer::Seen;
use super::{DashState, Shared};
use crate::system::Service;

/// How often a snapshot is taken while a page listens.
const TICK: Duration = Duration::from_secs(1);
/// Snapshots kept for a page that opens (about five minutes).
const HISTORY: usize = 300;
/// Records sent per batch; the rest of a burst is counted, not sent (the page needs a sample
/// to show the flow, and each order's page fetches its own records).
const BATCH: usize = 40;
/// Latency buckets (upper bounds in ms) of the distribution.
const BUCKETS: [i64; 12] = [
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    i64::MAX,
];

#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// ms since the epoch.
    pub time: i64,
    pub topics: Vec<TopicLive>,
    pub services: Vec<ServiceLive>,
    /// Orders by status.
    pub orders: BTreeMap<String, i64>,
    pub latency: Latency,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TopicLive {
    pub name: String,
    /// Sum over partitions of the log end offset.
    pub end: i64,
    pub records: i64,
    /// Records per second since the previous snapshot.
    pub rate: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceLive {
    pub name: String,
    pub short: String,
    pub running: bool,
    /// Started at least once (false: left out with `--services`, not started yet).
    pub started: bool,
    pub fail_handlers: bool,
    pub slow_ms: u64,
    /// Its consumer group's lag over the topics it consumes.
    pub lag: i64,
    /// How far behind that is in time (ms): how long ago the oldest record it has not
    /// processed was written.
    pub behind_ms: Option<i64>,
    /// Outbox rows not yet published.
    pub outbox: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50: i64,
    pub p95: i64,
    pub p99: i64,
    pub max: i64,
    /// (upper bound in ms, null for "more"; confirmed sagas; cancelled sagas)
    pub buckets: Vec<(Option<i64>, usize, usize)>,
}

/// The live side of the dashboard: the latest snapshot and the recent ones.
pub struct Live {
    latest: watch::Sender<Arc<Snapshot>>,
    history: std::sync::Mutex<VecDeque<Arc<Snapshot>>>,
}

impl Live {
    pub fn new() -> Arc<Live> {
        Arc::new(Live {
            latest: watch::channel(Arc::default()).0,
            history: std::sync::Mutex::default(),
        })
    }

    fn history(&self) -> Vec<Arc<Snapshot>> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// Takes a snapshot every `TICK` while a page listens, until the dashboard stops.
pub async fn run(state: Shared) {
    let mut pools: BTreeMap<Service, PgPool> = BTreeMap::new();
    let mut previous: Option<Arc<Snapshot>> = None;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if state.live.latest.receiver_count() == 0 {
            previous = None;
            continue;
        }
        let snap = Arc::new(snapshot(&state, &mut pools, previous.as_deref()).await);
        {
            let mut history = state.live.history.lock().unwrap_or_else(|e| e.into_inner());
            if history.len() >= HISTORY {
                history.pop_front();
            }
            history.push_back(snap.clone());
        }
        state.live.latest.send_replace(snap.clone());
        previous = Some(snap);
    }
}

/// A snapshot now; rates against `previous`.
pub async fn snapshot(
    state: &DashState,
    pools: &mut BTreeMap<Service, PgPool>,
    previous: Option<&Snapshot>,
) -> Snapshot {
    let now = chrono_now_ms();
    let topics = topics_live(state, previous, now);
    let mut live_services = Vec::new();
    let mut orders = BTreeMap::new();
    for service in service_states(state).await {
        let pool = match pools.get(&service.svc) {
            Some(p) => Some(p.clone()),
            None => saga_shared::db::connect_lazy(&service.db_url)
                .ok()
                .inspect(|p| {
                    pools.insert(service.svc, p.clone());
                }),
        };
        live_services.push(service_live(state, service, pool.as_ref(), &mut orders).await);
    }
    Snapshot {
        time: now,
        topics,
        services: live_services,
        orders,
        latency: latency(&state.observer.latencies()),
    }
}

/// Each topic's end, records and rate (against `previous`), summed over its partitions.
fn topics_live(state: &DashState, previous: Option<&Snapshot>, now: i64) -> Vec<TopicLive> {
    let mut by_topic: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for p in state.observer.partitions() {
        let e = by_topic.entry(p.topic).or_default();
        e.0 += p.end;
        e.1 += p.end - p.start;
    }
    by_topic
        .into_iter()
        .map(|(name, (end, records))| {
            let rate = previous
                .and_then(|prev| {
                    let before = prev.topics.iter().find(|t| t.name == name)?;
                    let secs = (now - prev.time) as f64 / 1000.0;
                    (secs > 0.0).then(|| (end - before.end).max(0) as f64 / secs)
                })
                .unwrap_or(0.0);
            TopicLive {
                name,
                end,
                records,
                rate,
            }
        })
        .collect()
}

/// What the lab knows of one service.
struct ServiceState {
    svc: Service,
    running: bool,
    started: bool,
    fail_handlers: bool,
    slow_ms: u64,
    db_url: String,
}

/// The lab's view of its services, taken quickly so the lock is not held across I/O.
async fn service_states(state: &DashState) -> Vec<ServiceState> {
    let guard = state.lab.lock().await;
    let Some(lab) = guard.as_ref() else {
        return Vec::new();
    };
    Service::ALL
        .iter()
        .map(|&svc| {
            let f = lab.faults(svc);
            ServiceState {
                svc,
                running: lab.is_running(svc),
                started: lab.was_started(svc),
                fail_handlers: f.fail_handlers.load(Ordering::Relaxed),
                slow_ms: f.slow_ms.load(Ordering::Relaxed),
                db_url: lab.db_url(svc).to_owned(),
            }
        })
        .collect()
}

/// One service's card: its state, its consumer lag and its outbox backlog (read from its
/// database, through `pool`); the order service's database also gives the orders per status.
async fn service_live(
    state: &DashState,
    service: ServiceState,
    pool: Option<&PgPool>,
    orders: &mut BTreeMap<String, i64>,
) -> ServiceLive {
    let svc = service.svc;
    let mut outbox = 0;
    if let Some(pool) = pool {
        outbox = saga_shared::outbox::backlog(pool).await.unwrap_or(0);
        if svc == Service::Order {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, count(*) FROM orders GROUP BY status")
                    .fetch_all(pool)
                    .await
                    .unwrap_or_default();
            orders.extend(rows);
        }
    }
    let (lag, behind_ms) = state
        .explorer
        .service_lag(&state.observer, svc.name(), svc.consumes())
        .await
        .unwrap_or((0, None));
    ServiceLive {
        name: svc.name().to_owned(),
        short: svc.short_name().to_owned(),
        running: service.running,
        started: service.started,
        fail_handlers: service.fail_handlers,
        slow_ms: service.slow_ms,
        lag,
        behind_ms,
        outbox,
    }
}

fn latency(samples: &[(i64, i64, bool)]) -> Latency {
    if samples.is_empty() {
        return Latency {
            buckets: BUCKETS.iter().map(|&b| (bound(b), 0, 0)).collect(),
            ..Latency::default()
        };
    }
    let mut ms: Vec<i64> = samples.iter().map(|s| s.1).collect();
    ms.sort_unstable();
    let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    let mut buckets: Vec<(Option<i64>, usize, usize)> =
        BUCKETS.iter().map(|&b| (bound(b), 0, 0)).collect();
    for &(_, v, confirmed) in samples {
        let i = BUCKETS
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(BUCKETS.len() - 1);
        if confirmed {
            buckets[i].1 += 1;
        } else {
            buckets[i].2 += 1;
        }
    }
    Latency {
        count: ms.len(),
        p50: pick(0.5),
        p95: pick(0.95),
        p99: pick(0.99),
        max: *ms.last().expect("not empty"),
        buckets,
    }
}

fn bound(b: i64) -> Option<i64> {
    (b != i64::MAX).then_some(b)
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What the stream carries, in order: the recent snapshots once, then each new snapshot and each
/// batch of records.
enum Step {
    Start,
    Running,
}

struct StreamState {
    step: Step,
    shared: Shared,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    records: broadcast::Receiver<Arc<Seen>>,
}

/// `GET /api/live`: the Server-Sent Events stream the page listens to.
pub fn stream(shared: Shared) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let state = StreamState {
        step: Step::Start,
        snapshots: shared.live.latest.subscribe(),
        records: shared.observer.subscribe(),
        shared,
    };
    let events = futures_util::stream::unfold(state, |mut s| async move {
        let event = match s.step {
            Step::Start => {
                s.step = Step::Running;
                let history = s.shared.live.history();
                json_event("history", &history)
            }
            Step::Running => next_event(&mut s).await?,
        };
        Some((Ok(event), s))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn next_event(s: &mut StreamState) -> Option<Event> {
    tokio::select! {
        changed = s.snapshots.changed() => {
            changed.ok()?;
            let snap = s.snapshots.borrow_and_update().clone();
            Some(json_event("snapshot", &snap))
        }
        first = s.records.recv() => {
            let mut batch = Vec::new();
            let mut dropped = 0u64;
            match first {
                Ok(r) => batch.push(r),
                Err(broadcast::error::RecvError::Lagged(n)) => dropped += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
            // Whatever else arrives within a moment joins this batch.
            let until = tokio::time::Instant::now() + Duration::from_millis(250);
            while let Ok(next) = tokio::time::timeout_at(until, s.records.recv()).await {
                match next {
                    Ok(r) if batch.len() < BATCH => batch.push(r),
                    Ok(_) => dropped += 1,
                    Err(broadcast::error::RecvError::Lagged(n)) => dropped += n,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
            Some(json_event("records", &RecordBatch { records: batch, dropped }))
        }
    }
}

/// The `records` event: what the observer saw since the last one, and how many records the
/// page missed (a slow reader's stream drops rather than lags).
#[derive(Serialize)]
struct RecordBatch {
    records: Vec<Arc<Seen>>,
    dropped: u64,
}

fn json_event<T: Serialize>(name: &str, value: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(value)
        .unwrap_or_else(|_| Event::default().event(name).data("null"))
}
