//! `lab delivery idempotent-producer`: what `enable.idempotence` prevents. A producer whose
//! batch was stored but whose acknowledgment never came back (a dropped connection, a leader
//! change) sends the same batch again. Without idempotence the broker cannot tell the retry
//! from a new record and stores it twice; with it, the batch carries the producer's id, epoch
//! and sequence number, and the broker answers the retry with the offset it stored the first one
//! at.
//!
//! A client library retries on its own and hides this, so the lab speaks the protocol itself
//! here: it sends each batch twice, byte for byte, as a retry would.

use std::time::Duration;

use anyhow::{Context, bail};
use broker::client::BareClient;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::consumer::{BaseConsumer, Consumer};

const TIMEOUT: Duration = Duration::from_secs(10);
const PRODUCE_VERSION: i16 = 7;
const INIT_PRODUCER_ID_VERSION: i16 = 1;

/// Sends one batch to partition 0 of `topic` with acks=all; the offset it was stored at.
fn produce(leader: &mut BareClient, topic: &str, batch: &Bytes) -> anyhow::Result<i64> {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch.clone())),
                ]),
        ]);
    let response = leader.call(&request, PRODUCE_VERSION)?;
    let answer = response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .context("an empty produce response")?;
    if answer.error_code != 0 {
        bail!("the broker refused the batch (error {})", answer.error_code);
    }
    Ok(answer.base_offset)
}

/// One record in a batch of its own: `producer` is an idempotent producer's id and epoch
/// (its first batch: sequence 0), `None` a producer without idempotence.
fn batch(value: &str, producer: Option<(i64, i16)>) -> anyhow::Result<Bytes> {
    let (producer_id, producer_epoch, sequence) = match producer {
        Some((id, epoch)) => (id, epoch, 0),
        None => (-1, -1, -1),
    };
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence,
        timestamp: chrono::Utc::now().timestamp_millis(),
        key: Some(Bytes::from_static(b"demo")),
        value: Some(Bytes::from(value.to_owned())),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, std::iter::once(&record), &options)?;
    Ok(buf.freeze())
}

/// The address of the broker leading partition 0 of `topic`.
fn leader_of(brokers: &str, topic: &str) -> anyhow::Result<String> {
    let client: BaseConsumer = saga_shared::kafka::client_config(brokers).create()?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let metadata = client.fetch_metadata(Some(topic), TIMEOUT)?;
        let leader = metadata
            .topics()
            .first()
            .and_then(|t| t.partitions().first())
            .map(|p| p.leader())
            .and_then(|id| metadata.brokers().iter().find(|b| b.id() == id));
        if let Some(b) = leader {
            return Ok(format!("{}:{}", b.host(), b.port()));
        }
        if std::time::Instant::now() > deadline {
            bail!("{topic} has no leader");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The demonstration; `read` reads the topic back, every record's value in order.
pub(crate) fn demo(
    brokers: &str,
    topic: &str,
    read: impl Fn(&str) -> anyhow::Result<Vec<String>>,
) -> anyhow::Result<()> {
    let mut leader =
        BareClient::connect(&leader_of(brokers, topic)?, "lab-delivery", Some(TIMEOUT))?;
    println!(
        "each batch is sent twice, as a producer resends a batch whose acknowledgment it never got"
    );
    let plain = batch("payment A", None)?;
    let first = produce(&mut leader, topic, &plain)?;
    let again = produce(&mut leader, topic, &plain)?;
    println!(
        "without idempotence: \"payment A\" stored at offset {first}, the retry at offset {again}"
    );
    let init = InitProducerIdRequest::default()
        .with_transaction_timeout_ms(-1)
        .with_producer_id(kafka_protocol::messages::ProducerId(-1))
        .with_producer_epoch(-1);
    let producer = leader.call(&init, INIT_PRODUCER_ID_VERSION)?;
    if producer.error_code != 0 {
        bail!(
            "the broker gave no producer id (error {})",
            producer.error_code
        );
    }
    let idempotent = batch(
        "payment B",
        Some((producer.producer_id.0, producer.producer_epoch)),
    )?;
    let first = produce(&mut leader, topic, &idempotent)?;
    let again = produce(&mut leader, topic, &idempotent)?;
    println!(
        "with idempotence (producer id {}, epoch {}, sequence 0): \"payment B\" stored at offset {first}, the retry answered with offset {again}",
        producer.producer_id.0, producer.producer_epoch
    );
    let values = read(topic)?;
    println!("{topic}: {}", values.join(", "));
    let count = |v: &str| values.iter().filter(|x| x.as_str() == v).count();
    println!(
        "\"payment A\" is in the log {}, \"payment B\" {}",
        crate::delivery::times(count("payment A")),
        crate::delivery::times(count("payment B"))
    );
    Ok(())
}
