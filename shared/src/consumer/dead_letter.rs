//! Dead-lettering: a record that can never be processed goes to `<topic>.dlq` with headers that
//! say where it came from and why (see [`crate::dlq::header`]).

use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use super::{ConsumerRunner, Outcome};
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
