//! Producing and consuming over TCP with rdkafka: acks, idempotence, compression, keys,
//! long polling and offset lookups.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{
    LONG, TestBroker, consumer, one_record_batch, produce_request, producer, raw::RawClient,
    recv_n, texts,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

async fn produce_values(
    bootstrap: &str,
    topic: &str,
    extra: &[(&str, &str)],
    values: &[String],
) -> Vec<(i32, i64)> {
    let p = producer(bootstrap, extra);
    let mut acks = Vec::new();
    for v in values {
        let delivered = p
            .send(
                FutureRecord::<(), _>::to(topic).payload(v.as_str()),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        acks.push((delivered.partition, delivered.offset));
    }
    acks
}

fn assign_from_start(c: &rdkafka::consumer::StreamConsumer, topic: &str, partitions: i32) {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acks_level_stores_records_in_order() {
    let b = TestBroker::start().await;
    for acks in ["0", "1", "all"] {
        let topic = format!("acks-{acks}");
        let values: Vec<String> = (0..20).map(|i| format!("{acks}-{i}")).collect();
        let offsets = produce_values(&b.bootstrap, &topic, &[("acks", acks)], &values).await;
        if acks != "0" {
            let expected: Vec<(i32, i64)> = (0..20).map(|i| (0, i)).collect();
            assert_eq!(offsets, expected, "acks={acks} reports consecutive offsets");
        }
        let c = consumer(&b.bootstrap, "unused", &[]);
        assign_from_start(&c, &topic, 1);
        let got = recv_n(&c, 20, LONG).await;
        let got = texts(&got);
        assert_eq!(got, values, "acks={acks}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_are_stored_and_served_as_sent() {
    let b = TestBroker::start().await;
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("compressed-{codec}");
        let values: Vec<String> = (0..200)
            .map(|i| format!("{codec} value {i} {}", "x".repeat(100)))
            .collect();
        let p = producer(
            &b.bootstrap,
            &[("compression.codec", codec), ("linger.ms", "50")],
        );
        let sends: Vec<_> = values
            .iter()
            .map(|v| {
                p.send_result(FutureRecord::<(), _>::to(&topic).payload(v.as_str()))
                    .unwrap()
            })
            .collect();
        for s in sends {
            s.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
        // The stored batch keeps the producer's compression attribute (bits 0-2).
        let broker = b.state();
        let topic_state = broker.topics.get(&topic).unwrap();
        let partition = topic_state.partition(0).unwrap();
        let broker::storage::ReadOutcome::Batches(bytes) =
            partition.log().read(0, 1 << 20, true).unwrap()
        else {
            panic!("offset 0 is in range");
        };
        let expected_attr = match codec {
            "gzip" => 1,
            "snappy" => 2,
            "lz4" => 3,
            _ => 4,
        };
        let mut position = 0;
        let mut largest = 0;
        while position < bytes.len() {
            let header = broker::storage::batch::validate(&bytes[position..]).unwrap();
            assert_eq!(
                header.attributes & 0x7,
                expected_attr,
                "{codec} batch stored compressed"
            );
            largest = largest.max(header.records_count);
            position += header.total_len();
        }
        assert!(largest > 1, "{codec}: records were batched");

        let c = consumer(&b.bootstrap, "unused", &[]);
        assign_from_start(&c, &topic, 1);
        let got = recv_n(&c, values.len(), LONG).await;
        let got = texts(&got);
        assert_eq!(got, values, "{codec} round trip");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_land_in_the_partition_the_client_chose() {
    let b = TestBroker::start().await;
    common::create_topic(&b.bootstrap, "keyed", 6, &[]).await;
    let p = producer(&b.bootstrap, &[]);
    let mut chosen: HashMap<String, i32> = HashMap::new();
    for i in 0..120 {
        let key = format!("order-{}", i % 24);
        let d = p
            .send(
                FutureRecord::to("keyed").key(&key).payload("v"),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        if let Some(prev) = chosen.insert(key.clone(), d.partition) {
            assert_eq!(prev, d.partition, "one key, one partition");
        }
    }
    let used: std::collections::HashSet<i32> = chosen.values().copied().collect();
    assert!(used.len() > 1, "keys spread over partitions");
    let c = consumer(&b.bootstrap, "unused", &[]);
    assign_from_start(&c, "keyed", 6);
    for r in recv_n(&c, 120, LONG).await {
        let key = String::from_utf8(r.key.unwrap()).unwrap();
        assert_eq!(
            chosen[&key], r.partition,
            "{key} is stored where the client put it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_delivers_each_record_once() {
    let b = TestBroker::start().await;
    let values: Vec<String> = (0..300).map(|i| format!("idem-{i}")).collect();
    let p = producer(
        &b.bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
        ],
    );
    let sends: Vec<_> = values
        .iter()
        .map(|v| {
            p.send_result(FutureRecord::<(), _>::to("idem").payload(v.as_str()))
                .unwrap()
        })
        .collect();
    for s in sends {
        s.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let c = consumer(&b.bootstrap, "unused", &[]);
    assign_from_start(&c, "idem", 1);
    let got = recv_n(&c, 300, LONG).await;
    let got = texts(&got);
    assert_eq!(got, values);
    let log_end = b
        .state()
        .topics
        .get("idem")
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .next_offset();
    assert_eq!(log_end, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_idempotent_batch_is_not_stored_twice() {
    let b = TestBroker::start().await;
    let _ = b.state().topics.get_or_create("retried").unwrap();
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let first = raw
        .call(
            &produce_request("retried", one_record_batch(42, 0, 0, b"a")),
            8,
        )
        .await;
    let p = &first.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    // The same batch again, as a producer retries after a lost response.
    let retry = raw
        .call(
            &produce_request("retried", one_record_batch(42, 0, 0, b"a")),
            8,
        )
        .await;
    let p = &retry.responses[0].partition_responses[0];
    assert_eq!(
        (p.error_code, p.base_offset),
        (0, 0),
        "duplicate acknowledged with the original offset"
    );
    let next = raw
        .call(
            &produce_request("retried", one_record_batch(42, 0, 1, b"b")),
            8,
        )
        .await;
    assert_eq!(next.responses[0].partition_responses[0].base_offset, 1);
    // A gap in the sequence is refused (OUT_OF_ORDER_SEQUENCE_NUMBER = 45).
    let gap = raw
        .call(
            &produce_request("retried", one_record_batch(42, 0, 5, b"c")),
            8,
        )
        .await;
    assert_eq!(gap.responses[0].partition_responses[0].error_code, 45);
    let log_end = b
        .state()
        .topics
        .get("retried")
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .next_offset();
    assert_eq!(log_end, 2, "two records stored, not three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_in_a_long_poll_gets_new_data_at_once() {
    let b = TestBroker::start().await;
    produce_values(&b.bootstrap, "longpoll", &[], &["warm-up".to_string()]).await;
    // The consumer's fetches wait up to 20 s; a broker without wake-ups would deliver that late.
    let c = consumer(&b.bootstrap, "unused", &[("fetch.wait.max.ms", "20000")]);
    assign_from_start(&c, "longpoll", 1);
    recv_n(&c, 1, LONG).await;
    let p = producer(&b.bootstrap, &[]);
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        // Let the consumer settle into its long poll before producing.
        let quiet = tokio::time::timeout(Duration::from_millis(300), c.recv()).await;
        assert!(quiet.is_err(), "no record expected yet");
        let sent = Instant::now();
        p.send(
            FutureRecord::<(), _>::to("longpoll").payload(&format!("v{i}")),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
        recv_n(&c, 1, Duration::from_secs(30)).await;
        worst = worst.max(sent.elapsed());
    }
    println!("worst produce-to-consume latency while long polling: {worst:?}");
    // Far below the 20 s max wait (typically well under a millisecond; the bound leaves room
    // for a loaded CI machine): the waiting fetch woke when the data arrived.
    assert!(
        worst < Duration::from_secs(5),
        "long poll did not wake: {worst:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_finds_earliest_latest_and_by_timestamp() {
    let b = TestBroker::start().await;
    let p = producer(&b.bootstrap, &[]);
    // Relative to now: records older than the retention (7 days) may be deleted at any time.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for i in 0..10 {
        p.send(
            FutureRecord::<(), _>::to("timed")
                .payload("x")
                .timestamp(base + i * 1000),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    }
    let c = consumer(&b.bootstrap, "unused", &[]);
    let (low, high) = c
        .fetch_watermarks("timed", 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!((low, high), (0, 10));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("timed", 0, Offset::Offset(base + 4500))
        .unwrap();
    let found = c
        .offsets_for_times(tpl, Timeout::After(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        found.find_partition("timed", 0).unwrap().offset(),
        Offset::Offset(5)
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("timed", 0, Offset::Offset(base + 60_000))
        .unwrap();
    let found = c
        .offsets_for_times(tpl, Timeout::After(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        found.find_partition("timed", 0).unwrap().offset(),
        Offset::End,
        "no record that late"
    );
}

/// ListOffsets for one timestamp on partition 0, over the raw protocol: (offset, timestamp).
async fn list_offset(raw: &mut RawClient, topic: &str, timestamp: i64) -> (i64, i64) {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(timestamp),
                ]),
        ]);
    let response = raw.call(&request, 7).await;
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    (p.offset, p.timestamp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_by_timestamp_finds_the_record_inside_a_batch() {
    let b = TestBroker::start().await;
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut raw = RawClient::connect(&b.bootstrap).await;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("batched-{codec}");
        // Ten records with timestamps one second apart, sent together so they share a batch.
        let p = producer(
            &b.bootstrap,
            &[("compression.codec", codec), ("linger.ms", "200")],
        );
        let sends: Vec<_> = (0..10)
            .map(|i| {
                p.send_result(
                    FutureRecord::<(), _>::to(&topic)
                        .payload("x")
                        .timestamp(base + i * 1000),
                )
                .unwrap()
            })
            .collect();
        for s in sends {
            s.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
        let broker::storage::ReadOutcome::Batches(stored) = b
            .state()
            .topics
            .get(&topic)
            .unwrap()
            .partition(0)
            .unwrap()
            .log()
            .read(0, 1 << 20, true)
            .unwrap()
        else {
            panic!("offset 0 is in range");
        };
        let header = broker::storage::batch::validate(&stored).unwrap();
        assert_eq!(
            (header.records_count, header.total_len()),
            (10, stored.len()),
            "{codec}: the ten records are one batch"
        );

        let c = consumer(&b.bootstrap, "unused", &[]);
        let lookup = |target: i64| {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Offset(target))
                .unwrap();
            let found = c
                .offsets_for_times(tpl, Timeout::After(Duration::from_secs(10)))
                .unwrap();
            found.find_partition(&topic, 0).unwrap().offset()
        };
        assert_eq!(lookup(base + 4500), Offset::Offset(5), "{codec}");
        assert_eq!(lookup(base + 4000), Offset::Offset(4), "{codec}: exact");
        assert_eq!(lookup(base + 9000), Offset::Offset(9), "{codec}: last");
        assert_eq!(lookup(base - 1), Offset::Offset(0), "{codec}: before all");
        assert_eq!(lookup(base + 9001), Offset::End, "{codec}: after all");
        // The answer carries the found record's timestamp.
        assert_eq!(
            list_offset(&mut raw, &topic, base + 4500).await,
            (5, base + 5000),
            "{codec}"
        );
        // Latest and earliest are unchanged.
        assert_eq!(list_offset(&mut raw, &topic, -1).await.0, 10, "{codec}");
        assert_eq!(list_offset(&mut raw, &topic, -2).await.0, 0, "{codec}");
    }
}

/// Fetches larger than a few kilobytes are sent from the segment files (`sendfile`): records of
/// every size, across segment rolls, read whole and in order by consumers that ask for small
/// and large fetches, read-uncommitted and read-committed (which cuts at the last stable
/// offset instead of the high watermark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_fetches_are_sent_from_the_segment_files_whole_and_in_order() {
    let b = TestBroker::start().await;
    let topic = "zero-copy";
    common::create_topic(&b.bootstrap, topic, 2, &[("segment.bytes", "1048576")]).await;
    let p = producer(
        &b.bootstrap,
        &[("linger.ms", "20"), ("batch.size", "200000")],
    );
    let values: Vec<String> = (0..20_000)
        .map(|i| format!("{i:05}-{}", "z".repeat(i % 300)))
        .collect();
    let sends: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            p.send_result(
                FutureRecord::<(), _>::to(topic)
                    .payload(v.as_str())
                    .partition((i % 2) as i32),
            )
            .unwrap()
        })
        .collect();
    for delivered in futures_util::future::join_all(sends).await {
        delivered.unwrap().unwrap();
    }
    let settings: [&[(&str, &str)]; 3] = [
        &[],
        &[
            ("max.partition.fetch.bytes", "70000"),
            ("fetch.max.bytes", "100000"),
            ("message.max.bytes", "100000"),
        ],
        &[
            ("isolation.level", "read_committed"),
            ("max.partition.fetch.bytes", "150000"),
        ],
    ];
    for extra in settings {
        let c = consumer(&b.bootstrap, "unused", extra);
        assign_from_start(&c, topic, 2);
        let got = recv_n(&c, values.len(), LONG).await;
        for partition in 0..2 {
            let read: Vec<String> = texts(&got)
                .into_iter()
                .zip(&got)
                .filter(|(_, r)| r.partition == partition)
                .map(|(v, _)| v)
                .collect();
            let sent: Vec<&String> = values.iter().skip(partition as usize).step_by(2).collect();
            assert_eq!(read.len(), sent.len(), "{extra:?}, partition {partition}");
            assert!(
                read.iter().zip(sent).all(|(r, s)| r == s),
                "{extra:?}, partition {partition}"
            );
        }
    }
}
