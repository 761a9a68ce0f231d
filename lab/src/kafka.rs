//! Kafka helpers only the lab uses: creating a topic, a topic's partitions, and waiting for a
//! transactional producer's deliveries.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};

/// Creates `topic` (waiting up to 10 s for the broker): the broker's refusal, if it refused (a
/// topic that exists already included), as the topic's name and Kafka's error code.
pub async fn create_topic(
    brokers: &str,
    topic: &rdkafka::admin::NewTopic<'_>,
) -> Result<Result<(), (String, RDKafkaErrorCode)>, KafkaError> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        saga_shared::kafka::client_config(brokers).create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let refused = admin
        .create_topics([topic], &opts)
        .await?
        .into_iter()
        .find_map(Result::err);
    Ok(refused.map_or(Ok(()), Err))
}

/// The partitions of `topic` in the broker's metadata (none if it doesn't exist).
pub fn partitions_of<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Waits until every record `producer` sent has its delivery report, serving the reports that
/// have arrived and sleeping half a millisecond between looks; call it before
/// `commit_transaction` or instead of `flush`.
///
/// rust-rdkafka's `BaseProducer::flush` (which `commit_transaction` calls first) serves reports
/// in slices of up to 100 ms that each run to their end, so while any record is in flight it
/// costs about 100 ms however fast the broker answers: a floor of 100 ms per transaction. And
/// `poll` with a timeout under a millisecond asks librdkafka to wait 0 ms, again and again:
/// polling in 1 ms slices spun a core while records were in flight. A program that commits
/// often uses a `ThreadedProducer` instead, as the ledger does.
pub fn drain<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}
