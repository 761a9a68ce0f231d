//! Listing dead-lettered records and replaying them to their original topic.
//!
//! Replay is safe because consumers are idempotent: a record that was in fact processed before is
//! recognised by its `ce_id` and changes nothing.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::envelope::{headers_to_pairs, pairs_to_headers};
use crate::kafka::client_config;

/// Names of the headers added to a dead-lettered record.
pub mod header {
    pub const ORIGINAL_TOPIC: &str = "dlq_original_topic";
    pub const ORIGINAL_PARTITION: &str = "dlq_original_partition";
    pub const ORIGINAL_OFFSET: &str = "dlq_original_offset";
    pub const CONSUMER_GROUP: &str = "dlq_consumer_group";
    pub const ATTEMPTS: &str = "dlq_attempts";
    pub const ERROR: &str = "dlq_error";
    pub const TIME: &str = "dlq_time";
}

use header as dlq_header;

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(
        "record {partition}/{offset} has no `{}` header",
        dlq_header::ORIGINAL_TOPIC
    )]
    NoOrigin { partition: i32, offset: i64 },
    #[error("timed out reading {0}")]
    Timeout(String),
}

/// One record of a `<topic>.dlq` topic.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// The original value, lossily decoded as UTF-8 for display.
    pub value: Option<String>,
    #[serde(skip)]
    pub raw_value: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

impl DeadLetter {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn original_topic(&self) -> Option<&str> {
        self.header(dlq_header::ORIGINAL_TOPIC)
    }
    pub fn error(&self) -> Option<&str> {
        self.header(dlq_header::ERROR)
    }
}

/// Reads every record currently in `dlq_topic` (without joining a group or committing).
pub async fn list(brokers: &str, dlq_topic: &str) -> Result<Vec<DeadLetter>, DlqError> {
    let brokers = brokers.to_owned();
    let topic = dlq_topic.to_owned();
    tokio::task::spawn_blocking(move || list_blocking(&brokers, &topic))
        .await
        .expect("DLQ reader panicked")
}

fn list_blocking(brokers: &str, topic: &str) -> Result<Vec<DeadLetter>, DlqError> {
    let consumer: BaseConsumer = client_config(brokers)
        .set("group.id", "saga-lab-dlq-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let partitions = crate::kafka::partitions_of(&consumer, topic, timeout)?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0usize;
    let mut high_marks = std::collections::HashMap::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        if high > low {
            assignment.add_partition_offset(topic, p, Offset::Offset(low))?;
            remaining += 1;
            high_marks.insert(p, high);
        }
    }
    let mut out = Vec::new();
    if remaining == 0 {
        return Ok(out);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while remaining > 0 {
        if Instant::now() > deadline {
            return Err(DlqError::Timeout(topic.to_owned()));
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = result?;
        let high = high_marks[&m.partition()];
        if m.offset() < high {
            out.push(DeadLetter {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
                raw_value: m.payload().map(<[u8]>::to_vec),
                headers: m.headers().map(headers_to_pairs).unwrap_or_default(),
            });
        }
        if m.offset() + 1 >= high {
            remaining -= 1;
        }
    }
    out.sort_by_key(|d| (d.partition, d.offset));
    Ok(out)
}

/// How many records each of `dlq_topics` holds (high minus low watermark over its partitions;
/// a topic that does not exist yet holds none), with one client for all of them.
pub async fn depths(brokers: &str, dlq_topics: &[String]) -> Result<Vec<(String, i64)>, DlqError> {
    let brokers = brokers.to_owned();
    let topics = dlq_topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client_config(&brokers)
            .set("group.id", "saga-lab-dlq-reader")
            .create()?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(None, timeout)?;
        let mut out = Vec::with_capacity(topics.len());
        for topic in topics {
            let mut depth = 0;
            for t in metadata.topics().iter().filter(|t| t.name() == topic) {
                for p in t.partitions() {
                    let (low, high) = consumer.fetch_watermarks(&topic, p.id(), timeout)?;
                    depth += high - low;
                }
            }
            out.push((topic, depth));
        }
        Ok(out)
    })
    .await
    .expect("DLQ reader panicked")
}

/// Republishes `letters` to their original topics with their original key, value and
/// CloudEvents headers (the `dlq_*` headers are dropped). Returns how many were replayed.
pub async fn replay(producer: &FutureProducer, letters: &[DeadLetter]) -> Result<usize, DlqError> {
    for d in letters {
        let topic = d.original_topic().ok_or(DlqError::NoOrigin {
            partition: d.partition,
            offset: d.offset,
        })?;
        let headers: Vec<(String, String)> = d
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with("dlq_"))
            .cloned()
            .collect();
        let mut record: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(topic).headers(pairs_to_headers(&headers));
        if let Some(k) = &d.key {
            record = record.key(k.as_str());
        }
        if let Some(v) = &d.raw_value {
            record = record.payload(v.as_slice());
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| DlqError::Kafka(e))?;
    }
    Ok(letters.len())
}

/// Convenience for callers that have no producer at hand.
pub async fn replay_all(brokers: &str, dlq_topic: &str) -> Result<usize, DlqError> {
    let letters = list(brokers, dlq_topic).await?;
    let producer = crate::kafka::producer(brokers)?;
    replay(&producer, &letters).await
}
