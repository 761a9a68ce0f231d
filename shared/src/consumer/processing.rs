//! Processing fetched records: a batch in one transaction, or each record on its own with retries.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{ConsumerRunner, HandleError, Incoming, Outcome, decode};
use crate::shutdown::Shutdown;

impl ConsumerRunner {
    /// Processes records in fetch order. Several records share one transaction (fewer round
    /// trips per record); if anything in it fails, it is rolled back and every record of the batch
    /// goes through [`Self::process`] on its own, with the usual retries and DLQ.
    pub(super) async fn process_batch(
        &self,
        batch: &[BorrowedMessage<'_>],
        shutdown: &mut Shutdown,
    ) -> Vec<Outcome> {
        let faults_on = self.faults.fail_handlers.load(Ordering::Relaxed)
            || self.faults.slow_ms.load(Ordering::Relaxed) > 0;
        // A DLQ redrive addressed to another group is rare: such a batch goes record by record.
        let all_addressed = batch
            .iter()
            .all(|m| crate::dlq::addressed_to(m, &self.group));
        if !self.judge_schemas(batch, shutdown).await {
            return vec![Outcome::Interrupted];
        }
        let schemas = self.schemas.as_deref();
        if batch.len() > 1 && !faults_on && all_addressed {
            let decoded: Result<Vec<Incoming>, String> =
                batch.iter().map(|m| decode(m, schemas)).collect();
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

    /// Asks the registry about every schema id of `batch` not judged yet (each id once per
    /// service). While the registry cannot be reached the records wait, retried with the
    /// usual backoff: the records are not at fault. False when shutdown came meanwhile.
    async fn judge_schemas(&self, batch: &[BorrowedMessage<'_>], shutdown: &mut Shutdown) -> bool {
        let Some(schemas) = &self.schemas else {
            return true;
        };
        for msg in batch {
            let Some(topic) = crate::events::Topic::parse(msg.topic()) else {
                continue;
            };
            let Some((id, _)) = msg.payload().and_then(crate::schemas::unframe) else {
                continue;
            };
            let mut attempt = 0;
            while let Err(err) = schemas.judge(topic, id).await {
                attempt += 1;
                let delay = self.retry.delay(attempt);
                tracing::warn!(group = %self.group, %topic, id, ?delay, error = %err, "cannot ask the schema registry; waiting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait() => return false,
                }
            }
        }
        true
    }

    /// All records in one transaction; any failure rolls back all of them. The batch's event
    /// ids are recorded in one statement; the ones that were new are the records to apply.
    async fn attempt_together(&self, records: &[Incoming]) -> Result<Vec<Outcome>, HandleError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = records.iter().map(|r| r.envelope.id).collect();
        let topics: Vec<&str> = records.iter().map(|r| r.topic().name()).collect();
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
                self.handler.deliver(&mut tx, incoming).await?;
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
        .bind(incoming.topic().name())
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1)
    }

    async fn process(&self, msg: &BorrowedMessage<'_>, shutdown: &mut Shutdown) -> Outcome {
        if !crate::dlq::addressed_to(msg, &self.group) {
            return Outcome::Skipped;
        }
        let incoming = match decode(msg, self.schemas.as_deref()) {
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
            tracing::warn!(group = %self.group, topic = %incoming.topic(), ce_id = %incoming.envelope.id, attempt, ?delay, error = %err, "handler failed; retrying");
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
        self.handler.deliver(&mut tx, incoming).await?;
        tx.commit().await?;
        Ok(true)
    }
}
