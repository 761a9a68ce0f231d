//! The Kafka explorer behind the dashboard: topics with their partitions and configs, a message
//! browser, producing a record, consumer groups with their lag, and resetting a group's offsets.
//! Everything goes through the Kafka protocol (rdkafka), as Kafka UI would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::observer::Observer;
use crate::groups::{self, Group};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Why an explorer call failed; the dashboard turns it into a problem+json answer.
#[derive(Debug, thiserror::Error)]
pub enum ExplorerError {
    #[error("no topic {0:?}")]
    NoTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    NoPartition { topic: String, partition: i32 },
    #[error(
        "group {group:?} has {members} active member(s): a group's offsets can only be moved while \
         no consumer of it runs (stop its service first)"
    )]
    GroupActive { group: String, members: usize },
    #[error("group {0:?} has no committed offsets to move")]
    NothingToReset(String),
    #[error("the broker: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Other(String),
    #[error("a task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A broker of the cluster, as Metadata names it.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
}

/// A topic in the explorer's list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: Vec<PartitionSummary>,
    /// Records between the log start and end, over all partitions.
    pub records: i64,
    /// Bytes of those records read by the dashboard (keys, values, headers).
    pub bytes: u64,
    /// One of Kafka's internal topics (`__consumer_offsets`, `__transaction_state`): the
    /// coordinators' state, which a cluster replicates like any topic.
    pub internal: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionSummary {
    pub partition: i32,
    pub leader: i32,
    pub start: i64,
    pub end: i64,
    pub bytes: u64,
}

/// One config of a topic (DescribeConfigs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub is_default: bool,
    pub is_read_only: bool,
}

/// A record in the message browser.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The value's text: its payload, after the frame of Confluent's wire format if it has one.
    pub value: Option<String>,
    /// The schema id of a value in Confluent's wire format.
    pub schema_id: Option<i32>,
    /// Which version of the topic's value subject that id is (the registry's answer).
    pub schema_version: Option<i32>,
    pub size: usize,
}

/// Where the browser starts reading.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// This offset.
    Offset(i64),
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
    /// The last `limit` records.
    Latest,
    Earliest,
}

/// A record to produce from the page.
#[derive(Debug, Clone, Deserialize)]
pub struct NewRecord {
    /// Default: the producer's partitioner picks (by key).
    pub partition: Option<i32>,
    pub key: Option<String>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    pub value: String,
}

/// A consumer group with its offsets and lag per partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    pub state: String,
    pub members: Vec<groups::Member>,
    pub partitions: Vec<GroupPartition>,
    pub lag: i64,
    /// How far behind it is in time: the most of its partitions' (ms).
    pub behind_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupPartition {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset, if it has one.
    pub committed: Option<i64>,
    pub end: i64,
    pub lag: i64,
    /// How long ago the oldest record the group has not processed was written (ms; 0 when it
    /// has read everything, `None` when not known).
    pub behind_ms: Option<i64>,
    /// The client id of the member that owns the partition now.
    pub owner: Option<String>,
}

/// A partition of a group's offset reset: its committed offset and the new one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedOffset {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub offset: i64,
}

/// Where to move a group's offsets.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "to", content = "value")]
pub enum ResetTo {
    Earliest,
    Latest,
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
    Offset(i64),
}

/// The explorer's clients, made once.
pub struct Explorer {
    brokers: String,
    /// Metadata and watermarks.
    meta: Arc<BaseConsumer>,
    admin: AdminClient<DefaultClientContext>,
    producer: FutureProducer,
    /// One client per group, for its committed offsets (OffsetFetch, no joining).
    group_clients: Mutex<BTreeMap<String, Arc<BaseConsumer>>>,
}

impl Explorer {
    pub fn new(brokers: &str) -> Result<Self, ExplorerError> {
        let config = saga_shared::kafka::client_config(brokers);
        Ok(Self {
            brokers: brokers.to_owned(),
            meta: Arc::new(config.create()?),
            admin: config.create()?,
            producer: saga_shared::kafka::producer(brokers)?,
            group_clients: Mutex::default(),
        })
    }

    /// The dashboard's producer (idempotent, acks=all).
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    fn group_client(&self, group: &str) -> Result<Arc<BaseConsumer>, ExplorerError> {
        let mut clients = self.group_clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(group) {
            return Ok(c.clone());
        }
        let c: Arc<BaseConsumer> = Arc::new(
            saga_shared::kafka::client_config(&self.brokers)
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .create()?,
        );
        clients.insert(group.to_owned(), c.clone());
        Ok(c)
    }

    /// The cluster's brokers and every topic (Kafka's internal ones last) with its partitions'
    /// offsets.
    pub async fn cluster(
        &self,
        observer: &Observer,
    ) -> Result<(Vec<BrokerInfo>, Vec<TopicSummary>), ExplorerError> {
        let meta = self.meta.clone();
        let metadata =
            tokio::task::spawn_blocking(move || meta.fetch_metadata(None, TIMEOUT)).await??;
        let brokers = metadata
            .brokers()
            .iter()
            .map(|b| BrokerInfo {
                id: b.id(),
                host: b.host().to_owned(),
                port: b.port(),
            })
            .collect();
        Ok((brokers, self.summaries(&metadata, observer)))
    }

    /// Every topic (Kafka's internal ones last) with its partitions' offsets.
    pub async fn topics(&self, observer: &Observer) -> Result<Vec<TopicSummary>, ExplorerError> {
        Ok(self.cluster(observer).await?.1)
    }

    fn summaries(
        &self,
        metadata: &rdkafka::metadata::Metadata,
        observer: &Observer,
    ) -> Vec<TopicSummary> {
        let seen: BTreeMap<(String, i32), (i64, i64, u64)> = observer
            .partitions()
            .into_iter()
            .map(|p| ((p.topic, p.partition), (p.start, p.end, p.bytes)))
            .collect();
        let mut topics: Vec<TopicSummary> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| {
                let partitions: Vec<PartitionSummary> = t
                    .partitions()
                    .iter()
                    .map(|p| {
                        let (start, end, bytes) = seen
                            .get(&(t.name().to_owned(), p.id()))
                            .copied()
                            .unwrap_or_default();
                        PartitionSummary {
                            partition: p.id(),
                            leader: p.leader(),
                            start,
                            end,
                            bytes,
                        }
                    })
                    .collect();
                TopicSummary {
                    internal: t.name().starts_with("__"),
                    name: t.name().to_owned(),
                    records: partitions.iter().map(|p| p.end - p.start).sum(),
                    bytes: partitions.iter().map(|p| p.bytes).sum(),
                    partitions,
                }
            })
            .collect();
        topics.sort_by(|a, b| (a.internal, &a.name).cmp(&(b.internal, &b.name)));
        topics
    }

    /// `topic`'s configs, as DescribeConfigs answers them.
    pub async fn configs(&self, topic: &str) -> Result<Vec<ConfigEntry>, ExplorerError> {
        let opts = AdminOptions::new().request_timeout(Some(TIMEOUT));
        let results = self
            .admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &opts)
            .await?;
        let resource = results
            .into_iter()
            .next()
            .ok_or_else(|| ExplorerError::NoTopic(topic.to_owned()))?
            .map_err(|_| ExplorerError::NoTopic(topic.to_owned()))?;
        let mut entries: Vec<ConfigEntry> = resource
            .entries
            .into_iter()
            .map(|e| ConfigEntry {
                name: e.name,
                value: e.value,
                is_default: e.is_default,
                is_read_only: e.is_read_only,
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Up to `limit` records of `topic`'s `partition` from `start`, read as a consumer with
    /// `isolation.level=read_committed` (`committed`) or `read_uncommitted` would.
    pub async fn messages(
        &self,
        topic: &str,
        partition: i32,
        start: Start,
        limit: usize,
        committed: bool,
    ) -> Result<Vec<Record>, ExplorerError> {
        let brokers = self.brokers.clone();
        let topic = topic.to_owned();
        let limit = limit.clamp(1, 500);
        tokio::task::spawn_blocking(move || {
            read_records(&brokers, &topic, partition, start, limit, committed)
        })
        .await?
    }

    /// Produces `record` to `topic`; answers where it landed.
    pub async fn produce(
        &self,
        topic: &str,
        record: NewRecord,
    ) -> Result<(i32, i64), ExplorerError> {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &record.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut r: FutureRecord<'_, str, str> = FutureRecord::to(topic)
            .payload(record.value.as_str())
            .headers(headers);
        if let Some(k) = &record.key {
            r = r.key(k.as_str());
        }
        if let Some(p) = record.partition {
            r = r.partition(p);
        }
        self.producer
            .send(r, TIMEOUT)
            .await
            .map(|d| (d.partition, d.offset))
            .map_err(|(e, _)| ExplorerError::Kafka(e))
    }

    /// Every consumer group (or only `only`), with committed offsets and lag per partition.
    pub async fn groups(
        &self,
        observer: &Observer,
        only: Option<&str>,
    ) -> Result<Vec<GroupView>, ExplorerError> {
        let described = groups::describe(&self.brokers, only)
            .await
            .map_err(|e| ExplorerError::Other(e.to_string()))?;
        let topics = self.topics(observer).await?;
        let mut views = Vec::new();
        for g in described {
            views.push(self.group_view(g, &topics, observer).await?);
        }
        Ok(views)
    }

    async fn group_view(
        &self,
        g: Group,
        topics: &[TopicSummary],
        observer: &Observer,
    ) -> Result<GroupView, ExplorerError> {
        let now = chrono::Utc::now().timestamp_millis();
        // Every partition of every topic: the group's committed offsets say which it reads.
        let mut tpl = TopicPartitionList::new();
        for t in topics {
            for p in &t.partitions {
                tpl.add_partition(&t.name, p.partition);
            }
        }
        let client = self.group_client(&g.name)?;
        let committed =
            tokio::task::spawn_blocking(move || client.committed_offsets(tpl, TIMEOUT)).await??;
        let owner = |topic: &str, partition: i32| {
            g.members
                .iter()
                .find(|m| {
                    m.assignment
                        .iter()
                        .any(|(t, ps)| t == topic && ps.contains(&partition))
                })
                .map(|m| m.client_id.clone())
        };
        let committed_at = |topic: &str, partition: i32| {
            committed
                .find_partition(topic, partition)
                .and_then(|e| match e.offset() {
                    Offset::Offset(n) => Some(n),
                    _ => None,
                })
        };
        // The topics it reads: those it owns or has committed a partition of. Every partition
        // of them counts, the ones it has not committed yet too (they lag from the log start,
        // where `auto.offset.reset=earliest` starts), or a stopped group would hide its lag.
        let reads = |t: &TopicSummary| {
            t.partitions.iter().any(|p| {
                committed_at(&t.name, p.partition).is_some()
                    || owner(&t.name, p.partition).is_some()
            })
        };
        let mut partitions = Vec::new();
        for t in topics.iter().filter(|t| reads(t)) {
            for p in &t.partitions {
                let offset = committed_at(&t.name, p.partition);
                let owned = owner(&t.name, p.partition);
                let from = offset.unwrap_or(p.start);
                partitions.push(GroupPartition {
                    topic: t.name.clone(),
                    partition: p.partition,
                    committed: offset,
                    end: p.end,
                    lag: (p.end - from).max(0),
                    behind_ms: observer.behind_ms(&t.name, p.partition, from, now),
                    owner: owned,
                });
            }
        }
        Ok(GroupView {
            lag: partitions.iter().map(|p| p.lag).sum(),
            behind_ms: partitions.iter().filter_map(|p| p.behind_ms).max(),
            name: g.name,
            state: g.state,
            members: g.members,
            partitions,
        })
    }

    /// The lag of `group` over `topics`: log end minus committed offset (or minus the log start
    /// where it has not committed), summed over their partitions; and how far behind that is in
    /// time, the most of the partitions' ([`Observer::behind_ms`]).
    pub async fn service_lag(
        &self,
        observer: &Observer,
        group: &str,
        topics: &[saga_shared::events::Topic],
    ) -> Result<(i64, Option<i64>), ExplorerError> {
        let parts: Vec<_> = observer
            .partitions()
            .into_iter()
            .filter(|p| topics.iter().any(|t| t.name() == p.topic))
            .collect();
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition(&p.topic, p.partition);
        }
        if tpl.count() == 0 {
            return Ok((0, Some(0)));
        }
        let client = self.group_client(group)?;
        let committed =
            tokio::task::spawn_blocking(move || client.committed_offsets(tpl, TIMEOUT)).await??;
        let now = chrono::Utc::now().timestamp_millis();
        let (mut lag, mut behind) = (0, Some(0));
        for p in &parts {
            let at = match committed
                .find_partition(&p.topic, p.partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(n)) => n,
                _ => p.start,
            };
            lag += (p.end - at).max(0);
            behind = behind.max(observer.behind_ms(&p.topic, p.partition, at, now));
        }
        Ok((lag, behind))
    }

    /// Moves `group`'s committed offsets on every partition it has committed on (or only
    /// `topic`'s), which Kafka allows only while the group has no active member; with
    /// `dry_run`, only says where they would go. Answers each partition with its committed
    /// offset and its new one.
    pub async fn reset(
        &self,
        observer: &Observer,
        group: &str,
        topic: Option<&str>,
        to: ResetTo,
        dry_run: bool,
    ) -> Result<Vec<PlannedOffset>, ExplorerError> {
        let view = self.groups(observer, Some(group)).await?.into_iter().next();
        let Some(view) = view else {
            return Err(ExplorerError::NothingToReset(group.to_owned()));
        };
        if !view.members.is_empty() {
            return Err(ExplorerError::GroupActive {
                group: group.to_owned(),
                members: view.members.len(),
            });
        }
        let chosen: Vec<&GroupPartition> = view
            .partitions
            .iter()
            .filter(|p| p.committed.is_some() && topic.is_none_or(|t| p.topic == t))
            .collect();
        if chosen.is_empty() {
            return Err(ExplorerError::NothingToReset(group.to_owned()));
        }
        let meta = self.meta.clone();
        let wanted: Vec<(String, i32, Option<i64>)> = chosen
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.committed))
            .collect();
        let targets = tokio::task::spawn_blocking(move || -> Result<_, ExplorerError> {
            let mut out = Vec::new();
            for (t, p, committed) in wanted {
                let (low, high) = meta.fetch_watermarks(&t, p, TIMEOUT)?;
                let offset = match to {
                    ResetTo::Earliest => low,
                    ResetTo::Latest => high,
                    ResetTo::Offset(n) => n.clamp(low, high),
                    ResetTo::Timestamp(ms) => {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition_offset(&t, p, Offset::Offset(ms))?;
                        let found = meta.offsets_for_times(tpl, TIMEOUT)?;
                        match found.find_partition(&t, p).map(|e| e.offset()) {
                            Some(Offset::Offset(n)) => n,
                            // No record that late: the end.
                            _ => high,
                        }
                    }
                };
                out.push(PlannedOffset {
                    topic: t,
                    partition: p,
                    committed,
                    offset,
                });
            }
            Ok(out)
        })
        .await??;
        if dry_run {
            return Ok(targets);
        }
        let mut tpl = TopicPartitionList::new();
        for t in &targets {
            tpl.add_partition_offset(&t.topic, t.partition, Offset::Offset(t.offset))?;
        }
        let client = self.group_client(group)?;
        tokio::task::spawn_blocking(move || client.commit(&tpl, CommitMode::Sync)).await??;
        Ok(targets)
    }
}

fn read_records(
    brokers: &str,
    topic: &str,
    partition: i32,
    start: Start,
    limit: usize,
    committed: bool,
) -> Result<Vec<Record>, ExplorerError> {
    let isolation = if committed {
        "read_committed"
    } else {
        "read_uncommitted"
    };
    // The end of the partition is reported as an "error": for read_committed that is the last
    // stable offset, which an open transaction holds below the high watermark.
    let consumer: BaseConsumer<crate::EndIsNotAnError> = saga_shared::kafka::client_config(brokers)
        .set("group.id", "lab-dashboard-browser")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create_with_context(crate::EndIsNotAnError)?;
    check_partition(&consumer, topic, partition)?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
    let first = first_offset(&consumer, topic, partition, start, limit, (low, high))?;
    let mut records = Vec::new();
    if first >= high {
        return Ok(records);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(first))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + TIMEOUT;
    while records.len() < limit && Instant::now() < deadline {
        let m = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(m) => m?,
        };
        records.push(record(&m));
        if m.offset() + 1 >= high {
            break;
        }
    }
    Ok(records)
}

/// That `partition` of `topic` exists.
fn check_partition<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Result<(), ExplorerError> {
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let exists = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none());
    let Some(t) = exists else {
        return Err(ExplorerError::NoTopic(topic.to_owned()));
    };
    if !t.partitions().iter().any(|p| p.id() == partition) {
        return Err(ExplorerError::NoPartition {
            topic: topic.to_owned(),
            partition,
        });
    }
    Ok(())
}

/// Where reading starts: the low watermark, the last `limit` records, an offset (clamped to
/// the partition), or the first record at or after a time (the end if there is none).
fn first_offset<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    start: Start,
    limit: usize,
    (low, high): (i64, i64),
) -> Result<i64, ExplorerError> {
    Ok(match start {
        Start::Earliest => low,
        Start::Latest => (high - limit as i64).max(low),
        Start::Offset(n) => n.clamp(low, high),
        Start::Timestamp(ms) => {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(ms))?;
            let found = consumer.offsets_for_times(tpl, TIMEOUT)?;
            match found.find_partition(topic, partition).map(|e| e.offset()) {
                Some(Offset::Offset(n)) => n,
                _ => high,
            }
        }
    })
}

/// A record as the dashboard shows it: text where the bytes are UTF-8 (lossy elsewhere).
fn record(m: &impl Message) -> Record {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| (x.key.to_owned(), x.value.map(text).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    Record {
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis().unwrap_or(0),
        key: m.key().map(text),
        headers,
        value: m.payload().map(|v| text(saga_shared::schemas::payload(v))),
        schema_id: m
            .payload()
            .and_then(saga_shared::schemas::unframe)
            .map(|(id, _)| id),
        schema_version: None,
        size: m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len),
    }
}
