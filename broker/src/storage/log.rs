//! `PartitionLog`: the ordered list of segments of one partition, and the rules of appending.
//!
//! Appends go to the last (active) segment, which rolls by size or age. Retention deletes whole
//! old segments, which moves the log start offset. Idempotent producers are checked here, per
//! partition, because sequence numbers are per partition.
//!
//! Transactions are tracked here too, per partition, from the batches themselves: a
//! transactional batch of a producer with no open transaction opens one at its offset, a control
//! batch (commit or abort marker) closes it, and an abort is remembered in the aborted-transaction
//! index. The last stable offset is the first offset of the earliest open transaction. All of it
//! is rebuilt by reading the batch headers when the log is opened.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use thiserror::Error;

pub use super::batch::AbortedTxn;
use super::batch::{self, BatchError, BatchHeader, Marker};
use super::clean::{self, Compaction};
use super::segment::{Batches, Records, Segment};

/// The leader epoch the single-node broker stamps on every batch; it never changes.
pub const LEADER_EPOCH: i32 = 0;
/// The file holding the log start offset DeleteRecords set.
const START_FILE: &str = "log-start-offset";
/// The transaction state as of the last roll (see [`ProducerSnapshot`]).
const SNAPSHOT_FILE: &str = "producer-state.json";
/// A replicated partition's leader epochs: one line `EPOCH START_OFFSET` per epoch, in order.
const EPOCHS_FILE: &str = "leader-epochs";

/// The per-partition transaction state as of `offset`, the base of the segment a roll started:
/// open transactions (producer id, first offset), aborted ones (producer id, first offset,
/// marker offset) and producer epochs. Opening the log loads it and reads the transactional
/// batches from that segment on, instead of every segment's.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ProducerSnapshot {
    offset: i64,
    open: Vec<(i64, i64)>,
    aborted: Vec<(i64, i64, i64)>,
    epochs: Vec<(i64, i16)>,
    /// The epoch of the last coordinator whose marker each producer's transactions got here.
    #[serde(default)]
    coordinator_epochs: Vec<(i64, i32)>,
}
/// How a control batch whose record cannot be read is taken: an abort, of no coordinator epoch.
const ABORT_AT_ZERO: Marker = Marker {
    commit: false,
    coordinator_epoch: 0,
};

/// How many recent batches per producer are remembered to recognise a retried batch (Kafka's 5).
const PRODUCER_WINDOW: usize = 5;

/// Storage settings of one partition (from the topic's config).
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll the active segment when it reaches this many bytes.
    pub segment_bytes: u64,
    /// Roll the active segment when it is this old (and not empty).
    pub segment_age: Duration,
    /// Delete segments whose newest record is older than this; `None` keeps forever.
    pub retention: Option<Duration>,
    /// Delete oldest segments while the partition is bigger than this; `None` for no limit.
    pub retention_bytes: Option<u64>,
    /// fsync every append before acknowledging it.
    pub fsync_each_append: bool,
    /// The largest record batch taken (`max.message.bytes`, as in Kafka: a batch, compressed).
    pub max_batch_bytes: u64,
    /// The most a compressed batch may inflate to: `max.message.bytes` or the largest request
    /// the broker takes (`socket.request.max.bytes`), whichever is larger, so a batch that a
    /// producer's `batch.size` made legitimately (Kafka limits only the compressed size) passes
    /// and a "zip bomb" stops there.
    pub max_inflated_bytes: u64,
    /// Stamp each appended batch with the broker's clock (`message.timestamp.type=LogAppendTime`).
    pub log_append_time: bool,
    /// `cleanup.policy` includes `compact`: how the log cleaner keeps each key's latest record
    /// (and records without a key are refused).
    pub compaction: Option<Compaction>,
}

/// Why an append was refused.
#[derive(Debug, Error)]
pub enum AppendError {
    #[error("invalid record batch: {0}")]
    Corrupt(#[from] BatchError),
    #[error("producer epoch {got} is older than the current {current}")]
    InvalidProducerEpoch { got: i16, current: i16 },
    #[error("a marker of coordinator epoch {got}, older than the current {current}")]
    CoordinatorFenced { got: i32, current: i32 },
    #[error("the partition's leader refused: {0:?}")]
    LeaderRefused(ResponseError),
    #[error("out of order sequence {got}, expected {expected}")]
    OutOfOrderSequence { got: i32, expected: i32 },
    #[error("record batch of {size} bytes exceeds max.message.bytes ({max})")]
    TooLarge { size: u64, max: u64 },
    #[error("record batch inflates to more than max.message.bytes ({max})")]
    InflatesTooLarge { max: u64 },
    #[error("{0}")]
    Refused(&'static str),
    #[error("a replicated batch of offsets {base}..={last} does not start at the log end, {end}")]
    Misplaced { base: i64, last: i64, end: i64 },
    #[error("offset {offset} is not in the log (its high watermark is {end})")]
    BeyondEnd { offset: i64, end: i64 },
    #[error("the topic was deleted")]
    Deleted,
    #[error("the producer's transaction ended while its batch was checked")]
    TransactionEnded,
    #[error("storage I/O: {0}")]
    Io(#[from] io::Error),
}

impl AppendError {
    /// The error a client is answered with.
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            // A well-formed batch the broker will not inflate: no retry can pass
            // (CORRUPT_MESSAGE is retriable, and the Java client would retry it until its
            // delivery timeout).
            AppendError::Corrupt(BatchError::ZstdWindowTooLarge { .. })
            | AppendError::Corrupt(BatchError::NoKey { .. }) => ResponseError::InvalidRecord,
            AppendError::Corrupt(_) => ResponseError::CorruptMessage,
            AppendError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
            AppendError::CoordinatorFenced { .. } => ResponseError::TransactionCoordinatorFenced,
            AppendError::LeaderRefused(e) => *e,
            AppendError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
            AppendError::TooLarge { .. } | AppendError::InflatesTooLarge { .. } => {
                ResponseError::MessageTooLarge
            }
            AppendError::Refused(_) | AppendError::Misplaced { .. } => ResponseError::InvalidRecord,
            AppendError::BeyondEnd { .. } => ResponseError::OffsetOutOfRange,
            AppendError::Deleted => ResponseError::UnknownTopicOrPartition,
            AppendError::TransactionEnded => ResponseError::InvalidTxnState,
            AppendError::Io(_) => ResponseError::KafkaStorageError,
        }
    }
}

/// The base offset a produce request's batches got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Newly written at this base offset.
    New(i64),
    /// A retry of a batch already stored at this base offset; nothing was written.
    Duplicate(i64),
}

impl Appended {
    pub fn base_offset(self) -> i64 {
        match self {
            Appended::New(o) | Appended::Duplicate(o) => o,
        }
    }
}

/// What a read found.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Whole batches starting with the one that holds the requested offset (maybe empty).
    Batches(Bytes),
    /// The offset is before the log start or after the end.
    OutOfRange,
}

#[derive(Debug, Clone, Copy)]
struct SentBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    /// The batch's max timestamp as stored (its append time on a LogAppendTime topic).
    max_timestamp: i64,
}

/// Idempotence state of one producer id on this partition.
#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    /// The epoch of the coordinator of the last marker written for this producer: a marker
    /// from an older one is refused.
    coordinator_epoch: i32,
    recent: VecDeque<SentBatch>,
}

/// What a partition remembers of one producer (see [`PartitionLog::active_producers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub txn_start_offset: i64,
}

/// One partition's log.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    /// Segments in offset order; the last is the active one. Never empty.
    segments: Vec<Segment>,
    config: LogConfig,
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: producer id -> offset of its first batch in this partition.
    open_txns: HashMap<i64, i64>,
    /// Transactional producers whose first batch here is being checked with their transaction
    /// coordinator (KIP-890): producer id -> the check's guard. A marker for the producer
    /// ends the check, so a batch checked before its transaction ended cannot open a new one.
    verifying: HashMap<i64, u64>,
    /// The last guard handed out.
    last_guard: u64,
    /// Aborted transactions still (partly) in the log, in marker order.
    aborted: Vec<AbortedTxn>,
    /// The log start offset DeleteRecords set (0 if never), kept in `log-start-offset`; it may
    /// lie inside the first segment.
    deleted_before: i64,
    /// Whether bytes were written since the last fsync (for interval flushing).
    dirty: bool,
    /// Set when the topic is deleted; a handle still held by a request then refuses all I/O,
    /// so it can't touch the directory of a re-created topic of the same name.
    deleted: bool,
    /// A replicated partition's high watermark: the end of what every in-sync replica holds,
    /// below which consumers read. `None` on a single node, where it is the log end.
    high_watermark: Option<i64>,
    /// The leader epoch stamped on the batches this node writes as leader.
    leader_epoch: i32,
    /// Each leader epoch of a replicated partition and the first offset written in it, in order
    /// (Kafka's leader-epoch cache, KIP-101), kept in `leader-epochs`. Empty on a single node.
    epochs: Vec<(i32, i64)>,
}

/// The leader epochs in `path` (none if it is missing or unreadable: a single node's log).
fn read_epochs(path: &Path) -> Vec<(i32, i64)> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (epoch, start) = line.split_once(' ')?;
            Some((epoch.parse().ok()?, start.parse().ok()?))
        })
        .collect()
}

/// What opening a log found, for the startup log line and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenReport {
    pub segments: usize,
    pub truncated_bytes: u64,
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, cutting any torn tail of the active segment.
    pub fn open(dir: &Path, config: LogConfig) -> io::Result<(Self, OpenReport)> {
        fs::create_dir_all(dir)?;
        // A clean a crash interrupted is finished (or dropped) first.
        let swapped = clean::recover(dir)?;
        let mut bases: Vec<i64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        bases.sort_unstable();
        let mut log = Self {
            dir: dir.to_path_buf(),
            segments: Vec::with_capacity(bases.len().max(1)),
            config,
            producers: HashMap::new(),
            open_txns: HashMap::new(),
            verifying: HashMap::new(),
            last_guard: 0,
            aborted: Vec::new(),
            deleted_before: fs::read_to_string(dir.join(START_FILE))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
            dirty: false,
            deleted: false,
            high_watermark: None,
            leader_epoch: LEADER_EPOCH,
            epochs: read_epochs(&dir.join(EPOCHS_FILE)),
        };
        let mut report = OpenReport::default();
        let last = bases.len().saturating_sub(1);
        for (i, base) in bases.into_iter().enumerate() {
            let (segment, recovery) =
                Segment::open(dir, base, i == last || swapped.contains(&base))?;
            report.truncated_bytes += recovery.truncated_bytes;
            for header in &recovery.headers {
                log.remember_producer(header);
            }
            log.segments.push(segment);
        }
        if log.segments.is_empty() {
            log.segments.push(Segment::create(dir, 0)?);
        }
        // Epochs that start past the log's end were cut off with it.
        let end = log.segments.last().map_or(0, |s| s.next_offset);
        log.epochs.retain(|(_, start)| *start <= end);
        log.rebuild_transactions()?;
        // The segments give their descriptors back until something uses them.
        log.close_idle_files(Duration::ZERO);
        report.segments = log.segments.len();
        Ok((log, report))
    }

    /// Rebuilds the open transactions, the aborted-transaction index and the producer epochs
    /// markers raised: from the producer-state snapshot of the last roll plus the transactional
    /// batch headers from its segment on, or from every segment's headers without one.
    fn rebuild_transactions(&mut self) -> io::Result<()> {
        // From the producer-state snapshot of the last roll, if its segment is still there;
        // else from the first segment.
        let snapshot = fs::read(self.dir.join(SNAPSHOT_FILE))
            .ok()
            .and_then(|raw| serde_json::from_slice::<ProducerSnapshot>(&raw).ok())
            .filter(|s| self.segments.iter().any(|seg| seg.base_offset == s.offset));
        let mut from = 0;
        let active_base = self.active().base_offset;
        let snapshot_at = snapshot.as_ref().map(|s| s.offset);
        if let Some(snapshot) = snapshot {
            from = snapshot.offset;
            self.open_txns = snapshot.open.into_iter().collect();
            self.aborted = snapshot
                .aborted
                .into_iter()
                .map(|(producer_id, first_offset, last_offset)| AbortedTxn {
                    producer_id,
                    first_offset,
                    last_offset,
                })
                .collect();
            for (producer_id, epoch) in snapshot.epochs {
                let entry = self.producers.entry(producer_id).or_default();
                if epoch > entry.epoch {
                    entry.epoch = epoch;
                    entry.recent.clear();
                }
            }
            for (producer_id, epoch) in snapshot.coordinator_epochs {
                let entry = self.producers.entry(producer_id).or_default();
                entry.coordinator_epoch = entry.coordinator_epoch.max(epoch);
            }
        }
        let mut found = Vec::new();
        for segment in self.segments.iter().filter(|s| s.base_offset >= from) {
            for (position, header) in segment.headers_from(0)? {
                if !header.is_transactional() {
                    continue;
                }
                let marker = if header.is_control() {
                    let bytes = segment.read(position, header.total_len(), true)?;
                    Some(batch::control_marker(&bytes).unwrap_or(ABORT_AT_ZERO))
                } else {
                    None
                };
                found.push((header, marker));
            }
        }
        // Snapshot the state as of the active segment's base if the last one is older, so the
        // next start reads the active segment's headers only (with one segment, it does anyway).
        let mut snapshot_due = snapshot_at != Some(active_base) && self.segments.len() > 1;
        for (header, marker) in found {
            if snapshot_due && header.base_offset >= active_base {
                self.snapshot_on_open(active_base);
                snapshot_due = false;
            }
            self.track_transaction(&header, marker);
        }
        if snapshot_due {
            self.snapshot_on_open(active_base);
        }
        let start = self.log_start_offset();
        self.aborted.retain(|a| a.last_offset >= start);
        Ok(())
    }

    /// Updates the transaction state with one appended transactional batch; `marker` is what a
    /// control batch says.
    fn track_transaction(&mut self, header: &BatchHeader, marker: Option<Marker>) {
        if !header.is_transactional() || !header.has_producer_id() {
            return;
        }
        let Some(Marker {
            commit,
            coordinator_epoch,
        }) = marker
        else {
            self.open_txns
                .entry(header.producer_id)
                .or_insert(header.base_offset);
            return;
        };
        // A marker written with a bumped epoch fences the older epoch here too.
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch > entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.recent.clear();
        }
        entry.coordinator_epoch = entry.coordinator_epoch.max(coordinator_epoch);
        if let Some(first_offset) = self.open_txns.remove(&header.producer_id)
            && !commit
        {
            self.aborted.push(AbortedTxn {
                producer_id: header.producer_id,
                first_offset,
                last_offset: header.base_offset,
            });
        }
    }

    /// The last stable offset: the first offset of the earliest open transaction, or the high
    /// watermark when none is open, and never below the log start (an open transaction whose
    /// first records were deleted holds it there). Read-committed consumers read up to it.
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.high_watermark();
        self.open_txns
            .values()
            .copied()
            .min()
            .map_or(high_watermark, |first| first.min(high_watermark))
            .max(self.log_start_offset())
    }

    /// The end of what every in-sync replica holds (the log end on a single node): consumers
    /// read below it.
    pub fn high_watermark(&self) -> i64 {
        let end = self.next_offset();
        self.high_watermark.map_or(end, |hw| hw.min(end))
    }

    /// Whether the log is a replica of a cluster's partition (it has a high watermark of its own).
    pub fn is_replicated(&self) -> bool {
        self.high_watermark.is_some()
    }

    /// Sets the high watermark of a replicated partition (it is then never above the log end).
    pub fn set_high_watermark(&mut self, offset: i64) {
        self.high_watermark = Some(offset.max(self.log_start_offset()));
    }

    /// The leader epoch the batches written from now on carry.
    pub fn set_leader_epoch(&mut self, epoch: i32) {
        self.leader_epoch = epoch;
    }

    /// Records that leader epoch `epoch` starts at `start` (a new leader's log end, or the
    /// first replicated batch of that epoch), if it is newer than the last one known.
    pub fn assign_epoch(&mut self, epoch: i32, start: i64) -> io::Result<()> {
        if self.epochs.last().is_some_and(|(last, _)| *last >= epoch) {
            return Ok(());
        }
        self.epochs.push((epoch, start));
        self.write_epochs()
    }

    /// The latest leader epoch this log has records or a start of (-1: none).
    pub fn latest_epoch(&self) -> i32 {
        self.epochs.last().map_or(-1, |(epoch, _)| *epoch)
    }

    /// OffsetForLeaderEpoch: the largest epoch at most `epoch` and the offset where it ended
    /// (where the next epoch starts, or the log end for the latest). An epoch older than every
    /// epoch the log knows ended where the oldest known starts, as Kafka answers (a consumer
    /// that read an empty partition at epoch 0 is not told its position was cut off when the
    /// next leader, at epoch 1, has the same empty log). A log without epochs (a single node)
    /// is one epoch, the current.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        if self.epochs.is_empty() {
            return if (0..=self.leader_epoch).contains(&epoch) {
                (self.leader_epoch, self.next_offset())
            } else {
                (-1, -1)
            };
        }
        let Some(at) = self.epochs.iter().rposition(|(e, _)| *e <= epoch) else {
            return (epoch, self.epochs[0].1);
        };
        let end = self
            .epochs
            .get(at + 1)
            .map_or(self.next_offset(), |(_, start)| *start);
        (self.epochs[at].0, end)
    }

    fn write_epochs(&self) -> io::Result<()> {
        let text: String = self
            .epochs
            .iter()
            .map(|(epoch, start)| format!("{epoch} {start}\n"))
            .collect();
        let tmp = self.dir.join(format!("{EPOCHS_FILE}.tmp"));
        fs::write(&tmp, text)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, self.dir.join(EPOCHS_FILE))
    }

    /// Appends batches a follower fetched from its leader, as they are: their offsets, leader
    /// epochs and producers' state, after checking each is whole and starts at or past where
    /// the log ends. Returns the new log end.
    pub fn append_replica(&mut self, batches: &[u8]) -> Result<i64, AppendError> {
        if self.deleted {
            return Err(AppendError::Deleted);
        }
        let mut position = 0;
        while position < batches.len() {
            let Ok(header) = batch::validate_stored(&batches[position..]) else {
                break; // a partial batch at the end of a fetch: fetched again next time
            };
            let bytes = &batches[position..position + header.total_len()];
            position += header.total_len();
            if header.last_offset() < self.next_offset() {
                continue; // already here
            }
            // A batch may start past the log end: a compacted log's batches leave gaps (the
            // leader's cleaner removed records), as Kafka's followers accept.
            if header.base_offset < self.next_offset() {
                return Err(AppendError::Misplaced {
                    base: header.base_offset,
                    last: header.last_offset(),
                    end: self.next_offset(),
                });
            }
            let epoch = i32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
            self.assign_epoch(epoch, header.base_offset)?;
            self.maybe_roll()?;
            self.segments
                .last_mut()
                .expect("never empty")
                .append(bytes, &header)?;
            self.remember_producer(&header);
            let marker = header
                .is_control()
                .then(|| batch::control_marker(bytes).unwrap_or(ABORT_AT_ZERO));
            self.track_transaction(&header, marker);
            self.dirty = true;
        }
        if self.config.fsync_each_append {
            self.sync()?;
        }
        Ok(self.next_offset())
    }

    /// Cuts the log back to end at `offset` (a batch boundary): a follower drops what its new
    /// leader may not have. The segments after it go, the one holding it is cut there, and the
    /// log is opened again from disk, which rebuilds the producers' and transactions' state.
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<()> {
        if offset >= self.next_offset() || self.deleted {
            return Ok(());
        }
        let keep = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .max(1);
        for segment in self.segments.drain(keep..) {
            segment.delete()?;
        }
        let last = self.segments.last_mut().expect("never empty");
        let position = last.position_of(offset.max(last.base_offset))?;
        last.cut_at(position.unwrap_or(last.size))?;
        let before = self.epochs.len();
        self.epochs.retain(|(_, start)| *start < offset);
        if self.epochs.len() != before {
            self.write_epochs()?;
        }
        let (high_watermark, epoch) = (self.high_watermark, self.leader_epoch);
        let (mut reopened, _) = PartitionLog::open(&self.dir, self.config.clone())?;
        reopened.high_watermark = high_watermark;
        reopened.leader_epoch = epoch;
        *self = reopened;
        Ok(())
    }

    /// The producers this partition remembers (DescribeProducers), by producer id: epoch, the
    /// sequence and max timestamp of their last batch (-1 if none is kept), and the first
    /// offset of their open transaction here (-1 if none).
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        let mut all: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(id, p)| ActiveProducer {
                producer_id: *id,
                epoch: p.epoch,
                last_sequence: p.recent.back().map_or(-1, |b| b.last_seq),
                last_timestamp: p.recent.back().map_or(-1, |b| b.max_timestamp),
                txn_start_offset: self.open_txns.get(id).copied().unwrap_or(-1),
            })
            .collect();
        all.sort_by_key(|p| p.producer_id);
        all
    }

    /// Whether `producer_id` has an open transaction in this partition.
    pub fn has_open_transaction(&self, producer_id: i64) -> bool {
        self.open_txns.contains_key(&producer_id)
    }

    /// Starts checking a transactional batch of `producer_id` with its coordinator (KIP-890),
    /// when it would open a transaction here: the guard to append it with
    /// ([`PartitionLog::append_checked`]), or `None` when the producer's transaction is open
    /// here already and the batch needs no check.
    pub fn begin_verification(&mut self, producer_id: i64) -> Option<u64> {
        if self.open_txns.contains_key(&producer_id) {
            return None;
        }
        // Checks under way together (pipelined batches) share one guard.
        let next = self.last_guard + 1;
        let guard = *self.verifying.entry(producer_id).or_insert(next);
        self.last_guard = self.last_guard.max(guard);
        Some(guard)
    }

    /// The aborted transactions that overlap offsets `from..=to`, for a read-committed fetch.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset <= to)
            .copied()
            .collect()
    }

    /// Ends the open transaction of `producer_id` here with a commit or abort marker. Returns the
    /// marker's offset, or `None` when the producer has no open transaction in this partition
    /// (nothing was written, or the marker already was: completing again is harmless).
    ///
    /// A marker is refused, as Kafka refuses it, when its producer epoch is older than the one
    /// this partition has seen (a newer instance of the producer wrote since), or its
    /// coordinator epoch is older than that of the last marker here: a coordinator cut off from
    /// the cluster, retrying a decision its successor has already carried out, must not end
    /// the producer's *next* transaction with it.
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        now_ms: i64,
    ) -> Result<Option<i64>, AppendError> {
        if self.deleted {
            return Err(AppendError::Deleted);
        }
        if let Some(known) = self.producers.get(&producer_id) {
            if producer_epoch < known.epoch {
                return Err(AppendError::InvalidProducerEpoch {
                    got: producer_epoch,
                    current: known.epoch,
                });
            }
            if marker.coordinator_epoch < known.coordinator_epoch {
                return Err(AppendError::CoordinatorFenced {
                    got: marker.coordinator_epoch,
                    current: known.coordinator_epoch,
                });
            }
        }
        // Whatever this marker ends, a check begun before it is void.
        self.verifying.remove(&producer_id);
        if !self.open_txns.contains_key(&producer_id) {
            return Ok(None);
        }
        let mut bytes = batch::control_batch(producer_id, producer_epoch, marker, now_ms);
        let mut header = batch::validate(&bytes)?;
        self.maybe_roll()?;
        header.base_offset = self.next_offset();
        batch::stamp(&mut bytes, header.base_offset, self.leader_epoch);
        self.segments
            .last_mut()
            .expect("never empty")
            .append(&bytes, &header)?;
        self.track_transaction(&header, Some(marker));
        self.dirty = true;
        if self.config.fsync_each_append {
            self.sync()?;
        }
        Ok(Some(header.base_offset))
    }

    /// First offset still stored (or not deleted by DeleteRecords).
    pub fn log_start_offset(&self) -> i64 {
        self.segments[0]
            .base_offset
            .max(self.deleted_before.min(self.next_offset()))
    }

    /// DeleteRecords: moves the log start offset up to `offset` (never down; `-1` is the high
    /// watermark), durably, and deletes the segments wholly before it (the active segment is
    /// rolled first when everything is deleted). Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, AppendError> {
        if self.deleted {
            return Err(AppendError::Deleted);
        }
        let end = self.next_offset();
        let offset = if offset == -1 { end } else { offset };
        if offset < 0 || offset > end {
            return Err(AppendError::BeyondEnd { offset, end });
        }
        if offset <= self.log_start_offset() {
            return Ok(self.log_start_offset());
        }
        self.write_start(offset)?;
        self.deleted_before = offset;
        if offset == end && self.active().size > 0 {
            self.roll()?;
        }
        while self.segments.len() > 1 && self.segments[0].next_offset <= offset {
            self.segments.remove(0).delete()?;
        }
        self.aborted.retain(|a| a.last_offset >= offset);
        Ok(self.log_start_offset())
    }

    /// Records `offset` as the log start, durably.
    fn write_start(&self, offset: i64) -> io::Result<()> {
        let tmp = self.dir.join(format!("{START_FILE}.tmp"));
        fs::write(&tmp, offset.to_string())?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, self.dir.join(START_FILE))?;
        super::sync::sync_dir(&self.dir)
    }

    /// Empties the log and starts it again at `offset`, past its end: a follower whose log
    /// ends before its leader's log start (retention or DeleteRecords removed what it lacks)
    /// starts over there, as Kafka's does. A crash midway leaves a log that starts over again.
    pub fn restart_at(&mut self, offset: i64) -> io::Result<()> {
        if self.deleted || offset <= self.next_offset() {
            return Ok(());
        }
        self.write_start(offset)?;
        for segment in self.segments.drain(..) {
            segment.delete()?;
        }
        drop(Segment::create(&self.dir, offset)?);
        match fs::remove_file(self.dir.join(SNAPSHOT_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.epochs.clear();
        self.write_epochs()?;
        super::sync::sync_dir(&self.dir)?;
        let (high_watermark, epoch) = (self.high_watermark, self.leader_epoch);
        let (mut reopened, _) = PartitionLog::open(&self.dir, self.config.clone())?;
        reopened.leader_epoch = epoch;
        reopened.high_watermark = high_watermark.map(|h| h.max(offset));
        *self = reopened;
        Ok(())
    }

    /// Offset the next record will get (the high watermark on a single node).
    pub fn next_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// Total bytes on disk.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Where the active segment starts: records from here on are not cleaned yet, whatever
    /// the topic's policy.
    pub fn active_segment_base(&self) -> i64 {
        self.active().base_offset
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has a segment")
    }

    /// Validates and appends the batches in one produce request's record set, all or nothing.
    pub fn append(&mut self, records: &mut [u8]) -> Result<Appended, AppendError> {
        let now_ms = crate::clock::now_ms();
        self.append_at(records, now_ms)
            .map(|(appended, _)| appended)
    }

    /// [`PartitionLog::append`] at `now_ms` on the broker's clock. Also returns the log append
    /// time of the stored batch on a LogAppendTime topic (the original one for a retried
    /// batch), and -1 on a CreateTime topic, as the produce answer reports it.
    pub fn append_at(
        &mut self,
        records: &mut [u8],
        now_ms: i64,
    ) -> Result<(Appended, i64), AppendError> {
        self.append_checked(records, now_ms, None)
    }

    /// [`PartitionLog::append_at`], for a transactional batch checked with its coordinator
    /// under `verified` (producer id, guard from [`PartitionLog::begin_verification`]): refused
    /// when the producer's transaction has no open batch here and a marker for the producer
    /// came since the check began (the transaction it was checked against has ended).
    pub fn append_checked(
        &mut self,
        records: &mut [u8],
        now_ms: i64,
        verified: Option<(i64, u64)>,
    ) -> Result<(Appended, i64), AppendError> {
        if self.deleted {
            return Err(AppendError::Deleted);
        }
        if let Some((producer_id, guard)) = verified
            && !self.open_txns.contains_key(&producer_id)
            && self.verifying.get(&producer_id) != Some(&guard)
        {
            return Err(AppendError::TransactionEnded);
        }
        let mut header = self.validate(records)?;
        let log_append_time = self.config.log_append_time;
        let append_time = |max_timestamp: i64| {
            if log_append_time { max_timestamp } else { -1 }
        };
        if let Some(duplicate) = self.check_sequences(std::slice::from_ref(&header))? {
            return Ok((
                Appended::Duplicate(duplicate.base_offset),
                append_time(duplicate.max_timestamp),
            ));
        }
        self.maybe_roll()?;
        header.base_offset = self.next_offset();
        if log_append_time {
            batch::set_log_append_time(records, &mut header, now_ms);
        }
        batch::stamp(records, header.base_offset, self.leader_epoch);
        let segment = self.segments.last_mut().expect("never empty");
        segment.append(records, &header)?;
        self.remember_producer(&header);
        self.track_transaction(&header, None);
        self.dirty = true;
        if self.config.fsync_each_append {
            self.sync()?;
        }
        Ok((Appended::New(header.base_offset), append_time(now_ms)))
    }

    /// Checks a produced batch before anything is stored, as Kafka's log validator does: one
    /// whole, well-formed batch (Produce v3+, record format v2, allows exactly one per
    /// partition, which also keeps the idempotence check sound), not a control batch, within
    /// the size limits, whose records are what its header says. Returns its header.
    fn validate(&self, records: &[u8]) -> Result<BatchHeader, AppendError> {
        let mut headers = Vec::new();
        let mut position = 0;
        while position < records.len() {
            let header = batch::validate(&records[position..])?;
            position += header.total_len();
            headers.push(header);
        }
        if headers.len() > 1 {
            return Err(BatchError::MultipleBatches(headers.len()).into());
        }
        let Some(header) = headers.pop() else {
            return Err(BatchError::Truncated {
                needed: batch::HEADER_LEN,
                available: 0,
            }
            .into());
        };
        if header.is_control() {
            return Err(AppendError::Refused(
                "control batches are written by the broker only",
            ));
        }
        if header.is_transactional() && !header.has_producer_id() {
            return Err(AppendError::Refused(
                "a transactional batch needs a producer id",
            ));
        }
        let size = records.len() as u64;
        let max = self
            .config
            .max_batch_bytes
            .min(self.config.segment_bytes.max(1 << 20) * 2);
        if size > max {
            return Err(AppendError::TooLarge { size, max });
        }
        // A compressed batch inflates to no more than the topic allows.
        let keys_required = self.config.compaction.is_some();
        super::records::check(
            records,
            &header,
            self.config.max_inflated_bytes,
            keys_required,
        )
        .map_err(|e| match e {
            BatchError::InflatedTooLarge { max } => AppendError::InflatesTooLarge { max },
            e => AppendError::Corrupt(e),
        })?;
        Ok(header)
    }

    /// Checks idempotent-producer sequences. Returns the stored batch if the request is a retry
    /// of batches already written.
    fn check_sequences(&self, headers: &[BatchHeader]) -> Result<Option<SentBatch>, AppendError> {
        let first = &headers[0];
        if !first.has_producer_id() || first.base_sequence < 0 {
            return Ok(None);
        }
        let Some(entry) = self.producers.get(&first.producer_id) else {
            // Unknown producer here (new, or its state aged out with old segments): accept.
            return Ok(None);
        };
        if first.producer_epoch < entry.epoch {
            return Err(AppendError::InvalidProducerEpoch {
                got: first.producer_epoch,
                current: entry.epoch,
            });
        }
        if first.producer_epoch > entry.epoch {
            // A bumped epoch restarts sequences at 0.
            return if first.base_sequence == 0 {
                Ok(None)
            } else {
                Err(AppendError::OutOfOrderSequence {
                    got: first.base_sequence,
                    expected: 0,
                })
            };
        }
        if let Some(sent) = entry
            .recent
            .iter()
            .find(|b| b.first_seq == first.base_sequence && b.last_seq == first.last_sequence())
        {
            return Ok(Some(*sent));
        }
        let expected = entry.recent.back().map_or(0, |b| {
            if b.last_seq == i32::MAX {
                0
            } else {
                b.last_seq + 1
            }
        });
        if first.base_sequence != expected {
            return Err(AppendError::OutOfOrderSequence {
                got: first.base_sequence,
                expected,
            });
        }
        Ok(None)
    }

    fn remember_producer(&mut self, header: &BatchHeader) {
        if !header.has_producer_id() || header.base_sequence < 0 || header.is_control() {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.recent.clear();
        }
        if entry.recent.len() == PRODUCER_WINDOW {
            entry.recent.pop_front();
        }
        entry.recent.push_back(SentBatch {
            first_seq: header.base_sequence,
            last_seq: header.last_sequence(),
            base_offset: header.base_offset,
            max_timestamp: header.max_timestamp,
        });
    }

    fn maybe_roll(&mut self) -> io::Result<()> {
        let active = self.active();
        // Index entries hold offsets relative to the segment base in 32 bits.
        let full = active.size >= self.config.segment_bytes
            || active.next_offset - active.base_offset >= i64::from(i32::MAX);
        let old = active.size > 0 && active.opened_at.elapsed() >= self.config.segment_age;
        if full || old {
            self.roll()?;
        }
        Ok(())
    }

    /// Starts a new active segment at the end, and snapshots the transaction state as of its
    /// base offset, so a restart reads the transactional batches of the segments from there on
    /// only.
    pub(super) fn roll(&mut self) -> io::Result<()> {
        let base = self.next_offset();
        self.active().sync()?;
        self.segments.push(Segment::create(&self.dir, base)?);
        // The old active segment's index is complete: its descriptor goes at once.
        let old = self.segments.len() - 2;
        self.segments[old].close_index();
        self.write_snapshot(base)
    }

    /// Closes the files of segments no read or append used for `idle` (they reopen on demand),
    /// so the broker's open files follow the partitions in use.
    pub fn close_idle_files(&mut self, idle: Duration) {
        for segment in &mut self.segments {
            segment.close_if_idle(idle);
        }
    }

    /// How many of this partition's segment `.log` files are open.
    pub fn open_segment_files(&self) -> usize {
        self.segments.iter().filter(|s| s.is_open()).count()
    }

    fn snapshot_on_open(&self, offset: i64) {
        if let Err(e) = self.write_snapshot(offset) {
            tracing::warn!(dir = %self.dir.display(), "could not write the producer-state snapshot: {e}");
        }
    }

    fn write_snapshot(&self, offset: i64) -> io::Result<()> {
        let mut open: Vec<(i64, i64)> = self.open_txns.iter().map(|(p, f)| (*p, *f)).collect();
        open.sort_unstable();
        let mut epochs: Vec<(i64, i16)> =
            self.producers.iter().map(|(p, e)| (*p, e.epoch)).collect();
        epochs.sort_unstable();
        let mut coordinator_epochs: Vec<(i64, i32)> = self
            .producers
            .iter()
            .filter(|(_, e)| e.coordinator_epoch != 0)
            .map(|(p, e)| (*p, e.coordinator_epoch))
            .collect();
        coordinator_epochs.sort_unstable();
        let snapshot = ProducerSnapshot {
            offset,
            open,
            aborted: self
                .aborted
                .iter()
                .map(|a| (a.producer_id, a.first_offset, a.last_offset))
                .collect(),
            epochs,
            coordinator_epochs,
        };
        let json = serde_json::to_vec(&snapshot).map_err(io::Error::other)?;
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        fs::write(&tmp, json)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, self.dir.join(SNAPSHOT_FILE))
    }

    /// Reads whole batches from the one holding `offset`, up to `max_bytes` (at least one batch
    /// when `at_least_one`), into memory: [`Self::read_batches`] for readers inside the broker
    /// (internal topics, tests).
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> io::Result<ReadOutcome> {
        match self.read_batches(offset, max_bytes, at_least_one, i64::MAX)? {
            Some(batches) => Ok(ReadOutcome::Batches(batches.records.into_bytes()?)),
            None => Ok(ReadOutcome::OutOfRange),
        }
    }

    /// A fetch's read: whole batches from the one holding `offset`, up to `max_bytes` (at least
    /// one batch when `at_least_one`), none starting at or past `until`; a large read stays in
    /// the segment file, to be sent from there ([`Segment::read_batches`]). `None` when the
    /// offset is out of range.
    pub fn read_batches(
        &self,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
        until: i64,
    ) -> io::Result<Option<Batches>> {
        if offset < self.log_start_offset() || offset > self.next_offset() {
            return Ok(None);
        }
        let slot = self.segments.partition_point(|s| s.base_offset <= offset);
        if offset < self.next_offset() {
            for segment in &self.segments[slot.saturating_sub(1)..] {
                if let Some(position) = segment.position_of(offset.max(segment.base_offset))? {
                    return segment
                        .read_batches(position, max_bytes, at_least_one, until)
                        .map(Some);
                }
            }
        }
        Ok(Some(Batches {
            records: Records::Memory(Bytes::new()),
            next_offset: self.next_offset(),
        }))
    }

    /// The offset and timestamp of the first record whose timestamp is at or after `timestamp`
    /// (ListOffsets by timestamp). Batch headers find the first batch whose max timestamp
    /// reaches it; only when that batch holds several records are they decoded to find the one.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> io::Result<Option<(i64, i64)>> {
        // Records before the log start offset (DeleteRecords) are gone, even if still on disk.
        let start = self.log_start_offset();
        Ok(self
            .stored_offset_for_timestamp(timestamp, start)?
            .map(|(offset, ts)| (offset.max(start), ts)))
    }

    fn stored_offset_for_timestamp(
        &self,
        timestamp: i64,
        start: i64,
    ) -> io::Result<Option<(i64, i64)>> {
        for segment in &self.segments {
            if segment.size == 0 || segment.max_timestamp < timestamp {
                continue;
            }
            for (position, header) in segment.headers_from(0)? {
                if header.max_timestamp < timestamp || header.last_offset() < start {
                    continue;
                }
                if header.records_count == 1 {
                    return Ok(Some((header.base_offset, header.max_timestamp)));
                }
                let bytes = segment.read(position, header.total_len(), true)?;
                match super::records::first_at_or_after(
                    &bytes,
                    timestamp,
                    self.config.max_inflated_bytes,
                ) {
                    Ok(Some(found)) => return Ok(Some(found)),
                    // The header's max timestamp overstated the records: look further.
                    Ok(None) => {}
                    Err(e) => {
                        // Records the broker can't decode (it stores batches unchecked past
                        // the header): the batch start is the closest answer it has.
                        tracing::warn!(
                            offset = header.base_offset,
                            "could not decode a batch for a timestamp lookup: {e}"
                        );
                        return Ok(Some((header.base_offset, header.max_timestamp)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The newest record timestamp and the offset of the batch holding it (ListOffsets -3).
    /// Each segment knows its own (see `Segment::max_timestamp_at`), so this does not read the
    /// log again for every request.
    pub fn max_timestamp(&self) -> io::Result<Option<(i64, i64)>> {
        let mut best: Option<(i64, i64)> = None;
        for segment in &self.segments {
            if let Some((ts, offset)) = segment.max_timestamp_at()?
                && best.is_none_or(|(_, newest)| ts > newest)
            {
                best = Some((offset, ts));
            }
        }
        Ok(best)
    }

    /// Deletes whole segments past the retention limits; the active segment is kept (rolled
    /// first when it alone is past the time limit). Returns how many segments were deleted.
    pub fn enforce_retention(&mut self, now_ms: i64) -> io::Result<usize> {
        if self.deleted {
            return Ok(0);
        }
        if let Some(limit) = self.config.retention {
            let active = self.active();
            if active.size > 0 && now_ms - active.max_timestamp > limit.as_millis() as i64 {
                self.roll()?;
            }
        }
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let expired = self
                .config
                .retention
                .is_some_and(|limit| now_ms - oldest.max_timestamp > limit.as_millis() as i64);
            let oversized = self
                .config
                .retention_bytes
                .is_some_and(|limit| self.size_bytes() - oldest.size >= limit);
            if !(expired || oversized) {
                break;
            }
            self.segments.remove(0).delete()?;
            deleted += 1;
        }
        let start = self.log_start_offset();
        self.aborted.retain(|a| a.last_offset >= start);
        Ok(deleted)
    }

    /// The clean due now, if this is a compacted log and one is (see `storage/clean.rs`).
    pub fn plan_clean(&self, now_ms: i64) -> io::Result<Option<clean::CleanPlan>> {
        let Some(compaction) = self.config.compaction.clone() else {
            return Ok(None);
        };
        if self.deleted {
            return Ok(None);
        }
        let limits = clean::Limits {
            compaction,
            segment_bytes: self.config.segment_bytes,
            max_inflated: self.config.max_inflated_bytes,
        };
        clean::plan(
            &self.dir,
            &self.segments,
            self.last_stable_offset(),
            now_ms,
            limits,
            &self.aborted,
        )
    }

    /// Puts a finished clean's segments in place of those it read; `None`, and nothing
    /// changed, if the log changed meanwhile under them or was deleted.
    pub fn finish_clean(
        &mut self,
        cleaned: clean::Cleaned,
    ) -> io::Result<Option<clean::CleanStats>> {
        if self.deleted {
            cleaned.discard();
            return Ok(None);
        }
        clean::install(cleaned, &self.dir, &mut self.segments)
    }

    /// Marks the log deleted (see the `deleted` field).
    pub fn mark_deleted(&mut self) {
        self.deleted = true;
        // A file closed as idle must not be reopened by path: the path may be a new topic's.
        for segment in &mut self.segments {
            segment.forget_files();
        }
    }

    /// fsyncs the active segment if anything was written since the last sync.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty && !self.deleted {
            self.active().sync()?;
            self.dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::batch::tests::sample_batch;

    /// A small log's settings for tests: 1 MiB segments, no retention, no fsync.
    pub(crate) fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 1 << 20,
            segment_age: Duration::from_secs(3600),
            retention: None,
            retention_bytes: None,
            fsync_each_append: false,
            max_batch_bytes: 1 << 20,
            max_inflated_bytes: 1 << 20,
            log_append_time: false,
            compaction: None,
        }
    }

    fn batches(bytes: &Bytes) -> Vec<BatchHeader> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let h = batch::validate(&bytes[pos..]).unwrap();
            pos += h.total_len();
            out.push(h);
        }
        out
    }

    /// A leader's log at epochs 0 then 2 (a write each), copied by a follower with
    /// append_replica: the follower learns the epochs from the batches, answers
    /// OffsetForLeaderEpoch as the leader does, and a cut drops the epochs past it, also after
    /// a reopen.
    #[test]
    fn replicated_batches_carry_their_leader_epochs_and_a_cut_forgets_the_later_ones() {
        let leader_dir = tempfile::tempdir().unwrap();
        let (mut leader, _) = PartitionLog::open(leader_dir.path(), config()).unwrap();
        leader.set_high_watermark(0);
        leader.assign_epoch(0, 0).unwrap();
        leader.append(&mut sample_batch(2, 1000)).unwrap();
        leader.set_leader_epoch(2);
        leader.assign_epoch(2, leader.next_offset()).unwrap();
        leader.append(&mut sample_batch(3, 1001)).unwrap();
        assert_eq!(leader.end_offset_for_epoch(0), (0, 2));
        assert_eq!(leader.end_offset_for_epoch(1), (0, 2));
        assert_eq!(leader.end_offset_for_epoch(2), (2, 5));

        let follower_dir = tempfile::tempdir().unwrap();
        let (mut follower, _) = PartitionLog::open(follower_dir.path(), config()).unwrap();
        follower.set_high_watermark(0);
        let ReadOutcome::Batches(all) = leader.read(0, 1 << 20, true).unwrap() else {
            panic!("the leader's batches");
        };
        assert_eq!(follower.append_replica(&all).unwrap(), 5);
        assert_eq!(follower.latest_epoch(), 2);
        assert_eq!(follower.end_offset_for_epoch(0), (0, 2));
        // Appending the same batches again is harmless.
        assert_eq!(follower.append_replica(&all).unwrap(), 5);

        follower.truncate_to(2).unwrap();
        assert_eq!(follower.next_offset(), 2);
        assert_eq!(follower.latest_epoch(), 0);
        drop(follower);
        let (follower, _) = PartitionLog::open(follower_dir.path(), config()).unwrap();
        assert_eq!((follower.next_offset(), follower.latest_epoch()), (2, 0));
    }

    /// A follower far behind starts over at its leader's log start: empty, from there, the
    /// leader's batches append, and so it stays when opened again.
    #[test]
    fn a_log_restarted_past_its_end_starts_there_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (mut leader, _) = PartitionLog::open(dir.path(), config()).unwrap();
        leader.set_high_watermark(0);
        for _ in 0..3 {
            leader.append(&mut sample_batch(2, 1000)).unwrap();
        }
        let ReadOutcome::Batches(tail) = leader.read(4, 1 << 20, true).unwrap() else {
            panic!("the leader's last batch");
        };
        let follower_dir = tempfile::tempdir().unwrap();
        let (mut follower, _) = PartitionLog::open(follower_dir.path(), config()).unwrap();
        follower.set_high_watermark(0);
        follower.append(&mut sample_batch(1, 1000)).unwrap();
        follower.restart_at(4).unwrap();
        assert_eq!(
            (follower.log_start_offset(), follower.next_offset()),
            (4, 4)
        );
        assert_eq!(follower.high_watermark(), 4);
        assert_eq!(follower.append_replica(&tail).unwrap(), 6);
        drop(follower);
        let (follower, _) = PartitionLog::open(follower_dir.path(), config()).unwrap();
        assert_eq!(
            (follower.log_start_offset(), follower.next_offset()),
            (4, 6)
        );
    }

    /// A new leader's log knows only its own epoch, 3, from offset 2: an older epoch ended
    /// there (Kafka's answer), so a consumer that read up to 2 at epoch 1 keeps its position.
    #[test]
    fn an_epoch_older_than_the_log_knows_ended_where_the_oldest_known_starts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        log.set_high_watermark(0);
        log.append(&mut sample_batch(2, 1000)).unwrap();
        log.set_leader_epoch(3);
        log.assign_epoch(3, log.next_offset()).unwrap();
        assert_eq!(log.end_offset_for_epoch(1), (1, 2));
        assert_eq!(log.end_offset_for_epoch(3), (3, 2));
        assert_eq!(log.end_offset_for_epoch(4), (3, 2));
    }

    #[test]
    fn appends_assign_consecutive_offsets_and_reads_find_the_containing_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        assert_eq!(
            log.append(&mut sample_batch(3, 10)).unwrap(),
            Appended::New(0)
        );
        assert_eq!(
            log.append(&mut sample_batch(2, 20)).unwrap(),
            Appended::New(3)
        );
        assert_eq!(log.next_offset(), 5);
        let ReadOutcome::Batches(b) = log.read(4, 1 << 20, true).unwrap() else {
            panic!("in range")
        };
        assert_eq!(
            batches(&b)[0].base_offset,
            3,
            "whole batch holding offset 4"
        );
        assert!(matches!(
            log.read(6, 100, true).unwrap(),
            ReadOutcome::OutOfRange
        ));
    }

    #[test]
    fn a_deleted_log_never_reopens_its_files_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        log.append(&mut sample_batch(1, 5)).unwrap();
        log.close_idle_files(Duration::ZERO);
        log.mark_deleted();
        // A new topic of the same name could have the same paths by now.
        assert!(log.read(0, 1 << 20, true).is_err());
        assert_eq!(log.open_segment_files(), 0);
    }

    #[test]
    fn torn_tail_is_cut_and_the_rest_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = PartitionLog::open(dir.path(), config()).unwrap();
            for _ in 0..10 {
                log.append(&mut sample_batch(1, 5)).unwrap();
            }
        }
        let file = dir.path().join("00000000000000000000.log");
        let len = fs::metadata(&file).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len(len - 3).unwrap();
        let (log, report) = PartitionLog::open(dir.path(), config()).unwrap();
        assert_eq!(log.next_offset(), 9);
        assert!(report.truncated_bytes > 0);
    }

    #[test]
    fn rolls_by_size_and_retention_by_bytes_moves_the_start_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config();
        cfg.segment_bytes = 200;
        cfg.retention_bytes = Some(400);
        let (mut log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
        for _ in 0..20 {
            log.append(&mut sample_batch(1, 5)).unwrap();
        }
        assert!(log.segment_count() > 3);
        assert!(log.enforce_retention(0).unwrap() > 0);
        assert!(log.log_start_offset() > 0);
        assert!(log.size_bytes() < 600);
        assert!(matches!(
            log.read(0, 100, true).unwrap(),
            ReadOutcome::OutOfRange
        ));
    }

    #[test]
    fn two_batches_in_one_request_are_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        let mut two = sample_batch(1, 5);
        two.extend_from_slice(&sample_batch(1, 5));
        assert!(matches!(
            log.append(&mut two),
            Err(AppendError::Corrupt(BatchError::MultipleBatches(2)))
        ));
        assert_eq!(log.next_offset(), 0);
    }

    #[test]
    fn idempotent_retry_is_not_stored_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        let mut b = sample_batch(2, 5);
        b[43..51].copy_from_slice(&7i64.to_be_bytes()); // producer id
        b[51..53].copy_from_slice(&0i16.to_be_bytes()); // epoch
        b[53..57].copy_from_slice(&0i32.to_be_bytes()); // base sequence
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(log.append(&mut b.clone()).unwrap(), Appended::New(0));
        assert_eq!(log.append(&mut b.clone()).unwrap(), Appended::Duplicate(0));
        assert_eq!(log.next_offset(), 2);
        // A gap in sequences is refused.
        b[53..57].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            log.append(&mut b),
            Err(AppendError::OutOfOrderSequence { .. })
        ));
    }

    /// A one-record transactional batch of producer `pid` (epoch 0) with sequence `seq`.
    fn txn_batch(pid: i64, seq: i32) -> Vec<u8> {
        txn_batch_of(pid, 0, seq)
    }

    /// A transactional batch of producer `pid` at `epoch`.
    fn txn_batch_of(pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
        let mut b = sample_batch(1, 5);
        b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn transactions_hold_the_last_stable_offset_and_aborts_are_indexed_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = PartitionLog::open(dir.path(), config()).unwrap();
            log.append(&mut sample_batch(1, 5)).unwrap(); // 0
            log.append(&mut txn_batch(7, 0)).unwrap(); // 1: producer 7 opens
            log.append(&mut txn_batch(8, 0)).unwrap(); // 2: producer 8 opens
            log.append(&mut txn_batch(7, 1)).unwrap(); // 3
            assert_eq!(log.last_stable_offset(), 1);
            assert_eq!(log.append_marker(7, 0, marker(false), 9).unwrap(), Some(4));
            assert_eq!(log.last_stable_offset(), 2, "producer 8 is still open");
            assert_eq!(
                log.append_marker(7, 0, marker(false), 9).unwrap(),
                None,
                "already ended"
            );
            assert_eq!(log.append_marker(8, 0, marker(true), 9).unwrap(), Some(5));
            assert_eq!(log.last_stable_offset(), 6);
            log.append(&mut txn_batch(8, 1)).unwrap(); // 6: producer 8 opens again
            assert_eq!(log.last_stable_offset(), 6);
        }
        let (mut log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        assert_eq!(log.last_stable_offset(), 6);
        let aborted = AbortedTxn {
            producer_id: 7,
            first_offset: 1,
            last_offset: 4,
        };
        assert_eq!(log.aborted_between(0, 6), vec![aborted]);
        assert_eq!(log.aborted_between(5, 6), vec![]);
        // The marker's epoch fences older epochs of that producer here.
        assert_eq!(log.append_marker(8, 2, marker(false), 9).unwrap(), Some(7));
        assert!(matches!(
            log.append(&mut txn_batch(8, 2)),
            Err(AppendError::InvalidProducerEpoch { got: 0, current: 2 })
        ));
        assert_eq!(log.aborted_between(0, 10).len(), 2);
        // Clients may not write control batches.
        assert!(matches!(
            log.append(&mut batch::control_batch(9, 0, marker(true), 5)),
            Err(AppendError::Refused(_))
        ));
    }

    /// A marker of coordinator epoch 0 (a single node's coordinator).
    fn marker(commit: bool) -> Marker {
        Marker {
            commit,
            coordinator_epoch: 0,
        }
    }

    /// The history of the Jepsen test that found it: coordinator A (epoch 1) decided to commit
    /// transaction 1 and was cut off; its successor B (epoch 2) finished it and the producer
    /// went on with transaction 2, which it aborts. A's retried commit marker, arriving while
    /// transaction 2 is open, must not commit it; across a reopen as well.
    #[test]
    fn a_replaced_coordinators_late_marker_is_refused_and_ends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let by = |coordinator_epoch, commit| Marker {
            commit,
            coordinator_epoch,
        };
        let (mut log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        log.append(&mut txn_batch(7, 0)).unwrap(); // 0: transaction 1
        assert_eq!(log.append_marker(7, 0, by(2, true), 9).unwrap(), Some(1));
        log.append(&mut txn_batch(7, 1)).unwrap(); // 2: transaction 2 opens
        assert!(matches!(
            log.append_marker(7, 0, by(1, true), 9),
            Err(AppendError::CoordinatorFenced { got: 1, current: 2 })
        ));
        assert_eq!(log.last_stable_offset(), 2, "transaction 2 is still open");
        drop(log);
        let (mut log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        assert!(matches!(
            log.append_marker(7, 0, by(1, true), 9),
            Err(AppendError::CoordinatorFenced { .. })
        ));
        // An instance fenced by a newer epoch gets no marker written either.
        log.append(&mut txn_batch_of(7, 1, 0)).unwrap(); // 3: epoch 1 writes
        assert!(matches!(
            log.append_marker(7, 0, by(2, false), 9),
            Err(AppendError::InvalidProducerEpoch { got: 0, current: 1 })
        ));
        assert_eq!(log.append_marker(7, 1, by(2, false), 9).unwrap(), Some(4));
        assert_eq!(log.aborted_between(0, 10).len(), 1);
    }

    /// KIP-890's guard: a batch checked with its coordinator opens a transaction here only if
    /// no marker for its producer came while it was checked (the transaction it was checked
    /// against may have ended); a batch of a transaction open here needs no check.
    #[test]
    fn a_marker_during_a_check_voids_it_and_an_open_transaction_needs_none() {
        let dir = tempfile::tempdir().unwrap();
        let marker = Marker {
            commit: false,
            coordinator_epoch: 0,
        };
        let (mut log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        let guard = log.begin_verification(7).expect("a first batch is checked");
        log.append_checked(&mut txn_batch(7, 0), 9, Some((7, guard)))
            .unwrap();
        assert_eq!(log.begin_verification(7), None, "its transaction is open");
        assert_eq!(log.append_marker(7, 0, marker, 9).unwrap(), Some(1));

        // Checked, then the coordinator's abort marker, then the batch: refused, nothing open.
        let guard = log.begin_verification(7).unwrap();
        assert_eq!(log.append_marker(7, 0, marker, 9).unwrap(), None);
        assert!(matches!(
            log.append_checked(&mut txn_batch(7, 1), 9, Some((7, guard))),
            Err(AppendError::TransactionEnded)
        ));
        assert_eq!(log.last_stable_offset(), log.next_offset());
        // Checks under way together share a guard, which only the producer's own marker voids.
        let first = log.begin_verification(7).unwrap();
        assert_ne!(first, guard, "a voided guard is not handed out again");
        assert_eq!(log.begin_verification(7), Some(first));
        assert_eq!(log.append_marker(8, 0, marker, 9).unwrap(), None);
        log.append_checked(&mut txn_batch(7, 1), 9, Some((7, first)))
            .unwrap();
        assert_eq!(log.last_stable_offset(), 2, "the checked batch opened one");
    }

    #[test]
    fn the_producer_state_snapshot_of_a_roll_gives_the_same_state_as_a_full_scan() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config();
        cfg.segment_bytes = 200;
        let state = |log: &PartitionLog| (log.last_stable_offset(), log.aborted_between(0, 1000));
        let expected = {
            let (mut log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
            log.append(&mut txn_batch(7, 0)).unwrap();
            log.append(&mut txn_batch(8, 0)).unwrap();
            log.append(&mut txn_batch(7, 1)).unwrap();
            log.append_marker(7, 0, marker(false), 9).unwrap();
            for seq in 1..6 {
                log.append(&mut txn_batch(8, seq)).unwrap();
            }
            assert!(log.segment_count() > 2, "rolled");
            state(&log)
        };
        assert_eq!(expected.0, 1, "producer 8 is open from offset 1");
        assert_eq!(expected.1.len(), 1);
        assert!(dir.path().join(SNAPSHOT_FILE).exists());
        let (log, _) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        assert_eq!(state(&log), expected, "from the snapshot");
        drop(log);
        fs::write(dir.path().join(SNAPSHOT_FILE), b"{not json").unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
        assert_eq!(state(&log), expected, "from every segment");
        let rewritten: ProducerSnapshot =
            serde_json::from_slice(&fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap()).unwrap();
        assert_eq!(
            rewritten.offset,
            log.segments.last().unwrap().base_offset,
            "opening snapshots the state at the active segment"
        );
        // The marker epoch survives too: producer 7 was fenced at epoch 3.
        log.append_marker(7, 3, marker(false), 9).unwrap();
        assert!(log.append_marker(8, 3, marker(true), 9).unwrap().is_some());
        drop(log);
        let (mut log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        assert!(matches!(
            log.append(&mut txn_batch(8, 6)),
            Err(AppendError::InvalidProducerEpoch { got: 0, current: 3 })
        ));
    }

    #[test]
    fn log_append_time_stamps_the_batch_and_timestamp_lookups_use_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config();
        cfg.log_append_time = true;
        let (mut log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
        let mut b = sample_batch(3, 10);
        assert_eq!(
            log.append_at(&mut b, 5000).unwrap(),
            (Appended::New(0), 5000)
        );
        let ReadOutcome::Batches(stored) = log.read(0, 1 << 20, true).unwrap() else {
            panic!("in range")
        };
        let header = batches(&stored)[0];
        assert!(header.is_log_append_time());
        assert_eq!((header.base_timestamp, header.max_timestamp), (10, 5000));
        // Every record of the batch has the append time.
        assert_eq!(log.offset_for_timestamp(4000).unwrap(), Some((0, 5000)));
        assert_eq!(log.offset_for_timestamp(5001).unwrap(), None);
    }
}
