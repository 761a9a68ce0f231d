//! The commands that ask a running lab: its control API (`dlq`, `fault`, `stop`, `start`, `env`),
//! its broker (`groups`), or run one more service next to it (`service`).

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use lab::Service;
use lab::dashboard::api::{
    BrokerRunning, DlqRecords, FaultSettings, LabStatus, Nodes, Replayed, ServiceRunning,
    ServiceScaled,
};
use saga_shared::dlq::header as dlq_header;
use saga_shared::http::Problem;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A running lab's control API (its dashboard).
#[derive(Debug, Clone, Args)]
pub(crate) struct LabApi {
    /// The running lab's dashboard, whose API the command calls.
    #[arg(
        long = "dashboard-url",
        env = "LAB_DASHBOARD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
}

impl LabApi {
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        call(
            reqwest::Method::GET,
            &format!("{}{path}", self.url),
            None::<()>,
        )
        .await
    }

    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<impl Serialize>,
    ) -> anyhow::Result<T> {
        call(reqwest::Method::POST, &format!("{}{path}", self.url), body).await
    }
}

/// The running lab's broker.
#[derive(Debug, Clone, Args)]
pub(crate) struct BrokerArg {
    /// Kafka bootstrap servers of the running lab.
    #[arg(long, env = "LAB_BROKERS", default_value = "127.0.0.1:9092")]
    pub(crate) brokers: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqAction {
    /// Print the records of `<topic>.dlq`, each waiting for replay or replayed.
    List(DlqArgs),
    /// Send the records of `<topic>.dlq` still waiting back to the consumer group that
    /// dead-lettered each (every one, the one at --partition and --offset, or those of one
    /// --group), and mark them replayed.
    Replay(DlqReplayArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DlqReplayArgs {
    #[command(flatten)]
    dlq: DlqArgs,
    /// Only the record at this partition of the DLQ (with --offset).
    #[arg(long, requires = "offset")]
    partition: Option<i32>,
    /// Only the record at this offset of the DLQ (with --partition).
    #[arg(long, requires = "partition")]
    offset: Option<i64>,
    /// Only the waiting records this consumer group dead-lettered.
    #[arg(long, conflicts_with_all = ["partition", "offset"])]
    group: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DlqArgs {
    /// The original topic, e.g. order.created.
    #[arg(long, env = "LAB_DLQ_TOPIC", default_value = "order.created")]
    topic: String,
    #[command(flatten)]
    lab: LabApi,
}

#[derive(Debug, Args)]
pub(crate) struct FaultArgs {
    #[arg(env = "LAB_SERVICE", value_enum)]
    service: Service,
    /// Make every event handler attempt fail (retries, then the DLQ).
    #[arg(long, env = "LAB_FAULT_FAIL", default_value_t = false)]
    fail: bool,
    /// Delay each event handler attempt by this many milliseconds.
    #[arg(long, env = "LAB_FAULT_SLOW_MS", default_value_t = 0)]
    slow_ms: u64,
    #[command(flatten)]
    lab: LabApi,
}

#[derive(Debug, Args)]
pub(crate) struct ServiceArg {
    #[arg(env = "LAB_SERVICE", value_enum)]
    service: Service,
    #[command(flatten)]
    lab: LabApi,
}

#[derive(Debug, Args)]
pub(crate) struct GroupsArgs {
    /// Only this group (default: every group).
    #[arg(env = "LAB_GROUP")]
    group: Option<String>,
    #[command(flatten)]
    broker: BrokerArg,
}

#[derive(Debug, Args)]
pub(crate) struct ServiceRunArgs {
    #[arg(value_enum)]
    service: Service,
    /// HTTP port (default: the service's own, 8081-8084).
    #[arg(long, env = "PORT")]
    port: Option<u16>,
    #[command(flatten)]
    common: saga_shared::config::CommonConfig,
}

/// `lab dlq list|replay`.
pub(crate) async fn dlq(action: DlqAction) -> anyhow::Result<()> {
    match action {
        DlqAction::List(a) => print_dlq(&a.lab.get(&format!("/api/dlq/{}", a.topic)).await?),
        DlqAction::Replay(a) => {
            let one = match (a.partition, a.offset, &a.group) {
                (Some(p), Some(o), _) => format!("?partition={p}&offset={o}"),
                (_, _, Some(g)) => format!("?group={g}"),
                _ => String::new(),
            };
            let done: Replayed = a
                .dlq
                .lab
                .post(&format!("/api/dlq/{}/replay{one}", a.dlq.topic), None::<()>)
                .await?;
            let mut line = format!(
                "replayed {} record(s) of {} to the group that dead-lettered each",
                done.replayed, done.topic,
            );
            if done.already_replayed > 0 {
                line += &format!(" ({} replayed before)", done.already_replayed);
            }
            println!("{line}");
            Ok(())
        }
    }
}

/// `lab fault`.
pub(crate) async fn fault(a: FaultArgs) -> anyhow::Result<()> {
    let body = FaultSettings {
        fail_handlers: a.fail,
        slow_ms: a.slow_ms,
    };
    let path = format!("/api/faults/{}", a.service.short_name());
    let set: FaultSettings = a.lab.post(&path, Some(body)).await?;
    println!(
        "{}: {}",
        a.service.short_name(),
        serde_json::to_string(&set)?
    );
    Ok(())
}

/// `lab stop` / `lab start` (`action`).
#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    #[arg(value_enum)]
    service: Service,
    /// How many consumers the service runs in its group (1 to 16).
    consumers: usize,
    #[command(flatten)]
    lab: LabApi,
}

/// `lab scale`: the service restarts with that many consumers in its consumer group.
pub(crate) async fn scale(a: ScaleArgs) -> anyhow::Result<()> {
    let path = format!(
        "/api/services/{}/scale?consumers={}",
        a.service.short_name(),
        a.consumers
    );
    let scaled: ServiceScaled = a.lab.post(&path, None::<()>).await?;
    println!("{}: {} consumer(s)", scaled.service, scaled.consumers);
    Ok(())
}

/// What `lab stop` and `lab start` act on: a service, or the embedded broker.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part {
    Broker,
    Service(Service),
}

fn part(s: &str) -> Result<Part, String> {
    use clap::ValueEnum;
    if s == "broker" {
        return Ok(Part::Broker);
    }
    Service::from_str(s, true)
        .map(Part::Service)
        .map_err(|_| format!("{s:?} is not broker, order, payment, inventory or notification"))
}

#[derive(Debug, Args)]
pub(crate) struct PartArg {
    /// broker (the embedded one, every node), or a service: order, payment, inventory,
    /// notification.
    #[arg(env = "LAB_SERVICE", value_parser = part)]
    part: Part,
    #[command(flatten)]
    lab: LabApi,
}

pub(crate) async fn stop_or_start(a: PartArg, action: &str) -> anyhow::Result<()> {
    let name = match a.part {
        Part::Broker => {
            let _: BrokerRunning = a
                .lab
                .post(&format!("/api/broker/{action}"), None::<()>)
                .await?;
            "broker"
        }
        Part::Service(service) => {
            let path = format!("/api/services/{}/{action}", service.short_name());
            let _: ServiceRunning = a.lab.post(&path, None::<()>).await?;
            service.name()
        }
    };
    let done = if action == "stop" {
        "stopped"
    } else {
        "started"
    };
    println!("{name} {done}");
    Ok(())
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeAction {
    /// Each node (running, live, the controller, how many partitions it leads) and each
    /// partition's leader, replicas and in-sync replicas.
    List(LabApi),
    /// Stop a node cleanly: its partitions get new leaders from their in-sync replicas.
    Stop(NodeArg),
    /// Start a stopped node again on its data: it catches up and rejoins the in-sync replicas.
    Start(NodeArg),
    /// Cut a running node off the network, from the other nodes and from every client, as a
    /// network partition does: it keeps running, is fenced, and its partitions get new leaders.
    Isolate(IsolateArg),
    /// Reconnect an isolated node: it cuts off what only it wrote, catches up and rejoins.
    Reconnect(NodeArg),
}

#[derive(Debug, Args)]
pub(crate) struct NodeArg {
    /// The node's id (1-3).
    id: i32,
    #[command(flatten)]
    lab: LabApi,
}

#[derive(Debug, Args)]
pub(crate) struct IsolateArg {
    #[command(flatten)]
    node: NodeArg,
    /// Cut it off from the other nodes only: its clients still reach it, and it still takes
    /// their writes as the leader it believes it is.
    #[arg(long)]
    keep_clients: bool,
}

impl NodeArg {
    /// `POST /api/nodes/{id}/{action}`: the nodes afterwards.
    async fn act(&self, action: &str) -> anyhow::Result<Nodes> {
        let path = format!("/api/nodes/{}/{action}", self.id);
        self.lab.post(&path, None::<()>).await
    }
}

/// `lab node list|stop|start|isolate|reconnect`.
pub(crate) async fn node(action: NodeAction) -> anyhow::Result<()> {
    let nodes: Nodes = match action {
        NodeAction::List(lab) => lab.get("/api/nodes").await?,
        NodeAction::Stop(a) => a.act("stop").await?,
        NodeAction::Start(a) => a.act("start").await?,
        NodeAction::Isolate(a) if a.keep_clients => a.node.act("isolate?keep_clients=true").await?,
        NodeAction::Isolate(a) => a.node.act("isolate").await?,
        NodeAction::Reconnect(a) => a.act("reconnect").await?,
    };
    print_nodes(&nodes);
    Ok(())
}

/// Prints `nodes`; stops quietly when standard output closes (`lab node list | head`).
fn print_nodes(nodes: &Nodes) {
    use std::io::Write;
    let ids = |v: &[i32]| {
        let names: Vec<String> = v.iter().map(i32::to_string).collect();
        names.join(",")
    };
    let mut out = std::io::stdout().lock();
    for n in &nodes.nodes {
        let state = match (n.running, n.live) {
            _ if n.keeps_clients => "isolated from the other nodes",
            _ if n.isolated => "isolated",
            (true, true) => "up",
            (true, false) => "starting",
            (false, true) => "stopped (not fenced yet)",
            (false, false) => "down",
        };
        let controller = if n.controller { ", controller" } else { "" };
        let line = format!(
            "node {} at {}: {state}{controller}, leads {}",
            n.id, n.address, n.leads
        );
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
    for p in &nodes.partitions {
        let line = format!(
            "  {}[{}] leader {} (epoch {}), replicas {}, in sync {}",
            p.topic,
            p.partition,
            p.leader,
            p.leader_epoch,
            ids(&p.replicas),
            ids(&p.isr)
        );
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
}

/// `lab env`: a service's settings as shell exports.
pub(crate) async fn env(a: ServiceArg) -> anyhow::Result<()> {
    let status: LabStatus = a.lab.get("/api/status").await?;
    let name = a.service.name();
    let svc = status
        .services
        .iter()
        .find(|s| s.name == name)
        .with_context(|| format!("the lab reports no {name}"))?;
    // The dashboard never shows a password; the role's is the lab's own, known here.
    let mut database_url = reqwest::Url::parse(&svc.database_url)
        .with_context(|| format!("the lab reports no database URL for {name}"))?;
    if database_url.password().is_some() {
        let _ = database_url.set_password(Some(&a.service.db().password()));
    }
    for (var, value) in [
        ("DATABASE_URL", database_url.as_str()),
        ("KAFKA_BROKERS", status.brokers.as_str()),
        ("SCHEMA_REGISTRY_URL", status.schema_registry.as_str()),
    ] {
        if !value.is_empty() {
            println!("export {var}='{value}'");
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct PartitionsArgs {
    /// The topic to grow.
    topic: String,
    /// Its new number of partitions (more than it has: partitions are never removed).
    #[arg(long)]
    to: usize,
    #[command(flatten)]
    broker: BrokerArg,
}

/// `lab partitions <topic> --to N`: adds partitions to a topic (CreatePartitions).
pub(crate) async fn partitions(a: PartitionsArgs) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::client::DefaultClientContext;

    let admin: AdminClient<DefaultClientContext> =
        saga_shared::kafka::client_config(&a.broker.brokers).create()?;
    let opts = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10)));
    let results = admin
        .create_partitions(&[NewPartitions::new(&a.topic, a.to)], &opts)
        .await?;
    for r in results {
        if let Err((topic, code)) = r {
            bail!("{topic}: the broker refused: {code}");
        }
    }
    println!("{}: {} partitions", a.topic, a.to);
    Ok(())
}

#[derive(Debug, Subcommand)]
pub(crate) enum TopicAction {
    /// Create a topic (CreateTopics), as `kafka-topics.sh --create` does.
    Create(TopicCreateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TopicCreateArgs {
    /// The topic's name.
    topic: String,
    /// How many partitions.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// How many copies of each partition, on as many nodes (default: the broker's).
    #[arg(long)]
    replication_factor: Option<i32>,
    /// A topic config, `name=value` (repeatable), e.g. `min.insync.replicas=2`.
    #[arg(long = "config", value_parser = config_pair)]
    configs: Vec<(String, String)>,
    #[command(flatten)]
    broker: BrokerArg,
}

fn config_pair(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not name=value"))?;
    Ok((name.to_owned(), value.to_owned()))
}

/// `lab topic create`.
pub(crate) async fn topic(action: TopicAction) -> anyhow::Result<()> {
    use rdkafka::admin::{NewTopic, TopicReplication};

    let TopicAction::Create(a) = action;
    let replication = TopicReplication::Fixed(a.replication_factor.unwrap_or(-1));
    let mut topic = NewTopic::new(&a.topic, a.partitions, replication);
    for (name, value) in &a.configs {
        topic = topic.set(name, value);
    }
    if let Err((topic, code)) = lab::kafka::create_topic(&a.broker.brokers, &topic).await? {
        bail!("{topic}: the broker refused: {code}");
    }
    let configs: Vec<String> = a
        .configs
        .iter()
        .map(|(n, v)| format!(", {n}={v}"))
        .collect();
    println!(
        "created {}: {} partition(s){}",
        a.topic,
        a.partitions,
        configs.concat()
    );
    Ok(())
}

/// `lab groups`.
pub(crate) async fn groups(a: GroupsArgs) -> anyhow::Result<()> {
    let groups = lab::groups::describe(&a.broker.brokers, a.group.as_deref()).await?;
    let text: String = groups.iter().map(|g| format!("{g}\n")).collect();
    print_out(&text)
}

/// `lab service`: the same service its own binary runs (`saga_shared::service::build`), in this
/// process.
pub(crate) async fn run_service(a: ServiceRunArgs) -> anyhow::Result<()> {
    saga_shared::telemetry::init_tracing("info");
    let svc = a.service;
    let port = a.port.unwrap_or(svc.default_port());
    let app = svc.build(&a.common, port, Arc::default()).await?;
    eprintln!("{} listening on port {}", svc.name(), app.port());
    app.run_until_stopped().await?;
    Ok(())
}

async fn call<T: DeserializeOwned>(
    method: reqwest::Method,
    url: &str,
    body: Option<impl Serialize>,
) -> anyhow::Result<T> {
    let http = reqwest::Client::new();
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("is the lab running? calling {url}"))?;
    let status = res.status();
    if !status.is_success() {
        let detail = res.json::<Problem>().await.map(|p| p.detail);
        bail!("{url} answered {status}: {}", detail.unwrap_or_default());
    }
    res.json()
        .await
        .with_context(|| format!("{url} answered what this lab binary does not read"))
}

fn print_dlq(dlq: &DlqRecords) -> anyhow::Result<()> {
    use std::fmt::Write;
    let mut out = format!(
        "{}: {} record(s), {} waiting, {} replayed\n",
        dlq.topic,
        dlq.records.len(),
        dlq.waiting,
        dlq.replayed,
    );
    for r in &dlq.records {
        let h = |name: &str| r.header(name).unwrap_or("-");
        writeln!(
            out,
            "  {}@{}  {}  from {}[{}]@{}  group={} attempts={}  error: {}",
            r.partition,
            r.offset,
            if r.replayed { "replayed" } else { "waiting " },
            h(dlq_header::ORIGINAL_TOPIC),
            h(dlq_header::ORIGINAL_PARTITION),
            h(dlq_header::ORIGINAL_OFFSET),
            h(dlq_header::CONSUMER_GROUP),
            h(dlq_header::ATTEMPTS),
            h(dlq_header::ERROR),
        )?;
    }
    print_out(&out)
}

/// Writes `text` to stdout. A reader that stopped early (`lab groups | grep -q ...`) is not an
/// error: like any Unix tool, the command then just ends.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
