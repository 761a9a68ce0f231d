//! The `broker` binary: flags and environment to a [`broker::BrokerConfig`], then run.

use std::path::PathBuf;
use std::time::Duration;

use broker::{BrokerConfig, FsyncPolicy};
use clap::Parser;
use tokio::net::TcpListener;

/// A forged array length in a request must close that connection, not abort the process.
#[global_allocator]
static ALLOCATOR: broker::wire_alloc::LazyHugeAlloc = broker::wire_alloc::LazyHugeAlloc;

/// A durable, Kafka-wire-compatible broker: a single node, or a node of a cluster (--voters).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on. Repeat (or separate with commas) for several listeners. Only this
    /// machine by default; `0.0.0.0:9092` serves the network (e.g. in a container).
    #[arg(
        long,
        env = "BROKER_LISTEN",
        default_value = "127.0.0.1:9092",
        value_delimiter = ','
    )]
    listen: Vec<String>,
    /// HOST:PORT clients are told to connect to, one per --listen in the same order (default:
    /// the listen address, 127.0.0.1 for 0.0.0.0). E.g. `--listen 0.0.0.0:9092,0.0.0.0:29092
    /// --advertised broker:9092,localhost:29092` serves containers and the host at once.
    #[arg(long, env = "BROKER_ADVERTISED", value_delimiter = ',')]
    advertised: Vec<String>,
    /// Directory for topics, committed offsets and producer ids.
    #[arg(long, env = "BROKER_DATA_DIR", default_value = "broker-data")]
    data_dir: PathBuf,
    /// Partitions of auto-created topics.
    #[arg(long, env = "BROKER_DEFAULT_PARTITIONS", default_value_t = 1)]
    default_partitions: i32,
    /// Don't create unknown topics on metadata requests.
    #[arg(long, env = "BROKER_NO_AUTO_CREATE")]
    no_auto_create_topics: bool,
    /// When to fsync appended data: never (OS decides; survives a process crash), always (before
    /// each acknowledgement; survives power loss), or a period like 1000ms.
    #[arg(long, env = "BROKER_FSYNC", default_value = "never")]
    fsync: FsyncPolicy,
    /// Roll a segment at this size in bytes (at least 1048576, as in Kafka 4).
    #[arg(long, env = "BROKER_SEGMENT_BYTES", default_value_t = 128 * 1024 * 1024)]
    segment_bytes: u64,
    /// Roll a segment at this age in ms.
    #[arg(long, env = "BROKER_SEGMENT_MS", default_value_t = 7 * 24 * 3600 * 1000)]
    segment_ms: u64,
    /// Default time retention in ms (-1: keep forever).
    #[arg(long, env = "BROKER_RETENTION_MS", default_value_t = 7 * 24 * 3600 * 1000, allow_negative_numbers = true)]
    retention_ms: i64,
    /// Default size retention per partition in bytes (-1: no limit).
    #[arg(long, env = "BROKER_RETENTION_BYTES", default_value_t = -1, allow_negative_numbers = true)]
    retention_bytes: i64,
    /// How often retention runs, in ms.
    #[arg(long, env = "BROKER_RETENTION_CHECK_MS", default_value_t = 30_000)]
    retention_check_ms: u64,
    /// How often the log cleaner looks for compacted partitions to clean, in ms
    /// (log.cleaner.backoff.ms).
    #[arg(long, env = "BROKER_LOG_CLEANER_BACKOFF_MS", default_value_t = 15_000)]
    log_cleaner_backoff_ms: u64,
    /// Largest request accepted, in bytes (socket.request.max.bytes).
    #[arg(long, env = "BROKER_MAX_REQUEST_BYTES", default_value_t = 100 * 1024 * 1024)]
    max_request_bytes: usize,
    /// Bytes of requests in memory across all connections at once (queued.max.request.bytes);
    /// at least --max-request-bytes.
    #[arg(long, env = "BROKER_QUEUED_MAX_REQUEST_BYTES", default_value_t = 256 * 1024 * 1024)]
    queued_max_request_bytes: usize,
    /// Most client connections at once (max.connections); more wait to be accepted.
    #[arg(long, env = "BROKER_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Close a connection with no request for this long, in ms (connections.max.idle.ms).
    #[arg(
        long,
        env = "BROKER_CONNECTIONS_MAX_IDLE_MS",
        default_value_t = 600_000
    )]
    connections_max_idle_ms: u64,
    /// Close a connection whose request does not arrive whole this long after its first byte,
    /// in ms.
    #[arg(long, env = "BROKER_REQUEST_READ_TIMEOUT_MS", default_value_t = 30_000)]
    request_read_timeout_ms: u64,
    /// Most partitions one CreateTopics (or one metadata request's automatic creations) makes.
    #[arg(
        long,
        env = "BROKER_MAX_PARTITIONS_PER_REQUEST",
        default_value_t = 10_000
    )]
    max_partitions_per_request: i32,
    /// Delay before a new group's first rebalance completes, in ms.
    #[arg(long, env = "BROKER_GROUP_INITIAL_DELAY_MS", default_value_t = 300)]
    group_initial_rebalance_delay_ms: u64,
    /// Longest transaction timeout a transactional producer may ask for, in ms.
    #[arg(long, env = "BROKER_TRANSACTION_MAX_TIMEOUT_MS", default_value_t = 15 * 60 * 1000)]
    transaction_max_timeout_ms: u64,
    /// How often transactions past their timeout are looked for and aborted, in ms.
    #[arg(long, env = "BROKER_TRANSACTION_CHECK_MS", default_value_t = 1000)]
    transaction_check_ms: u64,
    /// This node's id in a cluster (one of --voters).
    #[arg(long, env = "BROKER_NODE_ID", requires = "voters")]
    node_id: Option<i32>,
    /// The metadata quorum's voters, `ID@HOST:PORT` separated by commas (each voter's
    /// --controller-listen address as the others reach it). Makes this node one of a cluster;
    /// without it the broker is a single node.
    #[arg(long, env = "BROKER_VOTERS", requires = "node_id")]
    voters: Option<String>,
    /// HOST:PORT this node's quorum listens on for the other voters (default: its own address
    /// in --voters).
    #[arg(long, env = "BROKER_CONTROLLER_LISTEN", requires = "voters")]
    controller_listen: Option<String>,
    /// How often a node of a cluster heartbeats to the active controller, in ms.
    #[arg(long, env = "BROKER_HEARTBEAT_INTERVAL_MS", default_value_t = 2000)]
    broker_heartbeat_interval_ms: u64,
    /// Replicas of a topic a cluster creates without a replication factor (automatically, or
    /// CreateTopics with -1).
    #[arg(long, env = "BROKER_DEFAULT_REPLICATION_FACTOR", default_value_t = 1)]
    default_replication_factor: usize,
    /// In-sync replicas an acks=all produce needs on a topic without its own
    /// min.insync.replicas.
    #[arg(long, env = "BROKER_MIN_INSYNC_REPLICAS", default_value_t = 1)]
    min_insync_replicas: usize,
    /// A follower that has not caught up with its leader for this long leaves the ISR, in ms.
    #[arg(long, env = "BROKER_REPLICA_LAG_TIME_MAX_MS", default_value_t = 30_000)]
    replica_lag_time_max_ms: u64,
    /// Partitions of `__consumer_offsets`, the internal topic of a cluster's committed offsets
    /// (created with the first group).
    #[arg(
        long,
        env = "BROKER_OFFSETS_TOPIC_NUM_PARTITIONS",
        default_value_t = 10
    )]
    offsets_topic_num_partitions: i32,
    /// Partitions of `__transaction_state`, the internal topic of a cluster's transaction
    /// coordinator (created with the first transactional producer).
    #[arg(
        long,
        env = "BROKER_TRANSACTION_STATE_LOG_NUM_PARTITIONS",
        default_value_t = 10
    )]
    transaction_state_log_num_partitions: i32,
    /// A node of a cluster not heard from for this long is fenced, in ms.
    #[arg(long, env = "BROKER_SESSION_TIMEOUT_MS", default_value_t = 9000)]
    broker_session_timeout_ms: u64,
}

impl Args {
    /// The cluster this node belongs to, if --voters names one.
    fn cluster(&self) -> anyhow::Result<Option<broker::ClusterConfig>> {
        let (Some(node_id), Some(voters)) = (self.node_id, &self.voters) else {
            return Ok(None);
        };
        let voters = broker::ClusterConfig::parse_voters(voters).map_err(anyhow::Error::msg)?;
        let Some(own) = voters.get(&node_id) else {
            anyhow::bail!("--node-id {node_id} is not one of the --voters");
        };
        Ok(Some(broker::ClusterConfig {
            node_id,
            controller_listen: self
                .controller_listen
                .clone()
                .unwrap_or_else(|| own.clone()),
            voters,
            heartbeat_interval: Duration::from_millis(self.broker_heartbeat_interval_ms.max(10)),
            session_timeout: Duration::from_millis(self.broker_session_timeout_ms.max(100)),
            default_replication_factor: self.default_replication_factor.max(1),
            replica_lag_time_max: Duration::from_millis(self.replica_lag_time_max_ms.max(100)),
            min_insync_replicas: self.min_insync_replicas.max(1),
            offsets_topic_partitions: self.offsets_topic_num_partitions.clamp(1, 1000),
            transaction_state_partitions: self.transaction_state_log_num_partitions.clamp(1, 1000),
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer())
        .with(log_filter())
        .init();
    let args = Args::parse();
    anyhow::ensure!(
        args.advertised.is_empty() || args.advertised.len() == args.listen.len(),
        "give one --advertised per --listen ({} listeners, {} advertised)",
        args.listen.len(),
        args.advertised.len()
    );
    // One broker per data dir: two would write the same segment files.
    let _lock = lock_data_dir(&args.data_dir)?;
    broker::server::raise_open_file_limit();
    let mut listeners = Vec::with_capacity(args.listen.len());
    for (i, address) in args.listen.iter().enumerate() {
        listeners.push(broker::Listener {
            listener: TcpListener::bind(address).await?,
            advertised: args.advertised.get(i).cloned(),
        });
    }
    let cluster = args.cluster()?;
    let config = BrokerConfig {
        cluster,
        data_dir: args.data_dir,
        advertised: None,
        default_partitions: args.default_partitions,
        auto_create_topics: !args.no_auto_create_topics,
        fsync: args.fsync,
        segment_bytes: args.segment_bytes,
        segment_ms: args.segment_ms,
        retention_ms: args.retention_ms,
        retention_bytes: args.retention_bytes,
        retention_check_interval: Duration::from_millis(args.retention_check_ms.max(10)),
        log_cleaner_backoff: Duration::from_millis(args.log_cleaner_backoff_ms.max(10)),
        max_request_bytes: args.max_request_bytes,
        queued_max_request_bytes: args.queued_max_request_bytes,
        max_connections: args.max_connections.max(1),
        connections_max_idle: Duration::from_millis(args.connections_max_idle_ms.max(1)),
        request_read_timeout: Duration::from_millis(args.request_read_timeout_ms.max(1)),
        max_partitions_per_request: args.max_partitions_per_request.max(1),
        group_initial_rebalance_delay: Duration::from_millis(args.group_initial_rebalance_delay_ms),
        transaction_max_timeout: Duration::from_millis(args.transaction_max_timeout_ms),
        transaction_check_interval: Duration::from_millis(args.transaction_check_ms.max(10)),
        ..BrokerConfig::default()
    };
    broker::run(listeners, config, shutdown_signal()).await
}

/// RUST_LOG (`target=level` and a default `level`, e.g. `info,broker::txn=debug`), or `info`.
/// openraft's own lines are left out unless RUST_LOG names it: at `info` it narrates every vote,
/// and while a voter is down it reports each failed attempt twice a second; the quorum logs its
/// own events (a new controller, a broker fenced).
fn log_filter() -> tracing_subscriber::filter::Targets {
    let asked = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let directives = if asked.contains("openraft") {
        asked
    } else {
        format!("{asked},openraft=off")
    };
    directives
        .parse()
        .or_else(|_| "info,openraft=off".parse())
        .unwrap_or_default()
}

/// Takes `<data-dir>/broker.lock` with an advisory lock (`flock`) held while the process runs;
/// the kernel drops it when the process ends, however it ends, so no stale lock is left.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create the data dir {}: {e}", dir.display()))?;
    let path = dir.join("broker.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot write the data dir {}: {e}", dir.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another broker is running on the data dir {}; stop it or give this one another \
             --data-dir (or BROKER_DATA_DIR)",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock {}: {e}", path.display())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("can install a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
