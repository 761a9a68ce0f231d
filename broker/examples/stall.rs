//! Does one client's heavy request stall everyone else? Produce latency on a quiet topic while
//! another client (1) creates a topic of 10,000 partitions, (2) asks for the max-timestamp offset
//! (ListOffsets -3) of a partition of 50,000 batches from 200 connections at once; and produce
//! and fetch latency while (3) the log cleaner compacts a partition of 200 MB.
//!
//! ```sh
//! cargo build --release -p broker --bin broker --example stall
//! target/release/examples/stall --broker-bin target/release/broker
//! ```
//!
//! Starts the broker as its own process on a free port with a fresh data directory, then sends
//! one-record produce requests (acks=1) to a one-partition topic in a loop, one at a time, and
//! reports the latency of each phase's requests: quiet, during the creation, during the storm.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use broker::client::BareClient;
use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, FetchRequest, ListOffsetsRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

#[derive(Debug, Parser)]
struct Args {
    /// The broker binary to measure.
    #[arg(long)]
    broker_bin: PathBuf,
    /// Partitions of the topic created in phase 1.
    #[arg(long, default_value_t = 10_000)]
    partitions: i32,
    /// Batches in the partition phase 2 asks about.
    #[arg(long, default_value_t = 50_000)]
    batches: usize,
    /// Connections asking in phase 2.
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Length of the quiet phase and of phase 2, in seconds.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// MiB of keyed records (1 KiB each, 20,000 keys) in the partition compacted in phase 3;
    /// 0 skips the phase.
    #[arg(long, default_value_t = 200)]
    compact_mib: usize,
}

/// A batch of 100 records of 1 KiB, keys `key-N` for N from `first_key` (modulo 20,000).
fn keyed_batch(first_key: usize) -> Bytes {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let value = Bytes::from(vec![b'v'; 1000]);
    let records: Vec<Record> = (0..100)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: i as i32,
            timestamp: now_ms(),
            key: Some(Bytes::from(format!(
                "key-{}",
                (first_key + i as usize) % 20_000
            ))),
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).expect("encodes");
    buf.freeze()
}

fn produce_batch(client: &mut BareClient, topic: &str, records: Bytes) -> anyhow::Result<()> {
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    let response = client.call(&request, 9)?;
    let code = response.responses[0].partition_responses[0].error_code;
    anyhow::ensure!(code == 0, "produce error {code}");
    Ok(())
}

/// Reads `topic`'s first KiB (Fetch v11, no waiting): what a consumer catching up asks.
fn fetch(client: &mut BareClient, topic: &str) -> anyhow::Result<()> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1024)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1024),
                ]),
        ]);
    let response = client.call(&request, 11)?;
    let code = response.responses[0].partitions[0].error_code;
    anyhow::ensure!(code == 0, "fetch error {code}");
    Ok(())
}

/// Makes `topic` compacted (IncrementalAlterConfigs SET), as an operator would.
fn make_compacted(client: &mut BareClient, topic: &str) -> anyhow::Result<()> {
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.into()))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("cleanup.policy"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("compact"))),
            ]),
    ]);
    let response = client.call(&request, 0)?;
    let code = response.responses[0].error_code;
    anyhow::ensure!(code == 0, "alter configs error {code}");
    Ok(())
}

/// Whether a `.cleaned` file (a clean being written) is in `dir`.
fn cleaning(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".cleaned"))
    })
}

/// A v2 batch of one 100-byte record, no producer id.
fn batch(now_ms: i64) -> Bytes {
    let mut record = BytesMut::new();
    record.put_slice(&[0, 0, 0, 1, 200, 1]); // attributes, ts delta, offset delta, key -1, len 100
    record.put_slice(&[b'x'; 100]);
    record.put_u8(0);
    let mut b = BytesMut::new();
    b.put_i64(0);
    b.put_i32((49 + 2 + record.len()) as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(0);
    b.put_i32(0);
    b.put_i64(now_ms);
    b.put_i64(now_ms);
    b.put_i64(-1);
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(1);
    // record length as a two-byte zigzag varint
    let len = (record.len() as u64) << 1;
    b.put_u8((len as u8 & 0x7f) | 0x80);
    b.put_u8((len >> 7) as u8);
    b.put_slice(&record);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn produce(client: &mut BareClient, topic: &str) -> anyhow::Result<()> {
    produce_batch(client, topic, batch(now_ms()))
}

fn create(client: &mut BareClient, topic: &str, partitions: i32) -> anyhow::Result<()> {
    create_with(client, topic, partitions, &[])
}

fn create_with(
    client: &mut BareClient,
    topic: &str,
    partitions: i32,
    configs: &[(&'static str, &'static str)],
) -> anyhow::Result<()> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(600_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_num_partitions(partitions)
                .with_replication_factor(1)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_static_str(k))
                                .with_value(Some(StrBytes::from_static_str(v)))
                        })
                        .collect(),
                ),
        ]);
    let response = client.call(&request, 7)?;
    let code = response.topics[0].error_code;
    anyhow::ensure!(code == 0 || code == 36, "create {topic}: error {code}");
    Ok(())
}

fn max_timestamp_offset(client: &mut BareClient, topic: &str) -> anyhow::Result<i64> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-3),
                ]),
        ]);
    let response = client.call(&request, 7)?;
    Ok(response.topics[0].partitions[0].offset)
}

/// Produces to `topic` one request at a time until `done`; the latency of each.
fn measure(addr: &str, topic: &str, done: &AtomicBool) -> anyhow::Result<Vec<Duration>> {
    measure_with(addr, done, |client| produce(client, topic))
}

/// Sends one request at a time with `send` until `done`, 5 ms apart; the latency of each.
fn measure_with(
    addr: &str,
    done: &AtomicBool,
    mut send: impl FnMut(&mut BareClient) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Duration>> {
    let mut client = BareClient::connect(addr, "stall-bench", None)?;
    let mut samples = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let start = Instant::now();
        send(&mut client)?;
        samples.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(samples)
}

fn report(phase: &str, mut samples: Vec<Duration>) {
    samples.sort();
    if samples.is_empty() {
        println!("{phase:<40} no produce answered");
        return;
    }
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{phase:<40} n={:<5} p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}",
        samples.len(),
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    );
}

/// Measures produce latency on "steady" while `load` runs on other threads.
fn phase(
    addr: &str,
    name: &str,
    load: impl FnOnce(Arc<AtomicBool>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let done = Arc::new(AtomicBool::new(false));
    let measuring = {
        let (addr, done) = (addr.to_string(), done.clone());
        std::thread::spawn(move || measure(&addr, "steady", &done))
    };
    let loaded = load(done.clone());
    done.store(true, Ordering::Relaxed);
    let samples = measuring.join().expect("measuring thread")?;
    loaded?;
    report(name, samples);
    Ok(())
}

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let data = tempfile::tempdir()?;
    let _broker = Running(
        Command::new(&args.broker_bin)
            .args([
                "--listen",
                &addr,
                "--log-cleaner-backoff-ms",
                "100",
                "--data-dir",
            ])
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", args.broker_bin.display()))?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&addr).is_err() {
        if Instant::now() > deadline {
            bail!("the broker did not start listening");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut admin = BareClient::connect(&addr, "stall-bench", None)?;
    create(&mut admin, "steady", 1)?;
    create(&mut admin, "deep", 1)?;
    eprintln!("filling 'deep' with {} batches", args.batches);
    for _ in 0..args.batches {
        produce(&mut admin, "deep")?;
    }

    let secs = Duration::from_secs(args.secs);
    phase(&addr, "quiet", |_| {
        std::thread::sleep(secs);
        Ok(())
    })?;
    let started = Instant::now();
    phase(
        &addr,
        &format!("creating {} partitions", args.partitions),
        |_| create(&mut admin, "enormous", args.partitions),
    )?;
    eprintln!("   (the creation took {:.1?})", started.elapsed());
    ask_phase(&addr, args.connections, secs)?;
    if args.compact_mib > 0 {
        compaction_phase(&addr, &mut admin, data.path(), args.compact_mib)?;
    }
    Ok(())
}

/// Phase 2: `connections` clients asking for `deep`'s max-timestamp offset for `secs`.
fn ask_phase(addr: &str, connections: usize, secs: Duration) -> anyhow::Result<()> {
    let addr = addr.to_string();
    phase(
        &addr,
        &format!("ListOffsets -3 from {connections} clients"),
        |done| {
            let askers: Vec<_> = (0..connections)
                .map(|_| {
                    let (addr, done) = (addr.clone(), done.clone());
                    std::thread::spawn(move || -> anyhow::Result<u64> {
                        let mut client = BareClient::connect(&addr, "stall-bench", None)?;
                        let mut asked = 0;
                        while !done.load(Ordering::Relaxed) {
                            max_timestamp_offset(&mut client, "deep")?;
                            asked += 1;
                        }
                        Ok(asked)
                    })
                })
                .collect();
            std::thread::sleep(secs);
            done.store(true, Ordering::Relaxed);
            let mut asked = 0;
            for a in askers {
                asked += a.join().expect("asking thread")?;
            }
            eprintln!("   ({asked} ListOffsets answered)");
            Ok(())
        },
    )?;
    Ok(())
}

/// Phase 3: a partition of `mib` MiB made compacted; produce latency on "steady" and fetch
/// latency on "deep" from the moment the cleaner starts writing until it has finished.
fn compaction_phase(
    addr: &str,
    admin: &mut BareClient,
    data: &std::path::Path,
    mib: usize,
) -> anyhow::Result<()> {
    create_with(admin, "table", 1, &[("segment.bytes", "1048576")])?;
    eprintln!("filling 'table' with {mib} MiB of keyed records");
    for batch in 0..mib * 10 {
        produce_batch(admin, "table", keyed_batch(batch * 100))?;
    }
    let dir = broker::topics::topic_dir(data, "table").join("0");
    let done = Arc::new(AtomicBool::new(false));
    let fetching = {
        let (addr, done) = (addr.to_string(), done.clone());
        std::thread::spawn(move || measure_with(&addr, &done, |c| fetch(c, "deep")))
    };
    let name = format!("log cleaner compacting {mib} MiB");
    phase(addr, &format!("{name} (produce)"), |_| {
        make_compacted(admin, "table")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cleaning(&dir) {
            anyhow::ensure!(Instant::now() < deadline, "no clean started in 60 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        let started = Instant::now();
        while cleaning(&dir) {
            anyhow::ensure!(
                Instant::now() < deadline + Duration::from_secs(600),
                "a clean of over 10 min"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        eprintln!("   (the clean took {:.1?})", started.elapsed());
        Ok(())
    })?;
    done.store(true, Ordering::Relaxed);
    report(
        &format!("{name} (fetch)"),
        fetching.join().expect("fetching thread")?,
    );
    Ok(())
}
