//! The dashboard's eye on the broker: one consumer outside any group that reads every topic from
//! its start, as `kcat -C` would, and remembers what it saw: each order's events (for the saga
//! timeline), each partition's offsets and bytes (for the explorer), when its recent records were
//! written (how far behind a group is in time), the saga's end-to-end latencies, and a live feed of new records (for the chain). It speaks only the Kafka protocol,
//! so it works on any broker the lab points at.
//!
//! It runs on a thread of its own (a polling loop), so it never takes the async workers that
//! serve the services, and its memory is bounded: the latest [`MAX_ORDERS`] orders and
//! [`MAX_LATENCIES`] latencies.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use saga_shared::Envelope;
use saga_shared::dlq::header as dlq_header;
use saga_shared::events::Topic;
use serde::Serialize;
use tokio::sync::broadcast;

/// Orders whose events are kept for their timeline.
pub const MAX_ORDERS: usize = 10_000;
/// End-to-end latencies kept for the distribution.
pub const MAX_LATENCIES: usize = 5_000;
/// Records whose (offset, timestamp) each partition keeps, to tell how far behind a group is in
/// time.
pub const TIMES_KEPT: usize = 4_096;
/// How often new topics and partitions are looked for.
const METADATA_EVERY: Duration = Duration::from_secs(2);

/// A record as the dashboard shows it in the chain and the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (ms since the epoch).
    pub timestamp: i64,
    pub key: Option<String>,
    /// CloudEvents headers, when the record has a valid envelope.
    pub id: Option<String>,
    pub source: Option<String>,
    /// `ce_time`, ms since the epoch.
    pub time: Option<i64>,
    pub order: Option<String>,
    pub cause: Option<String>,
    /// Why it was dead-lettered, and by which consumer group (records of a DLQ).
    pub error: Option<String>,
    pub group: Option<String>,
}

/// One partition as the observer knows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    /// Log start and end offsets (the end is the offset the next record gets).
    pub start: i64,
    pub end: i64,
    /// Bytes of the records read since the log start (keys, values, headers).
    pub bytes: u64,
}

#[derive(Default)]
struct State {
    by_order: HashMap<String, Vec<Arc<Seen>>>,
    orders: VecDeque<String>,
    /// (ms since the epoch when the saga ended, end-to-end ms, confirmed?)
    latencies: VecDeque<(i64, i64, bool)>,
    partitions: BTreeMap<(String, i32), PartitionView>,
    /// The latest [`TIMES_KEPT`] records of each partition: (offset, timestamp in ms).
    times: HashMap<(String, i32), VecDeque<(i64, i64)>>,
}

/// Shared between the polling thread and the dashboard's handlers.
pub struct Observer {
    state: Mutex<State>,
    feed: broadcast::Sender<Arc<Seen>>,
    stop: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct StatsContext(Arc<Observer>);

impl ClientContext for StatsContext {
    fn stats(&self, stats: Statistics) {
        let mut state = self.0.lock();
        for (topic, t) in &stats.topics {
            for (&partition, p) in &t.partitions {
                if partition < 0 || p.hi_offset < 0 {
                    continue;
                }
                let view = state.partition(topic, partition);
                view.end = view.end.max(p.hi_offset);
                if p.lo_offset >= 0 {
                    view.start = p.lo_offset;
                }
            }
        }
    }
}

impl ConsumerContext for StatsContext {}

impl Observer {
    /// Starts reading every topic of `brokers` (Kafka's internal `__` topics only counted: their
    /// records are no events).
    pub fn start(brokers: &str) -> anyhow::Result<Arc<Observer>> {
        let observer = Arc::new(Observer {
            state: Mutex::default(),
            feed: broadcast::channel(4096).0,
            stop: AtomicBool::new(false),
            thread: Mutex::default(),
        });
        let consumer: BaseConsumer<StatsContext> = saga_shared::kafka::client_config(brokers)
            .set("group.id", "lab-dashboard")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("statistics.interval.ms", "1000")
            .set("fetch.wait.max.ms", "100")
            .create_with_context(StatsContext(observer.clone()))?;
        let me = observer.clone();
        let thread = std::thread::Builder::new()
            .name("dashboard-observer".into())
            .spawn(move || me.run(consumer))?;
        *observer.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(observer)
    }

    /// Tells the reading thread to stop (it ends within its poll interval).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops the reading thread and waits until it has closed its consumer.
    pub async fn stop_and_wait(&self) {
        self.stop();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, consumer: BaseConsumer<StatsContext>) {
        let mut next_metadata = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if Instant::now() >= next_metadata {
                if let Err(err) = assign_new_partitions(&consumer) {
                    tracing::debug!(error = %err, "dashboard observer: no metadata yet");
                }
                next_metadata = Instant::now() + METADATA_EVERY;
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(msg)) => self.record(&msg),
                Some(Err(err)) => tracing::debug!(error = %err, "dashboard observer"),
                None => {}
            }
        }
    }

    fn record(&self, msg: &BorrowedMessage<'_>) {
        if msg.topic().starts_with("__") {
            // The coordinators' state: counted for the Topics page, never an event.
            let bytes = msg.payload_len() + msg.key().map_or(0, <[u8]>::len);
            let mut state = self.lock();
            let view = state.partition(msg.topic(), msg.partition());
            view.end = view.end.max(msg.offset() + 1);
            view.bytes += bytes as u64;
            return;
        }
        let envelope = msg.headers().and_then(|h| Envelope::from_headers(h).ok());
        let header = |name: &str| {
            msg.headers()?
                .iter()
                .find(|h| h.key == name)?
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let seen = Arc::new(Seen {
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
            timestamp: msg.timestamp().to_millis().unwrap_or(0),
            key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            id: envelope.as_ref().map(|e| e.id.to_string()),
            source: envelope.as_ref().map(|e| e.source.clone()),
            time: envelope.as_ref().map(|e| e.time.timestamp_millis()),
            order: envelope.as_ref().map(|e| e.correlation_id.to_string()),
            cause: envelope
                .as_ref()
                .and_then(|e| e.causation_id.map(|c| c.to_string())),
            error: header(dlq_header::ERROR),
            group: header(dlq_header::CONSUMER_GROUP),
        });
        let bytes = msg.payload_len()
            + msg.key().map_or(0, <[u8]>::len)
            + msg.headers().map_or(0, |h| {
                h.iter()
                    .map(|x| x.key.len() + x.value.map_or(0, <[u8]>::len))
                    .sum()
            });
        {
            let mut state = self.lock();
            let view = state.partition(&seen.topic, seen.partition);
            view.end = view.end.max(seen.offset + 1);
            view.bytes += bytes as u64;
            state.timed(&seen);
            if let Some(order) = seen.order.clone() {
                state.remember(order, seen.clone());
            }
        }
        // Nobody listening is fine.
        let _ = self.feed.send(seen);
    }

    /// New records as they are read.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Seen>> {
        self.feed.subscribe()
    }

    /// Every event of `order` seen on any topic (DLQs included), in the order they were read.
    pub fn order_events(&self, order: &str) -> Vec<Arc<Seen>> {
        self.lock().by_order.get(order).cloned().unwrap_or_default()
    }

    /// Every partition seen, by topic and partition.
    pub fn partitions(&self) -> Vec<PartitionView> {
        self.lock().partitions.values().cloned().collect()
    }

    /// The end offset of `topic`'s `partition`, if known.
    pub fn end_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.lock()
            .partitions
            .get(&(topic.to_owned(), partition))
            .map(|p| p.end)
    }

    /// How far a group whose committed offset in `topic`'s `partition` is `committed` is behind
    /// in time, at `now_ms`: how long ago the oldest record it has not processed was written
    /// (0 when it has read everything). `None` when the observer has not read that far yet; at
    /// least that much when the record is older than the ones it keeps.
    pub fn behind_ms(
        &self,
        topic: &str,
        partition: i32,
        committed: i64,
        now_ms: i64,
    ) -> Option<i64> {
        let state = self.lock();
        let key = (topic.to_owned(), partition);
        let end = state.partitions.get(&key)?.end;
        if committed >= end {
            return Some(0);
        }
        let times = state.times.get(&key)?;
        let at = times.partition_point(|(offset, _)| *offset < committed);
        let (_, written) = times.get(at)?;
        Some((now_ms - written).max(0))
    }

    /// The recent end-to-end latencies: (when the saga ended, ms, confirmed?).
    pub fn latencies(&self) -> Vec<(i64, i64, bool)> {
        self.lock().latencies.iter().copied().collect()
    }
}

impl State {
    fn partition(&mut self, topic: &str, partition: i32) -> &mut PartitionView {
        self.partitions
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| PartitionView {
                topic: topic.to_owned(),
                partition,
                ..PartitionView::default()
            })
    }

    /// Keeps a record's offset and timestamp, the latest [`TIMES_KEPT`] of its partition.
    fn timed(&mut self, seen: &Seen) {
        let times = self
            .times
            .entry((seen.topic.clone(), seen.partition))
            .or_default();
        if times.len() >= TIMES_KEPT {
            times.pop_front();
        }
        times.push_back((seen.offset, seen.timestamp));
    }

    fn remember(&mut self, order: String, seen: Arc<Seen>) {
        // A saga ends with inventory.updated (confirmed) or order.cancelled; its latency is
        // from order.created's ce_time to that event's.
        let end = match Topic::parse(&seen.topic) {
            Some(Topic::InventoryUpdated) => Some(true),
            Some(Topic::OrderCancelled) => Some(false),
            _ => None,
        };
        let events = match self.by_order.get_mut(&order) {
            Some(events) => events,
            None => {
                if self.orders.len() >= MAX_ORDERS
                    && let Some(oldest) = self.orders.pop_front()
                {
                    self.by_order.remove(&oldest);
                }
                self.orders.push_back(order.clone());
                self.by_order.entry(order).or_default()
            }
        };
        if let Some(confirmed) = end {
            let created = events
                .iter()
                .find(|e| e.topic == Topic::OrderCreated.name())
                .and_then(|e| e.time);
            let already = events.iter().any(|e| e.topic == seen.topic);
            if let (Some(start), Some(t), false) = (created, seen.time, already) {
                if self.latencies.len() >= MAX_LATENCIES {
                    self.latencies.pop_front();
                }
                self.latencies.push_back((t, (t - start).max(0), confirmed));
            }
        }
        events.push(seen);
    }
}

/// Assigns, from their start, the partitions of every topic that are not assigned yet.
fn assign_new_partitions<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> anyhow::Result<()> {
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(2))?;
    let assigned = consumer.assignment()?;
    let mut new = TopicPartitionList::new();
    for topic in metadata.topics() {
        if topic.error().is_some() {
            continue;
        }
        for p in topic.partitions() {
            if assigned.find_partition(topic.name(), p.id()).is_none() {
                new.add_partition_offset(topic.name(), p.id(), Offset::Beginning)?;
            }
        }
    }
    if new.count() > 0 {
        consumer.incremental_assign(&new)?;
    }
    Ok(())
}
