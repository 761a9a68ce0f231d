//! Storage behaviour seen by real clients: torn-tail recovery, retention, segment rolling.

use crate::common;

use std::fs;
use std::time::Duration;

use common::{LONG, TestBroker, consumer, eventually, producer, recv_n};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

async fn produce_one_by_one(bootstrap: &str, topic: &str, n: usize, size: usize) {
    let p = producer(bootstrap, &[]);
    for i in 0..n {
        let value = format!("{i:06}{}", "x".repeat(size));
        p.send(
            FutureRecord::<(), _>::to(topic).payload(&value),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    }
}

fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_on_restart_and_everything_before_it_is_served() {
    let mut b = TestBroker::start().await;
    produce_one_by_one(&b.bootstrap, "torn", 20, 10).await;
    b.stop().await;
    // Simulate a crash mid-write: the last batch loses its final bytes, and garbage follows.
    let log = segment_files(&b.dir.path().join("topics/torn/0"))
        .pop()
        .unwrap();
    let len = fs::metadata(&log).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.set_len(len - 5).unwrap();
    drop(file);
    b.restart_after_stop().await;
    let c = consumer(&b.bootstrap, "unused", &[]);
    let (low, high) = c
        .fetch_watermarks("torn", 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        (low, high),
        (0, 19),
        "the torn 20th record is gone, 19 remain"
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("torn", 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let got = recv_n(&c, 19, LONG).await;
    assert_eq!(got.last().unwrap().offset, 18);
    // New writes continue after the cut.
    produce_one_by_one(&b.bootstrap, "torn", 1, 10).await;
    let (_, high) = c
        .fetch_watermarks("torn", 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(high, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_batch_crc_is_cut_on_restart() {
    let mut b = TestBroker::start().await;
    produce_one_by_one(&b.bootstrap, "flipped", 10, 10).await;
    b.stop().await;
    let log = segment_files(&b.dir.path().join("topics/flipped/0"))
        .pop()
        .unwrap();
    let mut bytes = fs::read(&log).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0xff; // a flipped bit inside the last batch
    fs::write(&log, bytes).unwrap();
    b.restart_after_stop().await;
    let c = consumer(&b.bootstrap, "unused", &[]);
    let (_, high) = c
        .fetch_watermarks("flipped", 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(high, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_retention_deletes_whole_old_segments_and_moves_the_earliest_offset() {
    let b =
        TestBroker::start_with(|c| c.retention_check_interval = Duration::from_millis(100)).await;
    common::create_topic(
        &b.bootstrap,
        "sized",
        1,
        &[("segment.bytes", "1048576"), ("retention.bytes", "1048576")],
    )
    .await;
    produce_one_by_one(&b.bootstrap, "sized", 60, 50_000).await;
    let dir = b.dir.path().join("topics/sized/0");
    let c = consumer(&b.bootstrap, "unused", &[]);
    let low = eventually("earliest offset moves past deleted segments", LONG, || {
        let marks = c.fetch_watermarks("sized", 0, Duration::from_secs(5)).ok();
        async move { marks.and_then(|(low, high)| (low > 0 && high == 60).then_some(low)) }
    })
    .await;
    let files = segment_files(&dir);
    let first_base: i64 = files[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        first_base, low,
        "the earliest offset is the oldest remaining segment's base"
    );
    let total: u64 = files.iter().map(|f| fs::metadata(f).unwrap().len()).sum();
    assert!(
        total < 1_048_576 + 2 * 1_048_576,
        "size bounded by retention, got {total}"
    );
    // Reading from the start now begins at the new earliest offset.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("sized", 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    assert_eq!(recv_n(&c, 1, LONG).await[0].offset, low);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_retention_and_time_rolling_delete_expired_segments() {
    let b =
        TestBroker::start_with(|c| c.retention_check_interval = Duration::from_millis(100)).await;
    common::create_topic(
        &b.bootstrap,
        "aged",
        1,
        &[("segment.ms", "200"), ("retention.ms", "500")],
    )
    .await;
    produce_one_by_one(&b.bootstrap, "aged", 5, 10).await;
    let c = consumer(&b.bootstrap, "unused", &[]);
    eventually("expired records deleted", LONG, || {
        let marks = c.fetch_watermarks("aged", 0, Duration::from_secs(5)).ok();
        async move { marks.and_then(|(low, high)| (low == 5 && high == 5).then_some(())) }
    })
    .await;
    // The partition still takes writes after everything expired.
    produce_one_by_one(&b.bootstrap, "aged", 1, 10).await;
    let (_, high) = c
        .fetch_watermarks("aged", 0, Duration::from_secs(5))
        .unwrap();
    assert_eq!(high, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_roll_by_size_and_reads_cross_them() {
    let b = TestBroker::start().await;
    common::create_topic(&b.bootstrap, "rolled", 1, &[("segment.bytes", "1048576")]).await;
    produce_one_by_one(&b.bootstrap, "rolled", 40, 100_000).await;
    let files = segment_files(&b.dir.path().join("topics/rolled/0"));
    assert!(files.len() > 3, "rolled into {} segments", files.len());
    for f in &files {
        assert!(
            f.with_extension("index").exists(),
            "each segment has an offset index"
        );
    }
    let c = consumer(&b.bootstrap, "unused", &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("rolled", 0, Offset::Offset(17))
        .unwrap();
    c.assign(&tpl).unwrap();
    let got = recv_n(&c, 23, LONG).await;
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (17..40).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_roll_by_age() {
    let b = TestBroker::start().await;
    common::create_topic(&b.bootstrap, "aging", 1, &[("segment.ms", "100")]).await;
    let dir = b.dir.path().join("topics/aging/0");
    // Each append checks the active segment's age; keep appending until one rolls.
    eventually("a segment older than segment.ms rolls", LONG, || {
        let bootstrap = b.bootstrap.clone();
        let dir = dir.clone();
        async move {
            produce_one_by_one(&bootstrap, "aging", 1, 10).await;
            (segment_files(&dir).len() >= 2).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_always_and_interval_still_serve_everything() {
    for policy in [
        broker::FsyncPolicy::Always,
        broker::FsyncPolicy::Interval(Duration::from_millis(20)),
    ] {
        let mut b = TestBroker::start_with(|c| c.fsync = policy).await;
        produce_one_by_one(&b.bootstrap, "synced", 5, 10).await;
        b.restart().await;
        let c = consumer(&b.bootstrap, "unused", &[]);
        let (_, high) = c
            .fetch_watermarks("synced", 0, Duration::from_secs(10))
            .unwrap();
        assert_eq!(high, 5, "{policy:?}");
    }
}
