//! The broker the lab embeds: one node, or (`--nodes 3`) a cluster of nodes in this process,
//! each with its own client port, metadata-quorum port and data dir (`<data>/broker` for one
//! node, `<data>/broker/node-N` for a cluster). In a cluster the saga's topics get three
//! replicas (as many as there are nodes, up to three) and `min.insync.replicas` 2, and a node
//! not heard from for three seconds is fenced, so that a failover is quick enough to watch.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use broker::link::Cut;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::system::LabError;

/// The embedded broker's nodes and where each partition is led, as the cluster's metadata says
/// (`GET /api/nodes`, `lab node list`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Nodes {
    /// The active controller (none on a single node, or while a cluster elects one: a stopped
    /// controller is replaced within a few seconds).
    pub controller: Option<i32>,
    pub nodes: Vec<NodeState>,
    /// Every partition of a cluster (none on a single node, which leads them all).
    pub partitions: Vec<Placement>,
    /// Every running, connected node has applied the metadata this describes (none is behind
    /// it), so each acts on it: `lab wait node` waits for this too.
    #[serde(default)]
    pub settled: bool,
}

/// One node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub id: i32,
    pub address: String,
    /// Running in the lab's process.
    pub running: bool,
    /// Registered and not fenced: it serves (a stopped node stays live until the cluster fences
    /// it).
    pub live: bool,
    pub controller: bool,
    /// Running but cut off the network (`lab node isolate`): from the other nodes and from
    /// every client, or from the other nodes only (`keeps_clients`).
    #[serde(default)]
    pub isolated: bool,
    /// Isolated from the other nodes only: its clients still reach it (`lab node isolate
    /// --keep-clients`).
    #[serde(default)]
    pub keeps_clients: bool,
    /// Partitions it leads.
    pub leads: usize,
}

/// One partition of a cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Placement {
    pub topic: String,
    pub partition: i32,
    /// -1: none (every replica in sync is down).
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
}

/// How long a cluster may take to elect a controller and register every node.
const FORMED: Duration = Duration::from_secs(30);

/// One embedded node: where it listens, how it is configured, and its running broker.
struct Node {
    id: i32,
    addr: SocketAddr,
    config: broker::BrokerConfig,
    handle: Option<broker::BrokerHandle>,
}

impl Node {
    /// How much of its network is cut (nothing for a stopped node).
    fn isolation(&self) -> Cut {
        self.handle.as_ref().map_or(Cut::None, |h| h.isolation())
    }
}

/// The embedded broker's nodes.
pub struct Embedded {
    nodes: Vec<Node>,
}

/// A free port on `host` that stays free for the node to bind again after a restart (below the
/// ephemeral range: [`lab_postgres::free_port_on`]).
fn free_port(host: &str) -> Result<u16, LabError> {
    Ok(lab_postgres::free_port_on(host)?)
}

fn address(host: &str, port: u16) -> Result<SocketAddr, LabError> {
    format!("{host}:{port}")
        .parse()
        .map_err(|e| LabError::Broker(format!("bad broker address: {e}")))
}

/// How often the lab's broker deletes the segments past their topic's retention.
const RETENTION_CHECK: Duration = Duration::from_secs(1);

/// The cluster's settings for node `id` of `count`, whose voters listen at `voters`.
fn cluster_config(id: i32, count: usize, voters: &BTreeMap<i32, String>) -> broker::ClusterConfig {
    broker::ClusterConfig {
        node_id: id,
        controller_listen: voters[&id].clone(),
        voters: voters.clone(),
        heartbeat_interval: Duration::from_millis(500),
        session_timeout: Duration::from_secs(3),
        default_replication_factor: count.min(3),
        replica_lag_time_max: Duration::from_secs(10),
        min_insync_replicas: if count >= 3 { 2 } else { 1 },
        offsets_topic_partitions: 10,
        transaction_state_partitions: 10,
    }
}

/// The voters of a cluster of `count` nodes: where each node's quorum listens. Kept in
/// `<data-dir>/broker/voters` from the first start on, as the quorum's log holds these
/// addresses: a lab started again on its data finds its voters where they were.
fn voters(data_dir: &Path, host: &str, count: usize) -> Result<BTreeMap<i32, String>, LabError> {
    if count == 1 {
        return Ok(BTreeMap::new());
    }
    let path = data_dir.join("broker").join("voters");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(voters) = broker::ClusterConfig::parse_voters(text.trim())
        && voters.len() == count
    {
        return Ok(voters);
    }
    let voters: BTreeMap<i32, String> = (1..=count as i32)
        .map(|id| Ok((id, format!("{host}:{}", free_port(host)?))))
        .collect::<Result<_, LabError>>()?;
    let text: Vec<String> = voters.iter().map(|(id, a)| format!("{id}@{a}")).collect();
    std::fs::create_dir_all(data_dir.join("broker"))?;
    std::fs::write(&path, text.join(","))?;
    Ok(voters)
}

impl Embedded {
    /// Starts `count` nodes on `host`: the first at `port` (0: any free port), the others on the
    /// ports after it; a cluster when `count` is above one, once every node is registered.
    pub async fn start(
        data_dir: &Path,
        host: &str,
        port: u16,
        count: usize,
        partitions: i32,
    ) -> Result<Self, LabError> {
        let count = count.max(1);
        let voters = voters(data_dir, host, count)?;
        let mut nodes = Vec::with_capacity(count);
        for i in 0..count {
            let (id, dir, cluster) = if count == 1 {
                (0, data_dir.join("broker"), None)
            } else {
                let id = i as i32 + 1;
                let dir = data_dir.join("broker").join(format!("node-{id}"));
                (id, dir, Some(cluster_config(id, count, &voters)))
            };
            // Any free port is chosen now, not by the first bind: the node binds it again
            // when it starts again, and a port from the ephemeral range may be taken by then.
            let port = if port == 0 {
                free_port(host)?
            } else {
                port + i as u16
            };
            let config = broker::BrokerConfig {
                data_dir: dir,
                default_partitions: partitions,
                cluster,
                // Retention is seen at work within seconds on a topic with a short
                // retention.ms (a broker's default looks every 30 s).
                retention_check_interval: RETENTION_CHECK,
                // Likewise compaction on a compacted topic (a broker's default looks every 15 s).
                log_cleaner_backoff: RETENTION_CHECK,
                ..Default::default()
            };
            nodes.push(Node {
                id,
                addr: address(host, port)?,
                config,
                handle: None,
            });
        }
        let mut embedded = Self { nodes };
        for i in 0..embedded.nodes.len() {
            embedded.spawn(i).await?;
        }
        embedded.formed().await?;
        Ok(embedded)
    }

    /// Starts node `i` on its address (again, on its data); the old listener of a node just
    /// stopped may linger for a moment.
    async fn spawn(&mut self, i: usize) -> Result<(), LabError> {
        let node = &mut self.nodes[i];
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(node.addr).await {
                Ok(listener) => break listener,
                Err(e) if node.addr.port() != 0 && tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "broker port busy; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let handle = broker::spawn(listener, node.config.clone())
            .await
            .map_err(|e| LabError::Broker(format!("{e:#}")))?;
        node.addr = handle.local_addr();
        node.handle = Some(handle);
        Ok(())
    }

    /// Waits until a running node of a cluster sees every running node registered in this run
    /// and live. A node's own epoch tells its registration in this run from the previous one,
    /// which a restarted node's replayed metadata shows live for a moment.
    async fn formed(&self) -> Result<(), LabError> {
        let quorums: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|n| Some((n.id, n.handle.as_ref()?.broker().quorum.clone()?)))
            .collect();
        let Some((_, first)) = quorums.first() else {
            return Ok(());
        };
        let registered = |image: &broker::metadata::MetadataImage| {
            quorums.iter().all(|(id, quorum)| {
                image.brokers.get(id).is_some_and(|b| {
                    !b.fenced && quorum.broker_epoch().is_some_and(|e| e == b.epoch)
                })
            })
        };
        let mut images = first.subscribe();
        let deadline = tokio::time::Instant::now() + FORMED;
        while !registered(&images.borrow_and_update().clone()) {
            if tokio::time::Instant::now() >= deadline {
                return Err(LabError::Broker(format!(
                    "the cluster's nodes {:?} did not all register within {FORMED:?} \
                     (a data dir from a lab older than broker/voters cannot be started again: \
                     remove its broker/ directory)",
                    self.running()
                )));
            }
            // A node learns its epoch from the controller's answer, which changes no image.
            let look_again = Duration::from_millis(50);
            if let Ok(Err(_closed)) = tokio::time::timeout(look_again, images.changed()).await {
                tokio::time::sleep(look_again).await;
            }
        }
        Ok(())
    }

    /// The bootstrap servers: every node's address.
    pub fn bootstrap(&self) -> String {
        let addrs: Vec<String> = self.nodes.iter().map(|n| n.addr.to_string()).collect();
        addrs.join(",")
    }

    /// The nodes and partitions as a running node's metadata says.
    pub fn describe(&self) -> Nodes {
        let quorum = self
            .nodes
            .iter()
            .find_map(|n| n.handle.as_ref()?.broker().quorum.clone());
        let Some(quorum) = quorum else {
            let nodes = self.nodes.iter().map(|n| NodeState {
                id: n.id,
                address: n.addr.to_string(),
                running: n.handle.is_some(),
                live: n.handle.is_some(),
                controller: false,
                isolated: n.isolation() != Cut::None,
                keeps_clients: n.isolation() == Cut::FromNodes,
                leads: 0,
            });
            return Nodes {
                controller: None,
                nodes: nodes.collect(),
                partitions: Vec::new(),
                settled: true,
            };
        };
        // A stopped or isolated node is no controller, whatever it or the others have not
        // noticed yet. The metadata as the node that has applied most of it says (a node just
        // reconnected still shows the cluster as it left it, for a moment).
        let reachable = |n: &Node| n.handle.is_some() && n.isolation() == Cut::None;
        let quorums: Vec<_> = self
            .nodes
            .iter()
            .filter(|n| reachable(n))
            .filter_map(|n| n.handle.as_ref()?.broker().quorum.clone())
            .collect();
        // Settled: every reachable node's topics follow the newest metadata any of them has
        // (its leaders and ISRs act on it, not only its image).
        let newest = quorums.iter().map(|q| q.applied_index()).max();
        let settled = quorums.iter().all(|q| Some(q.reconciled_index()) >= newest);
        let quorum = quorums
            .into_iter()
            .max_by_key(|q| q.applied_index())
            .unwrap_or(quorum);
        let image = quorum.image();
        let controller = quorum
            .controller_id()
            .filter(|id| self.nodes.iter().any(|n| n.id == *id && reachable(n)));
        let live = image.live_brokers();
        let partitions: Vec<Placement> = image
            .topics
            .values()
            .flat_map(|t| {
                t.partitions.iter().map(|(index, p)| Placement {
                    topic: t.name.clone(),
                    partition: *index,
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                })
            })
            .collect();
        let nodes = self.nodes.iter().map(|n| NodeState {
            id: n.id,
            address: n.addr.to_string(),
            running: n.handle.is_some(),
            live: live.contains(&n.id),
            controller: controller == Some(n.id),
            isolated: n.isolation() != Cut::None,
            keeps_clients: n.isolation() == Cut::FromNodes,
            leads: partitions.iter().filter(|p| p.leader == n.id).count(),
        });
        Nodes {
            controller,
            nodes: nodes.collect(),
            partitions,
            settled,
        }
    }

    /// The nodes that run, by id.
    pub fn running(&self) -> Vec<i32> {
        self.nodes
            .iter()
            .filter(|n| n.handle.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn index(&self, id: i32) -> Result<usize, LabError> {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| LabError::Broker(format!("no node {id}")))
    }

    /// Stops node `id` cleanly (a cluster moves its partitions' leadership at once).
    pub async fn stop_node(&mut self, id: i32) -> Result<(), LabError> {
        let i = self.index(id)?;
        if let Some(handle) = self.nodes[i].handle.take() {
            handle.shutdown().await;
        }
        Ok(())
    }

    /// Cuts running node `id` off the network as `cut` says (from the other nodes, or from them
    /// and from every client, while it runs) or reconnects it (`Cut::None`).
    pub fn isolate_node(&mut self, id: i32, cut: Cut) -> Result<(), LabError> {
        let i = self.index(id)?;
        let handle = self.nodes[i]
            .handle
            .as_ref()
            .ok_or_else(|| LabError::Broker(format!("node {id} is stopped")))?;
        handle.isolate(cut);
        Ok(())
    }

    /// Starts node `id` again on its data, once it is registered.
    pub async fn start_node(&mut self, id: i32) -> Result<(), LabError> {
        let i = self.index(id)?;
        if self.nodes[i].handle.is_none() {
            self.spawn(i).await?;
            self.formed().await?;
        }
        Ok(())
    }

    /// Stops every node, all at once (one by one, the last would wait for a quorum that the
    /// others took with them).
    pub async fn stop_all(&mut self) {
        let stopping = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.handle.take())
            .map(|handle| handle.shutdown());
        futures_util::future::join_all(stopping).await;
    }

    /// Starts every stopped node again.
    pub async fn start_all(&mut self) -> Result<(), LabError> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].handle.is_none() {
                self.spawn(i).await?;
            }
        }
        self.formed().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A three-node lab started again on its data: the quorum's log names the voters'
    /// addresses, so they must be where they were (they were new free ports on every start,
    /// and the nodes never found each other again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_starts_again_on_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Embedded::start(dir.path(), "127.0.0.1", 0, 3, 1)
            .await
            .unwrap();
        let voters = std::fs::read_to_string(dir.path().join("broker/voters")).unwrap();
        first.stop_all().await;
        let mut again = Embedded::start(dir.path(), "127.0.0.1", 0, 3, 1)
            .await
            .unwrap();
        assert_eq!(again.running(), vec![1, 2, 3]);
        let same = std::fs::read_to_string(dir.path().join("broker/voters")).unwrap();
        assert_eq!(same, voters);
        again.stop_all().await;
    }
}
