//! The metadata quorum (KRaft's model): the voters (`--voters`) keep the cluster's metadata as
//! a Raft log of [`MetadataRecord`](crate::metadata::MetadataRecord)s, replicated and ordered by
//! [openraft](https://docs.rs/openraft), and each applies it to its [`MetadataImage`]. The Raft
//! leader is the *active controller*: it alone decides changes (see [`controller`]); the other
//! voters follow, ready to take over when it goes.
//!
//! - [`log_store`]: the Raft log on disk; [`state_machine`]: the image it builds, with its
//!   snapshots;
//! - [`network`]: the voters' wire (length-prefixed JSON over TCP);
//! - [`controller`]: the active controller's decisions, brokers' registration, heartbeats and
//!   fencing.
//!
//! Every node of a cluster is a voter and a broker at once (KRaft's combined mode). Its broker
//! side registers with the active controller and heartbeats to it; see
//! `docs/broker-replication.md`.

// openraft's traits return its own error types, which are large; they are returned rarely.
#![allow(clippy::result_large_err)]

pub mod controller;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{BasicNode, Config, Raft};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::ClusterConfig;
use crate::metadata::{MetadataImage, NodeId};
use controller::Controller;
use network::{Network, Peer, Rpc, RpcReply, read_frame, write_frame};

use crate::link::Link;
pub use types::{ControllerReply, ControllerRequest, TypeConfig};

/// How long a request forwarded to the active controller may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// This node's part in the quorum, and its broker's membership of the cluster.
pub struct Quorum {
    id: NodeId,
    config: ClusterConfig,
    raft: Raft<TypeConfig>,
    image: watch::Receiver<Arc<MetadataImage>>,
    controller: Controller,
    /// Connections to the other voters, for requests to the active controller.
    peers: tokio::sync::Mutex<HashMap<NodeId, Peer>>,
    /// This node's broker epoch, once registered.
    epoch: Mutex<Option<i64>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
    /// This node's network link (cut while the lab isolates it).
    link: Arc<Link>,
    /// How far this node's topics follow the metadata (the last applied entry's index when
    /// the image they were made like was taken).
    reconciled: watch::Sender<u64>,
    /// The state machine's last applied index, set before each image is published.
    applied: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum").field("id", &self.id).finish()
    }
}

/// openraft's timing: a leader heartbeats every 200 ms; a follower that hears nothing for 1-2 s
/// stands for election (KRaft's `controller.quorum.election.timeout.ms` is 1 s).
fn raft_config() -> anyhow::Result<Arc<Config>> {
    let config = Config {
        cluster_name: "saga-lab".into(),
        heartbeat_interval: 200,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        ..Config::default()
    };
    Ok(Arc::new(config.validate()?))
}

impl Quorum {
    /// Joins the quorum of `config.voters` with the log in `dir`, serving the other voters on
    /// `listener`, and registers this node's broker as `host:port` once a controller is
    /// elected. The lowest voter forms the quorum the first time (its log is empty).
    pub async fn start(
        config: ClusterConfig,
        dir: &std::path::Path,
        listener: TcpListener,
        host: String,
        port: u16,
        link: Arc<Link>,
    ) -> anyhow::Result<Arc<Self>> {
        let id = config.node_id;
        let log = log_store::LogStore::open(dir)?;
        let state = state_machine::StateMachine::open(dir)?;
        let image = state.subscribe();
        let applied = state.applied();
        let network = Network(link.clone());
        let raft = Raft::new(id as u64, raft_config()?, network, log, state).await?;
        let (stop, _) = watch::channel(false);
        let quorum = Arc::new(Self {
            id,
            controller: Controller::new(id, raft.clone(), image.clone(), config.session_timeout),
            config,
            raft,
            image,
            peers: tokio::sync::Mutex::new(HashMap::new()),
            epoch: Mutex::new(None),
            stop,
            tasks: Mutex::new(JoinSet::new()),
            link,
            reconciled: watch::channel(0).0,
            applied,
        });
        quorum.form().await?;
        {
            let mut tasks = quorum.tasks.lock().unwrap();
            tasks.spawn(serve(quorum.clone(), listener));
            tasks.spawn(fence_ticker(quorum.clone()));
            tasks.spawn(announce_controllers(quorum.clone()));
            tasks.spawn(membership(quorum.clone(), host, port));
        }
        Ok(quorum)
    }

    /// The lowest voter initializes the quorum with every voter, if nothing did yet.
    async fn form(&self) -> anyhow::Result<()> {
        let lowest = self.config.voters.keys().next().copied();
        if lowest != Some(self.id) || self.raft.is_initialized().await? {
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> = self
            .config
            .voters
            .iter()
            .map(|(id, addr)| (*id as u64, BasicNode::new(addr)))
            .collect();
        tracing::info!(voters = ?self.config.voters, "forming the metadata quorum");
        if let Err(e) = self.raft.initialize(members).await {
            tracing::warn!(error = %e, "the metadata quorum was formed already");
        }
        Ok(())
    }

    /// The metadata image as this node has applied it.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// The image now and after each change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    /// How far this node has applied the metadata log (its last applied entry's index): of
    /// several nodes' images, the one with the highest is the latest.
    pub fn applied_index(&self) -> u64 {
        self.applied.load(std::sync::atomic::Ordering::Acquire)
    }

    /// This node's broker epoch in this run, once the controller registered it (a restarted
    /// node's replayed metadata shows its previous epoch live for a moment: this tells them
    /// apart).
    pub fn broker_epoch(&self) -> Option<i64> {
        *self.epoch.lock().unwrap()
    }

    /// How far this node's topics follow the metadata: every entry up to this index is
    /// applied to them (leaders, ISRs, configs), not only to the image.
    pub fn reconciled_index(&self) -> u64 {
        *self.reconciled.borrow()
    }

    /// Notes that this node's topics follow the metadata up to `index`.
    pub fn mark_reconciled(&self, index: u64) {
        self.reconciled.send_if_modified(|at| {
            let later = index > *at;
            *at = (*at).max(index);
            later
        });
    }

    /// Waits, at most `within`, until this node's topics follow every metadata entry applied
    /// so far; whether they do.
    pub async fn reconciled(&self, within: Duration) -> bool {
        let target = self.applied_index();
        let mut at = self.reconciled.subscribe();
        let caught_up = at.wait_for(|index| *index >= target);
        matches!(tokio::time::timeout(within, caught_up).await, Ok(Ok(_)))
    }

    /// This node's network link.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// The active controller, as this node knows it.
    pub fn controller_id(&self) -> Option<NodeId> {
        self.controller.current_leader()
    }

    /// Sends `request` to the active controller, wherever it is.
    pub async fn request(&self, request: ControllerRequest) -> ControllerReply {
        let Some(leader) = self.controller_id() else {
            return ControllerReply::NotController { leader: None };
        };
        if leader == self.id {
            return self.controller.handle(request).await;
        }
        let Some(addr) = self.config.voters.get(&leader) else {
            return ControllerReply::Failed(format!("controller {leader} is not a voter"));
        };
        let forwarded = async {
            let mut peers = self.peers.lock().await;
            let peer = peers
                .entry(leader)
                .or_insert_with(|| Peer::new(addr.clone(), self.link.clone()));
            peer.call(&Rpc::Controller(request), FORWARD_TIMEOUT).await
        };
        // A controller that stops answering (paused, cut off) is soon replaced: the request
        // is given up then, not held until its timeout, so that this broker's heartbeats reach
        // the new controller within their session.
        let replaced = async {
            let mut metrics = self.raft.metrics();
            let _ = metrics
                .wait_for(|m| m.current_leader != Some(leader as u64))
                .await;
        };
        tokio::select! {
            answer = forwarded => match answer {
                Ok(RpcReply::Controller(reply)) => reply,
                Ok(other) => {
                    ControllerReply::Failed(format!("a reply of the wrong kind: {other:?}"))
                }
                Err(e) => ControllerReply::Failed(format!("controller {leader} at {addr}: {e}")),
            },
            () = replaced => ControllerReply::NotController {
                leader: self.controller_id(),
            },
        }
    }

    /// Leaves the cluster: the broker is fenced at once (its partitions move now, not after
    /// its session), then the quorum stops serving.
    pub async fn shutdown(&self) {
        let epoch = *self.epoch.lock().unwrap();
        if let Some(epoch) = epoch {
            let request = ControllerRequest::Shutdown { id: self.id, epoch };
            let reply = tokio::time::timeout(FORWARD_TIMEOUT, self.request(request)).await;
            tracing::info!(?reply, "controlled shutdown");
        }
        let _ = self.stop.send(true);
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap());
        tasks.shutdown().await;
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "the metadata quorum did not stop cleanly");
        }
    }
}

/// Serves the other voters' connections.
async fn serve(quorum: Arc<Quorum>, listener: TcpListener) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if quorum.link.nodes_cut() {
            continue; // closed as it came
        }
        let _ = stream.set_nodelay(true);
        let quorum = quorum.clone();
        connections.spawn(async move {
            let link = quorum.link.clone();
            tokio::select! {
                _ = serve_one(quorum, stream) => {}
                _ = link.nodes_cut_off() => {}
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn serve_one(quorum: Arc<Quorum>, mut stream: TcpStream) {
    while let Ok(Some(rpc)) = read_frame::<Rpc>(&mut stream).await {
        let reply = match rpc {
            Rpc::Append(rpc) => RpcReply::Append(quorum.raft.append_entries(rpc).await),
            Rpc::Vote(rpc) => RpcReply::Vote(quorum.raft.vote(rpc).await),
            Rpc::Snapshot(rpc) => RpcReply::Snapshot(quorum.raft.install_snapshot(rpc).await),
            Rpc::Controller(request) => {
                RpcReply::Controller(quorum.controller.handle(request).await)
            }
        };
        if write_frame(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}

/// Logs each change of the active controller as this node learns of it.
async fn announce_controllers(quorum: Arc<Quorum>) {
    let mut metrics = quorum.raft.metrics();
    let mut known = None;
    loop {
        let (leader, term) = {
            let m = metrics.borrow_and_update();
            (m.current_leader, m.current_term)
        };
        if leader != known {
            known = leader;
            match leader {
                Some(id) => tracing::info!(controller = id, term, "the active controller"),
                None => tracing::info!(term, "no active controller"),
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Checks the brokers' sessions every 200 ms.
async fn fence_ticker(quorum: Arc<Quorum>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        quorum.controller.fence_expired().await;
    }
}

/// The broker's side: register with the active controller, then heartbeat; register again
/// when the controller no longer knows this epoch (it fenced the broker meanwhile).
async fn membership(quorum: Arc<Quorum>, host: String, port: u16) {
    let mut tick = tokio::time::interval(quorum.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let epoch = *quorum.epoch.lock().unwrap();
        let id = quorum.id;
        let request = match epoch {
            None => ControllerRequest::Register {
                id,
                host: host.clone(),
                port,
            },
            Some(epoch) => ControllerRequest::Heartbeat { id, epoch },
        };
        match quorum.request(request).await {
            ControllerReply::Registered { epoch } => {
                tracing::info!(epoch, "registered with the controller");
                *quorum.epoch.lock().unwrap() = Some(epoch);
                tick.reset_immediately();
            }
            ControllerReply::Refused(e) => {
                tracing::info!(reason = %e, "registering again");
                *quorum.epoch.lock().unwrap() = None;
                tick.reset_immediately();
            }
            ControllerReply::Done
            | ControllerReply::Created { .. }
            | ControllerReply::Outcomes(_)
            | ControllerReply::ProducerIds { .. }
            | ControllerReply::NotController { .. } => {}
            ControllerReply::Failed(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
    }
}
