//! Where the registry keeps what it knows: the compacted topic `_schemas`, as Confluent's
//! Schema Registry keeps it, with the same record shapes (so its tools can read it and it can
//! read theirs):
//!
//! | key | value |
//! |---|---|
//! | `{"keytype":"SCHEMA","subject":S,"version":V,"magic":1}` | `{"subject":S,"version":V,"id":N,"schemaType":"JSON","schema":"...","deleted":false}` |
//! | `{"keytype":"CONFIG","subject":S or null,"magic":0}` | `{"compatibilityLevel":"BACKWARD"}` (null: the subject's level removed) |
//!
//! A hard-deleted version's record is a tombstone (a null value), which the log cleaner removes
//! in time. At start the registry reads the topic from its start to its end and replays it; then
//! it is the one writer, and every change is written (acks=all) before it is answered.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compat::Level;

/// The topic, Confluent's default name (`kafkastore.topic`).
pub const TOPIC: &str = "_schemas";

/// One registered version of a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaRecord {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    #[serde(rename = "schemaType", default = "json_type")]
    pub schema_type: String,
    pub schema: String,
    #[serde(default)]
    pub deleted: bool,
}

fn json_type() -> String {
    "JSON".into()
}

/// What the registry knows, replayed from the topic.
#[derive(Debug, Default, Clone)]
pub struct State {
    /// Subject -> version -> record.
    pub subjects: BTreeMap<String, BTreeMap<i32, SchemaRecord>>,
    /// The global level, when set (BACKWARD otherwise).
    pub global: Option<Level>,
    pub levels: BTreeMap<String, Level>,
}

impl State {
    /// Applies one record of the topic (`value` `None`: a tombstone).
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok(key) = serde_json::from_slice::<Value>(key) else {
            return;
        };
        let subject = key.get("subject").and_then(Value::as_str);
        match key.get("keytype").and_then(Value::as_str) {
            Some("SCHEMA") => {
                let (Some(subject), Some(version)) =
                    (subject, key.get("version").and_then(Value::as_i64))
                else {
                    return;
                };
                let versions = self.subjects.entry(subject.to_owned()).or_default();
                match value.and_then(|v| serde_json::from_slice::<SchemaRecord>(v).ok()) {
                    Some(record) => {
                        versions.insert(version as i32, record);
                    }
                    None => {
                        versions.remove(&(version as i32));
                        if versions.is_empty() {
                            self.subjects.remove(subject);
                        }
                    }
                }
            }
            Some("CONFIG") => {
                let level = value
                    .and_then(|v| serde_json::from_slice::<Value>(v).ok())
                    .and_then(|v| {
                        v.get("compatibilityLevel")
                            .and_then(Value::as_str)
                            .and_then(Level::parse)
                    });
                match (subject, level) {
                    (None, level) => self.global = level,
                    (Some(s), Some(level)) => {
                        self.levels.insert(s.to_owned(), level);
                    }
                    (Some(s), None) => {
                        self.levels.remove(s);
                    }
                }
            }
            _ => {}
        }
    }

    /// The schema registered under `id` (in any subject, deleted or not).
    pub fn by_id(&self, id: i32) -> Option<&SchemaRecord> {
        self.subjects
            .values()
            .flat_map(|versions| versions.values())
            .find(|r| r.id == id)
    }

    /// The next free id.
    pub fn next_id(&self) -> i32 {
        self.subjects
            .values()
            .flat_map(|versions| versions.values())
            .map(|r| r.id)
            .max()
            .unwrap_or(0)
            + 1
    }
}

/// The key of a schema version's record.
pub fn schema_key(subject: &str, version: i32) -> String {
    serde_json::json!({"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1})
        .to_string()
}

/// The key of a level's record (`None`: the global one).
pub fn config_key(subject: Option<&str>) -> String {
    serde_json::json!({"keytype": "CONFIG", "subject": subject, "magic": 0}).to_string()
}

/// The topic, read and written through librdkafka.
pub struct Store {
    producer: FutureProducer,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the registry's topic {TOPIC}: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the registry's topic {TOPIC}: {0}")]
    Other(String),
}

impl Store {
    /// Creates the topic if it is missing (compacted, one partition, the cluster's default
    /// replication), reads it whole, and returns the store and what it holds.
    pub async fn open(brokers: &str) -> Result<(Store, State), StoreError> {
        let config = |extra: &[(&str, &str)]| {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", brokers);
            for (k, v) in extra {
                c.set(*k, *v);
            }
            c
        };
        let admin: AdminClient<DefaultClientContext> = config(&[]).create()?;
        let topic =
            NewTopic::new(TOPIC, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
        for result in admin.create_topics(&[topic], &AdminOptions::new()).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(StoreError::Other(format!("create: {code}"))),
            }
        }
        let consumer: BaseConsumer = config(&[
            ("group.id", "schema-registry"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
        ])
        .create()?;
        let state = tokio::task::spawn_blocking(move || read_all(&consumer))
            .await
            .map_err(|e| StoreError::Other(e.to_string()))??;
        let producer = config(&[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "0"),
        ])
        .create()?;
        Ok((Store { producer }, state))
    }

    /// Writes one record and waits for the acknowledgement (`None`: a tombstone).
    pub async fn write(&self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let mut record = FutureRecord::to(TOPIC).key(key).partition(0);
        if let Some(value) = value {
            record = record.payload(value);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| StoreError::Kafka(e))?;
        Ok(())
    }
}

/// Replays the topic from its start to the end it has now.
fn read_all(consumer: &BaseConsumer) -> Result<State, StoreError> {
    let mut state = State::default();
    let end = end_of(consumer)?;
    if end == 0 {
        return Ok(state);
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(TOPIC, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut position = position_of(consumer)?.unwrap_or(0);
    while position < end {
        if std::time::Instant::now() > deadline {
            return Err(StoreError::Other(format!(
                "read stalled at offset {position} of {end}"
            )));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            // The records at the end may have been cleaned away (an old tombstone): the
            // consumer's position moves past them all the same.
            position = position_of(consumer)?.unwrap_or(position).max(position);
            continue;
        };
        let message = match message {
            Ok(message) => message,
            // A leader moving while the topic is read: librdkafka follows it.
            Err(e) if not_led_yet(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        if let Some(key) = message.key() {
            state.apply(key, message.payload());
        }
        position = message.offset() + 1;
    }
    Ok(state)
}

/// Where the topic's partition ends, once it has a leader: a topic just created may not have one
/// yet (Apache Kafka answers NOT_LEADER_OR_FOLLOWER for a moment), so that is asked again.
fn end_of(consumer: &BaseConsumer) -> Result<i64, StoreError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.fetch_watermarks(TOPIC, 0, Duration::from_secs(5)) {
            Ok((_, end)) => return Ok(end),
            Err(e) if not_led_yet(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `e` says the partition has no leader (yet).
fn not_led_yet(e: &rdkafka::error::KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownPartition
        )
    )
}

/// The consumer's position in the topic's partition, if it has one.
fn position_of(consumer: &BaseConsumer) -> Result<Option<i64>, StoreError> {
    Ok(consumer
        .position()?
        .find_partition(TOPIC, 0)
        .and_then(|p| p.offset().to_raw()))
}
