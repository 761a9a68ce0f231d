//! Topics: names, stable ids, per-topic config, and the partitions with their logs.
//!
//! Each topic lives in `<data-dir>/topics/<name>/`: a `topic.json` with its id, partition count
//! and config overrides, and one directory per partition holding that partition's segments.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::{BrokerConfig, FsyncPolicy};
use crate::storage::{AppendError, Appended, LogConfig, PartitionLog};

/// Topic configs the broker understands, with their broker-wide default values.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "message.timestamp.type",
];

#[derive(Debug, Error)]
pub enum TopicError {
    #[error("topic '{0}' already exists")]
    AlreadyExists(String),
    #[error("invalid topic name '{0}': use 1-249 characters from [a-zA-Z0-9._-]")]
    InvalidName(String),
    #[error("invalid partition count {0}")]
    InvalidPartitions(i32),
    #[error("invalid config {key}={value}: {reason}")]
    InvalidConfig {
        key: String,
        value: String,
        reason: &'static str,
    },
    #[error("unknown topic '{0}'")]
    Unknown(String),
    #[error("storage I/O: {0}")]
    Io(#[from] io::Error),
}

/// One partition: its log behind a lock, and a watch of its end offset that wakes long polls.
#[derive(Debug)]
pub struct Partition {
    pub index: i32,
    log: Mutex<PartitionLog>,
    /// Next offset to be written; fetches waiting for data subscribe to it.
    end_offset: watch::Sender<i64>,
}

impl Partition {
    /// Locks the log. A panic elsewhere must not make the partition unusable, so poisoning is
    /// ignored: the log's own state is only changed by complete, successful steps.
    pub fn log(&self) -> MutexGuard<'_, PartitionLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a produce request's record set and wakes waiting fetches.
    pub fn append(&self, records: &mut [u8]) -> Result<(Appended, i64), AppendError> {
        let mut log = self.log();
        let appended = log.append(records)?;
        let (end, start) = (log.next_offset(), log.log_start_offset());
        drop(log);
        self.end_offset.send_replace(end);
        Ok((appended, start))
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
    defaults: Defaults,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
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
        let registry = Self {
            dir: dir.clone(),
            defaults: Defaults {
                partitions: config.default_partitions,
                segment_bytes: config.segment_bytes,
                segment_ms: config.segment_ms,
                retention_ms: config.retention_ms,
                retention_bytes: config.retention_bytes,
                fsync_each_append: config.fsync == FsyncPolicy::Always,
            },
            topics: RwLock::new(HashMap::new()),
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
            let meta: TopicFile = match serde_json::from_slice(&raw) {
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
            let topic = registry.load(&name, entry.path(), meta)?;
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
            let (end_offset, _) = watch::channel(log.next_offset());
            partitions.push(Arc::new(Partition {
                index,
                log: Mutex::new(log),
                end_offset,
            }));
        }
        Ok(Topic {
            name: name.to_string(),
            id: meta.id,
            partitions,
            configs: meta.configs,
            dir,
        })
    }

    /// The effective value of one config for a topic with these overrides.
    pub fn effective_config(
        &self,
        overrides: &BTreeMap<String, String>,
        key: &str,
    ) -> Option<String> {
        if let Some(v) = overrides.get(key) {
            return Some(v.clone());
        }
        let d = &self.defaults;
        Some(match key {
            "cleanup.policy" => "delete".into(),
            "retention.ms" => d.retention_ms.to_string(),
            "retention.bytes" => d.retention_bytes.to_string(),
            "segment.bytes" => d.segment_bytes.to_string(),
            "segment.ms" => d.segment_ms.to_string(),
            "max.message.bytes" => "104857600".into(),
            "message.timestamp.type" => "CreateTime".into(),
            _ => return None,
        })
    }

    fn log_config(&self, overrides: &BTreeMap<String, String>) -> Result<LogConfig, TopicError> {
        let number = |key: &str| -> Result<i64, TopicError> {
            let value = self.effective_config(overrides, key).unwrap_or_default();
            value.parse::<i64>().map_err(|_| TopicError::InvalidConfig {
                key: key.into(),
                value,
                reason: "not a number",
            })
        };
        for (key, value) in overrides {
            if !TOPIC_CONFIG_KEYS.contains(&key.as_str()) {
                return Err(TopicError::InvalidConfig {
                    key: key.clone(),
                    value: value.clone(),
                    reason: "unknown or unsupported config",
                });
            }
        }
        if self
            .effective_config(overrides, "cleanup.policy")
            .as_deref()
            != Some("delete")
        {
            return Err(TopicError::InvalidConfig {
                key: "cleanup.policy".into(),
                value: overrides.get("cleanup.policy").cloned().unwrap_or_default(),
                reason: "only 'delete' is supported",
            });
        }
        let positive = |v: i64| (v >= 0).then_some(v as u64);
        let segment_bytes = number("segment.bytes")?;
        if !(1024..=1 << 30).contains(&segment_bytes) {
            return Err(TopicError::InvalidConfig {
                key: "segment.bytes".into(),
                value: segment_bytes.to_string(),
                reason: "must be between 1024 and 1073741824",
            });
        }
        let max_batch_bytes = number("max.message.bytes")?;
        if max_batch_bytes < 0 {
            return Err(TopicError::InvalidConfig {
                key: "max.message.bytes".into(),
                value: max_batch_bytes.to_string(),
                reason: "must not be negative",
            });
        }
        Ok(LogConfig {
            max_batch_bytes: max_batch_bytes as u64,
            segment_bytes: segment_bytes as u64,
            segment_age: Duration::from_millis(positive(number("segment.ms")?).unwrap_or(u64::MAX)),
            retention: positive(number("retention.ms")?).map(Duration::from_millis),
            retention_bytes: positive(number("retention.bytes")?),
            fsync_each_append: self.defaults.fsync_each_append,
        })
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
        if self.read().contains_key(name) {
            return Err(TopicError::AlreadyExists(name.into()));
        }
        self.log_config(configs).map(|_| ())
    }

    /// Creates a topic; `partitions` of `None` takes the broker default.
    pub fn create(
        &self,
        name: &str,
        partitions: Option<i32>,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        let partitions = partitions.unwrap_or(self.defaults.partitions);
        self.validate(name, partitions, &configs)?;
        let mut topics = self.write();
        if topics.contains_key(name) {
            return Err(TopicError::AlreadyExists(name.into()));
        }
        let dir = self.dir.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir)?; // leftovers of an interrupted delete
        }
        fs::create_dir_all(&dir)?;
        let meta = TopicFile {
            id: Uuid::new_v4(),
            partitions,
            configs,
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
        // Write then rename, so a crash never leaves a half-written topic.json.
        let tmp = dir.join("topic.json.tmp");
        let mut file = fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &json)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join("topic.json"))?;
        crate::storage::sync_dir(&dir)?;
        crate::storage::sync_dir(&self.dir)?;
        let topic = Arc::new(self.load(name, dir, meta)?);
        topics.insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Returns the topic, creating it with defaults if it doesn't exist yet.
    pub fn get_or_create(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        if let Some(topic) = self.get(name) {
            return Ok(topic);
        }
        match self.create(name, None, BTreeMap::new()) {
            Err(TopicError::AlreadyExists(_)) => {
                self.get(name).ok_or(TopicError::Unknown(name.into()))
            }
            other => other,
        }
    }

    /// Deletes a topic and its data.
    pub fn delete(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        let topic = self
            .write()
            .remove(name)
            .ok_or_else(|| TopicError::Unknown(name.into()))?;
        for partition in &topic.partitions {
            partition.log().mark_deleted();
        }
        // Remove the metadata first so a crash mid-delete doesn't resurrect the topic.
        fs::remove_file(topic.dir.join("topic.json"))?;
        fs::remove_dir_all(&topic.dir)?;
        tracing::info!(topic = name, "deleted topic");
        Ok(topic)
    }

    /// Applies retention to every partition; returns how many segments were deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> usize {
        let mut deleted = 0;
        for topic in self.list() {
            for partition in &topic.partitions {
                match partition.log().enforce_retention(now_ms) {
                    Ok(n) => deleted += n,
                    Err(e) => {
                        tracing::warn!(topic = %topic.name, partition = partition.index, "retention failed: {e}")
                    }
                }
            }
        }
        deleted
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

/// Path of a topic's directory (for tests and tools).
pub fn topic_dir(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir.join("topics").join(topic)
}
