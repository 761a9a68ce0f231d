//! Three `broker` processes as one cluster on loopback: the metadata quorum elects an active
//! controller, the nodes register and heartbeat, a node that dies is fenced (its session runs
//! out) or leaves at once (a clean stop), and a new controller takes over when the old one is
//! killed. What the tests look at is what a client sees: DescribeCluster's controller and
//! brokers, and the brokers of librdkafka's metadata.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kafka_protocol::messages::DescribeClusterRequest;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tempfile::TempDir;

use crate::common::raw::RawClient;
use crate::common::{LONG, accepting, client_config, eventually};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One node: its ports, data dir and process (SIGKILLed when dropped).
struct Node {
    id: i32,
    port: u16,
    child: Option<Child>,
}

struct Cluster {
    dir: TempDir,
    voters: String,
    controller_ports: Vec<u16>,
    nodes: Vec<Node>,
    session_timeout_ms: u64,
}

impl Cluster {
    /// Three nodes, ids 1 to 3, each a voter; a node not heard from for `session_timeout_ms`
    /// is fenced.
    async fn start(session_timeout_ms: u64) -> Self {
        let controller_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let voters = controller_ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("{}@127.0.0.1:{port}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            dir: tempfile::tempdir().unwrap(),
            voters,
            controller_ports,
            nodes: (1..=3)
                .map(|id| Node {
                    id,
                    port: free_port(),
                    child: None,
                })
                .collect(),
            session_timeout_ms,
        };
        for id in 1..=3 {
            cluster.start_node(id).await;
        }
        cluster
    }

    fn node(&mut self, id: i32) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    fn bootstrap(&self, id: i32) -> String {
        let node = self.nodes.iter().find(|n| n.id == id).unwrap();
        format!("127.0.0.1:{}", node.port)
    }

    /// Starts node `id` (again, on the same data dir) and waits until it accepts clients.
    async fn start_node(&mut self, id: i32) {
        let dir = self.dir.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("log.txt"))
            .unwrap();
        let port = self.node(id).port;
        let controller = self.controller_ports[(id - 1) as usize];
        let child = Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["--node-id", &id.to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--controller-listen", &format!("127.0.0.1:{controller}")])
            .args(["--voters", &self.voters])
            .args(["--broker-heartbeat-interval-ms", "200"])
            .args(["--broker-session-timeout-ms"])
            .arg(self.session_timeout_ms.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.node(id).child = Some(child);
        accepting(port).await;
    }

    /// SIGKILL: nothing of the node's shutdown runs.
    fn kill(&mut self, id: i32) {
        let mut child = self.node(id).child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, and the node's exit.
    fn stop(&mut self, id: i32) {
        let mut child = self.node(id).child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap();
    }

    /// What node `id` says: the active controller and the brokers, or `None` while it cannot
    /// answer.
    async fn view(&self, id: i32) -> Option<(i32, BTreeSet<i32>)> {
        let bootstrap = self.bootstrap(id);
        let call = async {
            let mut client = RawClient::connect(&bootstrap).await;
            client.call(&DescribeClusterRequest::default(), 0).await
        };
        let answer = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .ok()?;
        let brokers = answer.brokers.iter().map(|b| b.broker_id.0).collect();
        Some((answer.controller_id.0, brokers))
    }

    /// Waits until every node of `ids` names the same controller, one of `ids`, and exactly
    /// `ids` as its brokers; that controller.
    async fn agreed(&self, ids: &[i32]) -> i32 {
        let want: BTreeSet<i32> = ids.iter().copied().collect();
        eventually(&format!("nodes {ids:?} agree"), LONG, || {
            let want = want.clone();
            async move {
                let mut controllers = BTreeSet::new();
                for id in ids {
                    let (controller, brokers) = self.view(*id).await?;
                    if brokers != want {
                        return None;
                    }
                    controllers.insert(controller);
                }
                let controller = *controllers.first()?;
                (controllers.len() == 1 && want.contains(&controller)).then_some(controller)
            }
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                let log = self.dir.path().join(format!("node-{}/log.txt", node.id));
                let text = std::fs::read_to_string(log).unwrap_or_default();
                eprintln!("--- node {} ---\n{text}", node.id);
            }
        }
    }
}

/// The controller is SIGKILLed: the other two elect a new one and fence the dead node when its
/// session runs out; restarted on its data, it registers again and all three agree.
#[tokio::test]
async fn a_killed_controller_is_replaced_and_its_node_fenced_then_readmitted() {
    let mut cluster = Cluster::start(1500).await;
    let first = cluster.agreed(&[1, 2, 3]).await;

    // librdkafka sees the same three brokers.
    let consumer: BaseConsumer = client_config(&cluster.bootstrap(first), &[])
        .create()
        .unwrap();
    let metadata =
        tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, Duration::from_secs(10)))
            .await
            .unwrap()
            .unwrap();
    let ids: BTreeSet<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
    assert_eq!(ids, BTreeSet::from([1, 2, 3]));

    cluster.kill(first);
    let survivors: Vec<i32> = (1..=3).filter(|id| *id != first).collect();
    let second = cluster.agreed(&survivors).await;
    assert_ne!(second, first, "a new controller");

    cluster.start_node(first).await;
    cluster.agreed(&[1, 2, 3]).await;
}

/// A node stopped cleanly (SIGTERM) asks to be fenced as it goes: the others drop it at once,
/// long before its session of 60 s would run out.
#[tokio::test]
async fn a_node_stopped_cleanly_leaves_at_once() {
    let mut cluster = Cluster::start(60_000).await;
    let controller = cluster.agreed(&[1, 2, 3]).await;
    let leaving = (1..=3).find(|id| *id != controller).unwrap();
    cluster.stop(leaving);
    let staying: Vec<i32> = (1..=3).filter(|id| *id != leaving).collect();
    // `agreed` waits 30 s at most: half the session.
    cluster.agreed(&staying).await;
}
