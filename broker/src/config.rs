//! Broker settings, shared by the binary's flags and by code that embeds the broker.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// When appended data is forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Leave it to the OS (acknowledged writes survive a process crash, not a power loss).
    Never,
    /// fsync before every acknowledgement (survives power loss; slowest).
    Always,
    /// fsync dirty partitions on this period (a power loss loses at most this window).
    Interval(Duration),
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(Self::Never),
            "always" => Ok(Self::Always),
            ms => ms
                .strip_suffix("ms")
                .unwrap_or(ms)
                .parse::<u64>()
                .map(|ms| Self::Interval(Duration::from_millis(ms.max(1))))
                .map_err(|_| {
                    format!("expected 'never', 'always' or a period in ms like '1000ms', got '{s}'")
                }),
        }
    }
}

/// Everything the broker needs to run.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where topics, committed offsets and producer ids are stored.
    pub data_dir: PathBuf,
    /// `host:port` given to clients in metadata; defaults to the listener's address.
    pub advertised: Option<String>,
    /// Partitions of auto-created topics and of CreateTopics with `num_partitions = -1`.
    pub default_partitions: i32,
    /// Create unknown topics when a client asks for their metadata.
    pub auto_create_topics: bool,
    pub fsync: FsyncPolicy,
    /// Segment roll size in bytes.
    pub segment_bytes: u64,
    /// Segment roll age in ms.
    pub segment_ms: u64,
    /// Default time retention in ms, `-1` for none.
    pub retention_ms: i64,
    /// Default size retention per partition in bytes, `-1` for none.
    pub retention_bytes: i64,
    /// How often retention runs (and idle segment files are closed).
    pub retention_check_interval: Duration,
    /// How often the log cleaner looks for compacted partitions to clean
    /// (`log.cleaner.backoff.ms`).
    pub log_cleaner_backoff: Duration,
    /// An old segment's file no read used for this long is closed (reopened on the next read),
    /// so open files grow with the partitions in use rather than with the segments on disk.
    pub segment_file_idle: Duration,
    /// Largest request frame accepted; bigger frames close the connection
    /// (`socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// Bytes of requests being read or handled across all connections at once
    /// (`queued.max.request.bytes`): a connection whose next bytes would pass it waits, so many
    /// clients sending large requests at once cannot take the broker's memory. At least
    /// `max_request_bytes` (a smaller value is raised to it).
    pub queued_max_request_bytes: usize,
    /// Connections beyond this wait for a free slot (`max.connections`).
    pub max_connections: usize,
    /// A connection with no request for this long is closed (`connections.max.idle.ms`).
    pub connections_max_idle: Duration,
    /// Once the first byte of a request arrives, the whole request must arrive within this, or
    /// the connection is closed: a client cannot hold a connection (and the bytes of its half-sent
    /// request) by sending a few bytes and then nothing.
    pub request_read_timeout: Duration,
    /// Partitions one CreateTopics request (or one Metadata request's automatic creations) may
    /// make in all; Kafka's controller refuses more than 10,000 records per operation.
    pub max_partitions_per_request: i32,
    /// How long a new group waits for more members before its first rebalance completes.
    pub group_initial_rebalance_delay: Duration,
    pub group_min_session_timeout: Duration,
    pub group_max_session_timeout: Duration,
    /// Longest `transaction.timeout.ms` a transactional producer may ask for (Kafka's
    /// `transaction.max.timeout.ms`); more is answered with INVALID_TRANSACTION_TIMEOUT.
    pub transaction_max_timeout: Duration,
    /// How often transactions past their timeout are looked for (and aborted).
    pub transaction_check_interval: Duration,
    /// A node of a cluster (`--voters`); `None`: a single node, on its own.
    pub cluster: Option<ClusterConfig>,
}

/// A node of a cluster: its id, the metadata quorum's voters, and the brokers' liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `--node-id`; one of the voters.
    pub node_id: i32,
    /// `HOST:PORT` the quorum listens on for the other voters (`--controller-listen`).
    pub controller_listen: String,
    /// Each voter's id and `HOST:PORT` of its `--controller-listen`.
    pub voters: BTreeMap<i32, String>,
    /// How often this node's broker heartbeats to the active controller
    /// (`broker.heartbeat.interval.ms`).
    pub heartbeat_interval: Duration,
    /// A broker not heard from for this long is fenced (`broker.session.timeout.ms`).
    pub session_timeout: Duration,
    /// Replicas of a topic created without a replication factor (automatically, or with -1)
    /// (`default.replication.factor`).
    pub default_replication_factor: usize,
    /// A follower that has not caught up with its leader for this long leaves the ISR
    /// (`replica.lag.time.max.ms`).
    pub replica_lag_time_max: Duration,
    /// In-sync replicas an acks=all produce needs on a topic that does not set its own
    /// `min.insync.replicas` (the broker's `min.insync.replicas`).
    pub min_insync_replicas: usize,
    /// Partitions of `__consumer_offsets`, which holds the groups' committed offsets
    /// (`offsets.topic.num.partitions`).
    pub offsets_topic_partitions: i32,
    /// Partitions of `__transaction_state`, which holds the transaction coordinator's state
    /// (`transaction.state.log.num.partitions`).
    pub transaction_state_partitions: i32,
}

impl ClusterConfig {
    /// Parses `--voters`: `ID@HOST:PORT` separated by commas.
    pub fn parse_voters(voters: &str) -> Result<BTreeMap<i32, String>, String> {
        let mut parsed = BTreeMap::new();
        for voter in voters.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            let bad = || format!("a voter is ID@HOST:PORT, got '{voter}'");
            let (id, address) = voter.split_once('@').ok_or_else(bad)?;
            let id: i32 = id.parse().map_err(|_| bad())?;
            if id < 0 || !address.contains(':') {
                return Err(bad());
            }
            if parsed.insert(id, address.to_string()).is_some() {
                return Err(format!("voter {id} is named twice"));
            }
        }
        if parsed.is_empty() {
            return Err("--voters names no voter".into());
        }
        Ok(parsed)
    }

    /// The cluster's id, the same on every node: derived from the voters (FNV-1a, twice).
    pub fn cluster_id(&self) -> String {
        let text: String = self
            .voters
            .iter()
            .map(|(id, address)| format!("{id}@{address},"))
            .collect();
        format!(
            "{:016x}{:016x}",
            fnv1a(FNV_OFFSET, text.bytes()),
            fnv1a(FNV_OFFSET.rotate_left(32), text.bytes())
        )
    }
}

/// FNV-1a's offset basis, the usual `seed` of [`fnv1a`].
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The 64-bit FNV-1a hash of `bytes` from `seed`: stable across nodes and versions (a cluster's
/// id, the coordinator a group id falls to).
pub fn fnv1a(seed: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(seed, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("broker-data"),
            advertised: None,
            default_partitions: 1,
            auto_create_topics: true,
            fsync: FsyncPolicy::Never,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            retention_check_interval: Duration::from_secs(30),
            log_cleaner_backoff: Duration::from_secs(15),
            segment_file_idle: Duration::from_secs(60),
            max_request_bytes: 100 * 1024 * 1024,
            queued_max_request_bytes: 256 * 1024 * 1024,
            max_connections: 10_000,
            connections_max_idle: Duration::from_secs(600),
            request_read_timeout: Duration::from_secs(30),
            max_partitions_per_request: 10_000,
            group_initial_rebalance_delay: Duration::from_millis(300),
            group_min_session_timeout: Duration::from_millis(1000),
            group_max_session_timeout: Duration::from_secs(1800),
            transaction_max_timeout: Duration::from_secs(15 * 60),
            transaction_check_interval: Duration::from_secs(1),
            cluster: None,
        }
    }
}

/// Where clients are told to connect, per listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub host: String,
    pub port: i32,
}
