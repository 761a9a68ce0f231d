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

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::dlq::header as dlq_header;
use crate::envelope::{Envelope, EnvelopeError};
use crate::events::{Event, Topic, topics};
use crate::faults::Faults;
use crate::kafka::client_config;
use crate::shutdown::Shutdown;

/// Most records handled in one transaction.
const MAX_BATCH: usize = 32;

/// Longest time a processed record's offset stays uncommitted.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// A decoded record handed to a [`Handler`].
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: Topic,
    pub envelope: Envelope,
    pub payload: Vec<u8>,
}

impl Incoming {
    /// The payload as event `E`; a schema mismatch is [`HandleError::Invalid`].
    pub fn decode<E: Event>(&self) -> Result<E, HandleError> {
        let event: E = serde_json::from_slice(&self.payload).map_err(|e| {
            HandleError::Invalid(format!("payload is not a valid {}: {e}", E::TOPIC))
        })?;
        if event.order_id() != self.envelope.correlation_id {
            return Err(HandleError::Invalid(format!(
                "payload order_id {} differs from ce_correlationid {}",
                event.order_id(),
                self.envelope.correlation_id
            )));
        }
        Ok(event)
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

/// A service's reaction to the events it consumes; runs inside the runner's transaction.
pub trait Handler: Send + Sync + 'static {
    /// The topics the service consumes: its consumers subscribe to exactly these.
    fn topics(&self) -> &'static [Topic];

    fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandleError>>;
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
    pub handler: Arc<dyn Handler>,
    pub retry: RetryPolicy,
    pub faults: Arc<Faults>,
    /// `service` label of the metrics.
    pub service: &'static str,
    /// Set while this consumer holds its assignment with a fetch position for every partition.
    pub ready: Arc<AtomicBool>,
}

/// The consumer's librdkafka context: it publishes the per-partition consumer lag (from
/// librdkafka's statistics, every few seconds) as the `consumer_lag` gauge, and it takes part in
/// rebalances so that the consumer is ready the moment it holds its partitions (see
/// [`ConsumerContext::rebalance`] below).
struct RunnerContext {
    service: &'static str,
    ready: Arc<AtomicBool>,
}

impl ClientContext for RunnerContext {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // -1 is the internal "unassigned" partition, or a lag not known yet.
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!("consumer_lag", "service" => self.service, "topic" => topic.clone(), "partition" => partition.to_string())
                    .set(p.consumer_lag as f64);
            }
        }
    }
}

/// How long the start positions of a new assignment may take to look up.
const POSITION_TIMEOUT: Duration = Duration::from_secs(5);

impl ConsumerContext for RunnerContext {
    /// On assignment, looks up where each partition starts (the group's committed offset, or
    /// the log start when there is none, as `auto.offset.reset=earliest` would) and assigns those
    /// exact offsets. Left to itself, librdkafka looks them up after the assignment, one request
    /// at a time and sometimes after a 500 ms back-off, so the first record waited for it; here
    /// the partitions are fetched from at once, and the consumer is ready (`/ready`) exactly when
    /// every assigned partition has a position.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // The lookups block on the broker, which may be embedded in this process: hand
                // this worker's other tasks to another thread meanwhile.
                let resolved = match tokio::runtime::Handle::try_current() {
                    Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                        tokio::task::block_in_place(|| start_positions(consumer, tpl))
                    }
                    _ => start_positions(consumer, tpl),
                };
                if let Err(err) = &resolved {
                    tracing::debug!(error = %err, "start positions not resolved; librdkafka looks them up");
                }
                let assigned = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
                    _ => consumer.assign(tpl),
                };
                match assigned {
                    Ok(()) => self.ready.store(true, Ordering::Release),
                    Err(err) => tracing::warn!(error = %err, "assignment failed"),
                }
            }
            other => {
                self.ready.store(false, Ordering::Release);
                if other != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::warn!(error = ?other, "rebalance error");
                }
                let unassigned = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
                    _ => consumer.unassign(),
                };
                if let Err(err) = unassigned {
                    tracing::warn!(error = %err, "unassignment failed");
                }
            }
        }
    }
}

/// Sets each partition of `tpl` to the offset its fetching starts at.
fn start_positions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &mut TopicPartitionList,
) -> KafkaResult<()> {
    if tpl.count() == 0 {
        return Ok(());
    }
    let committed = consumer.committed_offsets(tpl.clone(), POSITION_TIMEOUT)?;
    for elem in committed.elements() {
        let offset = match elem.offset() {
            Offset::Offset(n) => n,
            _ => {
                let (low, _high) =
                    consumer.fetch_watermarks(elem.topic(), elem.partition(), POSITION_TIMEOUT)?;
                low
            }
        };
        tpl.set_partition_offset(elem.topic(), elem.partition(), Offset::Offset(offset))?;
    }
    Ok(())
}

enum Outcome {
    Processed,
    Duplicate,
    DeadLettered,
    /// Shutdown came while retrying: leave the offset uncommitted.
    Interrupted,
}

impl ConsumerRunner {
    pub async fn run(self, mut shutdown: Shutdown) {
        let consumer: StreamConsumer<RunnerContext> = match client_config(&self.brokers)
            .set("group.id", &self.group)
            // Tells this instance's members apart in `lab groups` / DescribeGroups.
            .set(
                "client.id",
                format!("{}@{}", self.group, std::process::id()),
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
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .create_with_context(RunnerContext {
                service: self.service,
                ready: self.ready.clone(),
            }) {
            Ok(c) => c,
            Err(err) => {
                tracing::error!(group = %self.group, error = %err, "cannot create consumer");
                return;
            }
        };
        // Exactly what the handler declares it consumes.
        let topics: Vec<&str> = self.handler.topics().iter().map(|t| t.name()).collect();
        if let Err(err) = consumer.subscribe(&topics) {
            tracing::error!(group = %self.group, error = %err, "cannot subscribe");
            return;
        }
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
            let started = Instant::now();
            let outcomes = self.process_batch(&batch, &mut shutdown).await;
            let per_record = started.elapsed().as_secs_f64() / batch.len() as f64;
            let mut interrupted = false;
            for (msg, outcome) in batch.iter().zip(outcomes) {
                let label = match outcome {
                    Outcome::Processed => "processed",
                    Outcome::Duplicate => "duplicate",
                    Outcome::DeadLettered => "dead_lettered",
                    Outcome::Interrupted => {
                        interrupted = true;
                        break;
                    }
                };
                metrics::counter!("events_consumed_total", "service" => self.service, "topic" => msg.topic().to_owned(), "outcome" => label).increment(1);
                metrics::histogram!("event_handle_seconds", "service" => self.service)
                    .record(per_record);
                if let Err(err) = consumer.store_offset_from_message(msg) {
                    tracing::warn!(group = %self.group, error = %err, "cannot store offset; the record may be redelivered (harmless)");
                }
            }
            if !uncommitted {
                uncommitted = true;
                next_commit = tokio::time::Instant::now() + COMMIT_INTERVAL;
            }
            if interrupted {
                break;
            }
        }
        // Commit what was processed, then leave the group promptly so the partitions move to the
        // other members. Both block until the broker answers: keep them off the async workers
        // (an embedded broker may need them to answer).
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

    /// Processes records in fetch order. Several records share one transaction (fewer round
    /// trips per record); if anything in it fails, it is rolled back and every record of the batch
    /// goes through [`Self::process`] on its own, with the usual retries and DLQ.
    async fn process_batch(
        &self,
        batch: &[BorrowedMessage<'_>],
        shutdown: &mut Shutdown,
    ) -> Vec<Outcome> {
        let faults_on = self.faults.fail_handlers.load(Ordering::Relaxed)
            || self.faults.slow_ms.load(Ordering::Relaxed) > 0;
        if batch.len() > 1 && !faults_on {
            let decoded: Result<Vec<Incoming>, String> = batch.iter().map(decode).collect();
            if let Ok(records) = decoded {
                metrics::histogram!("consumer_batch_records", "service" => self.service)
                    .record(batch.len() as f64);
                match self.attempt_together(&records).await {
                    Ok(outcomes) => return outcomes,
                    Err(err) => {
                        metrics::counter!("consumer_batch_fallbacks_total", "service" => self.service)
                            .increment(1);
                        tracing::debug!(group = %self.group, n = batch.len(), error = %err, "batch failed; processing its records one by one");
                    }
                }
            }
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for msg in batch {
            let outcome = self.process(msg, shutdown).await;
            let stop = matches!(outcome, Outcome::Interrupted);
            outcomes.push(outcome);
            if stop {
                break;
            }
        }
        outcomes
    }

    /// All records in one transaction; any failure rolls back all of them. The batch's event
    /// ids are recorded in one statement; the ones that were new are the records to apply.
    async fn attempt_together(&self, records: &[Incoming]) -> Result<Vec<Outcome>, HandleError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = records.iter().map(|r| r.envelope.id).collect();
        let topics: Vec<&str> = records.iter().map(|r| r.topic.name()).collect();
        let mut fresh: HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO consumed_events (consumer_group, event_id, topic) \
             SELECT $1, id, topic FROM unnest($2::uuid[], $3::text[]) AS e (id, topic) \
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(&self.group)
        .bind(&ids)
        .bind(&topics)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut outcomes = Vec::with_capacity(records.len());
        for incoming in records {
            // `remove`: an id twice in one batch is applied once, like across batches.
            if fresh.remove(&incoming.envelope.id) {
                self.handler.handle(&mut tx, incoming).await?;
                outcomes.push(Outcome::Processed);
            } else {
                outcomes.push(Outcome::Duplicate);
            }
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Records `incoming`'s `ce_id` for this group; false if it was there already.
    async fn record_consumed(
        &self,
        conn: &mut PgConnection,
        incoming: &Incoming,
    ) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query(
            "INSERT INTO consumed_events (consumer_group, event_id, topic) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.group)
        .bind(incoming.envelope.id)
        .bind(incoming.topic.name())
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1)
    }

    async fn process(&self, msg: &BorrowedMessage<'_>, shutdown: &mut Shutdown) -> Outcome {
        let incoming = match decode(msg) {
            Ok(i) => i,
            Err(reason) => {
                return self.dead_letter(msg, 1, &reason, shutdown).await;
            }
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = self.attempt(&incoming).await;
            let err = match result {
                Ok(true) => return Outcome::Processed,
                Ok(false) => return Outcome::Duplicate,
                Err(HandleError::Invalid(reason)) => {
                    return self.dead_letter(msg, attempt, &reason, shutdown).await;
                }
                Err(err) => err,
            };
            if !err.retry_without_limit() && attempt >= self.retry.max_attempts {
                return self
                    .dead_letter(msg, attempt, &err.to_string(), shutdown)
                    .await;
            }
            let delay = self.retry.delay(attempt);
            tracing::warn!(group = %self.group, topic = %incoming.topic, ce_id = %incoming.envelope.id, attempt, ?delay, error = %err, "handler failed; retrying");
            metrics::counter!("consumer_retries_total", "service" => self.service).increment(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait() => return Outcome::Interrupted,
            }
        }
    }

    /// One transaction: record the event id, apply the effects. `Ok(false)`: seen before.
    async fn attempt(&self, incoming: &Incoming) -> Result<bool, HandleError> {
        let slow = self.faults.slow_ms.load(Ordering::Relaxed);
        if slow > 0 {
            tokio::time::sleep(Duration::from_millis(slow)).await;
        }
        if self.faults.fail_handlers.load(Ordering::Relaxed) {
            return Err(HandleError::Transient("injected fault".into()));
        }
        let mut tx = self.pool.begin().await?;
        let fresh = self.record_consumed(&mut tx, incoming).await?;
        if !fresh {
            return Ok(false);
        }
        self.handler.handle(&mut tx, incoming).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Publishes the record to `<topic>.dlq`, retrying until the broker takes it.
    async fn dead_letter(
        &self,
        msg: &BorrowedMessage<'_>,
        attempts: u32,
        error: &str,
        shutdown: &mut Shutdown,
    ) -> Outcome {
        let dlq = topics::dlq(msg.topic());
        tracing::warn!(group = %self.group, topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), attempts, error, "dead-lettering record");
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let attempts = attempts.to_string();
        let now = chrono::Utc::now().to_rfc3339();
        let mut retry = 0;
        loop {
            let mut headers = OwnedHeaders::new();
            if let Some(h) = msg.headers() {
                use rdkafka::message::Headers;
                for header in h.iter() {
                    headers = headers.insert(header);
                }
            }
            for (key, value) in [
                (dlq_header::ORIGINAL_TOPIC, msg.topic()),
                (dlq_header::ORIGINAL_PARTITION, &partition),
                (dlq_header::ORIGINAL_OFFSET, &offset),
                (dlq_header::CONSUMER_GROUP, &self.group),
                (dlq_header::ATTEMPTS, &attempts),
                (dlq_header::ERROR, error),
                (dlq_header::TIME, &now),
            ] {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&dlq).headers(headers);
            if let Some(k) = msg.key() {
                record = record.key(k);
            }
            if let Some(p) = msg.payload() {
                record = record.payload(p);
            }
            match self.producer.send(record, Duration::from_secs(10)).await {
                Ok(_) => return Outcome::DeadLettered,
                Err((err, _)) => {
                    retry += 1;
                    tracing::warn!(%dlq, error = %err, "cannot publish to the DLQ; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(self.retry.delay(retry)) => {}
                        _ = shutdown.wait() => return Outcome::Interrupted,
                    }
                }
            }
        }
    }
}

/// Checks what can be checked without the database: envelope, type, payload present and JSON.
fn decode(msg: &BorrowedMessage<'_>) -> Result<Incoming, String> {
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
    let payload = msg.payload().ok_or("record has no value")?;
    if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_err() {
        return Err("value is not JSON".into());
    }
    Ok(Incoming {
        topic,
        envelope,
        payload: payload.to_vec(),
    })
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
