//! Does one client's heavy request stall everyone else? Produce latency on a quiet topic while
//! another client (1) creates a topic of 10,000 partitions, (2) asks for the max-timestamp offset
//! (ListOffsets -3) of a partition of 50,000 batches from 200 connections at once.
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
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, ListOffsetsRequest, ProduceRequest, TopicName,
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
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(now_ms()))),
                ]),
        ]);
    let response = client.call(&request, 9)?;
    let code = response.responses[0].partition_responses[0].error_code;
    anyhow::ensure!(code == 0, "produce error {code}");
    Ok(())
}

fn create(client: &mut BareClient, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(600_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_num_partitions(partitions)
                .with_replication_factor(1),
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
    let mut client = BareClient::connect(addr, "stall-bench", None)?;
    let mut samples = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let start = Instant::now();
        produce(&mut client, topic)?;
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
            .args(["--listen", &addr, "--data-dir"])
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
    phase(
        &addr,
        &format!("ListOffsets -3 from {} clients", args.connections),
        |done| {
            let askers: Vec<_> = (0..args.connections)
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
