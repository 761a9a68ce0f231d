//! Apache Kafka itself, started as child processes from the jars Maven fetched: the reference the
//! tests and benchmarks hold the workspace broker and the services against.
//!
//! `cargo xtask setup` (and so `cargo xtask test`) runs `mvn -B -q -f compat/kafka/pom.xml
//! package`, which copies Kafka's jars into `compat/kafka/target/lib` (Maven keeps its own cache
//! in `~/.m2`). [`KafkaCluster::start`] then does what Kafka's quick start does, one node at a
//! time: `kafka-storage format` with one cluster id, then `kafka-server-start` with a
//! `server.properties` of its own, every node both broker and KRaft controller (`process.roles=
//! broker,controller`) on loopback ports picked free. One node is a single-node cluster; three
//! make a quorum of three controllers (one can stop and the others keep the metadata).
//!
//! As the lab's PostgreSQL does, each JVM runs under `setpriv --pdeathsig`, so it stops when the
//! process that started it dies (a test killed on timeout leaves no Kafka behind), and a node
//! that exits while starting returns an error with the lines of its log that say why.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Kafka release the jars are of (`compat/kafka/pom.xml`).
pub const KAFKA_VERSION: &str = "4.4.0";

/// How long a node may take from `java` to "Kafka Server started" (a cold JVM on two busy cores
/// takes a few seconds; the deadline only ends a hung start).
const START_DEADLINE: Duration = Duration::from_secs(90);

/// The line a node logs when its broker serves clients.
const STARTED: &str = "Kafka Server started";

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error(
        "Apache Kafka's jars are not in {0}; fetch them with `cargo xtask setup` (or `mvn -B -q \
         -f compat/kafka/pom.xml package`)"
    )]
    JarsMissing(PathBuf),
    #[error(
        "`java` is not on PATH; install a JDK 17 or newer (`apt-get install openjdk-17-jdk-headless`)"
    )]
    JavaMissing,
    #[error("`setpriv` is missing; install it with `apt-get install util-linux`")]
    SetprivMissing,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("`{cmd}` failed:\n{output}")]
    Command { cmd: String, output: String },
    #[error("Kafka node {node} exited while starting ({status}); the end of its log:\n{log}")]
    Exited {
        node: u32,
        status: String,
        log: String,
    },
    #[error("Kafka node {node} did not start within {secs} s; the end of its log:\n{log}")]
    Timeout { node: u32, secs: u64, log: String },
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Nodes, each a broker and a controller (1 or 3 make sense).
    pub nodes: u32,
    /// Options of each node's JVM (heap, collector).
    pub jvm_options: Vec<String>,
    /// `server.properties` lines added to (or overriding) the defaults below.
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// For tests: a small heap, a JVM that starts quickly, no delay before a group's first
    /// rebalance. Replication settings follow the node count (Kafka's defaults need three nodes).
    pub fn for_tests(nodes: u32) -> Self {
        Self {
            nodes,
            jvm_options: [
                "-Xms256m",
                "-Xmx512m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
            ]
            .map(String::from)
            .to_vec(),
            properties: Vec::new(),
        }
    }

    /// For benchmarks: Kafka's own launch options (`kafka-run-class.sh`: a 1 GiB heap, G1).
    pub fn for_benchmarks(nodes: u32) -> Self {
        Self {
            nodes,
            jvm_options: [
                "-Xms1g",
                "-Xmx1g",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-Djava.awt.headless=true",
            ]
            .map(String::from)
            .to_vec(),
            properties: Vec::new(),
        }
    }

    pub fn property(mut self, name: &str, value: impl ToString) -> Self {
        self.properties.push((name.to_owned(), value.to_string()));
        self
    }
}

/// One node's process and files.
struct Node {
    id: u32,
    port: u16,
    properties: PathBuf,
    log: PathBuf,
    /// The log's length when the node was last spawned: its "started" line comes after.
    log_start: u64,
    child: Option<Child>,
}

/// A running Apache Kafka cluster; its processes are killed when it is dropped.
pub struct KafkaCluster {
    nodes: Vec<Node>,
    config: KafkaConfig,
}

/// Where `compat/kafka/pom.xml` puts the jars: `KAFKA_LIB_DIR` if set, else beside this crate.
pub fn lib_dir() -> PathBuf {
    std::env::var_os("KAFKA_LIB_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../compat/kafka/target/lib"),
        PathBuf::from,
    )
}

/// The classpath of Kafka's jars (`lib/*`), after checking they are there.
pub fn classpath() -> Result<String, KafkaError> {
    let lib = lib_dir();
    let server_jar = lib.join(format!("kafka_2.13-{KAFKA_VERSION}.jar"));
    if !server_jar.is_file() {
        return Err(KafkaError::JarsMissing(lib));
    }
    Ok(format!("{}/*", lib.display()))
}

/// A `java` command running `main_class` of Kafka's jars with quiet logging (warnings, and the
/// line that says a node started), stopped with its parent.
pub fn java(main_class: &str) -> Result<Command, KafkaError> {
    java_with(&[], main_class)
}

/// `java`, killed when the process that started it dies (`setpriv --pdeathsig`): a test killed
/// on its timeout leaves no JVM behind. The caller adds the arguments.
pub fn jvm() -> Result<Command, KafkaError> {
    if !on_path("java") {
        return Err(KafkaError::JavaMissing);
    }
    if !on_path("setpriv") {
        return Err(KafkaError::SetprivMissing);
    }
    let mut c = Command::new("setpriv");
    c.args(["--pdeathsig=KILL", "--", "java"]);
    Ok(c)
}

fn java_with(jvm_options: &[String], main_class: &str) -> Result<Command, KafkaError> {
    let classpath = classpath()?;
    let mut c = jvm()?;
    c.args(jvm_options)
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .arg("-Dorg.slf4j.simpleLogger.log.kafka.server.KafkaRaftServer=info")
        .arg("-cp")
        .arg(classpath)
        .arg(main_class)
        .stdin(Stdio::null());
    Ok(c)
}

/// The `server.properties` of node `id` listening on `(port, controller)`: broker and
/// controller in one process (KRaft's combined mode), internal topics replicated as far as the
/// cluster allows, and `config.properties` over these.
fn node_properties(
    config: &KafkaConfig,
    id: u32,
    (port, controller): (u16, u16),
    voters: &str,
    home: &Path,
) -> Vec<(String, String)> {
    let replication = config.nodes.min(3);
    let mut props = vec![
        ("process.roles".to_owned(), "broker,controller".to_owned()),
        ("node.id".into(), id.to_string()),
        ("controller.quorum.voters".into(), voters.to_owned()),
        (
            "listeners".into(),
            format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}"),
        ),
        (
            "advertised.listeners".into(),
            format!("PLAINTEXT://127.0.0.1:{port}"),
        ),
        ("controller.listener.names".into(), "CONTROLLER".into()),
        (
            "listener.security.protocol.map".into(),
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
        ),
        ("log.dirs".into(), home.join("data").display().to_string()),
        (
            "offsets.topic.replication.factor".into(),
            replication.to_string(),
        ),
        (
            "transaction.state.log.replication.factor".into(),
            replication.to_string(),
        ),
        (
            "transaction.state.log.min.isr".into(),
            replication.min(2).to_string(),
        ),
        ("group.initial.rebalance.delay.ms".into(), "0".into()),
    ];
    for (name, value) in &config.properties {
        props.retain(|(n, _)| n != name);
        props.push((name.clone(), value.clone()));
    }
    props
}

/// Formats every node's storage for `cluster_id`. Each format is a JVM start: they run side by
/// side.
fn format_storage(nodes: &[Node], cluster_id: &str) -> Result<(), KafkaError> {
    let formats: Vec<_> = nodes
        .iter()
        .map(|n| {
            let mut c = java("kafka.tools.StorageTool")?;
            c.args(["format", "--ignore-formatted", "-t", cluster_id, "-c"])
                .arg(&n.properties);
            Ok((c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?, c))
        })
        .collect::<Result<_, KafkaError>>()?;
    for (child, c) in formats {
        check(child.wait_with_output()?, &c)?;
    }
    Ok(())
}

impl KafkaCluster {
    /// Formats and starts `config.nodes` nodes with their files below `dir`, and waits until
    /// every one serves clients.
    pub async fn start(dir: &Path, config: KafkaConfig) -> Result<Self, KafkaError> {
        let cluster_id = output(java("kafka.tools.StorageTool")?.arg("random-uuid"))?;
        let cluster_id = cluster_id.trim().to_owned();
        // Distinct ports (two probes may find the same free one).
        let mut distinct = std::collections::BTreeSet::new();
        while distinct.len() < 2 * config.nodes as usize {
            distinct.insert(free_port()?);
        }
        let distinct: Vec<u16> = distinct.into_iter().collect();
        let ports: Vec<(u16, u16)> = distinct.chunks(2).map(|p| (p[0], p[1])).collect();
        let voters = ports
            .iter()
            .zip(1..)
            .map(|((_, controller), id)| format!("{id}@127.0.0.1:{controller}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for ((port, controller), id) in ports.into_iter().zip(1..) {
            let home = dir.join(format!("kafka-{id}"));
            std::fs::create_dir_all(&home)?;
            let props = node_properties(&config, id, (port, controller), &voters, &home);
            let properties = home.join("server.properties");
            let text: String = props.iter().map(|(n, v)| format!("{n}={v}\n")).collect();
            std::fs::write(&properties, text)?;
            nodes.push(Node {
                id,
                port,
                properties,
                log: home.join("kafka.log"),
                log_start: 0,
                child: None,
            });
        }
        format_storage(&nodes, &cluster_id)?;
        let mut cluster = Self { nodes, config };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_started(i).await?;
        }
        Ok(cluster)
    }

    /// `host:port` of every node, comma separated (a client's `bootstrap.servers`).
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node ids (1, 2, ...).
    pub fn node_ids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Kills node `id` (SIGKILL: a crash, no controlled shutdown).
    pub fn kill(&mut self, id: u32) -> Result<(), KafkaError> {
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts node `id` again on its data after [`KafkaCluster::kill`], waiting until it serves.
    pub async fn restart(&mut self, id: u32) -> Result<(), KafkaError> {
        let i = self.index(id);
        self.spawn(i)?;
        self.wait_started(i).await
    }

    /// The process id of node `id`'s JVM, if it runs (for its CPU time and memory).
    pub fn pid(&self, id: u32) -> Option<u32> {
        self.nodes[self.index(id)].child.as_ref().map(Child::id)
    }

    /// The last lines of node `id`'s log.
    pub fn log_tail(&self, id: u32) -> String {
        tail(&self.nodes[self.index(id)].log)
    }

    fn index(&self, id: u32) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no Kafka node {id}"))
    }

    fn node_mut(&mut self, id: u32) -> &mut Node {
        let i = self.index(id);
        &mut self.nodes[i]
    }

    fn spawn(&mut self, i: usize) -> Result<(), KafkaError> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        node.log_start = log.metadata()?.len();
        let mut c = java_with(&self.config.jvm_options, "kafka.Kafka")?;
        c.arg(&node.properties).stdout(log.try_clone()?).stderr(log);
        node.child = Some(c.spawn()?);
        Ok(())
    }

    /// Waits for node `i` to log that it started (after its latest spawn), or to exit.
    async fn wait_started(&mut self, i: usize) -> Result<(), KafkaError> {
        let deadline = Instant::now() + START_DEADLINE;
        let node = &mut self.nodes[i];
        loop {
            if log_since(&node.log, node.log_start).contains(STARTED) {
                return Ok(());
            }
            if let Some(child) = node.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                node.child = None;
                return Err(KafkaError::Exited {
                    node: node.id,
                    status: status.to_string(),
                    log: tail(&node.log),
                });
            }
            if Instant::now() > deadline {
                return Err(KafkaError::Timeout {
                    node: node.id,
                    secs: START_DEADLINE.as_secs(),
                    log: tail(&node.log),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The text of `log` from byte `start` on.
fn log_since(log: &Path, start: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(log)
        && f.seek(SeekFrom::Start(start)).is_ok()
    {
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// The last lines of `log`, the errors first if there are any.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("ERROR") || l.contains("Exception"))
        .collect();
    let chosen = if errors.is_empty() {
        &lines[lines.len().saturating_sub(20)..]
    } else {
        &errors[errors.len().saturating_sub(20)..]
    };
    chosen
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A free loopback port for a node that may be restarted on it, from below the kernel's
/// ephemeral range (from 20000 to its start): a port `bind(0)` picks may be taken, while the node
/// is down, as the local port of an outgoing connection. The start is random, so that concurrent
/// test processes rarely probe the same ports.
fn free_port() -> std::io::Result<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let high: u16 = range
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
        .max(20_001);
    let span = u32::from(high - 20_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let start = (nanos ^ std::process::id().rotate_left(16)) % span;
    (0..span)
        .map(|i| 20_000 + ((start + i) % span) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .map_or_else(
            || {
                Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port())
            },
            Ok,
        )
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Runs `cmd` to its end; its standard output, or an error with everything it printed.
fn output(cmd: &mut Command) -> Result<String, KafkaError> {
    let out = cmd.output()?;
    check(out, cmd)
}

fn check(out: std::process::Output, cmd: &Command) -> Result<String, KafkaError> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(KafkaError::Command {
        cmd: format!("{cmd:?}"),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}
