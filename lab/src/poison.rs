//! Poison records: what a consumer can never process, to watch it go to the DLQ
//! (`lab poison`, and the dashboard's Poison button).

use std::time::Duration;

use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

/// What kind of poison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PoisonKind {
    /// Bytes that are not JSON, no headers.
    Garbage,
    /// Proper CloudEvents headers around JSON that does not match the topic's schema.
    Invalid,
}

impl PoisonKind {
    pub fn name(self) -> &'static str {
        match self {
            PoisonKind::Garbage => "garbage",
            PoisonKind::Invalid => "invalid",
        }
    }
}

/// Publishes a poison record of `kind` to `topic`; answers its partition and offset.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    kind: PoisonKind,
) -> Result<(i32, i64), rdkafka::error::KafkaError> {
    let order_id = uuid::Uuid::now_v7();
    let (value, headers): (Vec<u8>, OwnedHeaders) = match kind {
        PoisonKind::Garbage => (
            b"\x00\xffthis is not an event".to_vec(),
            OwnedHeaders::new(),
        ),
        PoisonKind::Invalid => {
            let env = saga_shared::Envelope::new(topic, "/lab-poison", order_id);
            (
                br#"{"order_id":"not-a-uuid","items":"many"}"#.to_vec(),
                env.to_headers(),
            )
        }
    };
    let key = order_id.to_string();
    let record = FutureRecord::to(topic)
        .key(&key)
        .payload(&value)
        .headers(headers);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|d| (d.partition, d.offset))
        .map_err(|(e, _)| e)
}
