//! Log compaction (`cleanup.policy=compact`) seen by real clients: the admin calls that set it,
//! the records without a key it refuses, and a key-by-key model check of what a reader gets,
//! across SIGKILLs of the broker in the middle of a clean.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::common::*;

/// A compacted topic whose closed segments are cleaned as soon as the cleaner looks (new
/// segments every `segment_ms`), its tombstones kept for `delete_retention_ms`.
///
/// A reader that reads a key's old value and then, before it reaches the key's tombstone,
/// finds the tombstone cleaned away, never learns of the deletion: that is what
/// `delete.retention.ms` is for, and why the tests that check every read keep tombstones for
/// longer than a read takes.
fn compacted_configs(
    segment_ms: &'static str,
    delete_retention_ms: &'static str,
) -> Vec<(&'static str, &'static str)> {
    vec![
        ("cleanup.policy", "compact"),
        ("delete.retention.ms", delete_retention_ms),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("min.compaction.lag.ms", "0"),
        ("segment.ms", segment_ms),
    ]
}

/// Every record of partition 0 of `topic`, read from the start to the end it has now:
/// `(offset, key, value)`, `None` for a tombstone's value.
async fn read_all(bootstrap: &str, topic: &str) -> Vec<(i64, String, Option<String>)> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || read_all_blocking(&bootstrap, &topic))
        .await
        .unwrap()
}

fn read_all_blocking(bootstrap: &str, topic: &str) -> Vec<(i64, String, Option<String>)> {
    let consumer: BaseConsumer = client_config(
        bootstrap,
        &[
            ("group.id", "compaction-reader"),
            ("enable.auto.commit", "false"),
        ],
    )
    .create()
    .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + LONG;
    let mut next = 0;
    while next < high {
        assert!(
            std::time::Instant::now() < deadline,
            "read stalled at {next} of {high}"
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.unwrap();
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
        out.push((
            message.offset(),
            text(message.key()).unwrap(),
            text(message.payload()),
        ));
        next = message.offset() + 1;
    }
    out
}

/// Asserts two tables are equal, saying only how they differ (their values are long).
#[track_caller]
fn same_table(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>, what: &str) {
    if got == want {
        return;
    }
    let short = |v: Option<&String>| v.map(|v| v.chars().take(24).collect::<String>());
    let differences: Vec<String> = got
        .keys()
        .chain(want.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .map(|k| {
            format!(
                "{k}: read {:?}, expected {:?}",
                short(got.get(k)),
                short(want.get(k))
            )
        })
        .collect();
    panic!(
        "{what}: {} keys differ: {differences:#?}",
        differences.len()
    );
}

/// What a reader makes of the records: each key's latest value, a tombstone removing it.
fn replay(records: &[(i64, String, Option<String>)]) -> BTreeMap<String, String> {
    let mut table = BTreeMap::new();
    for (_, key, value) in records {
        match value {
            Some(v) => table.insert(key.clone(), v.clone()),
            None => table.remove(key),
        };
    }
    table
}

async fn put(producer: &FutureProducer, topic: &str, key: &str, value: Option<&str>) -> i64 {
    let mut record = FutureRecord::to(topic).key(key);
    if let Some(value) = value {
        record = record.payload(value);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap_or_else(|(e, _)| panic!("put {key}: {e}"))
        .offset
}

/// The admin calls (CreateTopics with compaction configs, DescribeConfigs, AlterConfigs)
/// through librdkafka; a record without a key refused with INVALID_RECORD; then 200 puts and
/// 5 deletes of 20 keys: at every read, the table a reader replays is exactly the written one
/// and every record is at the offset its put got; once the cleaner has been through, each key
/// is there once (the deleted ones as their tombstone); with `delete.retention.ms` lowered to
/// 0, the tombstones go too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_the_latest_value_of_each_key_at_its_offset() {
    let broker =
        TestBroker::start_with(|c| c.log_cleaner_backoff = Duration::from_millis(50)).await;
    let b = &broker.bootstrap;
    create_topic(b, "prices", 1, &compacted_configs("100", "600000")).await;
    let admin: AdminClient<DefaultClientContext> = client_config(b, &[]).create().unwrap();
    let described = |admin: AdminClient<DefaultClientContext>| async move {
        let results = admin
            .describe_configs(&[ResourceSpecifier::Topic("prices")], &AdminOptions::new())
            .await
            .unwrap();
        let resource = results.into_iter().next().unwrap().unwrap();
        let configs: BTreeMap<String, String> = resource
            .entries
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect();
        (admin, configs)
    };
    let (admin, configs) = described(admin).await;
    assert_eq!(configs["cleanup.policy"], "compact");
    assert_eq!(configs["delete.retention.ms"], "600000");
    assert_eq!(configs["min.cleanable.dirty.ratio"], "0.01");
    assert_eq!(configs["max.compaction.lag.ms"], i64::MAX.to_string());

    let plain = producer(b, &[("retries", "0")]);
    let refused = plain
        .send(
            FutureRecord::<(), str>::to("prices").payload("no key"),
            Duration::from_secs(10),
        )
        .await
        .expect_err("a record without a key is refused");
    assert_eq!(
        refused.0,
        KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord)
    );

    let mut offsets = BTreeMap::new();
    for round in 0..10 {
        for k in 0..20 {
            let (key, value) = (format!("sku-{k}"), format!("price-{round}-{k}"));
            let offset = put(&plain, "prices", &key, Some(&value)).await;
            offsets.insert(offset, (key, Some(value)));
        }
    }
    for k in 0..5 {
        let key = format!("sku-{k}");
        offsets.insert(put(&plain, "prices", &key, None).await, (key, None));
    }
    let expected: BTreeMap<String, String> = (5..20)
        .map(|k| (format!("sku-{k}"), format!("price-9-{k}")))
        .collect();
    // Writes to another key roll segments (segment.ms) until the cleaner has done its work:
    // `stored` records of the 20 keys are left.
    let until_stored = |stored: usize| {
        let (offsets, expected, plain) = (&offsets, &expected, &plain);
        move || async move {
            put(plain, "prices", "filler", Some("x")).await;
            let all = read_all(b, "prices").await;
            let table: Vec<_> = all.iter().filter(|(_, k, _)| k != "filler").collect();
            for (offset, key, value) in &table {
                assert_eq!(
                    offsets.get(offset),
                    Some(&(key.clone(), value.clone())),
                    "offset {offset} holds what was written there"
                );
            }
            let mut replayed = replay(&all);
            replayed.remove("filler");
            same_table(
                &replayed,
                expected,
                "the table a reader sees, at every read",
            );
            (table.len() == stored).then_some(table.into_iter().cloned().collect::<Vec<_>>())
        }
    };
    let cleaned = eventually("each key once", LONG, until_stored(20)).await;
    let tombstones = cleaned.iter().filter(|(.., v)| v.is_none()).count();
    assert_eq!(tombstones, 5, "the deletions stay for delete.retention.ms");

    // AlterConfigs (which replaces every override): compacted and deleted by age, and the
    // tombstones' retention down to 0: they go at the next clean.
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic("prices"));
    for (key, value) in compacted_configs("100", "0") {
        alter = alter.set(key, value);
    }
    alter = alter.set("cleanup.policy", "compact,delete");
    for r in admin
        .alter_configs(&[alter], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let (_, configs) = described(admin).await;
    assert_eq!(configs["cleanup.policy"], "compact,delete");
    let cleaned = eventually("the tombstones gone", LONG, until_stored(15)).await;
    assert!(cleaned.iter().all(|(.., v)| v.is_some()));
}

/// The model check across crashes: a producer puts and deletes random keys one at a time
/// while the broker cleans (a clean every few ms: the log rolls every 20 ms); the broker is
/// SIGKILLed the moment a clean's files appear (a `.cleaned` file being written, or a swap
/// being put in place), three times. After each restart the table a reader replays is exactly
/// what the acknowledged writes made (plus, perhaps, the one write in flight at the kill), no
/// clean is left half done, and in the end each key is stored once. (The tombstones are kept
/// for the test's length, so that no read misses a deletion; see `compacted_configs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_in_the_middle_of_a_clean_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker =
        BrokerProcess::start_with_args(dir.path(), &["--log-cleaner-backoff-ms", "5"]).await;
    let b = broker.bootstrap.clone();
    create_topic(&b, "table", 1, &compacted_configs("20", "600000")).await;
    let partition_dir = broker::topics::topic_dir(dir.path(), "table").join("0");
    let mut model: BTreeMap<String, String> = BTreeMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        // (acknowledged writes in order, the write in flight)
        type Writes = (
            Vec<(String, Option<String>)>,
            Option<(String, Option<String>)>,
        );
        let writes: Arc<Mutex<Writes>> = Arc::default();
        let writer = {
            let (b, stop, writes) = (b.clone(), stop.clone(), writes.clone());
            tokio::spawn(async move {
                let producer = producer(&b, &[("message.timeout.ms", "3000"), ("retries", "0")]);
                let padding = "p".repeat(1000);
                while !stop.load(Ordering::SeqCst) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let key = format!("key-{}", seed % 300);
                    let value =
                        (!seed.is_multiple_of(7)).then(|| format!("{round}-{seed}-{padding}"));
                    writes.lock().unwrap().1 = Some((key.clone(), value.clone()));
                    let mut record = FutureRecord::to("table").key(&key);
                    if let Some(v) = &value {
                        record = record.payload(v);
                    }
                    let sent = producer.send(record, Duration::from_secs(5)).await;
                    let mut w = writes.lock().unwrap();
                    w.1 = None;
                    match sent {
                        Ok(_) => w.0.push((key, value)),
                        // The broker is gone: this write may or may not be stored.
                        Err(_) => {
                            w.1 = Some((key, value));
                            break;
                        }
                    }
                }
                seed
            })
        };
        // Catch a clean at work and kill the broker there.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mid_clean = std::fs::read_dir(&partition_dir).ok().and_then(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .find(|name| name.ends_with(".cleaned") || name.ends_with(".swap"))
            });
            if let Some(file) = mid_clean
                && writes.lock().unwrap().0.len() > 500
            {
                broker.kill();
                eprintln!("round {round}: killed while {file} was there");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no clean seen at work in 60 s"
            );
            std::thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        seed = tokio::time::timeout(LONG, writer)
            .await
            .expect("the writer stops")
            .unwrap();
        let (acknowledged, in_flight) = std::mem::take(&mut *writes.lock().unwrap());
        for (key, value) in acknowledged {
            match value {
                Some(v) => model.insert(key, v),
                None => model.remove(&key),
            };
        }
        // What the kill left is dropped or finished at the start; a clean the new broker
        // begins at once has files of its own, changed after the kill.
        let killed_at = std::time::SystemTime::now();
        broker.restart().await;
        let table = replay(&read_all(&b, "table").await);
        // Listed once the broker has answered a read: it listens before its logs are open.
        let stale: Vec<String> = std::fs::read_dir(&partition_dir)
            .unwrap()
            .filter_map(|e| {
                use std::os::unix::fs::MetadataExt;
                let e = e.ok()?;
                let name = e.file_name().to_string_lossy().into_owned();
                let meta = e.metadata().ok()?;
                let changed = std::time::UNIX_EPOCH
                    + Duration::new(meta.ctime() as u64, meta.ctime_nsec() as u32);
                let half_done = name.ends_with(".cleaned") || name.ends_with(".swap");
                (half_done && changed < killed_at).then_some(name)
            })
            .collect();
        assert!(
            stale.is_empty(),
            "round {round}: a clean left half done: {stale:?}"
        );
        let mut with_in_flight = model.clone();
        if let Some((key, value)) = in_flight {
            match value {
                Some(v) => with_in_flight.insert(key, v),
                None => with_in_flight.remove(&key),
            };
        }
        if table != with_in_flight {
            same_table(
                &table,
                &model,
                &format!("round {round}: the table after the kill"),
            );
        }
        model = table;
    }
    // The cleaner finishes: a write to another key rolls the last segment, and then each key
    // is stored once (a deleted one as its tombstone, kept for delete.retention.ms).
    let producer = producer(&b, &[]);
    eventually("each key stored once", LONG, || async {
        put(&producer, "table", "filler", Some("x")).await;
        let all = read_all(&b, "table").await;
        let mut replayed = replay(&all);
        replayed.remove("filler");
        same_table(&replayed, &model, "the table as the cleaner goes on");
        let stored: Vec<&String> = all
            .iter()
            .filter(|(_, k, _)| k != "filler")
            .map(|(_, k, _)| k)
            .collect();
        let keys: std::collections::BTreeSet<&String> = stored.iter().copied().collect();
        (stored.len() == keys.len()).then_some(())
    })
    .await;
}
