//! Dead-lettering: a record that can never be processed goes to `<topic>.dlq` with headers that
//! say where it came from and why (see [`crate::dlq::header`]).

use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{ConsumerRunner, Outcome, RetryPolicy};
use crate::dlq::header as dlq_header;
use crate::events::topics;
use crate::shutdown::Shutdown;

impl ConsumerRunner {
    /// Publishes the record to `<topic>.dlq`, retrying until the broker takes it.
    pub(super) async fn dead_letter(
        &self,
        msg: &BorrowedMessage<'_>,
        attempts: u32,
        error: &str,
        shutdown: &mut Shutdown,
    ) -> Outcome {
        let letter = DeadLetter {
            group: &self.group,
            attempts,
            error,
        };
        if publish(&self.producer, &self.retry, msg, &letter, shutdown).await {
            Outcome::DeadLettered
        } else {
            Outcome::Interrupted
        }
    }
}

/// Who dead-letters a record, after how many attempts, and why.
pub(crate) struct DeadLetter<'a> {
    pub group: &'a str,
    pub attempts: u32,
    pub error: &'a str,
}

/// Publishes `msg` to `<topic>.dlq` with the headers of `letter`, retrying (with `retry`'s
/// delays) until the broker takes it; `false` if `shutdown` fired first.
pub(crate) async fn publish(
    producer: &FutureProducer,
    retry: &RetryPolicy,
    msg: &BorrowedMessage<'_>,
    letter: &DeadLetter<'_>,
    shutdown: &mut Shutdown,
) -> bool {
    let dlq = topics::dlq(msg.topic());
    let DeadLetter {
        group,
        attempts,
        error,
    } = *letter;
    tracing::warn!(
        group,
        topic = msg.topic(),
        partition = msg.partition(),
        offset = msg.offset(),
        attempts,
        error,
        "dead-lettering record"
    );
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let attempts = attempts.to_string();
    let now = chrono::Utc::now().to_rfc3339();
    let mut tries = 0;
    loop {
        let mut headers = OwnedHeaders::new();
        if let Some(h) = msg.headers() {
            use rdkafka::message::Headers;
            // The record's own `dlq_*` headers (a forger's, or a redrive's group) would be
            // mistaken for the ones added below; where a redrive came from is kept.
            for header in h
                .iter()
                .filter(|h| !h.key.starts_with("dlq_") || h.key == dlq_header::REDRIVE_FROM)
            {
                headers = headers.insert(header);
            }
        }
        for (key, value) in [
            (dlq_header::ORIGINAL_TOPIC, msg.topic()),
            (dlq_header::ORIGINAL_PARTITION, &partition),
            (dlq_header::ORIGINAL_OFFSET, &offset),
            (dlq_header::CONSUMER_GROUP, group),
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
        match producer.send(record, Duration::from_secs(10)).await {
            Ok(_) => return true,
            Err((err, _)) => {
                tries += 1;
                tracing::warn!(%dlq, error = %err, "cannot publish to the DLQ; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(retry.delay(tries)) => {}
                    _ = shutdown.wait() => return false,
                }
            }
        }
    }
}
