//! Helpers shared by the broker's integration tests: a broker on a random port with its own
//! data directory, rdkafka clients configured for it, and waiting with a deadline.

pub mod raw;

use std::future::Future;
use std::time::Duration;

use broker::{BrokerConfig, BrokerHandle};
use rdkafka::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::FutureProducer;
use tempfile::TempDir;
use tokio::net::TcpListener;

/// A broker embedded in the test process, serving over real TCP.
pub struct TestBroker {
    pub handle: Option<BrokerHandle>,
    pub dir: TempDir,
    pub bootstrap: String,
    pub config: BrokerConfig,
}

pub fn test_config(dir: &TempDir) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        group_initial_rebalance_delay: Duration::from_millis(200),
        ..BrokerConfig::default()
    }
}

impl TestBroker {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut BrokerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir);
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handle = broker::spawn(listener, config.clone()).await.unwrap();
        let bootstrap = handle.bootstrap();
        Self {
            handle: Some(handle),
            dir,
            bootstrap,
            config,
        }
    }

    /// Stops the broker gracefully and starts it again on the same port and data directory.
    pub async fn restart(&mut self) {
        let handle = self.handle.take().unwrap();
        let addr = handle.local_addr();
        handle.shutdown().await;
        let listener = TcpListener::bind(addr).await.unwrap();
        self.handle = Some(broker::spawn(listener, self.config.clone()).await.unwrap());
    }

    /// Starts the broker again on the same data directory after [`TestBroker::stop`].
    pub async fn restart_after_stop(&mut self) {
        let listener = TcpListener::bind(&self.bootstrap).await.unwrap();
        self.handle = Some(broker::spawn(listener, self.config.clone()).await.unwrap());
    }

    /// The running broker's shared state, to look at storage directly.
    pub fn state(&self) -> &std::sync::Arc<broker::broker::Broker> {
        self.handle
            .as_ref()
            .expect("the broker is running")
            .broker()
    }

    pub async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }
}

pub fn client_config(bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("log_level", "3")
        .set("topic.metadata.refresh.interval.ms", "1000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut c = client_config(bootstrap, &[("linger.ms", "0")]);
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

pub fn consumer(bootstrap: &str, group: &str, extra: &[(&str, &str)]) -> StreamConsumer {
    let mut c = client_config(
        bootstrap,
        &[
            ("group.id", group),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "300"),
            ("fetch.wait.max.ms", "100"),
        ],
    );
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("consumer")
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A received record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

pub fn owned(m: &BorrowedMessage<'_>) -> Received {
    Received {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers: m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Receives exactly `n` records (failing after `timeout`).
pub async fn recv_n(consumer: &StreamConsumer, n: usize, timeout: Duration) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(m)) => out.push(owned(&m)),
            Ok(Err(e)) => panic!("consumer error after {} records: {e}", out.len()),
            Err(_) => panic!("timed out with {} of {n} records", out.len()),
        }
    }
    out
}

/// Receives everything that arrives until nothing new comes for `quiet`.
pub async fn drain(consumer: &StreamConsumer, quiet: Duration) -> Vec<Received> {
    let mut out = Vec::new();
    while let Ok(Ok(m)) = tokio::time::timeout(quiet, consumer.recv()).await {
        out.push(owned(&m));
    }
    out
}

pub const LONG: Duration = Duration::from_secs(30);

/// The values of received records as strings.
pub fn texts(records: &[Received]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap_or_default()).unwrap())
        .collect()
}

/// A v2 record batch holding one record, from producer `pid` (-1 for none) with sequence `seq`.
pub fn one_record_batch(pid: i64, epoch: i16, seq: i32, value: &[u8]) -> bytes::Bytes {
    use bytes::{BufMut, BytesMut};
    let mut record = BytesMut::new();
    record.put_u8(0); // attributes
    record.put_u8(0); // timestamp delta (varint 0)
    record.put_u8(0); // offset delta
    record.put_u8(1); // key length -1 (zigzag)
    record.put_u8((value.len() as u8) << 1);
    record.put_slice(value);
    record.put_u8(0); // no headers
    let mut b = BytesMut::new();
    b.put_i64(0); // base offset, assigned by the broker
    b.put_i32((49 + 1 + record.len()) as i32);
    b.put_i32(-1); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // crc, filled below
    b.put_i16(0); // attributes: no compression
    b.put_i32(0); // last offset delta
    // Now, not a fixed date: a batch older than the retention (7 days) could be deleted by the
    // broker's retention task between a test's produce and its fetch.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    b.put_i64(now_ms); // first timestamp
    b.put_i64(now_ms); // max timestamp
    b.put_i64(pid);
    b.put_i16(epoch);
    b.put_i32(seq);
    b.put_i32(1); // records
    b.put_u8((record.len() as u8) << 1);
    b.put_slice(&record);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// A Produce request (acks=all) of `records` to partition 0 of `topic`.
pub fn produce_request(
    topic: &str,
    records: bytes::Bytes,
) -> kafka_protocol::messages::ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ])
}

/// Creates a topic through the admin API (CreateTopics), failing the test on any error.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(bootstrap, &[]).create().unwrap();
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    for r in admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
}

/// Waits until a broker on `127.0.0.1:port` accepts connections.
pub async fn accepting(port: u16) {
    accepting_at(&format!("127.0.0.1:{port}")).await;
}

/// Waits until something accepts connections at `address` (`host:port`).
pub async fn accepting_at(address: &str) {
    eventually("the broker accepts connections", LONG, || async move {
        tokio::net::TcpStream::connect(address)
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

/// The `broker` binary as a child process on a port of its own, for tests that kill it with
/// SIGKILL; killed when dropped.
pub struct BrokerProcess {
    dir: std::path::PathBuf,
    port: u16,
    /// Flags given to every start, besides the listener and data dir.
    args: Vec<String>,
    pub bootstrap: String,
    child: std::process::Child,
}

impl BrokerProcess {
    /// Starts the broker on `data_dir` and waits until it accepts connections.
    pub async fn start(data_dir: &std::path::Path) -> Self {
        Self::start_with_args(data_dir, &[]).await
    }

    /// [`BrokerProcess::start`] with more flags, given again at each restart.
    pub async fn start_with_args(data_dir: &std::path::Path, args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = Self::spawn(data_dir, port, &args).await;
        BrokerProcess {
            dir: data_dir.to_owned(),
            port,
            args,
            bootstrap: format!("127.0.0.1:{port}"),
            child,
        }
    }

    async fn spawn(data_dir: &std::path::Path, port: u16, args: &[String]) -> std::process::Child {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data_dir)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        accepting(port).await;
        child
    }

    /// SIGKILL: no shutdown hook runs.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// A new broker on the same data dir and port, once it accepts connections.
    pub async fn restart(&mut self) {
        self.child = Self::spawn(&self.dir, self.port, &self.args).await;
    }

    pub async fn kill_and_restart(&mut self) {
        self.kill();
        self.restart().await;
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client program with `stdin` as its input (none: an empty one), failing the test if it
/// doesn't exit within a minute; its output. `what` names it in the failure.
pub async fn run_with_input(
    mut command: tokio::process::Command,
    stdin: Option<&str>,
    what: &str,
) -> std::process::Output {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{what} runs: {e}"));
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60 s"))
        .unwrap()
}
