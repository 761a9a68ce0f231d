//! Kafka client settings, topic creation and the broker readiness probe.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

use crate::catalogue;
use crate::events::topics;

/// Base settings for any client of `brokers`.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        // Fail over quickly in the lab when the broker restarts.
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "1000")
        .set("log_level", "4");
    // librdkafka's own debug contexts (e.g. `cgrp,protocol`), for diagnosing broker behaviour.
    if let Ok(debug) = std::env::var("SAGA_KAFKA_DEBUG") {
        cfg.set("debug", debug).set("log_level", "7");
    }
    cfg
}

/// The idempotent producer (acks=all) used by the outbox relay and for dead letters.
/// Keeps trying to deliver for `message_timeout` (the relay retries after that).
pub fn producer(brokers: &str) -> Result<FutureProducer, KafkaError> {
    client_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "30000")
        .create()
}

/// Creates every saga topic and its dead-letter topic, and the compacted catalogue topic
/// ([`crate::catalogue`]) and its dead-letter topic, with `partitions` partitions and the
/// broker's default replication factor (`default.replication.factor`: three replicas on the
/// lab's three-node cluster, one on a single node). Topics that exist already are left as they
/// are.
pub async fn ensure_topics(brokers: &str, partitions: i32) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let names = topics::with_dlqs();
    let catalogue_dlq = topics::dlq(catalogue::TOPIC);
    let topic = |name| NewTopic::new(name, partitions.max(1), TopicReplication::Fixed(-1));
    let mut new: Vec<NewTopic<'_>> = names.iter().map(|n| topic(n)).collect();
    new.push(
        catalogue::TOPIC_CONFIG
            .iter()
            .fold(topic(catalogue::TOPIC), |t, (k, v)| t.set(k, v)),
    );
    new.push(topic(&catalogue_dlq));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::warn!(%topic, ?code, "could not create topic");
                });
            }
        }
    }
    Ok(())
}

/// Whether the broker answers a metadata request within `timeout`.
pub async fn broker_reachable(producer: &FutureProducer, timeout: Duration) -> bool {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        producer.client().fetch_metadata(None, timeout).is_ok()
    })
    .await
    .unwrap_or(false)
}

/// Fetches the metadata of each of `topics` into the producer's cache, so that its first record
/// to any of them goes out without a metadata round trip. False if the broker did not answer.
pub async fn fetch_topic_metadata(
    producer: &FutureProducer,
    topics: &[String],
    timeout: Duration,
) -> bool {
    let producer = producer.clone();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        topics.iter().all(|t| {
            producer
                .client()
                .fetch_metadata(Some(t), timeout)
                .is_ok_and(|m| m.topics().iter().all(|t| t.error().is_none()))
        })
    })
    .await
    .unwrap_or(false)
}
