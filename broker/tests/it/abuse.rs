//! Hostile but well-formed requests: what one client may cost everyone else. Each test attacks
//! the broker over TCP, mostly with raw Kafka requests no client library would send, and checks
//! that the attack is refused, bounded or outlasted while other clients keep being served.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::raw::RawClient;
use common::{
    BrokerProcess, LONG, TestBroker, consumer, create_topic, eventually, one_record_batch,
    produce_request, producer, recv_n,
};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiVersionsRequest, CreateTopicsRequest, DeleteTopicsRequest, MetadataRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const POLICY_VIOLATION: i16 = 44;
const LEADER_NOT_AVAILABLE: i16 = 5;
const KAFKA_STORAGE_ERROR: i16 = 56;
const INVALID_RECORD: i16 = 87;

/// The error code and base offset of a one-partition produce answer.
fn produced(response: &ProduceResponse) -> (i16, i64) {
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn log_end(b: &TestBroker, topic: &str) -> i64 {
    b.state()
        .topics
        .get(topic)
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .next_offset()
}

/// Rewrites a batch's declared record count (and last offset delta, which must agree), with a
/// valid CRC: a batch that passes every header check and lies about its contents.
fn forge_count(batch: &[u8], records: i32) -> Bytes {
    let mut b = batch.to_vec();
    b[23..27].copy_from_slice(&(records - 1).to_be_bytes());
    b[57..61].copy_from_slice(&records.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_claims_more_records_than_it_holds_is_refused() {
    let b = TestBroker::start().await;
    create_topic(&b.bootstrap, "counted", 1, &[]).await;
    let mut raw = RawClient::connect(&b.bootstrap).await;
    // One record, declared as 2^31 - 1: stored, it would move the log end by two billion.
    let forged = forge_count(&one_record_batch(-1, -1, -1, b"one"), i32::MAX);
    let answer = raw.call(&produce_request("counted", forged), 9).await;
    assert_eq!(produced(&answer).0, CORRUPT_MESSAGE);
    assert_eq!(log_end(&b, "counted"), 0, "the log end did not move");
    let honest = one_record_batch(-1, -1, -1, b"honest");
    let answer = raw.call(&produce_request("counted", honest), 9).await;
    assert_eq!(produced(&answer), (0, 0));
    assert_eq!(log_end(&b, "counted"), 1);
}

/// A batch of one record whose value is `inflated` zero bytes, gzip-compressed: a few hundred
/// KiB on the wire.
fn gzip_bomb(inflated: usize) -> Bytes {
    fn zigzag(v: i64) -> Vec<u8> {
        let mut u = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        while u >= 0x80 {
            out.push((u as u8 & 0x7f) | 0x80);
            u >>= 7;
        }
        out.push(u as u8);
        out
    }
    // attributes, timestamp delta 0, offset delta 0, key -1 (zigzag 1), value length
    let mut fields = vec![0u8, 0, 0, 1];
    fields.extend(zigzag(inflated as i64));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&zigzag((fields.len() + inflated + 1) as i64))
        .unwrap();
    gz.write_all(&fields).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..inflated / zeros.len() {
        gz.write_all(&zeros).unwrap();
    }
    gz.write_all(&[0]).unwrap(); // no headers
    let compressed = gz.finish().unwrap();
    let plain = one_record_batch(-1, -1, -1, b"");
    let mut b = BytesMut::from(&plain[..61]);
    b.extend_from_slice(&compressed);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[21..23].copy_from_slice(&1i16.to_be_bytes()); // gzip
    forge_count(&b, 1)
}

/// The process's peak resident memory in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_batch_is_never_inflated_past_max_message_bytes() {
    let b = TestBroker::start().await;
    create_topic(
        &b.bootstrap,
        "bombed",
        1,
        &[("max.message.bytes", "1048576")],
    )
    .await;
    let bomb = gzip_bomb(512 << 20);
    assert!(bomb.len() < 4 << 20, "512 MiB in {} bytes", bomb.len());
    let before = peak_rss_kib();
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let answer = raw.call(&produce_request("bombed", bomb), 9).await;
    assert_eq!(produced(&answer).0, MESSAGE_TOO_LARGE);
    let grown_mib = (peak_rss_kib() - before) / 1024;
    assert!(grown_mib < 64, "peak memory grew by {grown_mib} MiB");
    assert_eq!(log_end(&b, "bombed"), 0, "nothing was stored");
    // The broker serves on.
    let answer = raw
        .call(
            &produce_request("bombed", one_record_batch(-1, -1, -1, b"ok")),
            9,
        )
        .await;
    assert_eq!(produced(&answer), (0, 0));
}

/// `one_record_batch` with its records in a zstd frame of one raw block whose header asks for
/// a window of 2^`window_log` bytes: a valid frame, as large a window as a producer may ask.
fn zstd_batch(window_log: u8, value: &[u8]) -> Bytes {
    let plain = one_record_batch(-1, -1, -1, value);
    let records = &plain[61..];
    let mut frame = 0xFD2F_B528u32.to_le_bytes().to_vec();
    frame.push(0); // frame header: no content size, no checksum, no dictionary
    frame.push((window_log - 10) << 3); // window descriptor: exponent, mantissa 0
    let block = ((records.len() as u32) << 3) | 1; // the last block, raw
    frame.extend_from_slice(&block.to_le_bytes()[..3]);
    frame.extend_from_slice(records);
    let mut b = BytesMut::from(&plain[..61]);
    b.extend_from_slice(&frame);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[21..23].copy_from_slice(&4i16.to_be_bytes()); // zstd
    forge_count(&b, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_frame_asking_for_a_window_past_8_mib_is_refused_for_good() {
    let b = TestBroker::start().await;
    create_topic(&b.bootstrap, "windows", 1, &[]).await;
    let mut raw = RawClient::connect(&b.bootstrap).await;
    // 32 MiB: what the Java client's compression.zstd.level=20 asks for, whatever the batch.
    let answer = raw
        .call(&produce_request("windows", zstd_batch(25, b"big")), 9)
        .await;
    let p = &answer.responses[0].partition_responses[0];
    // INVALID_RECORD, not the retriable CORRUPT_MESSAGE: a client must not retry it until its
    // delivery timeout.
    assert_eq!(p.error_code, INVALID_RECORD);
    let message = p.error_message.as_deref().unwrap_or_default().to_owned();
    assert!(message.contains("32 MiB window"), "{message}");
    assert_eq!(log_end(&b, "windows"), 0, "nothing was stored");
    // 8 MiB (level 19) and less are served.
    let answer = raw
        .call(&produce_request("windows", zstd_batch(23, b"fits")), 9)
        .await;
    assert_eq!(produced(&answer), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed_so_new_clients_get_in() {
    let b = TestBroker::start_with(|c| {
        c.max_connections = 8;
        c.connections_max_idle = Duration::from_millis(800);
        c.request_read_timeout = Duration::from_millis(800);
    })
    .await;
    // Every connection slot taken: half say nothing, half send a request's length and stop.
    let mut hostages = Vec::new();
    for i in 0..8 {
        let mut s = TcpStream::connect(&b.bootstrap).await.unwrap();
        if i % 2 == 0 {
            s.write_all(&100i32.to_be_bytes()).await.unwrap();
        }
        hostages.push(s);
    }
    // A new client waits for a slot, and is served once the hostages are cut off.
    let served = tokio::time::timeout(LONG, async {
        let mut raw = RawClient::connect(&b.bootstrap).await;
        raw.call(&ApiVersionsRequest::default(), 0).await
    })
    .await
    .expect("a new client is served");
    assert_eq!(served.error_code, 0);
    for (i, s) in hostages.iter_mut().enumerate() {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(LONG, s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "hostage {i} was closed by the broker"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bytes_of_requests_in_flight_are_bounded_across_connections() {
    const MIB: usize = 1 << 20;
    let b = TestBroker::start_with(|c| {
        c.max_request_bytes = 8 * MIB;
        c.queued_max_request_bytes = 8 * MIB;
        c.request_read_timeout = Duration::from_secs(2);
    })
    .await;
    let before = peak_rss_kib();
    // Forty clients each announce an 8 MiB request, send 3 MiB of it and stall: unbounded,
    // the broker would hold 120 MiB of their bytes.
    let part = Bytes::from(vec![0u8; 3 * MIB]);
    let attackers: Vec<_> = (0..40)
        .map(|_| {
            let addr = b.bootstrap.clone();
            let part = part.clone();
            tokio::spawn(async move {
                let mut s = TcpStream::connect(&addr).await.unwrap();
                s.write_all(&(8 * MIB as i32).to_be_bytes()).await.unwrap();
                // Blocks while the broker does not read (the budget is spent); fails once the
                // broker closes the connection at the read deadline.
                let _ = s.write_all(&part).await;
                let mut buf = [0u8; 1];
                let _ = s.read(&mut buf).await;
            })
        })
        .collect();
    for attacker in attackers {
        tokio::time::timeout(LONG, attacker)
            .await
            .expect("the broker cut the stalled request off")
            .unwrap();
    }
    let grown_mib = (peak_rss_kib() - before) / 1024;
    assert!(grown_mib < 48, "peak memory grew by {grown_mib} MiB");
    let mut raw = RawClient::connect(&b.bootstrap).await;
    assert_eq!(
        raw.call(&ApiVersionsRequest::default(), 0).await.error_code,
        0
    );
}

fn creatable(name: &str, partitions: i32) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(name.into())))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
}

fn create_request(topics: Vec<CreatableTopic>) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_timeout_ms(60_000)
        .with_topics(topics)
}

fn metadata_for(names: &[String]) -> MetadataRequest {
    MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(
            names
                .iter()
                .map(|n| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                })
                .collect(),
        ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_cannot_create_unbounded_partitions() {
    let b = TestBroker::start_with(|c| c.max_partitions_per_request = 100).await;
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let answer = raw
        .call(
            &create_request(vec![creatable("big-a", 60), creatable("big-b", 60)]),
            7,
        )
        .await;
    for topic in &answer.topics {
        assert_eq!(topic.error_code, POLICY_VIOLATION, "{:?}", topic.name);
        assert!(
            topic
                .error_message
                .as_deref()
                .is_some_and(|m| m.contains("at most 100 partitions")),
            "{:?}",
            topic.error_message
        );
    }
    assert!(b.state().topics.list().is_empty(), "nothing was created");
    let answer = raw
        .call(&create_request(vec![creatable("big-a", 60)]), 7)
        .await;
    assert_eq!(answer.topics[0].error_code, 0);
    // Automatic creation: one metadata request creates at most as many partitions.
    let names: Vec<String> = (0..150).map(|i| format!("auto-{i}")).collect();
    let answer = raw.call(&metadata_for(&names), 12).await;
    let created = answer.topics.iter().filter(|t| t.error_code == 0).count();
    let refused = answer
        .topics
        .iter()
        .filter(|t| t.error_code == UNKNOWN_TOPIC_OR_PARTITION)
        .count();
    assert_eq!((created, refused), (100, 50));
    assert_eq!(b.state().topics.list().len(), 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_topic_creation_can_be_switched_off() {
    let b = TestBroker::start_with(|c| c.auto_create_topics = false).await;
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let answer = raw.call(&metadata_for(&["wished-for".into()]), 12).await;
    assert_eq!(answer.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let answer = raw
        .call(
            &produce_request("wished-for", one_record_batch(-1, -1, -1, b"x")),
            9,
        )
        .await;
    assert_eq!(produced(&answer).0, UNKNOWN_TOPIC_OR_PARTITION);
    assert!(b.state().topics.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_names_that_differ_only_in_case_or_dot_and_underscore_collide() {
    let b = TestBroker::start().await;
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let answer = raw
        .call(&create_request(vec![creatable("orders.v1", 1)]), 7)
        .await;
    assert_eq!(answer.topics[0].error_code, 0);
    for twin in ["Orders.V1", "orders_v1", "ORDERS_V1"] {
        let answer = raw.call(&create_request(vec![creatable(twin, 1)]), 7).await;
        assert_eq!(
            answer.topics[0].error_code, INVALID_TOPIC_EXCEPTION,
            "{twin}"
        );
        let message = answer.topics[0].error_message.as_deref().unwrap();
        assert!(message.contains("collides with the existing topic 'orders.v1'"));
        let answer = raw.call(&metadata_for(&[twin.to_string()]), 12).await;
        assert_eq!(
            answer.topics[0].error_code, INVALID_TOPIC_EXCEPTION,
            "{twin}"
        );
    }
    assert_eq!(b.state().topics.list().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_stored_with_segments_below_the_minimum_still_loads_with_its_data() {
    let mut b = TestBroker::start().await;
    create_topic(&b.bootstrap, "legacy", 1, &[("segment.bytes", "1048576")]).await;
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let answer = raw
        .call(
            &produce_request("legacy", one_record_batch(-1, -1, -1, b"kept")),
            9,
        )
        .await;
    assert_eq!(produced(&answer), (0, 0));
    drop(raw);
    b.stop().await;
    // As an earlier version stored it (1024 was accepted then).
    let file = b.dir.path().join("topics/legacy/topic.json");
    let json = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, json.replace("\"1048576\"", "\"1024\"")).unwrap();
    b.restart_after_stop().await;
    let topic = b.state().topics.get("legacy").expect("loaded, not skipped");
    assert_eq!(topic.configs["segment.bytes"], "1048576");
    assert_eq!(log_end(&b, "legacy"), 1, "its record is still there");
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("\"1048576\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_and_recreating_a_topic_never_removes_the_new_one() {
    let b = TestBroker::start().await;
    let topic_json = b.dir.path().join("topics/phoenix/topic.json");
    let mut creator = RawClient::connect(&b.bootstrap).await;
    let mut deleter = RawClient::connect(&b.bootstrap).await;
    for round in 0..30 {
        let answer = creator
            .call(&create_request(vec![creatable("phoenix", 4)]), 7)
            .await;
        assert_eq!(answer.topics[0].error_code, 0, "round {round}");
        // Delete and create again at the same time, on two connections.
        let delete = DeleteTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                DeleteTopicState::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("phoenix")))),
            ]);
        let create = create_request(vec![creatable("phoenix", 4)]);
        let (deleted, created) = tokio::join!(deleter.call(&delete, 6), creator.call(&create, 7));
        assert_eq!(deleted.responses[0].error_code, 0, "round {round}");
        let exists = b.state().topics.get("phoenix").is_some();
        // Created after the delete (0), or before it (already exists, then deleted).
        match created.topics[0].error_code {
            0 => assert!(exists, "round {round}: created after the delete"),
            36 => assert!(!exists, "round {round}: created before the delete"),
            other => panic!("round {round}: create answered {other}"),
        }
        assert_eq!(
            topic_json.exists(),
            exists,
            "round {round}: the files are there exactly when the topic is"
        );
        if exists {
            let answer = creator
                .call(
                    &produce_request("phoenix", one_record_batch(-1, -1, -1, b"alive")),
                    9,
                )
                .await;
            assert_eq!(produced(&answer), (0, 0), "round {round}");
            let answer = deleter.call(&delete, 6).await;
            assert_eq!(answer.responses[0].error_code, 0);
        }
    }
}

/// Descriptors of this process open on files under `dir`.
fn open_files_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_give_their_files_back_when_idle_and_reopen_to_be_read() {
    let b = TestBroker::start_with(|c| {
        c.retention_check_interval = Duration::from_millis(50);
        c.segment_file_idle = Duration::from_millis(300);
    })
    .await;
    create_topic(&b.bootstrap, "shelved", 1, &[("segment.bytes", "1048576")]).await;
    let p = producer(&b.bootstrap, &[]);
    let value = "v".repeat(100_000);
    for i in 0..50 {
        p.send(
            FutureRecord::<(), _>::to("shelved").payload(&format!("{i:03}{value}")),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    }
    let dir = b.dir.path().join("topics/shelved");
    let partition = b
        .state()
        .topics
        .get("shelved")
        .unwrap()
        .partition(0)
        .unwrap()
        .clone();
    let segments = partition.log().segment_count();
    assert!(segments >= 4, "rolled into {segments} segments");
    eventually("idle segment files are closed", LONG, || {
        let open = (partition.log().open_segment_files(), open_files_under(&dir));
        async move { (open == (0, 0)).then_some(()) }
    })
    .await;
    // Reading from the start opens them again.
    let c = consumer(&b.bootstrap, "unused", &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("shelved", 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let got = recv_n(&c, 50, LONG).await;
    assert_eq!(got[49].offset, 49);
    drop(c);
    eventually("and closed again once idle", LONG, || {
        let open = open_files_under(&dir);
        async move { (open == 0).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_thousands_of_partitions_does_not_stall_other_topics() {
    let b = TestBroker::start().await;
    create_topic(&b.bootstrap, "busy", 1, &[]).await;
    let mut creator = RawClient::connect(&b.bootstrap).await;
    let creating = tokio::spawn(async move {
        creator
            .call(&create_request(vec![creatable("enormous", 10_000)]), 7)
            .await
    });
    let dir = b.dir.path().join("topics/enormous");
    eventually("the creation is under way", LONG, || {
        let started = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0) > 20;
        async move { started.then_some(()) }
    })
    .await;
    // Produce to another topic meanwhile: every answer comes before the creation ends.
    let mut raw = RawClient::connect(&b.bootstrap).await;
    for i in 0..5 {
        let answer = raw
            .call(
                &produce_request("busy", one_record_batch(-1, -1, -1, b"meanwhile")),
                9,
            )
            .await;
        assert_eq!(produced(&answer), (0, i));
    }
    // Automatic creation does not queue behind it either (a thread per asking client): it says
    // "not yet", as Kafka does for a topic being created, and the client asks again.
    let answer = raw.call(&metadata_for(&["newcomer".into()]), 12).await;
    assert_eq!(answer.topics[0].error_code, LEADER_NOT_AVAILABLE);
    assert!(
        !creating.is_finished(),
        "the produce and metadata answers came while the partitions were still being created"
    );
    let created = tokio::time::timeout(Duration::from_secs(180), creating)
        .await
        .expect("the creation ends")
        .unwrap();
    assert_eq!(created.topics[0].error_code, 0);
    assert_eq!(
        b.state().topics.get("enormous").unwrap().partitions.len(),
        10_000
    );
}

/// A small tmpfs, mounted for the test and unmounted when dropped (needs root, as the test
/// command runs in CI).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the test command runs as root in CI)"
        );
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Free blocks (pages) left.
    fn free_blocks(&self) -> u64 {
        let out = std::process::Command::new("stat")
            .args(["-f", "-c", "%a"])
            .arg(self.dir.path())
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Fills the file system up to `keep` free pages with `filler`.
    fn fill_leaving(&self, filler: &Path, keep: u64) {
        let mut f = std::fs::File::create(filler).unwrap();
        let page = [0xaau8; 4096];
        while f.write_all(&page).is_ok() {}
        let len = f.metadata().unwrap().len() / 4096 * 4096;
        f.set_len(len - 4096 * keep).unwrap();
        assert_eq!(self.free_blocks(), keep, "exactly {keep} free pages");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stores_nothing_twice_and_loses_nothing() {
    let disk = Tmpfs::mount("4m");
    let data = disk.path().join("data");
    let mut b = TestBroker::start_with(|c| c.data_dir = data.clone()).await;
    create_topic(&b.bootstrap, "plain", 1, &[]).await;
    create_topic(&b.bootstrap, "idempotent", 1, &[]).await;
    let filler = disk.path().join("filler");
    let mut raw = RawClient::connect(&b.bootstrap).await;
    for (topic, batch) in [
        ("plain", one_record_batch(-1, -1, -1, b"first")),
        ("idempotent", one_record_batch(42, 0, 0, b"first")),
    ] {
        // One free page: the batch fits in the log, its index entry no longer does.
        disk.fill_leaving(&filler, 1);
        let answer = raw.call(&produce_request(topic, batch.clone()), 9).await;
        assert_eq!(produced(&answer).0, KAFKA_STORAGE_ERROR, "{topic}");
        assert_eq!(
            log_end(&b, topic),
            0,
            "{topic}: the failed append was cut back"
        );
        // Space again: the client's retry is stored once.
        std::fs::remove_file(&filler).unwrap();
        let answer = raw.call(&produce_request(topic, batch.clone()), 9).await;
        assert_eq!(produced(&answer), (0, 0), "{topic}");
        assert_eq!(log_end(&b, topic), 1, "{topic}: stored once");
    }
    // And it is all there after a restart.
    drop(raw);
    b.restart().await;
    let c = consumer(&b.bootstrap, "unused", &[]);
    for topic in ["plain", "idempotent"] {
        let (low, high) = c
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .unwrap();
        assert_eq!((low, high), (0, 1), "{topic}");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_binary_takes_its_data_dir_and_listens_on_loopback_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let _first = BrokerProcess::start(dir.path()).await;
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another broker is running on the data dir"),
        "{stderr}"
    );
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: 127.0.0.1:9092]"), "{help}");
    for flag in [
        "--max-connections",
        "--connections-max-idle-ms",
        "--request-read-timeout-ms",
        "--queued-max-request-bytes",
        "--max-partitions-per-request",
        "--no-auto-create-topics",
    ] {
        assert!(help.contains(flag), "{flag} in --help");
    }
}
