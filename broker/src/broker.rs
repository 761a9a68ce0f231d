//! `Broker`: the shared state every connection works on.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Mutex;

use crate::config::{BrokerConfig, FsyncPolicy};
use crate::group::GroupCoordinator;
use crate::offset_store::OffsetStore;
use crate::topics::{TopicError, TopicRegistry};
use crate::txn::TxnCoordinator;

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
    pub producer_ids: ProducerIdAllocator,
    pub txns: TxnCoordinator,
}

impl Broker {
    /// Opens (recovering) the data directory.
    pub fn open(
        config: BrokerConfig,
        advertised_host: String,
        advertised_port: i32,
    ) -> Result<Self, TopicError> {
        fs::create_dir_all(&config.data_dir)?;
        let cluster_id = read_or_create(&config.data_dir.join("cluster-id"), || {
            uuid::Uuid::new_v4().simple().to_string()
        })?;
        let topics = TopicRegistry::open(&config)?;
        let offsets = OffsetStore::open(&config.data_dir, config.fsync == FsyncPolicy::Always)?;
        let producer_ids = ProducerIdAllocator::open(&config.data_dir)?;
        let txns = TxnCoordinator::open(
            &config.data_dir,
            config.fsync == FsyncPolicy::Always,
            config.transaction_max_timeout.as_millis() as i64,
        )?;
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
        };
        // The partitions know their open transactions now: finish what a crash interrupted.
        broker.offsets.raise_seq(broker.txns.highest_staged_seq());
        broker.txns.recover(&broker);
        Ok(broker)
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

/// Hands out producer ids, reserving them in blocks on disk so ids never repeat across restarts.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    path: std::path::PathBuf,
    /// (next id to hand out, end of the block reserved on disk)
    state: Mutex<(i64, i64)>,
}

const PRODUCER_ID_BLOCK: i64 = 1000;

impl ProducerIdAllocator {
    fn open(data_dir: &Path) -> io::Result<Self> {
        let path = data_dir.join("producer-id-block");
        let reserved = fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        Ok(Self {
            path,
            state: Mutex::new((reserved, reserved)),
        })
    }

    pub fn next(&self) -> io::Result<i64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 >= state.1 {
            let end = state.0 + PRODUCER_ID_BLOCK;
            let tmp = self.path.with_extension("tmp");
            fs::write(&tmp, end.to_string())?;
            fs::File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                crate::storage::sync_dir(dir)?;
            }
            state.1 = end;
        }
        let id = state.0;
        state.0 += 1;
        Ok(id)
    }
}
