//! `lab keys`: which partition a record lands on. A keyed record goes where the hash of its key
//! says, so every record with that key shares one partition (and its order); librdkafka and the
//! Java client hash differently, so the same key can land on different partitions depending on
//! which client wrote it. A record without a key goes wherever the producer's partitioner puts
//! it: a "sticky" partition for a few milliseconds, then another.
//!
//! Both columns are real deliveries to a new topic by librdkafka: its default partitioner
//! (`consistent_random`: CRC32 of the key) and its `murmur2_random`, which is the Java client's
//! hash (murmur2 of the key, made positive, modulo the partition count).

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::control::BrokerArg;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    /// The keys to send (each several times).
    #[arg(default_values_t = ["alice".to_owned(), "bob".to_owned(), "carol".to_owned(), "dave".to_owned()])]
    keys: Vec<String>,
    /// Partitions of the new topic.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=100))]
    partitions: i32,
    /// How many times each key is sent, and how many records go without a key.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    times: u32,
    #[command(flatten)]
    broker: BrokerArg,
}

fn producer(brokers: &str, partitioner: &str) -> anyhow::Result<FutureProducer> {
    Ok(saga_shared::kafka::client_config(brokers)
        .set("partitioner", partitioner)
        .set("enable.idempotence", "true")
        .create()?)
}

/// Sends one record and says which partition it went to.
async fn partition_of(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
) -> anyhow::Result<i32> {
    let mut record = FutureRecord::<str, str>::to(topic).payload("x");
    if let Some(k) = key {
        record = record.key(k);
    }
    match producer.send(record, TIMEOUT).await {
        Ok(delivery) => Ok(delivery.partition),
        Err((e, _)) => bail!("the record was not delivered: {e}"),
    }
}

fn listed(partitions: &[i32]) -> String {
    let words: Vec<String> = partitions.iter().map(i32::to_string).collect();
    words.join(", ")
}

pub(crate) async fn keys(args: KeysArgs) -> anyhow::Result<()> {
    let brokers = &args.broker.brokers;
    let topic = format!("keys.{}", chrono::Utc::now().timestamp_millis() % 1_000_000);
    crate::delivery::create_topic(brokers, &topic, args.partitions).await?;
    let librdkafka = producer(brokers, "consistent_random")?;
    let java = producer(brokers, "murmur2_random")?;
    println!(
        "{topic}: {} partitions; each key sent {} times by each partitioner",
        args.partitions, args.times
    );
    let width = args.keys.iter().map(String::len).max().unwrap_or(0).max(6);
    println!(
        "{:width$}  {:<32}  murmur2 (the Java client's)",
        "key", "CRC32 (librdkafka's default)"
    );
    for key in &args.keys {
        let mut by_crc = Vec::new();
        let mut by_murmur = Vec::new();
        for _ in 0..args.times {
            by_crc.push(partition_of(&librdkafka, &topic, Some(key)).await?);
            by_murmur.push(partition_of(&java, &topic, Some(key)).await?);
        }
        let crc = format!("partition {}", listed(&by_crc));
        println!("{key:width$}  {crc:<32}  partition {}", listed(&by_murmur));
    }
    // Records without a key, sent at once (they share the sticky partition of the moment), then
    // 50 ms apart (the sticky partition changes every 10 ms, librdkafka's
    // `sticky.partitioning.linger.ms`).
    let sends = (0..args.times).map(|_| partition_of(&librdkafka, &topic, None));
    let at_once = futures_util::future::try_join_all(sends).await?;
    let mut apart = Vec::new();
    for _ in 0..args.times {
        tokio::time::sleep(Duration::from_millis(50)).await;
        apart.push(partition_of(&librdkafka, &topic, None).await?);
    }
    println!("no key, sent at once:    partition {}", listed(&at_once));
    println!("no key, 50 ms apart:     partition {}", listed(&apart));
    Ok(())
}
