//! Kafka's internal topics in a cluster (`__consumer_offsets`, `__transaction_state`): a
//! coordinator's state kept as records of a replicated topic. A key (a group, a transactional
//! id) belongs to one partition, the one Kafka would pick ([`partition_for`]), and the leader
//! of that partition is the key's coordinator. A change is a record batch appended to the
//! partition and counts once the in-sync replicas have it (the high watermark passed it), as an
//! `acks=all` write; so it survives the loss of the leader. A node that comes to lead a
//! partition reads it from the start ([`read_all`]) and coordinates its keys from then on; one
//! that stops leading it drops them.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::topics::Partition;

/// One record of an internal topic: its key and value (null deletes).
pub type KeyValue = (Vec<u8>, Option<Vec<u8>>);

/// How long a change waits for the in-sync replicas (Kafka's `offsets.commit.timeout.ms`).
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The partition of an internal topic of `partitions` partitions that holds `key`: Kafka's
/// `Utils.abs(key.hashCode()) % partitions` (Java's `String.hashCode`), so a group or a
/// transactional id lands where Kafka would put it.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let hash = key.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    (hash & 0x7fff_ffff) % partitions.max(1)
}

/// The partitions of one internal topic this node leads, each with the in-sync replicas a
/// change needs.
#[derive(Debug)]
pub struct InternalTopic {
    name: &'static str,
    partitions: i32,
    /// The partitions this node leads: each with its `min.insync.replicas` and its leader
    /// epoch when this node took the lead (a coordinator's epoch).
    led: Mutex<BTreeMap<i32, Led>>,
}

/// A led partition, its `min.insync.replicas`, and its leader epoch when this node took the lead.
type Led = (Arc<Partition>, usize, i32);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl InternalTopic {
    pub fn new(name: &'static str, partitions: i32) -> Self {
        Self {
            name,
            partitions: partitions.max(1),
            led: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// The partition that holds `key`.
    pub fn partition_of(&self, key: &str) -> i32 {
        partition_for(key, self.partitions)
    }

    /// Whether this node leads (and has loaded) the partition of `key`.
    pub fn coordinates(&self, key: &str) -> bool {
        lock(&self.led).contains_key(&self.partition_of(key))
    }

    /// This node leads partition `index` now (loaded by the caller).
    pub fn lead(&self, index: i32, partition: Arc<Partition>, min_insync: usize) {
        let epoch = partition.leader_epoch();
        lock(&self.led).insert(index, (partition, min_insync.max(1), epoch));
    }

    /// The leader epoch of `key`'s partition when this node took the lead, if it leads it.
    pub fn leader_epoch_of(&self, key: &str) -> Option<i32> {
        lock(&self.led)
            .get(&self.partition_of(key))
            .map(|(_, _, epoch)| *epoch)
    }

    /// This node no longer leads partition `index`; whether it did.
    pub fn unlead(&self, index: i32) -> bool {
        lock(&self.led).remove(&index).is_some()
    }

    /// The partitions this node leads.
    pub fn led(&self) -> Vec<i32> {
        lock(&self.led).keys().copied().collect()
    }

    /// The led partition of `key`, or why this node cannot write for it.
    fn partition_for_key(&self, key: &str) -> io::Result<(i32, Arc<Partition>, usize)> {
        let index = self.partition_of(key);
        let (partition, min_insync, _) = lock(&self.led).get(&index).cloned().ok_or_else(|| {
            io::Error::other(format!("this node does not lead {}-{index}", self.name))
        })?;
        Ok((index, partition, min_insync))
    }

    /// Appends records (key, value: null deletes) for `key`'s partition as one batch and
    /// waits until the in-sync replicas have them. From the blocking pool.
    pub fn write(&self, key: &str, records: Vec<KeyValue>) -> io::Result<()> {
        self.write_batch(key, encode(records, None)?)
    }

    /// Like [`Self::write`], a transaction's records: `producer` is its producer id and epoch,
    /// and a marker ends them later (TxnOffsetCommit).
    pub fn write_transactional(
        &self,
        key: &str,
        records: Vec<KeyValue>,
        producer: (i64, i16),
    ) -> io::Result<()> {
        self.write_batch(key, encode(records, Some(producer))?)
    }

    fn write_batch(&self, key: &str, mut batch: Vec<u8>) -> io::Result<()> {
        let (index, partition, min_insync) = self.partition_for_key(key)?;
        if partition.isr_len() < min_insync {
            return Err(io::Error::other(format!(
                "{} in-sync replicas of {}-{index}, {min_insync} needed",
                partition.isr_len(),
                self.name
            )));
        }
        let epoch = partition.leader_epoch();
        partition
            .append(&mut batch)
            .map_err(|e| io::Error::other(format!("appending to {}-{index}: {e}", self.name)))?;
        let end = partition.log().next_offset();
        replicated(&partition, (end, epoch), min_insync)
            .map_err(|e| io::Error::other(format!("{}-{index}: {e}", self.name)))
    }
}

/// Waits until the in-sync replicas of `partition` have everything below `end`, written while
/// this node led at leader epoch `epoch` (at most 5 s, Kafka's `offsets.commit.timeout.ms`).
/// From the blocking pool.
pub fn replicated(partition: &Partition, end: (i64, i32), min_insync: usize) -> io::Result<()> {
    let deadline = tokio::time::Instant::now() + REPLICATION_TIMEOUT;
    tokio::runtime::Handle::current()
        .block_on(partition.replicated(end, min_insync, deadline))
        .map_err(|e| io::Error::other(format!("not replicated (error {})", e.code())))
}

/// One record batch of `records`; a transaction's when `producer` is given.
fn encode(records: Vec<KeyValue>, producer: Option<(i64, i16)>) -> io::Result<Vec<u8>> {
    let now = crate::clock::now_ms();
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // No sequence (-1) for the batch; the encoder keeps records in one batch only
            // while their sequences run with their offsets.
            sequence: i as i32 - 1,
            timestamp: now,
            key: Some(Bytes::from(key)),
            value: value.map(Bytes::from),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).map_err(io::Error::other)?;
    Ok(buf.to_vec())
}

/// Every record of `partition`, in order, control records (transaction markers) included.
pub fn read_all(partition: &Partition) -> io::Result<Vec<Record>> {
    let mut all = Vec::new();
    let (mut offset, end) = {
        let log = partition.log();
        (log.log_start_offset(), log.next_offset())
    };
    while offset < end {
        // The read says where its batches end: a compacted batch's last records may be gone,
        // and the next read starts after the batch, not after its last record.
        let Some(batches) = partition
            .log()
            .read_batches(offset, 1 << 20, true, i64::MAX)?
        else {
            break;
        };
        if batches.records.is_empty() || batches.next_offset <= offset {
            break;
        }
        offset = batches.next_offset;
        let mut chunk = batches.records.into_bytes()?;
        let sets = RecordBatchDecoder::decode_all(&mut chunk).map_err(io::Error::other)?;
        all.extend(sets.into_iter().flat_map(|set| set.records));
    }
    Ok(all)
}

/// Whether a control record is a commit marker (its key: version, then type 1 for commit).
pub fn is_commit_marker(record: &Record) -> bool {
    record
        .key
        .as_ref()
        .is_some_and(|k| k.len() >= 4 && k[2..4] == [0, 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_where_kafka_puts_them() {
        // Java's String.hashCode: "ab" is 97 * 31 + 98; over UTF-16 units, so an emoji counts
        // as its two surrogates (0xD83D * 31 + 0xDE00).
        assert_eq!(partition_for("ab", 5000), 3105);
        assert_eq!(partition_for("\u{1F600}", 10_000_000), 1_772_899);
        // "polygenelubricants".hashCode() is Integer.MIN_VALUE: Kafka's Utils.abs makes it 0.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("", 50), 0);
    }

    #[test]
    fn records_round_trip_through_a_batch() {
        let bytes = encode(
            vec![
                (b"k".to_vec(), Some(b"v".to_vec())),
                (b"gone".to_vec(), None),
            ],
            Some((7, 2)),
        )
        .unwrap();
        let mut buf = Bytes::from(bytes);
        let sets = RecordBatchDecoder::decode_all(&mut buf).unwrap();
        // One batch (a produce to a partition appends one), with no sequence.
        assert_eq!(sets.len(), 1);
        let records: Vec<&Record> = sets.iter().flat_map(|s| &s.records).collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].sequence, -1);
        assert!(records[0].transactional);
        assert_eq!((records[0].producer_id, records[0].producer_epoch), (7, 2));
        assert_eq!(records[0].value.as_deref(), Some(&b"v"[..]));
        assert_eq!(records[1].value, None);
    }
}
