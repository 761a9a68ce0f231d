//! Committed offsets in a cluster: the internal topic `__consumer_offsets`, as Kafka keeps them.
//!
//! A group belongs to one partition of the topic (`partition_for`, Kafka's own choice: the
//! group id's Java `hashCode`, its sign bit cleared, modulo the partition count), and the
//! leader of that partition is the group's coordinator. A commit is one record batch appended
//! to the partition, acknowledged once the in-sync replicas have it (the high watermark passed
//! it), so it survives the loss of the leader. When a node becomes a partition's leader it reads
//! the partition's log from the start and coordinates its groups from then on; when it stops
//! leading it drops them.
//!
//! Each record's key is `{"group","topic","partition"}` and its value the commit
//! (`{"offset","leader_epoch","metadata","seq"}`) or null for a deleted offset, both JSON, so
//! the explorer shows them as they are. (Kafka writes binary schemas of its own there.)

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde::{Deserialize, Serialize};

use super::line::Line;
use crate::storage::ReadOutcome;
use crate::topics::Partition;

/// The internal topic's name, as in Kafka.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How long a commit waits for the in-sync replicas (Kafka's `offsets.commit.timeout.ms`).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The partition of `__consumer_offsets` that holds `group` (of `partitions`): Kafka's
/// `Utils.abs(groupId.hashCode()) % partitions`, so a group lands where Kafka would put it.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    (hash & 0x7fff_ffff) % partitions.max(1)
}

#[derive(Serialize, Deserialize)]
struct Key {
    group: String,
    topic: String,
    partition: i32,
}

#[derive(Serialize, Deserialize)]
struct Value {
    offset: i64,
    leader_epoch: i32,
    metadata: Option<String>,
    seq: u64,
}

/// The journal of a cluster node's offset store: the partitions of `__consumer_offsets` it
/// leads, each with the in-sync replicas a commit needs.
#[derive(Debug)]
pub struct ReplicatedJournal {
    partitions: i32,
    led: Mutex<BTreeMap<i32, (Arc<Partition>, usize)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ReplicatedJournal {
    /// A journal over a `__consumer_offsets` of `partitions` partitions.
    pub fn new(partitions: i32) -> Self {
        Self {
            partitions: partitions.max(1),
            led: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    pub(super) fn coordinates(&self, group: &str) -> bool {
        lock(&self.led).contains_key(&partition_for(group, self.partitions))
    }

    pub(super) fn lead(&self, index: i32, partition: Arc<Partition>, min_insync: usize) {
        lock(&self.led).insert(index, (partition, min_insync.max(1)));
    }

    pub(super) fn unlead(&self, index: i32) -> bool {
        lock(&self.led).remove(&index).is_some()
    }

    pub(super) fn led(&self) -> Vec<i32> {
        lock(&self.led).keys().copied().collect()
    }

    /// Appends one commit of `group` to its partition and waits until the in-sync replicas
    /// have it. From the blocking pool.
    pub(super) fn store(&self, group: &str, lines: &[Line]) -> io::Result<()> {
        let index = partition_for(group, self.partitions);
        let Some((partition, min_insync)) = lock(&self.led).get(&index).cloned() else {
            return Err(io::Error::other(format!(
                "this node does not coordinate group {group}"
            )));
        };
        if partition.isr_len() < min_insync {
            return Err(io::Error::other(format!(
                "{} in-sync replicas of {OFFSETS_TOPIC}-{index}, {min_insync} needed",
                partition.isr_len()
            )));
        }
        let mut batch = encode(lines)?;
        partition
            .append(&mut batch)
            .map_err(|e| io::Error::other(format!("appending to {OFFSETS_TOPIC}-{index}: {e}")))?;
        let end = partition.log().next_offset();
        let deadline = tokio::time::Instant::now() + COMMIT_TIMEOUT;
        tokio::runtime::Handle::current()
            .block_on(partition.replicated(end, min_insync, deadline))
            .map_err(|e| {
                io::Error::other(format!(
                    "{OFFSETS_TOPIC}-{index} not replicated: {}",
                    e.code()
                ))
            })
    }
}

/// One record batch of `lines` (a null value for a deleted offset).
fn encode(lines: &[Line]) -> io::Result<Vec<u8>> {
    let now = crate::clock::now_ms();
    let records = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let key = serde_json::to_vec(&Key {
                group: line.g.clone(),
                topic: line.t.clone(),
                partition: line.p,
            })?;
            let value = (line.o >= 0)
                .then(|| {
                    serde_json::to_vec(&Value {
                        offset: line.o,
                        leader_epoch: line.e,
                        metadata: line.m.clone(),
                        seq: line.s,
                    })
                })
                .transpose()?;
            Ok(Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: now,
                key: Some(Bytes::from(key)),
                value: value.map(Bytes::from),
                headers: Default::default(),
            })
        })
        .collect::<serde_json::Result<Vec<Record>>>()
        .map_err(io::Error::other)?;
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).map_err(io::Error::other)?;
    Ok(buf.to_vec())
}

/// Every commit stored in a partition of `__consumer_offsets`, in order. Records that are not
/// commits (none are written) are skipped.
pub(super) fn read_all(partition: &Partition) -> io::Result<Vec<Line>> {
    let mut lines = Vec::new();
    let (mut offset, end) = {
        let log = partition.log();
        (log.log_start_offset(), log.next_offset())
    };
    while offset < end {
        let chunk = match partition.log().read(offset, 1 << 20, true)? {
            ReadOutcome::Batches(bytes) if !bytes.is_empty() => bytes,
            _ => break,
        };
        let mut buf = chunk;
        let sets = RecordBatchDecoder::decode_all(&mut buf).map_err(io::Error::other)?;
        let before = offset;
        for record in sets.into_iter().flat_map(|set| set.records) {
            offset = offset.max(record.offset + 1);
            if record.control {
                continue;
            }
            if let Some(line) = decode(&record) {
                lines.push(line);
            }
        }
        if offset == before {
            break;
        }
    }
    Ok(lines)
}

fn decode(record: &Record) -> Option<Line> {
    let key: Key = serde_json::from_slice(record.key.as_ref()?).ok()?;
    let line = match &record.value {
        None => Line {
            g: key.group,
            t: key.topic,
            p: key.partition,
            o: -1,
            e: -1,
            m: None,
            s: 0,
        },
        Some(value) => {
            let value: Value = serde_json::from_slice(value).ok()?;
            Line {
                g: key.group,
                t: key.topic,
                p: key.partition,
                o: value.offset,
                e: value.leader_epoch,
                m: value.metadata,
                s: value.seq,
            }
        }
    };
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_land_where_kafka_puts_them() {
        // Java's String.hashCode: "ab" is 97 * 31 + 98; over UTF-16 units, so an emoji counts
        // as its two surrogates (0xD83D * 31 + 0xDE00).
        assert_eq!(partition_for("ab", 5000), 3105);
        assert_eq!(partition_for("\u{1F600}", 10_000_000), 1_772_899);
        // "polygenelubricants".hashCode() is Integer.MIN_VALUE: Kafka's Utils.abs makes it 0.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("", 50), 0);
        assert!((0..50).contains(&partition_for("payment-service", 50)));
    }

    #[test]
    fn commits_and_tombstones_round_trip_through_a_batch() {
        let line = |o| Line {
            g: "g".into(),
            t: "orders".into(),
            p: 2,
            o,
            e: 4,
            m: Some("m".into()),
            s: 9,
        };
        let bytes = encode(&[line(17), line(-1)]).unwrap();
        let mut buf = Bytes::from(bytes);
        let sets = RecordBatchDecoder::decode_all(&mut buf).unwrap();
        let decoded: Vec<Line> = sets
            .iter()
            .flat_map(|s| &s.records)
            .filter_map(decode)
            .collect();
        assert_eq!(decoded.len(), 2);
        assert_eq!((decoded[0].o, decoded[0].e, decoded[0].s), (17, 4, 9));
        assert_eq!(decoded[0].m.as_deref(), Some("m"));
        assert_eq!(decoded[1].o, -1);
        assert_eq!((decoded[1].g.as_str(), decoded[1].p), ("g", 2));
    }
}
