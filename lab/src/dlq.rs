//! The lab's DLQ workbench: listing the records of dead-letter topics, and redriving them to the
//! consumer group that dead-lettered them (the headers and the skipping of a redrive addressed to
//! another group are the services' contract, in `saga_shared::dlq`).
//!
//! A replay is a *redrive*, not a copy: each record goes back to its original topic with the
//! header `dlq_redrive_group` naming the one group that dead-lettered it (its
//! `dlq_consumer_group`); the consumer runner of every other group skips such a record
//! without applying or counting it (its `skipped` outcome), so only the group that failed
//! processes it again. Records addressed to one group by a header, on the topic that group already
//! reads, keep the per-key order of the topic and need no extra topic or subscription.
//!
//! How far replay has gone is kept by Kafka itself: the consumer group [`REPLAY_GROUP`] commits,
//! for each DLQ partition, the offset below which every record was replayed, and in the commit's
//! metadata the offsets above it replayed one by one. So a replayed record is shown as replayed
//! ([`DeadLetter::replayed`]), and replaying again sends only what is still waiting. Records are
//! sent before the offsets are committed: a crash between the two replays them again, which the
//! addressed group's idempotency (`consumed_events`) absorbs. Replays in one process take turns.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use saga_shared::dlq::header as dlq_header;
use saga_shared::envelope::{headers_to_pairs, pairs_to_headers};
use saga_shared::kafka::client_config;
use serde::{Deserialize, Serialize};

/// The consumer group whose committed offsets on a DLQ say how far replay has gone.
pub const REPLAY_GROUP: &str = "dlq-replay";

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("record {partition}/{offset} has no `{header}` header")]
    MissingHeader {
        partition: i32,
        offset: i64,
        header: &'static str,
    },
    #[error("{topic} has no record at partition {partition}, offset {offset}")]
    NoRecord {
        topic: String,
        partition: i32,
        offset: i64,
    },
    #[error("timed out reading {0}")]
    Timeout(String),
}

/// One record of a `<topic>.dlq` topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    /// The original key, lossily decoded as UTF-8 for display.
    pub key: Option<String>,
    #[serde(skip)]
    pub raw_key: Option<Vec<u8>>,
    /// The original value, lossily decoded as UTF-8 for display (its payload: after the frame
    /// of Confluent's wire format if it has one).
    pub value: Option<String>,
    /// The schema id of a value in Confluent's wire format.
    pub schema_id: Option<i32>,
    #[serde(skip)]
    pub raw_value: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
    /// Whether it was replayed already (by [`REPLAY_GROUP`]'s committed offsets).
    pub replayed: bool,
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
    pub fn consumer_group(&self) -> Option<&str> {
        self.header(dlq_header::CONSUMER_GROUP)
    }
    pub fn error(&self) -> Option<&str> {
        self.header(dlq_header::ERROR)
    }
}

/// What a replay sends back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every record still waiting.
    All,
    /// The record at this partition and offset, if it is still waiting.
    One { partition: i32, offset: i64 },
    /// Every record still waiting that this consumer group dead-lettered.
    Group(String),
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Replay {
    /// Records sent back to the group that dead-lettered them.
    pub replayed: usize,
    /// Selected records that had been replayed before, so were not sent again.
    pub already_replayed: usize,
}

/// How far replay has gone on one DLQ partition: every offset below `below`, and `above`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Progress {
    below: i64,
    above: BTreeSet<i64>,
}

impl Progress {
    fn contains(&self, offset: i64) -> bool {
        offset < self.below || self.above.contains(&offset)
    }

    fn add(&mut self, offset: i64) {
        if !self.contains(offset) {
            self.above.insert(offset);
        }
        while self.above.remove(&self.below) {
            self.below += 1;
        }
    }

    /// The commit's metadata: the offsets replayed above the committed one, comma-separated.
    fn metadata(&self) -> String {
        self.above
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn parse(offset: Offset, metadata: &str) -> Progress {
        let below = match offset {
            Offset::Offset(n) => n,
            _ => 0,
        };
        let above = metadata
            .split(',')
            .filter_map(|o| o.trim().parse().ok())
            .filter(|o| *o >= below)
            .collect();
        Progress { below, above }
    }
}

/// A consumer of [`REPLAY_GROUP`] that never joins it: it reads the DLQ by assignment and
/// commits the group's offsets as a simple consumer.
fn reader(brokers: &str) -> Result<BaseConsumer, KafkaError> {
    client_config(brokers)
        .set("group.id", REPLAY_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
}

/// Reads every record currently in `dlq_topic` and marks those replayed already.
pub async fn list(brokers: &str, dlq_topic: &str) -> Result<Vec<DeadLetter>, DlqError> {
    let brokers = brokers.to_owned();
    let topic = dlq_topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer = reader(&brokers)?;
        list_blocking(&consumer, &topic).map(|(letters, _)| letters)
    })
    .await
    .expect("DLQ reader panicked")
}

/// The records of `topic`, and each partition's replay progress.
fn list_blocking(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<(Vec<DeadLetter>, BTreeMap<i32, Progress>), DlqError> {
    let timeout = Duration::from_secs(10);
    let partitions = crate::kafka::partitions_of(consumer, topic, timeout)?;
    let mut progress = BTreeMap::new();
    if !partitions.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(topic, *p);
        }
        for elem in consumer.committed_offsets(tpl, timeout)?.elements() {
            progress.insert(
                elem.partition(),
                Progress::parse(elem.offset(), elem.metadata()),
            );
        }
    }
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0usize;
    let mut high_marks = std::collections::HashMap::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        // Records below the log start are gone, so count as done.
        let done = progress.entry(p).or_default();
        if done.below < low {
            done.below = low;
            done.above.retain(|o| *o >= low);
        }
        if high > low {
            assignment.add_partition_offset(topic, p, Offset::Offset(low))?;
            remaining += 1;
            high_marks.insert(p, high);
        }
    }
    let mut out = Vec::new();
    if remaining == 0 {
        return Ok((out, progress));
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
                raw_key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(|v| {
                    String::from_utf8_lossy(saga_shared::schemas::payload(v)).into_owned()
                }),
                schema_id: m
                    .payload()
                    .and_then(saga_shared::schemas::unframe)
                    .map(|(id, _)| id),
                raw_value: m.payload().map(<[u8]>::to_vec),
                headers: m.headers().map(headers_to_pairs).unwrap_or_default(),
                replayed: progress
                    .get(&m.partition())
                    .is_some_and(|p| p.contains(m.offset())),
            });
        }
        if m.offset() + 1 >= high {
            remaining -= 1;
        }
    }
    consumer.unassign()?;
    out.sort_by_key(|d| (d.partition, d.offset));
    Ok((out, progress))
}

/// Replays in this process take turns, so two at once never send a record twice.
static REPLAYING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Redrives the `selection` of `dlq_topic`'s records that are still waiting: each goes back to
/// its original topic with its original key, value and CloudEvents headers, addressed to the
/// group that dead-lettered it; then [`REPLAY_GROUP`]'s offsets record them as replayed.
pub async fn replay(
    brokers: &str,
    dlq_topic: &str,
    selection: Selection,
) -> Result<Replay, DlqError> {
    let _turn = REPLAYING.lock().await;
    let consumer = reader(brokers)?;
    let (consumer, letters, mut progress) = {
        let topic = dlq_topic.to_owned();
        tokio::task::spawn_blocking(move || {
            list_blocking(&consumer, &topic).map(|(l, p)| (consumer, l, p))
        })
        .await
        .expect("DLQ reader panicked")?
    };
    let selected: Vec<&DeadLetter> = match selection {
        Selection::All => letters.iter().collect(),
        Selection::Group(group) => letters
            .iter()
            .filter(|d| d.consumer_group() == Some(group.as_str()))
            .collect(),
        Selection::One { partition, offset } => {
            let one: Vec<&DeadLetter> = letters
                .iter()
                .filter(|d| d.partition == partition && d.offset == offset)
                .collect();
            if one.is_empty() {
                return Err(DlqError::NoRecord {
                    topic: dlq_topic.to_owned(),
                    partition,
                    offset,
                });
            }
            one
        }
    };
    let (done, waiting): (Vec<&DeadLetter>, Vec<&DeadLetter>) =
        selected.into_iter().partition(|d| d.replayed);
    // Every record is checked before any is sent.
    let mut records = Vec::with_capacity(waiting.len());
    for d in &waiting {
        records.push(redrive_of(dlq_topic, d)?);
    }
    let producer: FutureProducer = saga_shared::kafka::producer(brokers)?;
    let sends = records.iter().map(|(topic, key, headers, value)| {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(pairs_to_headers(headers));
        // The key's bytes as they were, so the record goes to the partition it came from.
        if let Some(k) = key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = value {
            record = record.payload(v.as_slice());
        }
        producer.send(record, Duration::from_secs(10))
    });
    for sent in futures_util::future::join_all(sends).await {
        sent.map_err(|(e, _)| DlqError::Kafka(e))?;
    }
    // Now they are on their way: record them as replayed.
    for d in &waiting {
        progress.entry(d.partition).or_default().add(d.offset);
    }
    if !waiting.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for (partition, p) in &progress {
            tpl.add_partition_offset(dlq_topic, *partition, Offset::Offset(p.below))?;
            if let Some(mut elem) = tpl.find_partition(dlq_topic, *partition) {
                elem.set_metadata(p.metadata());
            }
        }
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .expect("DLQ commit panicked")?;
    }
    Ok(Replay {
        replayed: waiting.len(),
        already_replayed: done.len(),
    })
}

/// Every record still waiting in `dlq_topic`, redriven; how many went back.
pub async fn replay_all(brokers: &str, dlq_topic: &str) -> Result<usize, DlqError> {
    Ok(replay(brokers, dlq_topic, Selection::All).await?.replayed)
}

/// Topic, key, headers and value of the redrive of `d`: the `dlq_*` headers of the DLQ are
/// dropped, the redrive's own added.
type Redrive = (
    String,
    Option<Vec<u8>>,
    Vec<(String, String)>,
    Option<Vec<u8>>,
);

fn redrive_of(dlq_topic: &str, d: &DeadLetter) -> Result<Redrive, DlqError> {
    let missing = |header| DlqError::MissingHeader {
        partition: d.partition,
        offset: d.offset,
        header,
    };
    let topic = d
        .original_topic()
        .ok_or_else(|| missing(dlq_header::ORIGINAL_TOPIC))?;
    let group = d
        .consumer_group()
        .ok_or_else(|| missing(dlq_header::CONSUMER_GROUP))?;
    let mut headers: Vec<(String, String)> = d
        .headers
        .iter()
        .filter(|(k, _)| !k.starts_with("dlq_"))
        .cloned()
        .collect();
    headers.push((dlq_header::REDRIVE_GROUP.into(), group.into()));
    headers.push((
        dlq_header::REDRIVE_FROM.into(),
        format!("{dlq_topic}/{}/{}", d.partition, d.offset),
    ));
    Ok((
        topic.to_owned(),
        d.raw_key.clone(),
        headers,
        d.raw_value.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_each_offset_once_and_closes_gaps() {
        let mut p = Progress::default();
        p.add(2);
        p.add(2);
        assert_eq!(
            p,
            Progress {
                below: 0,
                above: [2].into()
            }
        );
        assert!(p.contains(2) && !p.contains(0) && !p.contains(1));
        p.add(0);
        assert_eq!(p.below, 1);
        p.add(1);
        assert_eq!(
            p,
            Progress {
                below: 3,
                above: BTreeSet::new()
            }
        );
        assert_eq!(p.metadata(), "");
        p.add(5);
        p.add(7);
        assert_eq!(p.metadata(), "5,7");
        assert_eq!(Progress::parse(Offset::Offset(3), "5,7"), p);
        // Offsets at or below the committed one, and garbage, are not kept.
        assert_eq!(
            Progress::parse(Offset::Offset(3), "1,x,,7"),
            Progress {
                below: 3,
                above: [7].into()
            }
        );
        assert_eq!(Progress::parse(Offset::Invalid, ""), Progress::default());
    }
}
