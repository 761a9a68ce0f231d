//! Topics: names, stable ids, per-topic config, and the partitions with their logs.
//!
//! Each topic lives in `<data-dir>/topics/<name>/`: a `topic.json` with its id, partition count
//! and config overrides, and one directory per partition holding that partition's segments.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::{BrokerConfig, FsyncPolicy};
use crate::storage::{AppendError, Appended, CleanStats, Compaction, LogConfig, PartitionLog};

/// One topic config the broker accepts: its name, its default, how a value is checked and
/// stored, and whether the broker acts on it. [`TOPIC_CONFIGS`] lists them all; CreateTopics
/// validation, DescribeConfigs, CreateTopics' answer and the partitions' [`LogConfig`] all read
/// that one table.
pub struct TopicConfigKey {
    pub name: &'static str,
    /// Whether the broker acts on the value. `false`: a value other than the default is only
    /// stored and reported (and logged as such when a topic is created with it).
    pub enforced: bool,
    /// The value when a topic does not override it (from the broker's settings where it has
    /// one).
    default: fn(&Defaults) -> String,
    /// Checks a value and stores it in the typed config; the error is the reason sent to the
    /// client with `INVALID_CONFIG`.
    apply: fn(&mut TopicConfig, &str) -> Result<(), &'static str>,
}

impl std::fmt::Debug for TopicConfigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicConfigKey")
            .field("name", &self.name)
            .field("enforced", &self.enforced)
            .finish_non_exhaustive()
    }
}

/// How record timestamps are set (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's timestamps are kept.
    #[default]
    CreateTime,
    /// The broker stamps each batch with the time it appends it, as Kafka does.
    LogAppendTime,
}

/// A topic's effective configuration, typed: the table's keys after parsing, with the topic's
/// overrides over the defaults. Keys that change nothing in the broker (`compression.type`,
/// `min.insync.replicas`) are only validated, so they have no field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicConfig {
    /// `cleanup.policy` includes `delete`: retention deletes old segments.
    pub delete: bool,
    /// `cleanup.policy` includes `compact`: the log cleaner keeps each key's latest record.
    pub compact: bool,
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio` in millionths (a float would not be `Eq`).
    pub min_dirty_ratio_ppm: u32,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub max_message_bytes: u64,
    pub timestamp_type: TimestampType,
    /// The broker is a node of a cluster (a topic may then have several replicas).
    clustered: bool,
}

/// The smallest `segment.bytes` (Kafka 4's minimum): smaller segments would let one client make
/// a file per batch.
pub const MIN_SEGMENT_BYTES: u64 = 1 << 20;

fn number(value: &str) -> Result<i64, &'static str> {
    value.parse::<i64>().map_err(|_| "not a number")
}

fn non_negative(value: &str) -> Result<i64, &'static str> {
    match number(value)? {
        n if n < 0 => Err("must not be negative"),
        n => Ok(n),
    }
}

/// Every topic config the broker accepts; anything else is refused with `INVALID_CONFIG`.
pub static TOPIC_CONFIGS: &[TopicConfigKey] = &[
    TopicConfigKey {
        name: "cleanup.policy",
        // `delete`: retention deletes old segments; `compact`: the log cleaner keeps each key's
        // latest record (storage/clean.rs); both together do both.
        enforced: true,
        default: |_| "delete".into(),
        apply: |c, v| {
            let policies: Vec<&str> = v.split(',').map(str::trim).collect();
            if policies.is_empty() || policies.iter().any(|p| !matches!(*p, "delete" | "compact")) {
                return Err("must be delete, compact, or both (compact,delete)");
            }
            c.delete = policies.contains(&"delete");
            c.compact = policies.contains(&"compact");
            Ok(())
        },
    },
    TopicConfigKey {
        name: "compression.type",
        // Batches are stored as produced: only `producer` (the default) is what happens.
        enforced: false,
        default: |_| "producer".into(),
        apply: |_, v| match v {
            "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(()),
            _ => Err("must be one of producer, uncompressed, gzip, snappy, lz4, zstd"),
        },
    },
    TopicConfigKey {
        name: "delete.retention.ms",
        enforced: true,
        default: |_| "86400000".into(),
        apply: |c, v| {
            c.delete_retention_ms = non_negative(v)?;
            Ok(())
        },
    },
    TopicConfigKey {
        name: "max.compaction.lag.ms",
        enforced: true,
        default: |_| i64::MAX.to_string(),
        apply: |c, v| {
            c.max_compaction_lag_ms = number(v)?;
            if c.max_compaction_lag_ms < 1 {
                return Err("must be at least 1");
            }
            Ok(())
        },
    },
    TopicConfigKey {
        name: "max.message.bytes",
        enforced: true,
        default: |_| "104857600".into(),
        apply: |c, v| {
            c.max_message_bytes = u64::try_from(number(v)?).map_err(|_| "must not be negative")?;
            Ok(())
        },
    },
    TopicConfigKey {
        name: "message.timestamp.type",
        enforced: true,
        default: |_| "CreateTime".into(),
        apply: |c, v| {
            c.timestamp_type = match v {
                "CreateTime" => TimestampType::CreateTime,
                "LogAppendTime" => TimestampType::LogAppendTime,
                _ => return Err("must be CreateTime or LogAppendTime"),
            };
            Ok(())
        },
    },
    TopicConfigKey {
        name: "min.cleanable.dirty.ratio",
        enforced: true,
        default: |_| "0.5".into(),
        apply: |c, v| match v.parse::<f64>() {
            Ok(ratio) if (0.0..=1.0).contains(&ratio) => {
                c.min_dirty_ratio_ppm = (ratio * 1e6).round() as u32;
                Ok(())
            }
            _ => Err("must be a number from 0 to 1"),
        },
    },
    TopicConfigKey {
        name: "min.compaction.lag.ms",
        enforced: true,
        default: |_| "0".into(),
        apply: |c, v| {
            c.min_compaction_lag_ms = non_negative(v)?;
            Ok(())
        },
    },
    TopicConfigKey {
        name: "min.insync.replicas",
        // On a single node trivially: the one replica is always in sync. In a cluster an
        // acks=all produce needs this many in-sync replicas (handlers/produce.rs).
        enforced: true,
        default: |_| "1".into(),
        apply: |c, v| match number(v)? {
            1 => Ok(()),
            n if n < 1 => Err("must be at least 1"),
            _ if c.clustered => Ok(()),
            _ => Err("this single-node broker keeps one replica, so at most 1"),
        },
    },
    TopicConfigKey {
        name: "retention.bytes",
        enforced: true,
        default: |d| d.retention_bytes.to_string(),
        apply: |c, v| {
            c.retention_bytes = number(v)?;
            Ok(())
        },
    },
    TopicConfigKey {
        name: "retention.ms",
        enforced: true,
        default: |d| d.retention_ms.to_string(),
        apply: |c, v| {
            c.retention_ms = number(v)?;
            Ok(())
        },
    },
    TopicConfigKey {
        name: "segment.bytes",
        enforced: true,
        default: |d| d.segment_bytes.to_string(),
        apply: |c, v| {
            let n = number(v)?;
            if !(MIN_SEGMENT_BYTES as i64..=1 << 30).contains(&n) {
                return Err("must be between 1048576 and 1073741824");
            }
            c.segment_bytes = n as u64;
            Ok(())
        },
    },
    TopicConfigKey {
        name: "segment.ms",
        enforced: true,
        default: |d| d.segment_ms.to_string(),
        apply: |c, v| {
            c.segment_ms = number(v)?;
            Ok(())
        },
    },
];

/// One topic config as DescribeConfigs and CreateTopics report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    /// Set on the topic (at creation), rather than the default.
    pub overridden: bool,
}

impl TopicConfig {
    /// The storage settings of the topic's partitions.
    fn log_config(&self, fsync_each_append: bool, max_request_bytes: u64) -> LogConfig {
        let positive = |v: i64| u64::try_from(v).ok();
        LogConfig {
            max_batch_bytes: self.max_message_bytes,
            max_inflated_bytes: self.max_message_bytes.max(max_request_bytes),
            segment_bytes: self.segment_bytes,
            segment_age: Duration::from_millis(positive(self.segment_ms).unwrap_or(u64::MAX)),
            // A compacted topic without `delete` keeps its (latest) records forever.
            retention: positive(self.retention_ms)
                .filter(|_| self.delete)
                .map(Duration::from_millis),
            retention_bytes: positive(self.retention_bytes).filter(|_| self.delete),
            fsync_each_append,
            log_append_time: self.timestamp_type == TimestampType::LogAppendTime,
            compaction: self.compact.then(|| Compaction {
                delete_retention: Duration::from_millis(self.delete_retention_ms as u64),
                min_dirty_ratio: f64::from(self.min_dirty_ratio_ppm) / 1e6,
                min_lag: Duration::from_millis(self.min_compaction_lag_ms as u64),
                max_lag: positive(self.max_compaction_lag_ms)
                    .filter(|ms| *ms < i64::MAX as u64)
                    .map(Duration::from_millis),
            }),
        }
    }
}

#[derive(Debug, Error)]
pub enum TopicError {
    #[error("topic '{0}' already exists")]
    AlreadyExists(String),
    #[error("invalid topic name '{0}': use 1-249 characters from [a-zA-Z0-9._-]")]
    InvalidName(String),
    #[error("invalid partition count {0}")]
    InvalidPartitions(i32),
    #[error("the topic has {current} partitions and can only grow; {requested} asked")]
    CannotShrink { current: i32, requested: i32 },
    #[error("invalid config {key}={value}: {reason}")]
    InvalidConfig {
        key: String,
        value: String,
        reason: &'static str,
    },
    #[error("unknown topic '{0}'")]
    Unknown(String),
    #[error(
        "topic '{name}' collides with the existing topic '{existing}' (names that differ only in case or in '.' versus '_' would share a directory or metric names)"
    )]
    Collides { name: String, existing: String },
    #[error("another topic change is in progress; try again")]
    Busy,
    #[error(
        "topic '{0}' has data on disk that this broker could not load (see its log); move topics/{0} away to reuse the name"
    )]
    Unloadable(String),
    #[error("storage I/O: {0}")]
    Io(#[from] io::Error),
}

impl TopicError {
    /// The error a client is answered with.
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
            TopicError::InvalidName(_) | TopicError::Collides { .. } => {
                ResponseError::InvalidTopicException
            }
            TopicError::InvalidPartitions(_) | TopicError::CannotShrink { .. } => {
                ResponseError::InvalidPartitions
            }
            TopicError::InvalidConfig { .. } => ResponseError::InvalidConfig,
            TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
            TopicError::Unloadable(_) => ResponseError::TopicAlreadyExists,
            // As Kafka answers a topic still being created: the client asks again.
            TopicError::Busy => ResponseError::LeaderNotAvailable,
            TopicError::Io(_) => ResponseError::KafkaStorageError,
        }
    }
}

/// What a produce to one partition got, as the produce answer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub appended: Appended,
    pub log_start_offset: i64,
    /// The broker's append time on a LogAppendTime topic, -1 on a CreateTime topic.
    pub log_append_time: i64,
}

/// One partition: its log behind a lock, and a watch of its end offset that wakes long polls.
#[derive(Debug)]
pub struct Partition {
    pub index: i32,
    log: Mutex<PartitionLog>,
    /// Next offset to be written; fetches waiting for data subscribe to it.
    end_offset: watch::Sender<i64>,
    /// This node leads the partition: it takes produce and serves fetches. Always on a single
    /// node; in a cluster, as the metadata says.
    leads: AtomicBool,
    /// The leader epoch the metadata gives the partition (0 on a single node).
    leader_epoch: AtomicI32,
    /// In a cluster, the leader's view of the replicas (unused on a single node).
    replicas: Mutex<Replicas>,
    /// A follower of a new leader that has not yet checked where its log parts from the
    /// leader's (OffsetForLeaderEpoch): it fetches nothing until it has.
    unchecked: AtomicBool,
}

/// What a partition's leader knows of its replicas.
#[derive(Debug, Default)]
struct Replicas {
    /// This node, while it leads.
    leader: Option<i32>,
    isr: Vec<i32>,
    /// Followers an ISR change this leader asked for adds, until the metadata moves on: they
    /// count for the high watermark at once (Kafka's maximal ISR, KIP-497), since the
    /// controller may have made them in sync already, and a new leader may be one of them.
    joining: Vec<i32>,
    /// When the oldest of `joining` was asked for; the ask is given up after the lag time if
    /// the metadata never moved (the controller did not take it).
    joining_since: Option<Instant>,
    partition_epoch: i32,
    followers: HashMap<i32, Follower>,
}

/// A follower as its leader sees it.
#[derive(Debug, Clone, Copy)]
struct Follower {
    /// Its log end, as its last fetch said (-1 before its first fetch).
    log_end: i64,
    /// The leader's log end when it last fetched.
    leader_end_then: i64,
    /// When it last had all of the leader's log (as of its previous fetch, Kafka's rule: under
    /// steady produce a follower is never level with the end of the moment).
    caught_up_at: Instant,
}

impl Partition {
    fn new(index: i32, log: PartitionLog, leads: bool) -> Self {
        let (end_offset, _) = watch::channel(log.next_offset());
        Self {
            index,
            log: Mutex::new(log),
            end_offset,
            leads: AtomicBool::new(leads),
            leader_epoch: AtomicI32::new(crate::storage::log::LEADER_EPOCH),
            replicas: Mutex::new(Replicas::default()),
            unchecked: AtomicBool::new(false),
        }
    }

    /// This node becomes (or stays) the partition's leader, at `epoch`, with these replicas and
    /// in-sync replicas: it stamps its batches with the epoch and starts counting its
    /// followers' progress afresh (each gets a full lag time to catch up).
    pub fn become_leader(
        &self,
        me: i32,
        epoch: i32,
        partition_epoch: i32,
        replicas: &[i32],
        isr: &[i32],
    ) {
        let mut state = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = state.leader != Some(me) || self.leader_epoch() != epoch;
        if !fresh && state.isr == isr && state.partition_epoch == partition_epoch {
            // The metadata changed elsewhere: nothing here to do, nobody to wake.
            return;
        }
        if fresh {
            let mut log = self.log();
            log.set_leader_epoch(epoch);
            let high_watermark = log.high_watermark();
            log.set_high_watermark(high_watermark);
            // The epoch starts at the log end (Kafka's leader-epoch cache).
            let end = log.next_offset();
            if let Err(e) = log.assign_epoch(epoch, end) {
                tracing::warn!(error = %e, "cannot record the leader epoch");
            }
            drop(log);
            self.unchecked.store(false, Ordering::Relaxed);
            state.followers.clear();
        }
        // New followers (all of them for a new leader, or the ones a reassignment adds) get a
        // full lag time to catch up; the ones a reassignment dropped are forgotten.
        let now = Instant::now();
        state.followers.retain(|id, _| replicas.contains(id));
        for r in replicas.iter().filter(|r| **r != me) {
            state.followers.entry(*r).or_insert(Follower {
                log_end: -1,
                leader_end_then: i64::MAX,
                caught_up_at: now,
            });
        }
        state.leader = Some(me);
        state.isr = isr.to_vec();
        state.joining.clear();
        state.joining_since = None;
        state.partition_epoch = partition_epoch;
        drop(state);
        self.set_leader(true, epoch);
        self.advance_high_watermark();
        // Produces waiting for replication look at the ISR again.
        self.end_offset.send_modify(|_| {});
    }

    /// This node follows the partition's leader at `epoch`: it stops serving the partition,
    /// and before it fetches again it asks the new leader where their logs part (KIP-101), since
    /// what it has past that point is not the leader's.
    pub fn become_follower(&self, epoch: i32) {
        let new_epoch = self.leads() || self.leader_epoch() != epoch;
        self.set_leader(false, epoch);
        self.replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .leader = None;
        if new_epoch {
            self.unchecked.store(true, Ordering::Relaxed);
        }
    }

    /// Whether this follower still has to check its log against its new leader's.
    pub fn unchecked(&self) -> bool {
        self.unchecked.load(Ordering::Relaxed)
    }

    /// The leader said its log ends at `leader_end` for epoch `epoch` (-1: it knows no such
    /// epoch): this follower cuts its log where the two part, the lower of that and where its
    /// own epoch `epoch` ended; without a common epoch, at its high watermark.
    pub fn part_from_leader(&self, epoch: i32, leader_end: i64) -> std::io::Result<()> {
        let mut log = self.log();
        let cut = if epoch < 0 || leader_end < 0 {
            log.high_watermark()
        } else {
            leader_end.min(log.end_offset_for_epoch(epoch).1.max(0))
        };
        if cut < log.next_offset() {
            tracing::info!(
                cut,
                end = log.next_offset(),
                "cutting off what the new leader does not have"
            );
            log.truncate_to(cut)?;
        }
        drop(log);
        self.unchecked.store(false, Ordering::Relaxed);
        self.end_offset.send_modify(|_| {});
        Ok(())
    }

    /// A follower's fetch from `offset` (its log end): the leader notes its progress and moves
    /// the high watermark up if it can.
    pub fn follower_fetched(&self, follower: i32, offset: i64) {
        let end = self.log().next_offset();
        {
            let mut state = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
            let Some(known) = state.followers.get_mut(&follower) else {
                return;
            };
            known.log_end = offset;
            if offset >= end || offset >= known.leader_end_then {
                known.caught_up_at = Instant::now();
            }
            known.leader_end_then = end;
        }
        self.advance_high_watermark();
    }

    /// Moves the high watermark to the lowest log end of the in-sync replicas, if that is
    /// higher, and wakes the fetches and produces waiting for it.
    fn advance_high_watermark(&self) {
        let lowest = {
            let state = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
            let Some(me) = state.leader else {
                return;
            };
            state
                .isr
                .iter()
                .chain(&state.joining)
                .filter(|r| **r != me)
                .map(|r| state.followers.get(r).map_or(-1, |f| f.log_end))
                .min()
        };
        let mut log = self.log();
        let current = log.high_watermark();
        let reached = lowest.unwrap_or(i64::MAX).min(log.next_offset());
        if reached > current {
            log.set_high_watermark(reached);
            drop(log);
            self.end_offset.send_modify(|_| {});
        }
    }

    /// Appends batches fetched from the leader (see [`PartitionLog::append_replica`]).
    pub fn append_replica(&self, batches: &[u8]) -> Result<(), AppendError> {
        if batches.is_empty() {
            return Ok(());
        }
        let end = self.log().append_replica(batches)?;
        self.end_offset.send_replace(end);
        Ok(())
    }

    /// A follower whose fetch was out of its leader's range checks its log against the
    /// leader's again before fetching.
    pub fn recheck(&self) {
        self.unchecked.store(true, Ordering::Relaxed);
    }

    /// A follower learns its leader's high watermark (never above its own log end).
    pub fn follow_high_watermark(&self, leader_high_watermark: i64) {
        let mut log = self.log();
        let reached = leader_high_watermark.min(log.next_offset());
        if reached != log.high_watermark() {
            log.set_high_watermark(reached);
        }
    }

    /// The in-sync replicas the leader would have now: a follower that has not had all of the
    /// leader's log for `lag` leaves; one that has reached the high watermark (and so holds
    /// every committed record) joins. `None` while this node does not lead or nothing changes;
    /// otherwise the new ISR and the partition epoch it was computed against.
    pub fn wanted_isr(&self, lag: Duration) -> Option<(Vec<i32>, i32)> {
        let high_watermark = self.log().high_watermark();
        let mut state = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        if state.joining_since.is_some_and(|t| t.elapsed() > lag) {
            // Asked for long ago and the metadata never moved: the ask was lost.
            state.joining.clear();
            state.joining_since = None;
        }
        let me = state.leader?;
        let mut isr = vec![me];
        let mut followers: Vec<_> = state.followers.iter().collect();
        followers.sort_by_key(|(id, _)| **id);
        for (id, follower) in followers {
            let keeps = state.isr.contains(id) && follower.caught_up_at.elapsed() <= lag;
            let joins = !state.isr.contains(id)
                && follower.log_end >= high_watermark
                && follower.caught_up_at.elapsed() <= lag;
            if keeps || joins {
                isr.push(*id);
            }
        }
        let mut current = state.isr.clone();
        current.sort_unstable();
        let mut wanted = isr.clone();
        wanted.sort_unstable();
        (wanted != current).then_some((isr, state.partition_epoch))
    }

    /// This leader asks the controller for `isr` at `partition_epoch`: until the metadata moves
    /// on, the followers it adds count for the high watermark as if they were in sync.
    pub fn asking_for_isr(&self, isr: &[i32], partition_epoch: i32) {
        let mut state = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        if state.partition_epoch != partition_epoch {
            return;
        }
        let current = state.isr.clone();
        for r in isr {
            if !current.contains(r) && !state.joining.contains(r) {
                state.joining.push(*r);
                state.joining_since.get_or_insert_with(Instant::now);
            }
        }
    }

    /// The controller refused the ISR change this leader asked for: nobody joins.
    pub fn isr_change_refused(&self) {
        let mut state = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        state.joining.clear();
        state.joining_since = None;
    }

    /// How many replicas are in sync, as the metadata says (the leader's view).
    pub fn isr_len(&self) -> usize {
        self.replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .isr
            .len()
    }

    /// Waits until every in-sync replica holds the log up to `end` (the high watermark reached
    /// it): an `acks=all` produce, appended while this node led at leader epoch `epoch`.
    /// Refused if the ISR shrinks below `min_isr` meanwhile, when `deadline` passes, or when
    /// this node stops leading at that epoch: a new leader may not have the records, and the
    /// high watermark this node then follows says nothing about them (KIP-101 cuts them off).
    pub async fn replicated(
        &self,
        (end, epoch): (i64, i32),
        min_isr: usize,
        deadline: tokio::time::Instant,
    ) -> Result<(), ResponseError> {
        let mut changes = self.subscribe();
        loop {
            if !self.leads() || self.leader_epoch() != epoch {
                return Err(ResponseError::NotLeaderOrFollower);
            }
            if self.log().high_watermark() >= end {
                return Ok(());
            }
            if self.isr_len() < min_isr {
                return Err(ResponseError::NotEnoughReplicasAfterAppend);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(ResponseError::RequestTimedOut),
            }
        }
    }

    /// Whether this node leads the partition.
    pub fn leads(&self) -> bool {
        self.leads.load(Ordering::Relaxed)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Relaxed)
    }

    /// Takes the metadata's word on the partition: whether this node leads it, at which epoch.
    pub fn set_leader(&self, leads: bool, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Relaxed);
        self.leads.store(leads, Ordering::Relaxed);
        // Wakes the produces waiting for replication, which end if this node no longer leads.
        self.end_offset.send_modify(|_| {});
    }

    /// Locks the log. A panic elsewhere must not make the partition unusable, so poisoning is
    /// ignored: the log's own state is only changed by complete, successful steps.
    pub fn log(&self) -> MutexGuard<'_, PartitionLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a produce request's record set and wakes waiting fetches.
    pub fn append(&self, records: &mut [u8]) -> Result<Produced, AppendError> {
        self.append_checked(records, None)
    }

    /// Starts checking `producer_id`'s transactional batch with its coordinator (see
    /// [`PartitionLog::begin_verification`]).
    pub fn begin_verification(&self, producer_id: i64) -> Option<u64> {
        self.log().begin_verification(producer_id)
    }

    /// Appends a batch, one checked with its transaction coordinator under `verified` (see
    /// [`PartitionLog::append_checked`]).
    pub fn append_checked(
        &self,
        records: &mut [u8],
        verified: Option<(i64, u64)>,
    ) -> Result<Produced, AppendError> {
        let now_ms = crate::clock::now_ms();
        let mut log = self.log();
        let (appended, log_append_time) = log.append_checked(records, now_ms, verified)?;
        let (end, start) = (log.next_offset(), log.log_start_offset());
        let replicated = log.is_replicated();
        drop(log);
        self.end_offset.send_replace(end);
        if replicated {
            // An ISR of the leader alone commits at once.
            self.advance_high_watermark();
        }
        Ok(Produced {
            appended,
            log_start_offset: start,
            log_append_time,
        })
    }

    /// Ends `producer_id`'s open transaction here with a marker (see
    /// [`PartitionLog::append_marker`]) and wakes waiting fetches: the last stable offset moved.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: crate::storage::batch::Marker,
    ) -> Result<Option<i64>, AppendError> {
        let mut log = self.log();
        let written =
            log.append_marker(producer_id, producer_epoch, marker, crate::clock::now_ms())?;
        let end = log.next_offset();
        let replicated = log.is_replicated();
        drop(log);
        if written.is_some() {
            self.end_offset.send_replace(end);
            if replicated {
                self.advance_high_watermark();
            }
        }
        Ok(written)
    }

    /// DeleteRecords on this partition; returns the new log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, AppendError> {
        self.log().delete_records_before(offset)
    }

    /// A receiver that changes whenever new data is appended.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.end_offset.subscribe()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicFile {
    id: Uuid,
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// Writes `topic.json` through a temporary file and a rename, so a crash never leaves a
/// half-written one.
fn write_topic_file(dir: &Path, meta: &TopicFile) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
    let tmp = dir.join("topic.json.tmp");
    let mut file = fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut file, &json)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join("topic.json"))?;
    crate::storage::sync_dir(dir)
}

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    /// Stable, non-nil id (clients with topic-id support key their state on it).
    pub id: Uuid,
    pub partitions: Vec<Arc<Partition>>,
    /// Config overrides set at creation; everything else takes the broker default.
    pub configs: BTreeMap<String, String>,
    dir: PathBuf,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }
}

/// Every topic of the broker.
#[derive(Debug)]
pub struct TopicRegistry {
    dir: PathBuf,
    /// Where deleted topics' directories are moved (by a rename, under `admin`) before they are
    /// removed in the background, so a topic created with the same name is never touched.
    trash: PathBuf,
    defaults: Defaults,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serialises the changes to the set of topics (create, delete, grow, alter), which do file
    /// system work. The map's lock is only taken for the final swap, so produce and fetch never
    /// wait for a topic of 10,000 partitions to be created.
    admin: Mutex<()>,
}

/// Broker-wide defaults for new topics.
#[derive(Debug, Clone)]
struct Defaults {
    partitions: i32,
    segment_bytes: u64,
    segment_ms: u64,
    retention_ms: i64,
    retention_bytes: i64,
    fsync_each_append: bool,
    max_request_bytes: u64,
    /// A node of a cluster: a partition is led only once the metadata says so.
    clustered: bool,
}

impl Defaults {
    fn new(config: &BrokerConfig) -> Self {
        Self {
            partitions: config.default_partitions,
            segment_bytes: config.segment_bytes,
            segment_ms: config.segment_ms,
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
            fsync_each_append: config.fsync == FsyncPolicy::Always,
            max_request_bytes: config.max_request_bytes as u64,
            clustered: config.cluster.is_some(),
        }
    }
}

/// Kafka's collision rule, widened to case: two names that differ only in case (one directory on
/// a case-insensitive file system) or in '.' versus '_' (one metric name) can't both exist.
fn collision_key(name: &str) -> String {
    name.to_ascii_lowercase().replace('.', "_")
}

pub fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl TopicRegistry {
    /// Loads every topic under `<data-dir>/topics`, recovering each partition's log.
    pub fn open(config: &BrokerConfig) -> Result<Self, TopicError> {
        let dir = config.data_dir.join("topics");
        fs::create_dir_all(&dir)?;
        let trash = config.data_dir.join("deleted-topics");
        if trash.exists() {
            // Deletions a stop interrupted: finish them.
            fs::remove_dir_all(&trash)?;
        }
        // The broker-wide defaults must themselves be valid topic configs.
        resolve(&Defaults::new(config), &BTreeMap::new())?;
        let registry = Self {
            dir: dir.clone(),
            trash,
            defaults: Defaults::new(config),
            topics: RwLock::new(HashMap::new()),
            admin: Mutex::new(()),
        };
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let meta_path = entry.path().join("topic.json");
            let Ok(raw) = fs::read(&meta_path) else {
                // A topic directory without metadata is a half-finished create: skip it.
                continue;
            };
            let mut meta: TopicFile = match serde_json::from_slice(&raw) {
                Ok(meta) => meta,
                Err(e) => {
                    // Keep the broker up; the data stays on disk for an operator to look at.
                    tracing::error!(
                        topic = name,
                        "skipping topic with unreadable topic.json: {e}"
                    );
                    continue;
                }
            };
            raise_small_segments(&name, &entry.path(), &mut meta)?;
            let topic = match registry.load(&name, entry.path(), meta) {
                Ok(topic) => topic,
                Err(e @ TopicError::InvalidConfig { .. }) => {
                    // A config this version no longer accepts: as above, stay up and leave the
                    // data for an operator.
                    tracing::error!(topic = name, "skipping topic: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            registry.write().insert(name, Arc::new(topic));
        }
        Ok(registry)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(|e| e.into_inner())
    }

    fn admin(&self) -> MutexGuard<'_, ()> {
        self.admin.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn load(&self, name: &str, dir: PathBuf, meta: TopicFile) -> Result<Topic, TopicError> {
        let log_config = self.log_config(&meta.configs)?;
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for index in 0..meta.partitions {
            let (log, report) =
                PartitionLog::open(&dir.join(index.to_string()), log_config.clone())?;
            if report.truncated_bytes > 0 {
                tracing::warn!(
                    topic = name,
                    partition = index,
                    bytes = report.truncated_bytes,
                    "cut a torn or corrupt tail from the log"
                );
            }
            partitions.push(Arc::new(Partition::new(
                index,
                log,
                !self.defaults.clustered,
            )));
        }
        Ok(Topic {
            name: name.to_string(),
            id: meta.id,
            partitions,
            configs: meta.configs,
            dir,
        })
    }

    /// Every config of [`TOPIC_CONFIGS`] with its effective value for a topic with these
    /// overrides.
    pub fn config_entries(&self, overrides: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
        TOPIC_CONFIGS
            .iter()
            .map(|key| match overrides.get(key.name) {
                Some(value) => ConfigEntry {
                    name: key.name,
                    value: value.clone(),
                    overridden: true,
                },
                None => ConfigEntry {
                    name: key.name,
                    value: (key.default)(&self.defaults),
                    overridden: false,
                },
            })
            .collect()
    }

    /// Parses a topic's overrides over the defaults; refuses unknown keys and invalid values.
    pub fn resolve(&self, overrides: &BTreeMap<String, String>) -> Result<TopicConfig, TopicError> {
        resolve(&self.defaults, overrides)
    }

    fn log_config(&self, overrides: &BTreeMap<String, String>) -> Result<LogConfig, TopicError> {
        Ok(self.resolve(overrides)?.log_config(
            self.defaults.fsync_each_append,
            self.defaults.max_request_bytes,
        ))
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read().get(name).cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.read().values().find(|t| t.id == id).cloned()
    }

    /// All topics, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn default_partitions(&self) -> i32 {
        self.defaults.partitions
    }

    /// Checks a create request without creating anything (CreateTopics `validate_only`).
    pub fn validate(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        if !is_valid_topic_name(name) {
            return Err(TopicError::InvalidName(name.into()));
        }
        if !(1..=10_000).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(partitions));
        }
        let topics = self.read();
        if topics.contains_key(name) {
            return Err(TopicError::AlreadyExists(name.into()));
        }
        let key = collision_key(name);
        if let Some(existing) = topics.keys().find(|t| collision_key(t) == key) {
            return Err(TopicError::Collides {
                name: name.into(),
                existing: existing.clone(),
            });
        }
        drop(topics);
        self.log_config(configs).map(|_| ())
    }

    /// Creates a topic; `partitions` of `None` takes the broker default.
    pub fn create(
        &self,
        name: &str,
        partitions: Option<i32>,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        self.create_with_id(name, Uuid::new_v4(), partitions, configs)
    }

    /// [`create`](Self::create) with the id the cluster's metadata gave the topic.
    pub fn create_with_id(
        &self,
        name: &str,
        id: Uuid,
        partitions: Option<i32>,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        let partitions = partitions.unwrap_or(self.defaults.partitions);
        // Checked under the admin lock: a create of the same name may have finished meanwhile.
        let _admin = self.admin();
        self.validate(name, partitions, &configs)?;
        for key in TOPIC_CONFIGS.iter().filter(|k| !k.enforced) {
            let value = configs.get(key.name);
            if let Some(value) = value.filter(|v| **v != (key.default)(&self.defaults)) {
                tracing::info!(
                    topic = name,
                    "{}={value} is stored and reported, not applied by this broker",
                    key.name
                );
            }
        }
        let dir = self.dir.join(name);
        if dir.join("topic.json").exists() {
            // A topic this broker could not load at start (see the log): its data stays.
            return Err(TopicError::Unloadable(name.into()));
        }
        if dir.exists() {
            fs::remove_dir_all(&dir)?; // leftovers of an interrupted create
        }
        fs::create_dir_all(&dir)?;
        let meta = TopicFile {
            id,
            partitions,
            configs,
        };
        write_topic_file(&dir, &meta)?;
        crate::storage::sync_dir(&self.dir)?;
        let topic = Arc::new(self.load(name, dir, meta)?);
        self.write().insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Grows a topic to `count` partitions (CreatePartitions); with `validate_only`, only checks.
    /// Partitions are never removed. The new partitions' directories are created before
    /// `topic.json` says they exist, so a crash in between leaves the old count (and empty
    /// directories the next grow replaces).
    pub fn add_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        let _admin = self.admin();
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.into()))?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(TopicError::CannotShrink {
                current,
                requested: count,
            });
        }
        if count > 10_000 {
            return Err(TopicError::InvalidPartitions(count));
        }
        if validate_only {
            return Ok(topic);
        }
        let log_config = self.log_config(&topic.configs)?;
        let mut partitions = topic.partitions.clone();
        for index in current..count {
            let dir = topic.dir.join(index.to_string());
            if dir.exists() {
                fs::remove_dir_all(&dir)?; // leftovers of an interrupted grow
            }
            let (log, _) = PartitionLog::open(&dir, log_config.clone())?;
            partitions.push(Arc::new(Partition::new(
                index,
                log,
                !self.defaults.clustered,
            )));
        }
        crate::storage::sync_dir(&topic.dir)?;
        let meta = TopicFile {
            id: topic.id,
            partitions: count,
            configs: topic.configs.clone(),
        };
        write_topic_file(&topic.dir, &meta)?;
        let grown = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
            configs: topic.configs.clone(),
            dir: topic.dir.clone(),
        });
        self.write().insert(name.to_string(), grown.clone());
        tracing::info!(topic = name, from = current, to = count, "added partitions");
        Ok(grown)
    }

    /// Replaces a topic's config overrides (AlterConfigs, IncrementalAlterConfigs); with
    /// `validate_only`, only checks. The new settings apply to the partitions at once (the next
    /// append, roll, retention run) and are kept in `topic.json`.
    pub fn alter_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let _admin = self.admin();
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.into()))?;
        let log_config = self.log_config(&configs)?;
        if validate_only {
            return Ok(());
        }
        let meta = TopicFile {
            id: topic.id,
            partitions: topic.partitions.len() as i32,
            configs: configs.clone(),
        };
        write_topic_file(&topic.dir, &meta)?;
        for partition in &topic.partitions {
            partition.log().set_config(log_config.clone());
        }
        self.write().insert(
            name.to_string(),
            Arc::new(Topic {
                name: topic.name.clone(),
                id: topic.id,
                partitions: topic.partitions.clone(),
                configs,
                dir: topic.dir.clone(),
            }),
        );
        tracing::info!(topic = name, "changed topic configs");
        Ok(())
    }

    /// Returns the topic, creating it with defaults if it doesn't exist yet. While another topic
    /// change holds the admin lock (a large creation can take seconds) it does not wait, which
    /// would hold a thread of the blocking pool per asking client: it answers
    /// [`TopicError::Busy`], which metadata turns into Kafka's retriable LEADER_NOT_AVAILABLE.
    pub fn get_or_create(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        if let Some(topic) = self.get(name) {
            return Ok(topic);
        }
        if let Err(std::sync::TryLockError::WouldBlock) = self.admin.try_lock() {
            return Err(TopicError::Busy);
        }
        match self.create(name, None, BTreeMap::new()) {
            Err(TopicError::AlreadyExists(_)) => {
                self.get(name).ok_or(TopicError::Unknown(name.into()))
            }
            other => other,
        }
    }

    /// Deletes a topic and its data. Under the admin lock the topic leaves the map and its
    /// directory is renamed into the trash (one atomic step on disk, as Kafka renames to a
    /// `-delete` directory), so a topic created with the same name afterwards gets a fresh
    /// directory that the deletion never touches; the files are removed in the background.
    pub fn delete(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        let admin = self.admin();
        let topic = self
            .write()
            .remove(name)
            .ok_or_else(|| TopicError::Unknown(name.into()))?;
        for partition in &topic.partitions {
            partition.log().mark_deleted();
        }
        fs::create_dir_all(&self.trash)?;
        let doomed = self
            .trash
            .join(format!("{}-{}", topic.name, topic.id.simple()));
        fs::rename(&topic.dir, &doomed)?;
        crate::storage::sync_dir(&self.dir)?;
        drop(admin);
        // Out of the way already: the files go without holding up other topic changes (what a
        // crash leaves in the trash goes at the next start).
        if let Err(e) = fs::remove_dir_all(&doomed) {
            tracing::warn!(dir = %doomed.display(), "could not remove a deleted topic's files: {e}");
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(topic)
    }

    /// Applies retention to every partition and closes the files of segments no read used for
    /// `idle`; returns how many segments were deleted.
    pub fn enforce_retention(&self, now_ms: i64, idle: Duration) -> usize {
        let mut deleted = 0;
        for topic in self.list() {
            for partition in &topic.partitions {
                let mut log = partition.log();
                log.close_idle_files(idle);
                match log.enforce_retention(now_ms) {
                    Ok(n) => deleted += n,
                    Err(e) => {
                        tracing::warn!(topic = %topic.name, partition = partition.index, "retention failed: {e}")
                    }
                }
            }
        }
        deleted
    }

    /// Runs the log cleaner once over every partition of a compacted topic whose clean is due
    /// (see `storage/clean.rs`): each partition's lock is held only to plan and to put the
    /// cleaned segments in place, not while the segments are read and written. Returns what
    /// each clean did.
    pub fn clean_logs(&self, now_ms: i64) -> Vec<(String, i32, CleanStats)> {
        let mut done = Vec::new();
        for topic in self.list() {
            for partition in &topic.partitions {
                // Three statements: the lock is taken for the first and the last only.
                let plan = partition.log().plan_clean(now_ms);
                let cleaned = plan.and_then(|plan| plan.map(|plan| plan.run(now_ms)).transpose());
                let finished = cleaned.and_then(|cleaned| match cleaned {
                    Some(cleaned) => partition.log().finish_clean(cleaned),
                    None => Ok(None),
                });
                match finished {
                    Ok(Some(stats)) => done.push((topic.name.clone(), partition.index, stats)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(topic = %topic.name, partition = partition.index, "log cleaning failed: {e}")
                    }
                }
            }
        }
        done
    }

    /// fsyncs every partition written since its last sync.
    pub fn sync_all(&self) {
        for topic in self.list() {
            for partition in &topic.partitions {
                if let Err(e) = partition.log().sync() {
                    tracing::warn!(topic = %topic.name, partition = partition.index, "fsync failed: {e}");
                }
            }
        }
    }
}

fn resolve(
    defaults: &Defaults,
    overrides: &BTreeMap<String, String>,
) -> Result<TopicConfig, TopicError> {
    if let Some((key, value)) = overrides
        .iter()
        .find(|(key, _)| !TOPIC_CONFIGS.iter().any(|k| k.name == key.as_str()))
    {
        return Err(TopicError::InvalidConfig {
            key: key.clone(),
            value: value.clone(),
            reason: "unknown or unsupported config",
        });
    }
    let mut config = TopicConfig {
        clustered: defaults.clustered,
        ..TopicConfig::default()
    };
    for key in TOPIC_CONFIGS {
        let value = overrides
            .get(key.name)
            .cloned()
            .unwrap_or_else(|| (key.default)(defaults));
        (key.apply)(&mut config, &value).map_err(|reason| TopicError::InvalidConfig {
            key: key.name.into(),
            value,
            reason,
        })?;
    }
    Ok(config)
}

/// A topic stored with a `segment.bytes` below today's minimum (1024 was accepted before) is
/// loaded with the minimum, and its `topic.json` says so, rather than skipped: a skipped topic's
/// name could be created again over its data.
fn raise_small_segments(name: &str, dir: &Path, meta: &mut TopicFile) -> io::Result<()> {
    let Some(value) = meta.configs.get("segment.bytes") else {
        return Ok(());
    };
    if value.parse::<u64>().is_ok_and(|v| v >= MIN_SEGMENT_BYTES) {
        return Ok(());
    }
    tracing::warn!(
        topic = name,
        "segment.bytes={value} is below the minimum; the topic now uses {MIN_SEGMENT_BYTES}"
    );
    meta.configs
        .insert("segment.bytes".into(), MIN_SEGMENT_BYTES.to_string());
    write_topic_file(dir, meta)
}

/// Path of a topic's directory (for tests and tools).
pub fn topic_dir(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir.join("topics").join(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults::new(&BrokerConfig::default())
    }

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A follower its leader asks the controller to add to the ISR counts for the high
    /// watermark at once (Kafka's maximal ISR): the controller may have it in sync already, and
    /// a write acknowledged without it would be lost if it came to lead. A refused ask stops
    /// that.
    #[test]
    fn a_follower_being_added_to_the_isr_holds_the_high_watermark_back() {
        use crate::storage::batch::tests::sample_batch;
        let dir = tempfile::tempdir().unwrap();
        let config = crate::storage::log::tests::config();
        let (mut log, _) = PartitionLog::open(dir.path(), config).unwrap();
        log.set_high_watermark(0);
        let p = Partition::new(0, log, false);
        p.become_leader(1, 1, 0, &[1, 2], &[1]);
        p.append(&mut sample_batch(1, 1000)).unwrap();
        assert_eq!(p.log().high_watermark(), 1, "an ISR of the leader alone");
        p.follower_fetched(2, 1);
        let (isr, epoch) = p.wanted_isr(Duration::from_secs(10)).unwrap();
        assert_eq!(isr, [1, 2]);
        p.asking_for_isr(&isr, epoch);
        p.append(&mut sample_batch(1, 1000)).unwrap();
        assert_eq!(
            p.log().high_watermark(),
            1,
            "the joining follower has not got it"
        );
        p.follower_fetched(2, 2);
        assert_eq!(p.log().high_watermark(), 2);
        p.isr_change_refused();
        p.append(&mut sample_batch(1, 1000)).unwrap();
        assert_eq!(
            p.log().high_watermark(),
            3,
            "refused: the leader alone again"
        );
    }

    #[test]
    fn every_key_parses_its_own_default_and_is_declared_once() {
        let d = defaults();
        for key in TOPIC_CONFIGS {
            let value = (key.default)(&d);
            assert_eq!(
                (key.apply)(&mut TopicConfig::default(), &value),
                Ok(()),
                "{} = {value}",
                key.name
            );
            assert_eq!(
                TOPIC_CONFIGS.iter().filter(|k| k.name == key.name).count(),
                1,
                "{} declared twice",
                key.name
            );
        }
        let c = BrokerConfig::default();
        assert_eq!(
            resolve(&d, &BTreeMap::new()).unwrap(),
            TopicConfig {
                delete: true,
                compact: false,
                delete_retention_ms: 86_400_000,
                min_dirty_ratio_ppm: 500_000,
                min_compaction_lag_ms: 0,
                max_compaction_lag_ms: i64::MAX,
                retention_ms: c.retention_ms,
                retention_bytes: c.retention_bytes,
                segment_bytes: c.segment_bytes,
                segment_ms: c.segment_ms as i64,
                max_message_bytes: 104_857_600,
                timestamp_type: TimestampType::CreateTime,
                clustered: false,
            }
        );
    }

    #[test]
    fn overrides_are_typed_and_bad_values_say_why() {
        let d = defaults();
        let c = resolve(
            &d,
            &overrides(&[
                ("retention.ms", "-1"),
                ("segment.bytes", "2097152"),
                ("message.timestamp.type", "LogAppendTime"),
                ("compression.type", "zstd"),
                ("min.insync.replicas", "1"),
            ]),
        )
        .unwrap();
        let log = c.log_config(false, 1 << 20);
        assert_eq!(log.retention, None, "-1 keeps forever");
        assert_eq!(log.segment_bytes, 2097152);
        assert!(log.log_append_time);
        assert_eq!(log.compaction, None);
        let compacted = resolve(
            &d,
            &overrides(&[
                ("cleanup.policy", "compact"),
                ("delete.retention.ms", "100"),
                ("min.cleanable.dirty.ratio", "0.01"),
                ("min.compaction.lag.ms", "5"),
                ("max.compaction.lag.ms", "60000"),
            ]),
        )
        .unwrap()
        .log_config(false, 1 << 20);
        assert_eq!(
            compacted.compaction,
            Some(Compaction {
                delete_retention: Duration::from_millis(100),
                min_dirty_ratio: 0.01,
                min_lag: Duration::from_millis(5),
                max_lag: Some(Duration::from_millis(60_000)),
            })
        );
        assert_eq!(
            compacted.retention, None,
            "compact alone deletes nothing by age"
        );
        let both = resolve(&d, &overrides(&[("cleanup.policy", "compact,delete")]))
            .unwrap()
            .log_config(false, 1 << 20);
        assert!(both.compaction.is_some() && both.retention.is_some());
        for (key, value, reason) in [
            (
                "cleanup.policy",
                "other",
                "must be delete, compact, or both (compact,delete)",
            ),
            (
                "min.cleanable.dirty.ratio",
                "1.5",
                "must be a number from 0 to 1",
            ),
            ("delete.retention.ms", "-1", "must not be negative"),
            (
                "compression.type",
                "brotli",
                "must be one of producer, uncompressed, gzip, snappy, lz4, zstd",
            ),
            (
                "min.insync.replicas",
                "2",
                "this single-node broker keeps one replica, so at most 1",
            ),
            ("min.insync.replicas", "0", "must be at least 1"),
            (
                "message.timestamp.type",
                "Now",
                "must be CreateTime or LogAppendTime",
            ),
            (
                "segment.bytes",
                "10",
                "must be between 1048576 and 1073741824",
            ),
            (
                "segment.bytes",
                "1048575",
                "must be between 1048576 and 1073741824",
            ),
            ("retention.ms", "soon", "not a number"),
            ("max.message.bytes", "-1", "must not be negative"),
            ("no.such.key", "1", "unknown or unsupported config"),
        ] {
            match resolve(&d, &overrides(&[(key, value)])) {
                Err(TopicError::InvalidConfig {
                    key: k,
                    value: v,
                    reason: r,
                }) => assert_eq!((k.as_str(), v.as_str(), r), (key, value, reason)),
                other => panic!("{key}={value}: {other:?}"),
            }
        }
    }
}
