//! Accepting connections, background chores, and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::config::{Advertised, BrokerConfig, ClusterConfig, FsyncPolicy};
use crate::connection::{self, RequestBudget};
use crate::quorum::Quorum;

/// A running broker. [`BrokerHandle::shutdown`] stops it gracefully (flushing the logs);
/// dropping the handle aborts its tasks without that final flush.
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
    broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl BrokerHandle {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `host:port` for client `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!(
            "{}:{}",
            self.broker.advertised_host, self.broker.advertised_port
        )
    }

    /// Cuts this node off the network as `cut` says (from the other nodes, or from them and
    /// from its clients, while it keeps running), or reconnects it (`Cut::None`); see
    /// [`crate::link`].
    pub fn isolate(&self, cut: crate::link::Cut) {
        self.broker.link.set(cut);
    }

    /// How much of this node's network is cut.
    pub fn isolation(&self) -> crate::link::Cut {
        self.broker.link.get()
    }

    /// The shared state, for tests and tools.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, closes every connection, flushes the logs and waits for all tasks.
    pub async fn shutdown(mut self) {
        if let Some(quorum) = &self.broker.quorum {
            quorum.shutdown().await;
        }
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        let broker = self.broker.clone();
        let _ = tokio::task::spawn_blocking(move || broker.topics.sync_all()).await;
    }
}

/// A bound listener and the `host:port` that clients connecting through it are told to use.
///
/// Several listeners let one broker be reachable under different names, as Kafka's listeners
/// do: e.g. `broker:9092` for containers on a compose network and `localhost:29092` for the host.
#[derive(Debug)]
pub struct Listener {
    pub listener: TcpListener,
    /// `HOST:PORT`; `None` advertises the bound address (127.0.0.1 for 0.0.0.0).
    pub advertised: Option<String>,
}

impl Listener {
    fn advertised(&self) -> anyhow::Result<Advertised> {
        let local = self.listener.local_addr()?;
        Ok(match &self.advertised {
            Some(advertised) => {
                let (host, port) = advertised.rsplit_once(':').ok_or_else(|| {
                    anyhow::anyhow!("an advertised address must be HOST:PORT, got '{advertised}'")
                })?;
                Advertised {
                    host: host.to_string(),
                    port: port.parse::<i32>()?,
                }
            }
            None if local.ip().is_unspecified() => Advertised {
                host: "127.0.0.1".to_string(),
                port: i32::from(local.port()),
            },
            None => Advertised {
                host: local.ip().to_string(),
                port: i32::from(local.port()),
            },
        })
    }
}

/// Starts a broker on an already bound listener (tests bind `127.0.0.1:0`), advertising
/// `config.advertised` (or the bound address).
pub async fn spawn(listener: TcpListener, config: BrokerConfig) -> anyhow::Result<BrokerHandle> {
    let advertised = config.advertised.clone();
    spawn_listeners(
        vec![Listener {
            listener,
            advertised,
        }],
        config,
    )
    .await
}

/// Starts a broker on several listeners; the first one's address is the broker's main one.
pub async fn spawn_listeners(
    listeners: Vec<Listener>,
    config: BrokerConfig,
) -> anyhow::Result<BrokerHandle> {
    anyhow::ensure!(
        !listeners.is_empty(),
        "a broker needs at least one listener"
    );
    let mut endpoints = Vec::with_capacity(listeners.len());
    for l in listeners {
        let advertised = Arc::new(l.advertised()?);
        endpoints.push((l.listener, advertised));
    }
    let local_addr = endpoints[0].0.local_addr()?;
    let main = endpoints[0].1.clone();
    let (host, port) = (main.host.clone(), main.port);
    let cluster = config.cluster.clone();
    let data_dir = config.data_dir.clone();
    let registered_host = host.clone();
    let mut broker =
        tokio::task::spawn_blocking(move || Broker::open(config, host, port)).await??;
    if let Some(cluster) = cluster {
        join_cluster(&mut broker, cluster, &data_dir, registered_host, port).await?;
    }
    let broker = Arc::new(broker);
    let (shutdown, _) = watch::channel(false);
    let mut tasks = JoinSet::new();
    // One connection limit and one request budget for all listeners together.
    let limit = Arc::new(Semaphore::new(broker.config.max_connections));
    let budget = RequestBudget::new(
        broker
            .config
            .queued_max_request_bytes
            .max(broker.config.max_request_bytes),
    );
    for (listener, advertised) in endpoints {
        tracing::info!(
            local_addr = %listener.local_addr()?,
            advertised = %format!("{}:{}", advertised.host, advertised.port),
            "broker listening"
        );
        tasks.spawn(accept_loop(
            listener,
            advertised,
            broker.clone(),
            Gates {
                connections: limit.clone(),
                budget: budget.clone(),
            },
            shutdown.subscribe(),
        ));
    }
    if let (Some(quorum), Some(cluster)) = (&broker.quorum, &broker.config.cluster) {
        tasks.spawn(crate::cluster::follow(
            broker.clone(),
            quorum.clone(),
            shutdown.subscribe(),
        ));
        tasks.spawn(crate::cluster::maintain_isr(
            broker.clone(),
            quorum.clone(),
            cluster.replica_lag_time_max,
            shutdown.subscribe(),
        ));
    }
    tasks.spawn(group_ticker(broker.clone(), shutdown.subscribe()));
    tasks.spawn(chores(broker.clone(), shutdown.subscribe()));
    tasks.spawn(log_cleaner(broker.clone(), shutdown.subscribe()));
    Ok(BrokerHandle {
        local_addr,
        broker,
        shutdown,
        tasks,
    })
}

/// Runs a broker until `shutdown` completes (the binary passes Ctrl-C / SIGTERM).
pub async fn run(
    listeners: Vec<Listener>,
    config: BrokerConfig,
    shutdown: impl Future,
) -> anyhow::Result<()> {
    let handle = spawn_listeners(listeners, config).await?;
    shutdown.await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

/// Makes `broker` a node of `cluster`: it joins the metadata quorum, takes its producer ids
/// from the controller, and reaches other nodes' partitions for transaction markers.
async fn join_cluster(
    broker: &mut Broker,
    cluster: ClusterConfig,
    data_dir: &std::path::Path,
    host: String,
    port: i32,
) -> anyhow::Result<()> {
    let quorum = start_quorum(cluster, data_dir, (host, port), broker.link.clone()).await?;
    broker
        .producer_ids
        .reserve_from(reserve_producer_ids(quorum.clone(), broker.node_id()));
    let markers = quorum.clone();
    let _ = broker
        .remote_markers
        .set(crate::broker::RemoteMarkers(Box::new(
            move |partition, producer_id, epoch, marker| {
                let written = crate::replication::write_marker(
                    &markers,
                    partition,
                    producer_id,
                    epoch,
                    marker,
                );
                tokio::runtime::Handle::current().block_on(written)
            },
        )));
    broker.quorum = Some(quorum);
    Ok(())
}

/// A cluster node's producer-id blocks: reserved by the active controller in the metadata.
/// Called from the blocking pool (InitProducerId).
fn reserve_producer_ids(quorum: Arc<Quorum>, id: i32) -> crate::producer_ids::ReserveBlock {
    Box::new(move || {
        let request = crate::quorum::ControllerRequest::AllocateProducerIds { id };
        match tokio::runtime::Handle::current().block_on(quorum.request(request)) {
            crate::quorum::ControllerReply::ProducerIds { start, end } => Ok((start, end)),
            other => Err(std::io::Error::other(format!(
                "no producer ids from the controller: {other:?}"
            ))),
        }
    })
}

/// Joins the metadata quorum (its log in `<data-dir>/metadata`); the broker registers as
/// `host:port`, its first listener's advertised address.
async fn start_quorum(
    cluster: ClusterConfig,
    data_dir: &std::path::Path,
    (host, port): (String, i32),
    link: Arc<crate::link::Link>,
) -> anyhow::Result<Arc<Quorum>> {
    let listener = TcpListener::bind(&cluster.controller_listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} for the voters: {e}",
                cluster.controller_listen
            )
        })?;
    let port = u16::try_from(port)?;
    Quorum::start(
        cluster,
        &data_dir.join("metadata"),
        listener,
        host,
        port,
        link,
    )
    .await
}

/// What every connection shares: the connection slots and the request budget.
struct Gates {
    connections: Arc<Semaphore>,
    budget: RequestBudget,
}

async fn accept_loop(
    listener: TcpListener,
    advertised: Arc<Advertised>,
    broker: Arc<Broker>,
    gates: Gates,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = gates.connections.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok(_) if broker.link.clients_cut() => {} // closed as it came
            Ok((stream, peer)) => {
                let broker = broker.clone();
                let advertised = advertised.clone();
                let shutdown = shutdown.clone();
                let budget = gates.budget.clone();
                connections.spawn(async move {
                    let link = broker.link.clone();
                    // A cut link closes the connection, wherever it is.
                    tokio::select! {
                        _ = connection::serve(broker, stream, peer, advertised, budget, shutdown) => {}
                        _ = link.clients_cut_off() => {}
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                // Usually out of file descriptors; back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

/// Group session expiry and rebalance deadlines, on their own task so disk chores never delay
/// them.
async fn group_ticker(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = tick.tick() => broker.groups.tick(),
            _ = shutdown.changed() => break,
        }
    }
}

/// Periodic disk work: retention, interval fsync, and aborting transactions past their timeout.
async fn chores(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut retention = tokio::time::interval(broker.config.retention_check_interval);
    let fsync_period = match broker.config.fsync {
        FsyncPolicy::Interval(period) => period,
        _ => Duration::from_secs(3600),
    };
    let mut fsync = tokio::time::interval(fsync_period);
    let mut txns = tokio::time::interval(broker.config.transaction_check_interval);
    loop {
        tokio::select! {
            _ = txns.tick() => {
                let b = broker.clone();
                let _ = tokio::task::spawn_blocking(move || b.txns.tick(&*b, now_ms())).await;
            }
            _ = retention.tick() => {
                let b = broker.clone();
                let deleted = tokio::task::spawn_blocking(move || {
                    b.topics.enforce_retention(now_ms(), b.config.segment_file_idle)
                })
                .await
                .unwrap_or(0);
                if deleted > 0 {
                    tracing::info!(segments = deleted, "retention deleted old segments");
                }
            }
            _ = fsync.tick() => {
                if matches!(broker.config.fsync, FsyncPolicy::Interval(_)) {
                    let b = broker.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        b.topics.sync_all();
                        if let Err(e) = b.offsets.sync() {
                            tracing::warn!("fsync of committed offsets failed: {e}");
                        }
                        if let Err(e) = b.txns.sync() {
                            tracing::warn!("fsync of the transaction state failed: {e}");
                        }
                    })
                    .await;
                }
            }
            _ = shutdown.changed() => break,
        }
    }
}

/// The log cleaner (`cleanup.policy=compact`), on its own task so a long clean delays neither
/// retention nor fsync; it holds a partition's lock only to plan a clean and to put its result
/// in place.
async fn log_cleaner(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(broker.config.log_cleaner_backoff);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let b = broker.clone();
                let cleaned = tokio::task::spawn_blocking(move || b.topics.clean_logs(now_ms()))
                    .await
                    .unwrap_or_default();
                for (topic, partition, stats) in cleaned {
                    tracing::info!(
                        topic,
                        partition,
                        segments = stats.segments_read,
                        bytes_before = stats.bytes_read,
                        bytes_after = stats.bytes_written,
                        records_removed = stats.records_removed,
                        ms = stats.duration.as_millis() as u64,
                        "cleaned a compacted partition"
                    );
                }
            }
            _ = shutdown.changed() => break,
        }
    }
}

/// Raises the process's soft limit on open files to its hard limit, as Kafka's start scripts
/// advise: each partition in use keeps its active segment open, and each client a socket. For
/// the programs that serve a broker (the `broker` and `lab` binaries); logs what it could not do.
pub fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!("could not raise the open-file limit: {e}"),
    }
}
