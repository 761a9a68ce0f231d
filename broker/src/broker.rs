//! `Broker`: the shared state every connection works on.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::config::{BrokerConfig, FsyncPolicy};
use crate::group::GroupCoordinator;
use crate::offset_store::{Committed, OFFSETS_TOPIC, OffsetStore};
use crate::producer_ids::ProducerIdAllocator;
use crate::quorum::Quorum;
use crate::storage::AppendError;
use crate::storage::batch::Marker;
use crate::topics::{TopicError, TopicRegistry};
use crate::txn::{Participants, TxnCoordinator};

/// The node id of this single broker; it leads every partition and coordinates every group.
pub const NODE_ID: i32 = 0;

/// Everything the broker knows, shared by all connections.
#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    /// Host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Stable id of this cluster, kept in `<data-dir>/cluster-id`.
    pub cluster_id: String,
    pub topics: TopicRegistry,
    pub groups: GroupCoordinator,
    pub offsets: OffsetStore,
    pub producer_ids: Arc<ProducerIdAllocator>,
    pub txns: TxnCoordinator,
    /// This node's part in the metadata quorum, when it is a node of a cluster.
    pub quorum: Option<Arc<Quorum>>,
    /// In a cluster: how a transaction's marker reaches a partition another node leads.
    pub remote_markers: OnceLock<RemoteMarkers>,
    /// This node's network link, which the lab can cut ([`crate::link`]).
    pub link: Arc<crate::link::Link>,
}

impl Broker {
    /// Opens (recovering) the data directory.
    pub fn open(
        config: BrokerConfig,
        advertised_host: String,
        advertised_port: i32,
    ) -> Result<Self, TopicError> {
        fs::create_dir_all(&config.data_dir)?;
        let cluster_id = match &config.cluster {
            Some(cluster) => cluster.cluster_id(),
            None => read_or_create(&config.data_dir.join("cluster-id"), || {
                uuid::Uuid::new_v4().simple().to_string()
            })?,
        };
        let topics = TopicRegistry::open(&config)?;
        // A cluster keeps them in `__consumer_offsets`, loaded as this node comes to lead it.
        let offsets = match &config.cluster {
            Some(cluster) => OffsetStore::replicated(cluster.offsets_topic_partitions),
            None => OffsetStore::open(&config.data_dir, config.fsync == FsyncPolicy::Always)?,
        };
        let producer_ids = Arc::new(ProducerIdAllocator::open(&config.data_dir)?);
        let max_timeout_ms = config.transaction_max_timeout.as_millis() as i64;
        // A cluster keeps them in `__transaction_state`, loaded as this node comes to lead it.
        let txns = match &config.cluster {
            Some(cluster) => TxnCoordinator::replicated(
                (
                    cluster.transaction_state_partitions,
                    cluster.offsets_topic_partitions,
                ),
                max_timeout_ms,
                producer_ids.clone(),
            ),
            None => TxnCoordinator::open(
                &config.data_dir,
                config.fsync == FsyncPolicy::Always,
                max_timeout_ms,
                producer_ids.clone(),
            )?,
        };
        let groups = GroupCoordinator::new(
            config.group_initial_rebalance_delay,
            config.group_min_session_timeout,
            config.group_max_session_timeout,
        );
        let broker = Self {
            config,
            advertised_host,
            advertised_port,
            cluster_id,
            topics,
            groups,
            offsets,
            producer_ids,
            txns,
            quorum: None,
            remote_markers: OnceLock::new(),
            link: Arc::default(),
        };
        // The partitions know their open transactions now: finish what a crash interrupted.
        broker.offsets.raise_seq(broker.txns.highest_staged_seq());
        broker.txns.recover(&broker);
        Ok(broker)
    }
}

impl Broker {
    /// Replicas of a topic created without a replication factor: 1 on a single node, the
    /// cluster's `--default-replication-factor` in a cluster.
    pub fn default_replication_factor(&self) -> usize {
        self.config
            .cluster
            .as_ref()
            .map_or(1, |c| c.default_replication_factor)
    }

    /// This node's id: [`NODE_ID`] for a single node, `--node-id` in a cluster.
    pub fn node_id(&self) -> i32 {
        self.config.cluster.as_ref().map_or(NODE_ID, |c| c.node_id)
    }
}

fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> io::Result<String> {
    match fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let value = make();
            fs::write(path, &value)?;
            Ok(value)
        }
    }
}

/// Writes a marker into a partition some other node leads: (topic, partition), producer id,
/// epoch, the marker. Set on a node of a cluster once it has joined it.
pub struct RemoteMarkers(pub MarkerWriter);

/// See [`RemoteMarkers`].
pub type MarkerWriter =
    Box<dyn Fn((&str, i32), i64, i16, Marker) -> Result<(), AppendError> + Send + Sync>;

impl std::fmt::Debug for RemoteMarkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteMarkers")
    }
}

impl Broker {
    /// Ends `producer_id`'s transaction in a partition this node holds (leads, in a cluster):
    /// the marker, which in a cluster the in-sync replicas must have before it counts; in
    /// `__consumer_offsets`, the offsets the transaction committed there count from then on
    /// (or are dropped, on an abort).
    pub fn write_marker_here(
        &self,
        topic: &str,
        partition: &crate::topics::Partition,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
    ) -> Result<(), AppendError> {
        let epoch = partition.leader_epoch();
        let written = match partition.append_marker(producer_id, producer_epoch, marker) {
            Ok(written) => written,
            Err(AppendError::Deleted) => return Ok(()),
            Err(e) => return Err(e),
        };
        if self.quorum.is_some() && written.is_some() {
            let end = partition.log().next_offset();
            crate::internal_topic::replicated(partition, (end, epoch), 1)
                .map_err(AppendError::Io)?;
        }
        if topic == OFFSETS_TOPIC {
            self.offsets
                .end_transaction(partition.index, producer_id, marker.commit);
        }
        Ok(())
    }

    /// In a cluster, waits a little (on the blocking pool) for this node's topics to follow
    /// the metadata it has applied: a client told by another node that this one leads a
    /// partition may ask before this node has taken the lead (a new topic, a failover), and a
    /// refusal then would make it retry, reordering its in-flight batches.
    pub fn follow_metadata_briefly(&self) {
        if let Some(quorum) = &self.quorum
            && quorum.reconciled_index() < quorum.applied_index()
        {
            let within = std::time::Duration::from_millis(500);
            tokio::runtime::Handle::current().block_on(quorum.reconciled(within));
        }
    }
}

/// Ending a transaction, across the partitions' logs and the committed offsets: the
/// coordinator ([`TxnCoordinator`]) decides, this writes.
impl Participants for Broker {
    /// In a cluster, a partition led elsewhere gets its marker from its leader
    /// (WriteTxnMarkers, [`Broker::remote_markers`]).
    fn write_marker(
        &self,
        (topic, index): (&str, i32),
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
    ) -> Result<(), AppendError> {
        let Some(partition) = self
            .topics
            .get(topic)
            .and_then(|t| t.partition(index).cloned())
        else {
            return Ok(()); // deleted meanwhile
        };
        if self.quorum.is_some() && !partition.leads() {
            let remote = self.remote_markers.get().ok_or_else(|| {
                AppendError::Io(io::Error::other("no way to reach the partition's leader"))
            })?;
            return (remote.0)((topic, index), producer_id, producer_epoch, marker);
        }
        self.write_marker_here(topic, &partition, producer_id, producer_epoch, marker)
    }

    fn commit_offsets(
        &self,
        group: &str,
        commits: Vec<(String, i32, Committed, u64)>,
    ) -> io::Result<()> {
        self.offsets.commit_unless_newer(group, commits)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::clock::now_ms;
    use crate::txn::{StagedOffset, TxnState};

    /// The transaction coordinator with the rest of the state. A broker on `dir` with a one-partition topic `t` and the transactional id `tx`
    /// initialised: its config, the broker, and the producer's id and epoch.
    fn broker_with_producer(dir: &Path) -> (BrokerConfig, Broker, i64, i16) {
        let config = BrokerConfig {
            data_dir: dir.to_path_buf(),
            ..BrokerConfig::default()
        };
        let broker = Broker::open(config.clone(), "localhost".into(), 9092).unwrap();
        broker.topics.create("t", Some(1), BTreeMap::new()).unwrap();
        let (id, epoch) = broker
            .txns
            .init_producer(&broker, "tx", 60_000, None)
            .unwrap();
        (config, broker, id, epoch)
    }

    #[test]
    fn the_state_file_is_compacted_by_the_ticker_and_replays_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (_, broker, id, epoch) = broker_with_producer(dir.path());
        for _ in 0..400 {
            let txns = &broker.txns;
            txns.add_partitions("tx", id, epoch, vec![("t".into(), 0)])
                .unwrap();
            txns.end_txn(&broker, "tx", id, epoch, false).unwrap();
        }
        let lines = |path: &Path| std::fs::read_to_string(path).unwrap().lines().count();
        let path = dir.path().join("transactions.jsonl");
        assert!(lines(&path) > 1000);
        let before = broker.txns.snapshot();
        broker.txns.tick(&broker, now_ms());
        assert_eq!(lines(&path), 1, "one line per transactional id");
        // Stored changes after the compaction go to the new file.
        broker
            .txns
            .add_partitions("tx", id, epoch, vec![("t".into(), 0)])
            .unwrap();
        drop(broker);
        let reopened = TxnCoordinator::open(
            dir.path(),
            false,
            900_000,
            Arc::new(ProducerIdAllocator::open(dir.path()).unwrap()),
        )
        .unwrap();
        let after = reopened.snapshot();
        assert_eq!(after[0].state, TxnState::Ongoing);
        assert_eq!(
            (after[0].producer_id, after[0].producer_epoch),
            (before[0].producer_id, before[0].producer_epoch)
        );
    }

    /// A commit decided (PrepareCommit stored) whose staged offsets were partly applied before
    /// the broker died: finishing it on restart applies the rest, and leaves alone what was
    /// applied, even where the group committed again since.
    #[test]
    fn finishing_a_commit_again_applies_only_offsets_not_committed_since() {
        let dir = tempfile::tempdir().unwrap();
        let (config, broker, id, epoch) = broker_with_producer(dir.path());
        let committed = |offset| Committed {
            offset,
            leader_epoch: -1,
            metadata: None,
        };
        // Both offsets were staged before any of the commits below.
        let staged_at = Some(broker.offsets.last_seq());
        let staged = |group: &str, offset| StagedOffset {
            group: group.into(),
            topic: "t".into(),
            partition: 0,
            offset,
            leader_epoch: -1,
            metadata: None,
            seq: staged_at,
        };
        // The first attempt applied g1's offset, then died; g1 committed 9 afterwards.
        let offsets = &broker.offsets;
        offsets
            .commit("g1", vec![("t".into(), 0, committed(5))])
            .unwrap();
        offsets
            .commit("g1", vec![("t".into(), 0, committed(9))])
            .unwrap();
        let mut meta = broker.txns.describe("tx").unwrap();
        meta.state = TxnState::PrepareCommit;
        meta.producer_epoch = epoch;
        meta.producer_id = id;
        meta.groups = ["g1".to_string(), "g2".to_string()].into();
        meta.offsets = vec![staged("g1", 5), staged("g2", 7)];
        drop(broker);
        let mut line = serde_json::to_vec(&meta).unwrap();
        line.push(b'\n');
        let path = dir.path().join("transactions.jsonl");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, &line).unwrap();

        let broker = Broker::open(config, "localhost".into(), 9092).unwrap();
        assert_eq!(
            broker.txns.describe("tx").unwrap().state,
            TxnState::CompleteCommit
        );
        let offset = |g: &str| broker.offsets.fetch(g, "t", 0).map(|c| c.offset);
        assert_eq!(
            offset("g1"),
            Some(9),
            "not moved back to the transaction's 5"
        );
        assert_eq!(offset("g2"), Some(7), "applied on restart");
    }
}
