//! The consumer runner: at-least-once delivery turned into exactly-once effects.
//!
//! For each record, in partition order:
//! 1. The envelope and payload are checked; a record that can never succeed (undecodable, missing
//!    headers) goes straight to the DLQ.
//! 2. In one database transaction the runner records the `ce_id` in `consumed_events` (a duplicate
//!    stops here) and lets the [`Handler`] apply its effects and enqueue follow-up events. Records
//!    already fetched share one transaction (up to `MAX_BATCH`) and one `consumed_events` insert;
//!    if it fails, each record of the batch is retried in a transaction of its own, so failures
//!    are handled per record.
//! 3. Only after that transaction commits is the offset stored; stored offsets are committed in
//!    batches (at most `COMMIT_INTERVAL` later) and when the consumer stops.
//!
//! A transient failure is retried with capped exponential backoff on the same record, so the
//! partition never skips ahead. Lost database connections retry without limit (the event is not
//! at fault); other failures go to `<topic>.dlq` after `max_attempts`, with headers naming the
//! original topic, partition, offset, consumer group, attempts and error.
//!
//! A record a DLQ replay redrove to another group (header `dlq_redrive_group`, see [`crate::dlq`])
//! is skipped: its offset moves on, nothing is applied, and it counts as `skipped`, not as a
//! duplicate.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use sqlx::{PgConnection, PgPool};

use crate::envelope::{Envelope, EnvelopeError};
use crate::events::{SagaEvent, Topic};
use crate::faults::Faults;
use crate::kafka::client_config;
use crate::shutdown::Shutdown;

/// Most records handled in one transaction.
const MAX_BATCH: usize = 32;

/// Longest time a processed record's offset stays uncommitted.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// A decoded record handed to a [`Handler`]: its envelope and its typed payload.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub envelope: Envelope,
    pub event: SagaEvent,
}

impl Incoming {
    pub fn topic(&self) -> Topic {
        self.event.topic()
    }
}

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The event can never be processed: dead-letter it.
    #[error("invalid event: {0}")]
    Invalid(String),
    /// A database failure: retried.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Any other failure that may pass: retried, then dead-lettered.
    #[error("{0}")]
    Transient(String),
}

impl From<crate::outbox::OutboxError> for HandleError {
    fn from(err: crate::outbox::OutboxError) -> Self {
        match err {
            crate::outbox::OutboxError::Db(e) => HandleError::Db(e),
            other => HandleError::Transient(other.to_string()),
        }
    }
}

impl HandleError {
    /// An event of a topic the service does not consume (it reached it anyway: to the DLQ).
    pub fn not_consumed(topic: Topic) -> Self {
        HandleError::Invalid(format!("this service does not consume {topic}"))
    }

    fn retry_without_limit(&self) -> bool {
        matches!(self, HandleError::Db(e) if crate::db::is_transient(e))
    }
}

/// The events a handler consumes, declared once with [`consumes!`](crate::consumes): its
/// consumers subscribe to exactly [`Consumed::TOPICS`], and the handler matches the declaration
/// without a catch-all, so a topic is consumed if and only if it is handled.
pub trait Consumed: Sized + Send + 'static {
    /// The topics of these events: the service's subscription.
    const TOPICS: &'static [Topic];

    /// `event` as one of these, or the error that sends it to the DLQ (a topic not consumed
    /// reached the service anyway).
    fn of(event: &SagaEvent) -> Result<Self, HandleError>;
}

/// A service's reaction to the events it consumes; runs inside the runner's transaction.
pub trait Handler: Send + Sync + 'static {
    /// What it consumes: its subscription derives from this.
    type Consumed: Consumed;

    /// Applies `event` (whose envelope is `envelope`) in the runner's transaction `conn`.
    fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
        event: Self::Consumed,
    ) -> impl Future<Output = Result<(), HandleError>> + Send;
}

/// A [`Handler`] as the runner holds it, whatever it consumes: its topics, and a decoded record
/// handed to it as one of its events.
pub trait Subscription: Send + Sync + 'static {
    fn topics(&self) -> &'static [Topic];

    fn deliver<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandleError>>;
}

impl<H: Handler> Subscription for H {
    fn topics(&self) -> &'static [Topic] {
        H::Consumed::TOPICS
    }

    fn deliver<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        match H::Consumed::of(&event.event) {
            Ok(consumed) => Box::pin(self.handle(conn, &event.envelope, consumed)),
            Err(err) => Box::pin(std::future::ready(Err(err))),
        }
    }
}

/// Declares the events a [`Handler`] consumes, and those of the contract it ignores: an enum with
/// one variant per consumed event (implementing [`Consumed`]) and its `topic()`. Every topic of
/// the contract is named in one list or the other (the generated match has no catch-all), so a
/// topic added to the contract makes every service decide before it compiles.
///
/// ```ignore
/// saga_shared::consumes! {
///     /// What the payment service reacts to.
///     pub enum Consumed { OrderCreated, InventoryFailed }
///     ignores { PaymentCompleted, PaymentFailed, InventoryUpdated, PaymentRefunded, OrderCancelled }
/// }
/// ```
#[macro_export]
macro_rules! consumes {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $($event:ident),+ $(,)? }
        ignores { $($ignored:ident),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis enum $name {
            $($event($crate::events::$event),)+
        }

        impl $name {
            /// The event's topic.
            #[allow(dead_code)]
            $vis fn topic(&self) -> $crate::events::Topic {
                match self {
                    $($name::$event(_) => $crate::events::Topic::$event,)+
                }
            }
        }

        impl $crate::consumer::Consumed for $name {
            const TOPICS: &'static [$crate::events::Topic] = &[$($crate::events::Topic::$event),+];

            fn of(
                event: &$crate::events::SagaEvent,
            ) -> ::std::result::Result<Self, $crate::consumer::HandleError> {
                match event {
                    $($crate::events::SagaEvent::$event(e) => Ok($name::$event(e.clone())),)+
                    $($crate::events::SagaEvent::$ignored(_) => Err(
                        $crate::consumer::HandleError::not_consumed($crate::events::Topic::$ignored),
                    ),)*
                }
            }
        }
    };
}

/// Retry schedule of a failing record.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// Delay after failed attempt `attempt` (1-based): initial * 2^(attempt-1), capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Runs one consumer of a group until shutdown.
pub struct ConsumerRunner {
    pub group: String,
    pub brokers: String,
    pub pool: PgPool,
    pub producer: FutureProducer,
    pub handler: Arc<dyn Subscription>,
    pub retry: RetryPolicy,
    pub faults: Arc<Faults>,
    /// `service` label of the metrics.
    pub service: &'static str,
    /// Which of its service's consumers this is (0, 1, ...), in its client id.
    pub index: usize,
    /// Set while this consumer holds its assignment with a fetch position for every partition.
    pub ready: Arc<AtomicBool>,
    /// With a schema registry: the schema ids of framed records are checked before decoding.
    pub schemas: Option<Arc<crate::schemas::Schemas>>,
}

mod context;
pub(crate) mod dead_letter;
mod processing;

use context::RunnerContext;

enum Outcome {
    Processed,
    Duplicate,
    DeadLettered,
    /// A DLQ redrive addressed to another group: neither applied nor counted as a duplicate.
    Skipped,
    /// Shutdown came while retrying: leave the offset uncommitted.
    Interrupted,
}

impl ConsumerRunner {
    pub async fn run(self, mut shutdown: Shutdown) {
        let consumer = match self.subscribed() {
            Ok(c) => c,
            Err(err) => {
                tracing::error!(group = %self.group, error = %err, "cannot create or subscribe the consumer");
                return;
            }
        };
        // Offsets are stored once a record's transaction committed, and the stored offsets are
        // committed at most every COMMIT_INTERVAL (and on shutdown): one OffsetCommit per batch
        // rather than per record. A crash redelivers at most that window; `consumed_events`
        // absorbs the duplicates.
        let mut uncommitted = false;
        let mut next_commit = tokio::time::Instant::now() + COMMIT_INTERVAL;
        loop {
            let msg = tokio::select! {
                m = consumer.recv() => m,
                _ = tokio::time::sleep_until(next_commit), if uncommitted => {
                    self.commit(&consumer);
                    uncommitted = false;
                    continue;
                }
                _ = shutdown.wait() => break,
            };
            let msg = match msg {
                Ok(m) => m,
                Err(err) => {
                    tracing::debug!(group = %self.group, error = %err, "consumer error");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = shutdown.wait() => break,
                    }
                    continue;
                }
            };
            // Whatever else is already fetched joins this record in one transaction.
            let mut batch = vec![msg];
            while batch.len() < MAX_BATCH {
                match consumer.recv().now_or_never() {
                    Some(Ok(m)) => batch.push(m),
                    _ => break,
                }
            }
            let interrupted = self.handle_batch(&consumer, &batch, &mut shutdown).await;
            if !uncommitted {
                uncommitted = true;
                next_commit = tokio::time::Instant::now() + COMMIT_INTERVAL;
            }
            if interrupted {
                break;
            }
        }
        self.leave(consumer, uncommitted).await;
    }

    /// The group's consumer, subscribed to exactly what the handler declares it consumes.
    fn subscribed(&self) -> Result<StreamConsumer<RunnerContext>, rdkafka::error::KafkaError> {
        let consumer: StreamConsumer<RunnerContext> = client_config(&self.brokers)
            .set("group.id", &self.group)
            // Tells the members apart in `lab groups` / DescribeGroups: which process, which
            // of its consumers.
            .set(
                "client.id",
                format!("{}@{}/{}", self.group, std::process::id(), self.index),
            )
            .set("statistics.interval.ms", "5000")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // A long poll waits at most this long for records. Right after an assignment,
            // librdkafka may send its first Fetch before every partition has started; the others
            // join the next Fetch, so this also bounds how long a new partition can wait (the
            // default, 500 ms, showed as a first order taking 475 ms). 20 idle Fetches a second.
            .set("fetch.wait.max.ms", "50")
            // Partitions added to a topic are noticed (and the group rebalances onto them)
            // within seconds rather than librdkafka's default five minutes.
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .create_with_context(RunnerContext::new(self.service, self.ready.clone()))?;
        let topics: Vec<&str> = self.handler.topics().iter().map(|t| t.name()).collect();
        consumer.subscribe(&topics)?;
        Ok(consumer)
    }

    /// Processes `batch`, counts each record's outcome and stores the offsets of those done;
    /// returns whether shutdown interrupted it.
    async fn handle_batch(
        &self,
        consumer: &StreamConsumer<RunnerContext>,
        batch: &[BorrowedMessage<'_>],
        shutdown: &mut Shutdown,
    ) -> bool {
        let started = Instant::now();
        let outcomes = self.process_batch(batch, shutdown).await;
        let per_record = started.elapsed().as_secs_f64() / batch.len() as f64;
        for (msg, outcome) in batch.iter().zip(outcomes) {
            let label = match outcome {
                Outcome::Processed => "processed",
                Outcome::Duplicate => "duplicate",
                Outcome::DeadLettered => "dead_lettered",
                Outcome::Skipped => "skipped",
                Outcome::Interrupted => return true,
            };
            metrics::counter!("events_consumed_total", "service" => self.service, "topic" => msg.topic().to_owned(), "outcome" => label).increment(1);
            metrics::histogram!("event_handle_seconds", "service" => self.service)
                .record(per_record);
            if let Err(err) = consumer.store_offset_from_message(msg) {
                tracing::warn!(group = %self.group, error = %err, "cannot store offset; the record may be redelivered (harmless)");
            }
        }
        false
    }

    /// Commits what was processed, then leaves the group promptly so the partitions move to the
    /// other members. Both block until the broker answers: kept off the async workers (an
    /// embedded broker may need them to answer).
    async fn leave(&self, consumer: StreamConsumer<RunnerContext>, uncommitted: bool) {
        let group = self.group.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if uncommitted && let Err(err) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(%group, error = %err, "final offset commit failed");
            }
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
    }

    fn commit(&self, consumer: &StreamConsumer<RunnerContext>) {
        match consumer.commit_consumer_state(CommitMode::Async) {
            Ok(()) => {}
            // Nothing stored since the last commit.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(err) => {
                tracing::warn!(group = %self.group, error = %err, "offset commit failed; records may be redelivered (harmless)");
            }
        }
    }
}

/// Checks what can be checked without the database: the envelope, the type, the schema id of a
/// framed value (judged beforehand, [`ConsumerRunner::judge_schemas`]), and the payload decoded
/// as its topic's event (every field's rule applies) and about the envelope's order.
fn decode(
    msg: &BorrowedMessage<'_>,
    schemas: Option<&crate::schemas::Schemas>,
) -> Result<Incoming, String> {
    let envelope = match msg.headers() {
        Some(h) => Envelope::from_headers(h),
        None => Err(EnvelopeError::Missing(crate::envelope::header::ID)),
    }
    .map_err(|e| format!("bad envelope: {e}"))?;
    if envelope.event_type != msg.topic() {
        return Err(format!(
            "ce_type {:?} does not match topic {:?}",
            envelope.event_type,
            msg.topic()
        ));
    }
    let topic = Topic::parse(msg.topic())
        .ok_or_else(|| format!("{:?} is not a topic of the saga", msg.topic()))?;
    let value = msg.payload().ok_or("record has no value")?;
    let payload = match (crate::schemas::unframe(value), schemas) {
        (Some((id, _)), Some(schemas)) => match schemas.known(topic, id) {
            Some(Ok(())) => &value[crate::schemas::FRAME_LEN..],
            Some(Err(refusal)) => return Err(refusal.to_string()),
            None => return Err(format!("schema id {id} was not judged")),
        },
        // Without a registry the frame is only skipped; a plain JSON value (written before
        // the registry, or by a tool) is read as it is.
        (Some((_, payload)), None) => payload,
        (None, _) => value,
    };
    let event = SagaEvent::decode(topic, payload)
        .map_err(|e| format!("payload is not a valid {topic}: {e}"))?;
    if event.order_id() != envelope.correlation_id {
        return Err(format!(
            "payload order_id {} differs from ce_correlationid {}",
            event.order_id(),
            envelope.correlation_id
        ));
    }
    Ok(Incoming { envelope, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
        };
        let delays: Vec<_> = (1..=6).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 300, 300, 300]);
        assert_eq!(p.delay(100), Duration::from_millis(300));
    }

    #[test]
    fn only_lost_connections_retry_without_limit() {
        assert!(HandleError::Db(sqlx::Error::PoolTimedOut).retry_without_limit());
        assert!(!HandleError::Db(sqlx::Error::RowNotFound).retry_without_limit());
        assert!(!HandleError::Transient("x".into()).retry_without_limit());
    }
}
