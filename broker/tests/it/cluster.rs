//! Three `broker` processes as one cluster on loopback: the metadata quorum elects an active
//! controller, the nodes register and heartbeat, a node that dies is fenced (its session runs
//! out) or leaves at once (a clean stop), and a new controller takes over when the old one is
//! killed. What the tests look at is what a client sees: DescribeCluster's controller and
//! brokers, and the brokers of librdkafka's metadata.

use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::time::Duration;

use kafka_protocol::messages::DescribeClusterRequest;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tempfile::TempDir;

use crate::common::raw::RawClient;
use crate::common::{LONG, accepting_at, client_config, eventually};
use crate::netns::Namespaces;

/// `N` different free ports of loopback: each is held until all are found, so the kernel cannot
/// hand one out twice (a node's client listener once got another node's controller port).
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// One node: its address, ports and process (SIGKILLed when dropped).
pub(crate) struct Node {
    id: i32,
    host: String,
    port: u16,
    controller_port: u16,
    child: Option<Child>,
}

pub(crate) struct Cluster {
    dir: TempDir,
    voters: String,
    nodes: Vec<Node>,
    session_timeout_ms: u64,
    /// The nodes' own network namespaces, when the test cuts the network.
    net: Option<Namespaces>,
    /// More flags for every node.
    flags: Vec<String>,
}

impl Cluster {
    /// Three nodes, ids 1 to 3, each a voter, on loopback; a node not heard from for
    /// `session_timeout_ms` is fenced.
    pub(crate) async fn start(session_timeout_ms: u64) -> Self {
        Self::start_with(session_timeout_ms, &[]).await
    }

    /// Three nodes as [`Cluster::start`] makes them, each also given `flags`.
    pub(crate) async fn start_with(session_timeout_ms: u64, flags: &[&str]) -> Self {
        let ports = free_ports::<6>();
        let nodes = (1..=3)
            .map(|id| Node {
                id,
                host: "127.0.0.1".into(),
                port: ports[2 * (id as usize - 1)],
                controller_port: ports[2 * (id as usize - 1) + 1],
                child: None,
            })
            .collect();
        let flags = flags.iter().map(|f| f.to_string()).collect();
        Self::start_nodes(nodes, None, session_timeout_ms, flags).await
    }

    /// Three nodes as [`Cluster::start`] makes them, each in a network namespace of its own
    /// (`net`), so that a test can cut one off the network.
    pub(crate) async fn start_in(net: Namespaces, session_timeout_ms: u64) -> Self {
        let nodes = (1..=3)
            .map(|id| Node {
                id,
                host: net.host(id as usize),
                port: 9092,
                controller_port: 9093,
                child: None,
            })
            .collect();
        Self::start_nodes(nodes, Some(net), session_timeout_ms, Vec::new()).await
    }

    async fn start_nodes(
        nodes: Vec<Node>,
        net: Option<Namespaces>,
        session: u64,
        flags: Vec<String>,
    ) -> Self {
        let voters = nodes
            .iter()
            .map(|n| format!("{}@{}:{}", n.id, n.host, n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            dir: tempfile::tempdir().unwrap(),
            voters,
            nodes,
            session_timeout_ms: session,
            net,
            flags,
        };
        for id in 1..=3 {
            cluster.start_node(id).await;
        }
        cluster
    }

    /// Cuts node `id` off the network, from the other nodes and from the test's clients
    /// (`true`), or plugs it back in: a cluster started with [`Cluster::start_in`].
    pub(crate) fn cut(&self, id: i32, cut: bool) {
        let net = self.net.as_ref().expect("a cluster in network namespaces");
        net.cut(id as usize, cut);
    }

    fn node(&mut self, id: i32) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    pub(crate) fn bootstrap(&self, id: i32) -> String {
        let node = self.nodes.iter().find(|n| n.id == id).unwrap();
        format!("{}:{}", node.host, node.port)
    }

    /// Starts node `id` (again, on the same data dir) and waits until it accepts clients.
    pub(crate) async fn start_node(&mut self, id: i32) {
        let dir = self.dir.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("log.txt"))
            .unwrap();
        let node = self.nodes.iter().find(|n| n.id == id).unwrap();
        let broker = env!("CARGO_BIN_EXE_broker");
        // `ip netns exec` execs the broker in the node's namespace: the child is the broker.
        let mut command = match &self.net {
            Some(net) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &net.namespace(id as usize), broker]);
                c
            }
            None => Command::new(broker),
        };
        let child = command
            .args(["--node-id", &id.to_string()])
            .args(["--listen", &format!("{}:{}", node.host, node.port)])
            .args([
                "--controller-listen",
                &format!("{}:{}", node.host, node.controller_port),
            ])
            .args(["--voters", &self.voters])
            .args(["--broker-heartbeat-interval-ms", "200"])
            .args(["--replica-lag-time-max-ms", "2000"])
            .args(["--broker-session-timeout-ms"])
            .arg(self.session_timeout_ms.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(&self.flags)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let address = self.bootstrap(id);
        self.node(id).child = Some(child);
        accepting_at(&address).await;
    }

    /// SIGKILL: nothing of the node's shutdown runs.
    pub(crate) fn kill(&mut self, id: i32) {
        let mut child = self.node(id).child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends `signal` (STOP, CONT) to node `id`'s process.
    pub(crate) fn signal(&mut self, id: i32, signal: &str) {
        let pid = self.node(id).child.as_ref().unwrap().id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The bytes of node `id`'s copy of partition 0 of `topic` (its one segment).
    fn partition_file(&self, id: i32, topic: &str) -> Vec<u8> {
        let path = self.dir.path().join(format!(
            "node-{id}/data/topics/{topic}/0/00000000000000000000.log"
        ));
        std::fs::read(path).unwrap()
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
            let mut client = RawClient::try_connect(&bootstrap).await.ok()?;
            client.try_call(&DescribeClusterRequest::default(), 0).await
        };
        let answer = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .ok()??;
        let brokers = answer.brokers.iter().map(|b| b.broker_id.0).collect();
        Some((answer.controller_id.0, brokers))
    }

    /// Waits until every node of `ids` names the same controller, one of `ids`, and exactly
    /// `ids` as its brokers; that controller.
    pub(crate) async fn agreed(&self, ids: &[i32]) -> i32 {
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
            // To look into the nodes' logs and data after a failure.
            if std::env::var_os("BROKER_TEST_KEEP_DATA").is_some() {
                let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
                eprintln!("the nodes' data is kept in {}", dir.keep().display());
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

/// A partition as a node's metadata answer gives it: leader, leader epoch, replicas, ISR,
/// offline replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) leader: i32,
    pub(crate) epoch: i32,
    pub(crate) replicas: Vec<i32>,
    pub(crate) isr: Vec<i32>,
    pub(crate) offline: Vec<i32>,
}

impl Cluster {
    /// Topic `name`'s partitions as node `id` describes them (Metadata v12), by index.
    pub(crate) async fn placements(&self, id: i32, name: &str) -> Option<Vec<Placement>> {
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        use kafka_protocol::messages::{MetadataRequest, TopicName};
        use kafka_protocol::protocol::StrBytes;
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name.into())))),
            ]))
            .with_allow_auto_topic_creation(false);
        let bootstrap = self.bootstrap(id);
        // A node that cannot be reached yet (cut off a moment ago) has not answered: asked again.
        let call = async {
            let mut client = RawClient::try_connect(&bootstrap).await.ok()?;
            client.try_call(&request, 12).await
        };
        let answer = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .ok()??;
        let topic = answer.topics.first()?;
        if topic.error_code != 0 {
            return None;
        }
        let ids = |v: &[kafka_protocol::messages::BrokerId]| v.iter().map(|b| b.0).collect();
        let mut partitions: Vec<_> = topic.partitions.iter().collect();
        partitions.sort_by_key(|p| p.partition_index);
        Some(
            partitions
                .into_iter()
                .map(|p| Placement {
                    leader: p.leader_id.0,
                    epoch: p.leader_epoch,
                    replicas: ids(&p.replica_nodes),
                    isr: ids(&p.isr_nodes),
                    offline: ids(&p.offline_replicas),
                })
                .collect(),
        )
    }

    /// Waits until every node of `ids` describes topic `name` the same way and `ok` holds of
    /// it; that description.
    pub(crate) async fn placed(
        &self,
        ids: &[i32],
        name: &str,
        ok: impl Fn(&[Placement]) -> bool,
    ) -> Vec<Placement> {
        let ok = &ok;
        eventually(
            &format!("nodes {ids:?} agree on {name}"),
            LONG,
            || async move {
                let mut seen = Vec::new();
                for id in ids {
                    seen.push(self.placements(*id, name).await?);
                }
                let first = seen[0].clone();
                (seen.iter().all(|s| *s == first) && ok(&first)).then_some(first)
            },
        )
        .await
    }
}

async fn create(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), String> {
    create_with(bootstrap, name, partitions, replication, &[]).await
}

pub(crate) async fn create_with(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication: i32,
    configs: &[(&str, &str)],
) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(bootstrap, &[]).create().unwrap();
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let results = admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .map_err(|e| e.to_string())?;
    results
        .into_iter()
        .try_for_each(|r| r.map(|_| ()).map_err(|(_, e)| e.to_string()))
}

/// Topics live in the cluster's metadata: a topic made through one node is known to all, its
/// partitions spread over the nodes, and librdkafka produces to and reads from each
/// partition's leader, wherever it is, in a consumer group. A node that leads nothing refuses a produce with
/// NOT_LEADER_OR_FOLLOWER. A replication factor above the live nodes is refused.
#[tokio::test]
async fn topics_are_spread_over_the_nodes_and_clients_follow_their_leaders() {
    use rdkafka::Message;
    use rdkafka::consumer::StreamConsumer;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let cluster = Cluster::start(1500).await;
    cluster.agreed(&[1, 2, 3]).await;
    create(&cluster.bootstrap(1), "spread", 3, 1).await.unwrap();
    let placed = cluster.placed(&[1, 2, 3], "spread", |p| p.len() == 3).await;
    let leaders: BTreeSet<i32> = placed.iter().map(|p| p.leader).collect();
    assert_eq!(leaders, BTreeSet::from([1, 2, 3]), "{placed:?}");

    let error = create(&cluster.bootstrap(2), "too-many", 1, 4)
        .await
        .unwrap_err();
    assert!(error.contains("replication factor"), "{error}");

    let producer: FutureProducer = client_config(&cluster.bootstrap(1), &[("acks", "all")])
        .create()
        .unwrap();
    for i in 0..30 {
        let value = format!("m{i}");
        let record = FutureRecord::to("spread")
            .partition(i % 3)
            .payload(&value)
            .key("k");
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
    // A group: its coordinator is the node FindCoordinator names, whichever node is asked.
    let consumer: StreamConsumer = client_config(
        &cluster.bootstrap(3),
        &[
            ("group.id", "spread-readers"),
            ("auto.offset.reset", "earliest"),
        ],
    )
    .create()
    .unwrap();
    consumer.subscribe(&["spread"]).unwrap();
    let mut read = BTreeSet::new();
    while read.len() < 30 {
        let message = tokio::time::timeout(LONG, consumer.recv())
            .await
            .unwrap()
            .unwrap();
        read.insert(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
    }
    assert_eq!(read, (0..30).map(|i| format!("m{i}")).collect());

    // Partition 0's leader takes it; another node refuses it.
    let elsewhere = (1..=3).find(|id| *id != placed[0].leader).unwrap();
    let mut client = RawClient::connect(&cluster.bootstrap(elsewhere)).await;
    let batch = crate::common::one_record_batch(-1, -1, -1, b"wrong node");
    let answer = client
        .call(&crate::common::produce_request("spread", batch), 9)
        .await;
    let code = answer.responses[0].partition_responses[0].error_code;
    assert_eq!(
        code,
        kafka_protocol::ResponseError::NotLeaderOrFollower.code()
    );
}

/// A node that dies is fenced: a partition it led with other in-sync replicas gets one of them
/// as leader at a higher leader epoch, and leaves the ISR; a partition whose only replica it
/// was has no leader (no unclean election). When it comes back it is in the cluster again and
/// leads the partition that had no leader.
#[tokio::test]
async fn a_fenced_node_hands_its_partitions_to_the_rest_of_their_isr() {
    let mut cluster = Cluster::start(1500).await;
    cluster.agreed(&[1, 2, 3]).await;
    create(&cluster.bootstrap(1), "triple", 1, 3).await.unwrap();
    let before = cluster.placed(&[1, 2, 3], "triple", |p| p.len() == 1).await[0].clone();
    assert_eq!(before.isr.len(), 3);
    let victim = before.leader;
    create(&cluster.bootstrap(1), "single", 3, 1).await.unwrap();
    let single = cluster.placed(&[1, 2, 3], "single", |p| p.len() == 3).await;
    let alone = single.iter().position(|p| p.leader == victim).unwrap();

    cluster.kill(victim);
    let rest: Vec<i32> = (1..=3).filter(|id| *id != victim).collect();
    let after = cluster
        .placed(&rest, "triple", |p| p[0].leader != victim)
        .await[0]
        .clone();
    assert!(rest.contains(&after.leader), "{after:?}");
    assert!(after.epoch > before.epoch, "{before:?} -> {after:?}");
    assert!(!after.isr.contains(&victim), "{after:?}");
    assert_eq!(after.offline, vec![victim]);
    let offline = cluster
        .placed(&rest, "single", |p| p[alone].leader == -1)
        .await;
    assert_eq!(offline[alone].offline, vec![victim]);

    cluster.start_node(victim).await;
    cluster.agreed(&[1, 2, 3]).await;
    cluster
        .placed(&[1, 2, 3], "single", |p| p[alone].leader == victim)
        .await;
}

/// Reads partition 0 of `topic` from the start through `bootstrap` until `count` records came,
/// as strings.
async fn read_all(bootstrap: &str, topic: &str, count: usize) -> Vec<String> {
    use rdkafka::consumer::StreamConsumer;
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: StreamConsumer = client_config(bootstrap, &[("group.id", "reader")])
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut read = Vec::new();
    while read.len() < count {
        let message = tokio::time::timeout(LONG, consumer.recv())
            .await
            .expect("records within the deadline")
            .unwrap();
        read.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
    }
    read
}

/// A raw acks=all produce of one record to partition 0 of `topic` at node `id`: its error code.
async fn produce_raw(cluster: &Cluster, id: i32, topic: &str) -> i16 {
    produce_value(cluster, id, topic, -1, b"raw").await
}

/// A raw produce of `value` with `acks` to partition 0 of `topic` at node `id`: its error code.
async fn produce_value(cluster: &Cluster, id: i32, topic: &str, acks: i16, value: &[u8]) -> i16 {
    let mut client = RawClient::connect(&cluster.bootstrap(id)).await;
    let batch = crate::common::one_record_batch(-1, -1, -1, value);
    let request = crate::common::produce_request(topic, batch).with_acks(acks);
    let answer = client.call(&request, 9).await;
    answer.responses[0].partition_responses[0].error_code
}

/// Replication: followers copy their leader, so records acknowledged with acks=all survive the
/// leader's death: the new leader (from the ISR) serves every one of them, in order, once. A
/// write to a partition with fewer in-sync replicas than its min.insync.replicas is refused
/// NOT_ENOUGH_REPLICAS; the replica that comes back catches up and rejoins the ISR.
#[tokio::test]
async fn acknowledged_records_survive_the_leader_and_the_isr_heals() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mut cluster = Cluster::start(1500).await;
    cluster.agreed(&[1, 2, 3]).await;
    let bootstrap = cluster.bootstrap(1);
    create_with(&bootstrap, "kept", 1, 3, &[("min.insync.replicas", "2")])
        .await
        .unwrap();
    create_with(&bootstrap, "strict", 1, 3, &[("min.insync.replicas", "3")])
        .await
        .unwrap();
    let first = cluster.placed(&[1, 2, 3], "kept", |p| p.len() == 1).await[0].clone();
    let producer: FutureProducer = client_config(
        &bootstrap,
        &[("acks", "all"), ("enable.idempotence", "true")],
    )
    .create()
    .unwrap();
    let sent: Vec<String> = (0..200).map(|i| format!("r{i}")).collect();
    for value in &sent {
        let record = FutureRecord::to("kept").payload(value).key("k");
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }

    let victim = first.leader;
    cluster.kill(victim);
    let rest: Vec<i32> = (1..=3).filter(|id| *id != victim).collect();
    let after = cluster
        .placed(&rest, "kept", |p| {
            p[0].leader != victim && p[0].leader != -1
        })
        .await[0]
        .clone();
    assert_eq!(
        read_all(&cluster.bootstrap(after.leader), "kept", 200).await,
        sent
    );
    // Two in sync, two needed: writes go on. Three needed: refused.
    assert_eq!(produce_raw(&cluster, after.leader, "kept").await, 0);
    let strict = cluster
        .placed(&rest, "strict", |p| {
            p[0].isr.len() == 2 && p[0].leader != -1
        })
        .await[0]
        .clone();
    let code = produce_raw(&cluster, strict.leader, "strict").await;
    assert_eq!(
        code,
        kafka_protocol::ResponseError::NotEnoughReplicas.code()
    );

    cluster.start_node(victim).await;
    cluster.agreed(&[1, 2, 3]).await;
    for topic in ["kept", "strict"] {
        cluster
            .placed(&[1, 2, 3], topic, |p| p[0].isr.len() == 3)
            .await;
    }
    assert_eq!(produce_raw(&cluster, strict.leader, "strict").await, 0);
    let mut all = sent.clone();
    all.push("raw".into());
    assert_eq!(read_all(&cluster.bootstrap(victim), "kept", 201).await, all);
}

/// KIP-101: a leader that took writes its followers never got (acks=1, the followers paused)
/// and died comes back as a follower of the new leader, asks it where their logs part
/// (OffsetForLeaderEpoch) and cuts those writes off: afterwards its copy of the partition is
/// byte for byte the new leader's, and no reader ever sees the lost writes.
#[tokio::test]
async fn a_deposed_leader_cuts_off_what_the_new_leader_never_had() {
    let mut cluster = Cluster::start(1500).await;
    cluster.agreed(&[1, 2, 3]).await;
    create(&cluster.bootstrap(1), "epochs", 1, 3).await.unwrap();
    let first = cluster.placed(&[1, 2, 3], "epochs", |p| p.len() == 1).await[0].clone();
    let old = first.leader;
    let followers: Vec<i32> = (1..=3).filter(|id| *id != old).collect();
    let mut kept = Vec::new();
    for i in 0..10 {
        let value = format!("a{i}");
        assert_eq!(
            produce_value(&cluster, old, "epochs", -1, value.as_bytes()).await,
            0
        );
        kept.push(value);
    }

    for id in &followers {
        cluster.signal(*id, "STOP");
    }
    for i in 0..5 {
        let value = format!("lost{i}");
        assert_eq!(
            produce_value(&cluster, old, "epochs", 1, value.as_bytes()).await,
            0
        );
    }
    cluster.kill(old);
    for id in &followers {
        cluster.signal(*id, "CONT");
    }

    let new = cluster
        .placed(&followers, "epochs", |p| {
            p[0].leader != old && p[0].leader != -1
        })
        .await[0]
        .clone();
    assert!(new.epoch > first.epoch);
    for i in 0..3 {
        let value = format!("b{i}");
        assert_eq!(
            produce_value(&cluster, new.leader, "epochs", -1, value.as_bytes()).await,
            0
        );
        kept.push(value);
    }

    cluster.start_node(old).await;
    cluster
        .placed(&[1, 2, 3], "epochs", |p| p[0].isr.len() == 3)
        .await;
    // A follower's fetch parked at the old leader may have carried the first of the acks=1
    // writes to it before it was stopped (the answer waited in its socket, with what had been
    // appended when it was made: one write or a few): those are the new leader's and stay. The
    // others were never anywhere else and are gone.
    let mut wanted = 13;
    let lost_kept = loop {
        let read = read_all(&cluster.bootstrap(old), "epochs", wanted).await;
        let lost_kept = read[10..]
            .iter()
            .take_while(|v| v.starts_with("lost"))
            .count();
        if 10 + lost_kept < wanted {
            break lost_kept;
        }
        // Only kept acks=1 writes after a9 so far: the new leader's three come after them.
        wanted = 13 + lost_kept;
    };
    let read = read_all(&cluster.bootstrap(old), "epochs", 13 + lost_kept).await;
    let mut expected = kept[..10].to_vec();
    expected.extend((0..lost_kept).map(|i| format!("lost{i}")));
    expected.extend(kept[10..].iter().cloned());
    assert_eq!(read, expected);
    let leader_copy = cluster.partition_file(new.leader, "epochs");
    eventually(
        "the old leader's copy is the new leader's",
        LONG,
        || async { (cluster.partition_file(old, "epochs") == leader_copy).then_some(()) },
    )
    .await;
}

/// ElectLeaders on `topic`'s partitions (`None`: every partition of the cluster) at node `id`:
/// each listed partition's index and error code.
async fn elect_preferred(
    cluster: &Cluster,
    id: i32,
    topic: Option<(&str, Vec<i32>)>,
) -> Vec<(i32, i16)> {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{ElectLeadersRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let request = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_timeout_ms(10_000)
        .with_topic_partitions(topic.map(|(name, partitions)| {
            vec![
                TopicPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(name.into())))
                    .with_partitions(partitions),
            ]
        }));
    let mut client = RawClient::connect(&cluster.bootstrap(id)).await;
    let answer = client.call(&request, 2).await;
    answer
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result
                .iter()
                .map(|p| (p.partition_id, p.error_code))
        })
        .collect()
}

/// After a failover, leadership stays on the nodes that took over, even once the preferred
/// leader is back in sync; a preferred-leader election (ElectLeaders) gives it back. A partition
/// led by its preferred replica needs no election.
#[tokio::test]
async fn a_preferred_leader_election_gives_leadership_back() {
    let mut cluster = Cluster::start(1500).await;
    cluster.agreed(&[1, 2, 3]).await;
    create(&cluster.bootstrap(1), "preferred", 3, 3)
        .await
        .unwrap();
    let before = cluster
        .placed(&[1, 2, 3], "preferred", |p| p.len() == 3)
        .await;
    assert!(
        before.iter().all(|p| p.leader == p.replicas[0]),
        "{before:?}"
    );
    let victim = before[0].leader;

    cluster.kill(victim);
    let rest: Vec<i32> = (1..=3).filter(|id| *id != victim).collect();
    cluster
        .placed(&rest, "preferred", |p| {
            p[0].leader != victim && p[0].leader != -1
        })
        .await;
    cluster.start_node(victim).await;
    let healed = cluster
        .placed(&[1, 2, 3], "preferred", |p| {
            p.iter().all(|p| p.isr.len() == 3)
        })
        .await;
    assert_ne!(healed[0].leader, victim, "it does not move back by itself");

    let elected = elect_preferred(&cluster, 2, None).await;
    assert_eq!(elected, vec![(0, 0)], "only partition 0 needed an election");
    cluster
        .placed(&[1, 2, 3], "preferred", |p| p[0].leader == victim)
        .await;
    let again = elect_preferred(&cluster, 3, Some(("preferred", vec![0]))).await;
    let not_needed = kafka_protocol::ResponseError::ElectionNotNeeded.code();
    assert_eq!(again, vec![(0, not_needed)]);
}

/// The node that coordinates `key` (key type 0: a group, 1: a transactional id), as node `id`
/// answers FindCoordinator, once it names one that is not `not`.
async fn coordinator_of(cluster: &Cluster, id: i32, (key_type, key): (i8, &str), not: i32) -> i32 {
    use kafka_protocol::messages::FindCoordinatorRequest;
    use kafka_protocol::protocol::StrBytes;
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(key.into()))
        .with_key_type(key_type);
    eventually(&format!("a coordinator of {key}"), LONG, || {
        let request = request.clone();
        async move {
            let mut client = RawClient::connect(&cluster.bootstrap(id)).await;
            let answer = client.call(&request, 3).await;
            (answer.error_code == 0 && answer.node_id.0 != not).then_some(answer.node_id.0)
        }
    })
    .await
}

/// Produces `{prefix}0` .. `{prefix}{count - 1}` to `topic` (acks=all, one key): the producer
/// and the values, in order.
async fn produce_values(
    bootstrap: &str,
    topic: &str,
    prefix: &str,
    count: usize,
) -> (rdkafka::producer::FutureProducer, Vec<String>) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = client_config(bootstrap, &[("acks", "all")])
        .create()
        .unwrap();
    let values: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    for value in &values {
        let record = FutureRecord::to(topic).payload(value).key("k");
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
    (producer, values)
}

/// The coordinator of group `group` (see [`coordinator_of`]).
async fn coordinator(cluster: &Cluster, id: i32, group: &str, not: i32) -> i32 {
    coordinator_of(cluster, id, (0, group), not).await
}

/// A consumer of group `group` on topic `topic` (from the earliest offset when the group has
/// none): the first `count` values it reads, then it commits what it read and leaves.
async fn consume_and_commit(
    bootstrap: &str,
    group: &str,
    topic: &str,
    count: usize,
) -> Vec<String> {
    use rdkafka::Message;
    use rdkafka::consumer::{CommitMode, StreamConsumer};
    let consumer: StreamConsumer = client_config(
        bootstrap,
        &[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
        ],
    )
    .create()
    .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut read = Vec::new();
    while read.len() < count {
        let message = tokio::time::timeout(LONG, consumer.recv())
            .await
            .expect("records within the deadline")
            .unwrap();
        read.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
        if read.len() == count {
            consumer.commit_message(&message, CommitMode::Sync).unwrap();
        }
    }
    read
}

/// Committed offsets live in the replicated internal topic `__consumer_offsets`, and a group's
/// coordinator is the leader of the group's partition of it: when that node is killed, another
/// replica leads the partition, loads the group's offsets and coordinates it, and the group
/// goes on from where it committed (not from its reset policy).
#[tokio::test]
async fn committed_offsets_survive_their_coordinator() {
    use rdkafka::producer::FutureRecord;
    let mut cluster = Cluster::start(1500).await;
    cluster.agreed(&[1, 2, 3]).await;
    let bootstrap = cluster.bootstrap(1);
    create(&bootstrap, "work", 1, 3).await.unwrap();
    cluster
        .placed(&[1, 2, 3], "work", |p| p.len() == 1 && p[0].isr.len() == 3)
        .await;
    let (producer, sent) = produce_values(&bootstrap, "work", "r", 10).await;

    assert_eq!(
        consume_and_commit(&bootstrap, "g", "work", 6).await,
        sent[..6]
    );
    let internal = cluster
        .placed(&[1, 2, 3], "__consumer_offsets", |p| {
            p.len() == 10 && p.iter().all(|p| p.isr.len() == 3)
        })
        .await;
    let victim = coordinator(&cluster, 1, "g", -1).await;
    assert!(internal.iter().any(|p| p.leader == victim));

    cluster.kill(victim);
    let rest: Vec<i32> = (1..=3).filter(|id| *id != victim).collect();
    let survivor = rest[0];
    let next = coordinator(&cluster, survivor, "g", victim).await;
    assert!(rest.contains(&next), "{next}");
    let resumed = consume_and_commit(&cluster.bootstrap(survivor), "g", "work", 4).await;
    assert_eq!(
        resumed,
        sent[6..],
        "the group resumes at its committed offset"
    );

    // Back again, the node follows: the group's offsets are where the survivors left them.
    cluster.start_node(victim).await;
    cluster.agreed(&[1, 2, 3]).await;
    cluster
        .placed(&[1, 2, 3], "__consumer_offsets", |p| {
            p.iter().all(|p| p.isr.len() == 3)
        })
        .await;
    producer
        .send(
            FutureRecord::to("work").payload("r10").key("k"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let last = consume_and_commit(&cluster.bootstrap(victim), "g", "work", 1).await;
    assert_eq!(last, ["r10"]);
}

/// An idempotent producer's id from node `id` (InitProducerId without a transactional id).
async fn producer_id(cluster: &Cluster, id: i32) -> i64 {
    use kafka_protocol::messages::InitProducerIdRequest;
    let request = InitProducerIdRequest::default()
        .with_transaction_timeout_ms(-1)
        .with_producer_id(kafka_protocol::messages::ProducerId(-1))
        .with_producer_epoch(-1);
    let mut client = RawClient::connect(&cluster.bootstrap(id)).await;
    let answer = client.call(&request, 4).await;
    assert_eq!(answer.error_code, 0);
    answer.producer_id.0
}

/// Producer ids are reserved in blocks by the active controller, in the metadata: no two nodes
/// hand out the same id (an idempotent producer's sequence numbers are kept per id in every
/// partition, so two producers with one id would be taken for each other), not even a node
/// that restarts.
#[tokio::test]
async fn no_two_nodes_hand_out_the_same_producer_id() {
    let mut cluster = Cluster::start(1500).await;
    cluster.agreed(&[1, 2, 3]).await;
    let mut seen = BTreeSet::new();
    for round in 0..3 {
        for id in 1..=3 {
            let pid = producer_id(&cluster, id).await;
            assert!(
                seen.insert(pid),
                "round {round}: node {id} handed out {pid} again"
            );
        }
    }
    cluster.kill(2);
    cluster.start_node(2).await;
    cluster.agreed(&[1, 2, 3]).await;
    let pid = producer_id(&cluster, 2).await;
    assert!(
        seen.insert(pid),
        "node 2 handed out {pid} again after a restart"
    );
}

/// The coordinator of transactional id `id` (see [`coordinator_of`]).
pub(crate) async fn txn_coordinator(cluster: &Cluster, at: i32, id: &str, not: i32) -> i32 {
    coordinator_of(cluster, at, (1, id), not).await
}

/// A transactional copier, Kafka's consume-transform-produce loop: transactional id `id`,
/// group `copiers`, reading `in` (read_committed) from the group's committed offset. It copies
/// the next `count` records to `out` (record i to partition i % 3) with the offsets in one
/// transaction, committed when `commit`, else left open (its producer dropped, as by a crash).
async fn copy(bootstrap: &str, id: &str, count: usize, commit: bool) -> Vec<String> {
    use rdkafka::consumer::StreamConsumer;
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let timeout = Duration::from_secs(20);
    let consumer: StreamConsumer = client_config(
        bootstrap,
        &[
            ("group.id", "copiers"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
        ],
    )
    .create()
    .unwrap();
    consumer.subscribe(&["in"]).unwrap();
    let producer: FutureProducer = client_config(
        bootstrap,
        &[
            ("transactional.id", id),
            ("transaction.timeout.ms", "60000"),
        ],
    )
    .create()
    .unwrap();
    tokio::task::block_in_place(|| producer.init_transactions(timeout)).unwrap();
    let mut copied = Vec::new();
    let mut next = 0;
    while copied.len() < count {
        let message = tokio::time::timeout(LONG, consumer.recv())
            .await
            .expect("input within the deadline")
            .unwrap();
        if copied.is_empty() {
            tokio::task::block_in_place(|| producer.begin_transaction()).unwrap();
        }
        let value = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
        let partition = (message.offset() % 3) as i32;
        let record = FutureRecord::to("out")
            .payload(&value)
            .key("k")
            .partition(partition);
        producer.send(record, timeout).await.unwrap();
        copied.push(value);
        next = message.offset() + 1;
    }
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("in", 0, Offset::Offset(next))
        .unwrap();
    let metadata = consumer.group_metadata().expect("in the group");
    tokio::task::block_in_place(|| {
        producer.send_offsets_to_transaction(&offsets, &metadata, timeout)?;
        if commit {
            producer.commit_transaction(timeout)?;
        }
        Ok::<_, rdkafka::error::KafkaError>(())
    })
    .unwrap();
    copied
}

/// Every committed record of `out`'s three partitions, read until the end of each (a
/// read_committed consumer reaches it only once no transaction holds the partition open).
async fn committed_output(bootstrap: &str) -> Vec<String> {
    use rdkafka::consumer::StreamConsumer;
    use rdkafka::error::KafkaError;
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: StreamConsumer = client_config(
        bootstrap,
        &[
            ("group.id", "auditor"),
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "true"),
        ],
    )
    .create()
    .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..3 {
        assignment
            .add_partition_offset("out", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut ended = BTreeSet::new();
    let mut read = Vec::new();
    while ended.len() < 3 {
        match tokio::time::timeout(LONG, consumer.recv())
            .await
            .expect("the end of out")
        {
            Ok(m) => read.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap()),
            Err(KafkaError::PartitionEOF(p)) => {
                ended.insert(p);
            }
            Err(e) => panic!("{e}"),
        }
    }
    read
}

/// Transactions span the nodes and survive their coordinator, as in Kafka: the coordinator's
/// state is in `__transaction_state`, a transaction's markers go to each partition's leader
/// (WriteTxnMarkers), and its offsets go to the group's partition of `__consumer_offsets`. A
/// copier commits one transaction across three leaders, leaves a second one open and its
/// coordinator is SIGKILLed; a new instance on the survivors finds the new coordinator, which
/// aborts the open transaction (fencing the old instance), and goes on from the committed
/// offset: the output holds every input once, nothing of the aborted transaction, and the
/// group's committed offset is the end of the input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_span_the_nodes_and_survive_their_coordinator() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let mut cluster = Cluster::start(1500).await;
    cluster.agreed(&[1, 2, 3]).await;
    let bootstrap = cluster.bootstrap(1);
    create(&bootstrap, "in", 1, 3).await.unwrap();
    create(&bootstrap, "out", 3, 3).await.unwrap();
    for topic in ["in", "out"] {
        cluster
            .placed(&[1, 2, 3], topic, |p| p.iter().all(|p| p.isr.len() == 3))
            .await;
    }
    let (_, input) = produce_values(&bootstrap, "in", "v", 20).await;

    let first = copy(&bootstrap, "copier", 10, true).await;
    assert_eq!(first, input[..10]);
    let open = copy(&bootstrap, "copier", 3, false).await;
    assert_eq!(open, input[10..13]);
    let victim = txn_coordinator(&cluster, 1, "copier", -1).await;
    cluster.kill(victim);
    let survivor = (1..=3).find(|id| *id != victim).unwrap();
    txn_coordinator(&cluster, survivor, "copier", victim).await;
    let rest = copy(&cluster.bootstrap(survivor), "copier", 10, true).await;
    assert_eq!(
        rest,
        input[10..],
        "the group went on from its committed offset"
    );

    let mut output = committed_output(&cluster.bootstrap(survivor)).await;
    output.sort_by_key(|v| v[1..].parse::<i32>().unwrap());
    assert_eq!(
        output, input,
        "every input exactly once, none of the aborted copies"
    );
    let group: BaseConsumer =
        client_config(&cluster.bootstrap(survivor), &[("group.id", "copiers")])
            .create()
            .unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("in", 0);
    let committed =
        tokio::task::block_in_place(|| group.committed_offsets(wanted, Duration::from_secs(20)))
            .unwrap();
    assert_eq!(
        committed.find_partition("in", 0).unwrap().offset(),
        Offset::Offset(20)
    );
}

/// CreatePartitions in a cluster: the active controller places the new partitions on the
/// nodes as it placed the first (three replicas, leaders spread), every node grows its copy,
/// and the new partitions take writes at their leaders. A topic never shrinks.
#[tokio::test]
async fn a_topic_grows_on_every_node_and_its_new_partitions_take_writes() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let cluster = Cluster::start(1500).await;
    cluster.agreed(&[1, 2, 3]).await;
    let bootstrap = cluster.bootstrap(1);
    create(&bootstrap, "grown", 1, 3).await.unwrap();
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(&bootstrap, &[]).create().unwrap();
    let admin = &admin;
    let grow = |count| async move {
        let results = admin
            .create_partitions(&[NewPartitions::new("grown", count)], &AdminOptions::new())
            .await
            .unwrap();
        results[0].clone().map(|_| ()).map_err(|(_, e)| e)
    };
    grow(3).await.unwrap();
    let placed = cluster
        .placed(&[1, 2, 3], "grown", |p| {
            p.len() == 3 && p.iter().all(|p| p.isr.len() == 3)
        })
        .await;
    let leaders: BTreeSet<i32> = placed.iter().map(|p| p.leader).collect();
    assert_eq!(leaders.len(), 3, "the leaders spread: {placed:?}");
    assert_eq!(
        grow(2).await,
        Err(rdkafka::types::RDKafkaErrorCode::InvalidPartitions)
    );
    let producer: FutureProducer = client_config(&bootstrap, &[("acks", "all")])
        .create()
        .unwrap();
    for partition in 0..3 {
        let value = format!("to {partition}");
        let record = FutureRecord::to("grown")
            .payload(&value)
            .key("k")
            .partition(partition);
        let delivered = producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(delivered.partition, partition);
    }
}

/// Runs one of Apache Kafka's command-line tools against node `id`, failing the test unless it
/// succeeds; its standard output.
async fn kafka_tool(cluster: &Cluster, id: i32, main_class: &str, args: &[&str]) -> String {
    let java = apache_kafka::java(main_class).unwrap_or_else(|e| panic!("{e}"));
    let mut command = tokio::process::Command::from(java);
    command
        .args(["--bootstrap-server", &cluster.bootstrap(id)])
        .args(args);
    let out = crate::common::run_with_input(command, None, main_class).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{main_class} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Creates topic `name` of one partition on the nodes `replicas` (CreateTopics with an
/// explicit assignment, as librdkafka sends it).
async fn create_on(bootstrap: &str, name: &str, replicas: &[i32]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(bootstrap, &[]).create().unwrap();
    let assignment: &[&[i32]] = &[replicas];
    let topic = NewTopic::new(name, 1, TopicReplication::Variable(assignment));
    let created = admin.create_topics(&[topic], &AdminOptions::new()).await;
    assert!(created.unwrap()[0].is_ok(), "{name} on {replicas:?}");
}

/// Writes `values` to partition 0 of `topic` with acks=all.
async fn write_all(bootstrap: &str, topic: &str, values: &[String]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = client_config(bootstrap, &[("acks", "all")])
        .create()
        .unwrap();
    for value in values {
        let record = FutureRecord::to(topic).payload(value).key("k").partition(0);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("{value} not written: {e}"));
    }
}

/// AlterPartitionReassignments at node `id`: partition 0 of `topic` to `target` (`None`:
/// cancel), with `allow_rf_change`; the partition's error code.
async fn reassign_raw(
    cluster: &Cluster,
    id: i32,
    topic: &str,
    target: Option<Vec<i32>>,
    allow_rf_change: bool,
) -> i16 {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let partition = ReassignablePartition::default()
        .with_partition_index(0)
        .with_replicas(target.map(|t| t.into_iter().map(BrokerId).collect()));
    let request = AlterPartitionReassignmentsRequest::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_topics(vec![
            ReassignableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![partition]),
        ]);
    let mut client = RawClient::connect(&cluster.bootstrap(id)).await;
    let answer = client.call(&request, 1).await;
    answer.responses[0].partitions[0].error_code
}

/// ListPartitionReassignments at node `id`: each moving partition as (topic, index, replicas,
/// adding, removing).
async fn reassignments(
    cluster: &Cluster,
    id: i32,
) -> Vec<(String, i32, Vec<i32>, Vec<i32>, Vec<i32>)> {
    use kafka_protocol::messages::ListPartitionReassignmentsRequest;
    let mut client = RawClient::connect(&cluster.bootstrap(id)).await;
    let answer = client
        .call(&ListPartitionReassignmentsRequest::default(), 0)
        .await;
    let ids = |v: &[kafka_protocol::messages::BrokerId]| v.iter().map(|b| b.0).collect();
    answer
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                )
            })
        })
        .collect()
}

/// Replicas move while the partition keeps serving. A topic created with its replicas given
/// (librdkafka's CreateTopics with an assignment) on nodes 1 and 2; Apache Kafka's own
/// `kafka-reassign-partitions` moves it to 3 and 2: node 3 copies the log, joins the ISR, and
/// node 1, the leader, is dropped, so node 3 leads. Then a move back to node 1 while node 1 is
/// down waits (ListPartitionReassignments shows it, writes go on) until node 1 is back and
/// in sync. Every record is on the new replicas. Moves that cannot be are refused with Kafka's
/// errors.
#[tokio::test]
async fn replicas_move_between_nodes_with_kafka_reassign_partitions() {
    const REASSIGN: &str = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand";
    let mut cluster = Cluster::start(1500).await;
    cluster.agreed(&[1, 2, 3]).await;
    let bootstrap = cluster.bootstrap(2);
    create_on(&bootstrap, "moving", &[1, 2]).await;
    cluster
        .placed(&[1, 2, 3], "moving", |p| {
            p[0].replicas == [1, 2] && p[0].isr.len() == 2
        })
        .await;
    let first: Vec<String> = (0..100).map(|i| format!("a{i}")).collect();
    write_all(&bootstrap, "moving", &first).await;

    let plan = cluster.dir.path().join("move.json");
    let json = r#"{"version":1,"partitions":[{"topic":"moving","partition":0,"replicas":[3,2]}]}"#;
    std::fs::write(&plan, json).unwrap();
    let plan = plan.to_str().unwrap();
    let started = kafka_tool(
        &cluster,
        2,
        REASSIGN,
        &["--execute", "--reassignment-json-file", plan],
    )
    .await;
    assert!(
        started.contains("Successfully started partition reassignment for moving-0"),
        "{started}"
    );
    let moved = cluster
        .placed(&[1, 2, 3], "moving", |p| p[0].replicas == [3, 2])
        .await;
    assert_eq!((moved[0].leader, moved[0].isr.len()), (3, 2), "{moved:?}");
    let verified = kafka_tool(
        &cluster,
        2,
        REASSIGN,
        &["--verify", "--reassignment-json-file", plan],
    )
    .await;
    assert!(
        verified.contains("Reassignment of partition moving-0 is completed"),
        "{verified}"
    );
    assert_eq!(read_all(&bootstrap, "moving", 100).await, first);

    // Back to node 1 while it is down (fenced, still registered): it is added, cannot catch
    // up, and node 3 stays.
    cluster.kill(1);
    cluster.agreed(&[2, 3]).await;
    assert_eq!(
        reassign_raw(&cluster, 2, "moving", Some(vec![1, 2]), false).await,
        0
    );
    let moving = vec![("moving".to_owned(), 0, vec![1, 2, 3], vec![1], vec![3])];
    eventually("the move under way", LONG, || async {
        (reassignments(&cluster, 3).await == moving).then_some(())
    })
    .await;
    let listed = kafka_tool(&cluster, 3, REASSIGN, &["--list"]).await;
    assert!(listed.contains("moving-0"), "{listed}");
    let second: Vec<String> = (0..50).map(|i| format!("b{i}")).collect();
    write_all(&bootstrap, "moving", &second).await;
    assert_eq!(
        reassign_raw(&cluster, 2, "moving", Some(vec![1]), false).await,
        kafka_protocol::ResponseError::InvalidReplicationFactor.code(),
        "a change of replication factor, not allowed by the request"
    );
    assert_eq!(
        reassign_raw(&cluster, 2, "moving", Some(vec![1, 9]), true).await,
        kafka_protocol::ResponseError::InvalidReplicaAssignment.code(),
        "no broker 9"
    );

    cluster.start_node(1).await;
    let back = cluster
        .placed(&[1, 2, 3], "moving", |p| {
            p[0].replicas == [1, 2] && p[0].isr.len() == 2
        })
        .await;
    assert_eq!(back[0].leader, 1, "{back:?}");
    assert!(reassignments(&cluster, 1).await.is_empty());
    assert_eq!(
        reassign_raw(&cluster, 1, "moving", None, true).await,
        kafka_protocol::ResponseError::NoReassignmentInProgress.code()
    );
    let everything: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(read_all(&bootstrap, "moving", 150).await, everything);
}

/// Topic `topic`'s config `key` as node `id` describes it (DescribeConfigs).
async fn described(cluster: &Cluster, id: i32, topic: &str, key: &str) -> Option<String> {
    use kafka_protocol::messages::DescribeConfigsRequest;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::protocol::StrBytes;
    let resource = DescribeConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_string(topic.into()))
        .with_configuration_keys(Some(vec![StrBytes::from_string(key.into())]));
    let request = DescribeConfigsRequest::default().with_resources(vec![resource]);
    let mut client = RawClient::connect(&cluster.bootstrap(id)).await;
    let answer = client.call(&request, 4).await;
    let result = answer.results.first()?;
    let entry = result.configs.iter().find(|c| c.name.as_str() == key)?;
    entry.value.as_ref().map(|v| v.to_string())
}

/// A topic config altered through any node is the cluster's: the change goes through the
/// active controller into the metadata, every node's copy takes it, and the leader acts on it.
/// `min.insync.replicas=3` set through a node that does not lead the partition makes its
/// leader refuse an acks=all write once a replica is down; set back, the write goes through.
#[tokio::test]
async fn a_topic_config_altered_through_one_node_holds_on_every_node() {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let mut cluster = Cluster::start(1500).await;
    cluster.agreed(&[1, 2, 3]).await;
    create(&cluster.bootstrap(1), "tuned", 1, 3).await.unwrap();
    let placed = cluster
        .placed(&[1, 2, 3], "tuned", |p| p[0].isr.len() == 3)
        .await;
    let leader = placed[0].leader;
    let other = (1..=3).find(|id| *id != leader).unwrap();
    let through_other = cluster.bootstrap(other);
    let alter = |value: &'static str| {
        let bootstrap = through_other.clone();
        async move {
            let admin: AdminClient<rdkafka::client::DefaultClientContext> =
                client_config(&bootstrap, &[]).create().unwrap();
            let change = AlterConfig::new(ResourceSpecifier::Topic("tuned"))
                .set("min.insync.replicas", value);
            let results = admin
                .alter_configs(&[change], &AdminOptions::new())
                .await
                .unwrap();
            assert!(results[0].is_ok(), "{results:?}");
        }
    };
    alter("3").await;
    for id in 1..=3 {
        let cluster = &cluster;
        eventually(&format!("node {id} has the config"), LONG, || async move {
            let value = described(cluster, id, "tuned", "min.insync.replicas").await;
            (value.as_deref() == Some("3")).then_some(())
        })
        .await;
    }
    let down = (1..=3).find(|id| *id != leader && *id != other).unwrap();
    cluster.kill(down);
    cluster
        .placed(&[leader, other], "tuned", |p| p[0].isr.len() == 2)
        .await;
    assert_eq!(
        produce_raw(&cluster, leader, "tuned").await,
        kafka_protocol::ResponseError::NotEnoughReplicas.code()
    );
    alter("2").await;
    eventually("the leader takes the write again", LONG, || async {
        (produce_raw(&cluster, leader, "tuned").await == 0).then_some(())
    })
    .await;
}

/// A follower whose log ends before its leader's log start (DeleteRecords removed what it
/// missed while it was down) starts its copy over at the leader's log start, as Kafka's does,
/// catches up and is back in the ISR; then it can lead, and serves from there.
#[tokio::test]
async fn a_follower_behind_the_leaders_log_start_starts_over_there() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::{Offset, TopicPartitionList};
    let mut cluster = Cluster::start(1500).await;
    cluster.agreed(&[1, 2, 3]).await;
    let bootstrap = cluster.bootstrap(1);
    create_on(&bootstrap, "trimmed", &[1, 2]).await;
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(&bootstrap, &[]).create().unwrap();
    cluster
        .placed(&[1, 2, 3], "trimmed", |p| p[0].isr == [1, 2])
        .await;
    cluster.kill(2);
    cluster
        .placed(&[1, 3], "trimmed", |p| p[0].isr == [1])
        .await;
    let values: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    write_all(&bootstrap, "trimmed", &values).await;
    let mut before = TopicPartitionList::new();
    before
        .add_partition_offset("trimmed", 0, Offset::Offset(15))
        .unwrap();
    let deleted = admin
        .delete_records(&before, &AdminOptions::new())
        .await
        .unwrap();
    assert!(
        deleted
            .find_partition("trimmed", 0)
            .unwrap()
            .error()
            .is_ok()
    );

    cluster.start_node(2).await;
    cluster
        .placed(&[1, 2, 3], "trimmed", |p| p[0].isr.len() == 2)
        .await;
    cluster.kill(1);
    cluster
        .placed(&[2, 3], "trimmed", |p| p[0].leader == 2)
        .await;
    let rest = read_all(&cluster.bootstrap(2), "trimmed", 5).await;
    assert_eq!(rest, values[15..]);
}

/// One transactional producer spoken to over the bare protocol: its coordinator, the leader
/// of partition 0 of its topic, its producer id and epoch, and the next sequence number.
struct RawTxnProducer {
    id: String,
    topic: &'static str,
    coordinator: RawClient,
    leader: RawClient,
    producer: (i64, i16),
    sequence: i32,
}

impl RawTxnProducer {
    async fn init(cluster: &Cluster, id: &str, coordinator: i32, leader: i32) -> Self {
        use kafka_protocol::messages::{InitProducerIdRequest, TransactionalId};
        use kafka_protocol::protocol::StrBytes;
        let mut client = RawClient::connect(&cluster.bootstrap(coordinator)).await;
        let request = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(id.into()))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(kafka_protocol::messages::ProducerId(-1))
            .with_producer_epoch(-1);
        // The coordinator may still be loading its partition of `__transaction_state`.
        let deadline = tokio::time::Instant::now() + LONG;
        let answer = loop {
            let answer = client.call(&request, 4).await;
            let loading = [14, 15, 16].contains(&answer.error_code);
            if !loading || tokio::time::Instant::now() > deadline {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(answer.error_code, 0, "InitProducerId of {id}");
        Self {
            id: id.into(),
            topic: "late",
            coordinator: client,
            leader: RawClient::connect(&cluster.bootstrap(leader)).await,
            producer: (answer.producer_id.0, answer.producer_epoch),
            sequence: 0,
        }
    }

    /// AddPartitionsToTxn of partition 0, asked again while the last transaction still ends.
    async fn add_partition(&mut self) {
        use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
        use kafka_protocol::messages::{AddPartitionsToTxnRequest, TopicName, TransactionalId};
        use kafka_protocol::protocol::StrBytes;
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(
                self.id.clone(),
            )))
            .with_v3_and_below_producer_id(kafka_protocol::messages::ProducerId(self.producer.0))
            .with_v3_and_below_producer_epoch(self.producer.1)
            .with_v3_and_below_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(self.topic)))
                    .with_partitions(vec![0]),
            ]);
        let deadline = tokio::time::Instant::now() + LONG;
        loop {
            let answer = self.coordinator.call(&request, 3).await;
            let code = answer.results_by_topic_v3_and_below[0].results_by_partition[0]
                .partition_error_code;
            let concurrent = kafka_protocol::ResponseError::ConcurrentTransactions.code();
            if code != concurrent || tokio::time::Instant::now() > deadline {
                assert_eq!(code, 0, "AddPartitionsToTxn of {}", self.id);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A transactional batch of one record, `value`, with the next sequence number: the
    /// leader's error code (the sequence moves on only when it is taken).
    async fn produce(&mut self, value: &str) -> i16 {
        use kafka_protocol::messages::TransactionalId;
        use kafka_protocol::protocol::StrBytes;
        let (pid, epoch) = self.producer;
        let mut batch =
            crate::common::one_record_batch(pid, epoch, self.sequence, value.as_bytes()).to_vec();
        batch[21..23].copy_from_slice(&0x10i16.to_be_bytes()); // transactional
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        let request = crate::common::produce_request(self.topic, batch.into())
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(
                self.id.clone(),
            ))));
        let answer = self.leader.call(&request, 9).await;
        let code = answer.responses[0].partition_responses[0].error_code;
        if code == 0 {
            self.sequence += 1;
        }
        code
    }

    /// EndTxn: commit or abort.
    async fn end(&mut self, commit: bool) {
        use kafka_protocol::messages::{EndTxnRequest, TransactionalId};
        use kafka_protocol::protocol::StrBytes;
        let request = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(self.id.clone())))
            .with_producer_id(kafka_protocol::messages::ProducerId(self.producer.0))
            .with_producer_epoch(self.producer.1)
            .with_committed(commit);
        let answer = self.coordinator.call(&request, 3).await;
        assert_eq!(answer.error_code, 0, "EndTxn of {}", self.id);
    }
}

/// KIP-890 in a cluster: a transactional batch that reaches its partition's leader after its
/// transaction was aborted (held up on the network past the abort, as the Jepsen transactions
/// test once saw) is refused INVALID_TXN_STATE. The partition's own producer state would take
/// it (right epoch, next sequence) and open a transaction there that the producer's *next*
/// transaction then ends with its commit marker: an aborted record committed. So the leader
/// asks the transaction's coordinator before a producer's first batch of a transaction, both
/// when that is another node and when it is the leader itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_batch_after_its_transaction_ended_is_refused_not_adopted() {
    let cluster = Cluster::start(1500).await;
    cluster.agreed(&[1, 2, 3]).await;
    let bootstrap = cluster.bootstrap(1);
    create(&bootstrap, "late", 1, 3).await.unwrap();
    let placed = cluster
        .placed(&[1, 2, 3], "late", |p| p.iter().all(|p| p.isr.len() == 3))
        .await;
    let leader = placed[0].leader;
    // A transactional id coordinated by another node than the leader, and one by the leader.
    let (mut remote, mut local) = (None, None);
    for i in 0.. {
        let id = format!("late-{i}");
        let coordinator = txn_coordinator(&cluster, 1, &id, -1).await;
        let slot = if coordinator == leader {
            &mut local
        } else {
            &mut remote
        };
        slot.get_or_insert((id, coordinator));
        if remote.is_some() && local.is_some() {
            break;
        }
    }
    let invalid_txn_state = kafka_protocol::ResponseError::InvalidTxnState.code();
    let producers = [remote.unwrap(), local.unwrap()];
    for (id, coordinator) in producers.clone() {
        let mut p = RawTxnProducer::init(&cluster, &id, coordinator, leader).await;
        p.add_partition().await;
        assert_eq!(p.produce(&format!("{id} aborted")).await, 0);
        p.end(false).await;
        assert_eq!(
            p.produce(&format!("{id} late")).await,
            invalid_txn_state,
            "{id} (coordinator {coordinator}, leader {leader}): a batch after the abort"
        );
        p.add_partition().await;
        assert_eq!(p.produce(&format!("{id} committed")).await, 0);
        p.end(true).await;
    }
    // To a read_committed reader: each producer's committed record, nothing aborted or late.
    let committed = read_all(&bootstrap, "late", 2).await;
    let expected: Vec<String> = producers
        .iter()
        .map(|(id, _)| format!("{id} committed"))
        .collect();
    assert_eq!(committed, expected);
}
