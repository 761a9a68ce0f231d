//! The transactional outbox: state change and event commit together; the relay publishes later.
//!
//! Every service database has an `outbox` table (see `migrations/shared/`). [`enqueue`] inserts
//! a row and `NOTIFY outbox` inside the caller's transaction, so the notification is delivered only
//! when the transaction commits. [`OutboxRelay`] wakes on that notification (and polls as a
//! fallback), claims rows with `FOR UPDATE SKIP LOCKED`, publishes them with the idempotent
//! producer and marks them published.
//!
//! **Invariant: per-order ordering.** A row is only claimed when no older unpublished row has the
//! same key; a second relay instance skips the locked older row and so cannot overtake it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};

use crate::envelope::{Envelope, pairs_to_headers};
use crate::events::Event;
use crate::shutdown::Shutdown;

/// The channel the relay listens on.
pub const CHANNEL: &str = "outbox";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("an envelope of type {ce_type} around a {topic} event")]
    WrongEnvelope {
        ce_type: String,
        topic: crate::events::Topic,
    },
    #[error("encoding event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("publishing outbox row {id} to {topic}: {reason}")]
    Publish {
        id: i64,
        topic: String,
        reason: String,
    },
}

/// Adds `event` to the outbox in the caller's transaction. Its envelope must be made for it
/// ([`Envelope::first`] or [`Envelope::next`], which take `ce_type` from the event's type).
pub async fn enqueue<E: Event>(
    conn: &mut PgConnection,
    envelope: &Envelope,
    event: &E,
) -> Result<(), OutboxError> {
    if envelope.event_type != E::TOPIC.name() {
        return Err(OutboxError::WrongEnvelope {
            ce_type: envelope.event_type.clone(),
            topic: E::TOPIC,
        });
    }
    let headers = serde_json::to_value(envelope.header_pairs())?;
    let payload = serde_json::to_value(event)?;
    // One round trip: the row, and the wake-up that PostgreSQL delivers at commit.
    sqlx::query(
        "WITH row AS (INSERT INTO outbox (event_id, topic, record_key, payload, headers) \
                      VALUES ($1, $2, $3, $4, $5) RETURNING id) \
         SELECT pg_notify('outbox', '') FROM row",
    )
    .bind(envelope.id)
    .bind(E::TOPIC.name())
    .bind(event.order_id().to_string())
    .bind(payload)
    .bind(headers)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    topic: String,
    record_key: String,
    payload: serde_json::Value,
    headers: sqlx::types::Json<Vec<(String, String)>>,
    created_at: DateTime<Utc>,
}

/// Publishes outbox rows of one database.
#[derive(Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    producer: FutureProducer,
    /// Fallback polling interval, for notifications missed while the listener reconnected.
    poll_interval: Duration,
    /// Rows claimed per transaction.
    batch_size: i64,
    /// `service` label of the metrics.
    service: &'static str,
    /// Set while the relay listens for commits.
    listening: Arc<AtomicBool>,
    /// With a schema registry: values are framed with their topic's schema id.
    schemas: Option<Arc<crate::schemas::Schemas>>,
}

impl OutboxRelay {
    pub fn new(
        pool: PgPool,
        producer: FutureProducer,
        poll_interval: Duration,
        service: &'static str,
    ) -> Self {
        Self {
            pool,
            producer,
            poll_interval,
            batch_size: 256,
            service,
            listening: Arc::default(),
            schemas: None,
        }
    }

    /// Writes values in Confluent's wire format, with the ids `schemas` registered.
    pub fn with_schemas(mut self, schemas: Option<Arc<crate::schemas::Schemas>>) -> Self {
        self.schemas = schemas;
        self
    }

    /// A row's value as it is produced: its JSON, framed with its topic's schema id when the
    /// service registered one.
    fn value_of(&self, row: &OutboxRow) -> Result<Vec<u8>, serde_json::Error> {
        let json = serde_json::to_vec(&row.payload)?;
        let id = self
            .schemas
            .as_ref()
            .and_then(|schemas| schemas.id_of(&row.topic));
        Ok(match id {
            Some(id) => crate::schemas::frame(id, &json),
            None => json,
        })
    }

    /// Reports whether the relay listens for commits through `flag` (readiness).
    pub fn with_listening_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.listening = flag;
        self
    }

    /// Publishes until `shutdown` fires.
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut listener: Option<PgListener> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            if shutdown.is_fired() {
                return;
            }
            if listener.is_none() {
                listener = self.listen().await;
                self.listening.store(listener.is_some(), Ordering::Release);
            }
            match self.publish_batch().await {
                Ok(n) if n as i64 == self.batch_size => continue,
                Ok(_) => backoff = Duration::from_millis(50),
                Err(err) => {
                    tracing::warn!(service = self.service, error = %err, "outbox relay failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
            let wake = async {
                match listener.as_mut() {
                    Some(l) => {
                        if l.recv().await.is_err() {
                            tokio::time::sleep(self.poll_interval).await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
                _ = shutdown.wait() => return,
            }
            // Every commit sends its own notification; the ones that have arrived by now are all
            // answered by the next claim. Without this drain, a burst of N commits costs N claim
            // queries, most of them finding nothing. (`recv` is cancel-safe.)
            if let Some(l) = listener.as_mut() {
                while let Some(Ok(_)) = l.recv().now_or_never() {}
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut l = PgListener::connect_with(&self.pool).await.ok()?;
        l.listen(CHANNEL).await.ok()?;
        Some(l)
    }

    /// Sends the claimed rows and waits for every acknowledgement: the rows the broker took,
    /// and the first error (the rest of a batch is not sent after a row the producer refused).
    async fn send<'r>(&self, rows: &'r [OutboxRow]) -> (Vec<&'r OutboxRow>, Option<OutboxError>) {
        let mut pending = Vec::with_capacity(rows.len());
        let mut first_error = None;
        for row in rows {
            let payload = match self.value_of(row) {
                Ok(payload) => payload,
                Err(e) => {
                    first_error.get_or_insert(OutboxError::Encode(e));
                    break;
                }
            };
            let record = FutureRecord::to(&row.topic)
                .key(&row.record_key)
                .payload(&payload)
                .headers(pairs_to_headers(&row.headers.0));
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push((row, delivery)),
                Err((err, _)) => {
                    first_error.get_or_insert(OutboxError::Publish {
                        id: row.id,
                        topic: row.topic.clone(),
                        reason: err.to_string(),
                    });
                    break;
                }
            }
        }
        let (rows_sent, deliveries): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
        let delivered = join_all(deliveries).await;
        let mut published = Vec::with_capacity(rows_sent.len());
        for (row, result) in rows_sent.into_iter().zip(delivered) {
            match result {
                Ok(Ok(_)) => published.push(row),
                Ok(Err((err, _))) => {
                    first_error.get_or_insert(OutboxError::Publish {
                        id: row.id,
                        topic: row.topic.clone(),
                        reason: err.to_string(),
                    });
                }
                Err(_) => {
                    first_error.get_or_insert(OutboxError::Publish {
                        id: row.id,
                        topic: row.topic.clone(),
                        reason: "producer dropped".into(),
                    });
                }
            }
        }
        (published, first_error)
    }

    /// Claims, publishes and marks one batch; returns how many rows were published.
    pub async fn publish_batch(&self) -> Result<usize, OutboxError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT o.id, o.topic, o.record_key, o.payload, o.headers, o.created_at \
             FROM outbox o \
             WHERE o.published_at IS NULL \
               AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.published_at IS NULL \
                               AND p.record_key = o.record_key AND p.id < o.id) \
             ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED",
        )
        .bind(self.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let claimed = Utc::now();
        for row in &rows {
            let waited = (claimed - row.created_at).to_std().unwrap_or_default();
            metrics::histogram!("outbox_pickup_seconds", "service" => self.service)
                .record(waited.as_secs_f64());
        }
        let (published, first_error) = self.send(&rows).await;
        metrics::histogram!("outbox_produce_ack_seconds", "service" => self.service)
            .record(started.elapsed().as_secs_f64());
        // Rows that did go out are marked even when others failed, to keep duplicates rare.
        let ids: Vec<i64> = published.iter().map(|r| r.id).collect();
        sqlx::query("UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let now = Utc::now();
        for row in &published {
            let lag = (now - row.created_at).to_std().unwrap_or_default();
            metrics::histogram!("outbox_commit_to_publish_seconds", "service" => self.service)
                .record(lag.as_secs_f64());
        }
        metrics::counter!("outbox_published_total", "service" => self.service)
            .increment(ids.len() as u64);
        tracing::debug!(service = self.service, n = ids.len(), took = ?started.elapsed(), "outbox batch published");
        match first_error {
            Some(err) => Err(err),
            None => Ok(ids.len()),
        }
    }
}

/// Events not yet published (the dashboard's "outbox N pending", and tests).
pub async fn backlog(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
}
