//! Exactly-once transactions (KIP-98) with rdkafka's transactional producer over TCP: commit and
//! abort as read-committed and read-uncommitted consumers see them, the last stable offset,
//! fencing of a zombie producer, offsets committed inside a transaction, a broker killed in the
//! middle of a transaction, a transaction ended by a crash, and transaction timeouts.

use crate::common;

use std::time::Duration;

use common::{
    BrokerProcess, LONG, TestBroker, client_config, consumer, create_topic, drain, eventually,
    producer, recv_n, texts,
};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, GroupId, ListOffsetsRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TXN_TIMEOUT: Duration = Duration::from_secs(20);

/// A transactional producer, initialised (which fences every older instance of `id`).
fn txn_producer(bootstrap: &str, id: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut settings = vec![("transactional.id", id)];
    settings.extend_from_slice(extra);
    let p = producer(bootstrap, &settings);
    blocking(|| p.init_transactions(TXN_TIMEOUT)).unwrap();
    p
}

/// rdkafka's transaction calls block; the broker runs on the same runtime's other worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn send(p: &FutureProducer, topic: &str, value: &str) -> Result<(i32, i64), KafkaError> {
    p.send(
        FutureRecord::<(), _>::to(topic).payload(value),
        Duration::from_secs(10),
    )
    .await
    .map(|d| (d.partition, d.offset))
    .map_err(|(e, _)| e)
}

/// Sends `values` in one transaction and commits (or aborts) it.
async fn transaction(p: &FutureProducer, topic: &str, values: &[&str], commit: bool) {
    blocking(|| p.begin_transaction()).unwrap();
    for v in values {
        send(p, topic, v).await.unwrap();
    }
    if commit {
        blocking(|| p.commit_transaction(TXN_TIMEOUT)).unwrap();
    } else {
        blocking(|| p.abort_transaction(TXN_TIMEOUT)).unwrap();
    }
}

fn committed_consumer(bootstrap: &str, group: &str) -> StreamConsumer {
    consumer(bootstrap, group, &[("isolation.level", "read_committed")])
}

fn uncommitted_consumer(bootstrap: &str, group: &str) -> StreamConsumer {
    consumer(bootstrap, group, &[("isolation.level", "read_uncommitted")])
}

/// Everything a fresh consumer of `isolation` reads from the start of `topic`.
async fn read_all(bootstrap: &str, topic: &str, isolation: &str, n: usize) -> Vec<String> {
    let group = format!("reader-{topic}-{isolation}-{}", uuid_ish());
    let c = consumer(bootstrap, &group, &[("isolation.level", isolation)]);
    c.subscribe(&[topic]).unwrap();
    let mut got = texts(&recv_n(&c, n, LONG).await);
    got.extend(texts(&drain(&c, Duration::from_millis(1500)).await));
    got
}

fn uuid_ish() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// ListOffsets latest of partition 0 at `isolation_level` (0 uncommitted, 1 committed).
async fn latest_offset(bootstrap: &str, topic: &str, isolation_level: i8) -> i64 {
    let mut raw = common::raw::RawClient::connect(bootstrap).await;
    let request = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_isolation_level(isolation_level)
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]);
    let response = raw.call(&request, 5).await;
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_sees_commits_never_aborts_and_does_not_stall_on_markers() {
    let mut b = TestBroker::start().await;
    create_topic(&b.bootstrap, "orders", 1, &[]).await;
    let p = txn_producer(&b.bootstrap, "writer", &[]);
    transaction(&p, "orders", &["c1", "c2"], true).await;
    transaction(&p, "orders", &["a1", "a2"], false).await;
    // After the abort: a plain record and another transaction, both visible.
    let plain = producer(&b.bootstrap, &[]);
    send(&plain, "orders", "plain").await.unwrap();
    transaction(&p, "orders", &["c3"], true).await;

    let committed = ["c1", "c2", "plain", "c3"];
    let everything = ["c1", "c2", "a1", "a2", "plain", "c3"];
    assert_eq!(
        read_all(&b.bootstrap, "orders", "read_committed", 4).await,
        committed
    );
    assert_eq!(
        read_all(&b.bootstrap, "orders", "read_uncommitted", 6).await,
        everything
    );
    // c1 c2 marker a1 a2 marker plain c3 marker: nothing open, both ends agree.
    assert_eq!(latest_offset(&b.bootstrap, "orders", 1).await, 9);
    assert_eq!(latest_offset(&b.bootstrap, "orders", 0).await, 9);

    // The aborted-transaction index and the producer state come back after a restart.
    drop(p);
    drop(plain);
    b.restart().await;
    assert_eq!(
        read_all(&b.bootstrap, "orders", "read_committed", 4).await,
        committed
    );
    let p = txn_producer(&b.bootstrap, "writer", &[]);
    transaction(&p, "orders", &["c4"], true).await;
    assert_eq!(
        read_all(&b.bootstrap, "orders", "read_committed", 5).await,
        ["c1", "c2", "plain", "c3", "c4"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_holds_read_committed_at_its_first_offset_until_it_ends() {
    let b = TestBroker::start().await;
    create_topic(&b.bootstrap, "held", 1, &[]).await;
    let plain = producer(&b.bootstrap, &[]);
    send(&plain, "held", "before").await.unwrap();
    let p = txn_producer(&b.bootstrap, "holder", &[]);
    blocking(|| p.begin_transaction()).unwrap();
    send(&p, "held", "inside").await.unwrap();
    send(&plain, "held", "behind").await.unwrap();

    assert_eq!(latest_offset(&b.bootstrap, "held", 1).await, 1, "LSO");
    assert_eq!(latest_offset(&b.bootstrap, "held", 0).await, 3, "HW");
    let c = committed_consumer(&b.bootstrap, "held-rc");
    c.subscribe(&["held"]).unwrap();
    assert_eq!(texts(&recv_n(&c, 1, LONG).await), ["before"]);
    assert!(
        drain(&c, Duration::from_millis(1500)).await.is_empty(),
        "nothing past the open transaction"
    );
    let u = uncommitted_consumer(&b.bootstrap, "held-ru");
    u.subscribe(&["held"]).unwrap();
    assert_eq!(
        texts(&recv_n(&u, 3, LONG).await),
        ["before", "inside", "behind"]
    );

    blocking(|| p.commit_transaction(TXN_TIMEOUT)).unwrap();
    assert_eq!(texts(&recv_n(&c, 2, LONG).await), ["inside", "behind"]);
    assert_eq!(latest_offset(&b.bootstrap, "held", 1).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let b = TestBroker::start().await;
    create_topic(&b.bootstrap, "fenced", 1, &[]).await;
    let zombie = txn_producer(&b.bootstrap, "same-id", &[]);
    blocking(|| zombie.begin_transaction()).unwrap();
    send(&zombie, "fenced", "zombie-1").await.unwrap();

    // The new instance aborts the zombie's open transaction and takes over.
    let fresh = txn_producer(&b.bootstrap, "same-id", &[]);
    let late = send(&zombie, "fenced", "zombie-2").await;
    assert!(late.is_err(), "a fenced producer can't produce: {late:?}");
    let err = blocking(|| zombie.commit_transaction(TXN_TIMEOUT)).unwrap_err();
    match &err {
        KafkaError::Transaction(e) => {
            assert!(e.is_fatal(), "fencing is fatal: {e}");
            assert_eq!(e.code(), RDKafkaErrorCode::Fenced, "{e}");
        }
        other => panic!("expected a transaction error, got {other}"),
    }

    transaction(&fresh, "fenced", &["fresh"], true).await;
    assert_eq!(
        read_all(&b.bootstrap, "fenced", "read_committed", 1).await,
        ["fresh"]
    );
    assert_eq!(
        read_all(&b.bootstrap, "fenced", "read_uncommitted", 2).await,
        ["zombie-1", "fresh"]
    );
}

/// The committed offset of `group` on `topic` partition 0, `None` if it has none.
fn group_offset(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    let c: StreamConsumer = client_config(bootstrap, &[("group.id", group)])
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = blocking(|| c.committed_offsets(tpl, Duration::from_secs(10))).unwrap();
    match got.find_partition(topic, 0).unwrap().offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// A consume-transform-produce step half done: ten records in `in`, read by a read-committed
/// consumer of `group`, and a transactional producer for `out` (`<group>-out`).
struct Transformer {
    plain: FutureProducer,
    input: StreamConsumer,
    got: Vec<common::Received>,
    output: FutureProducer,
}

async fn transformer(bootstrap: &str, group: &str) -> Transformer {
    create_topic(bootstrap, "in", 1, &[]).await;
    create_topic(bootstrap, "out", 1, &[]).await;
    let plain = producer(bootstrap, &[]);
    for i in 0..10 {
        send(&plain, "in", &format!("in{i}")).await.unwrap();
    }
    let input = committed_consumer(bootstrap, group);
    input.subscribe(&["in"]).unwrap();
    let got = recv_n(&input, 10, LONG).await;
    let output = txn_producer(bootstrap, &format!("{group}-out"), &[]);
    Transformer {
        plain,
        input,
        got,
        output,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_sent_to_a_transaction_move_the_group_only_on_commit() {
    let b = TestBroker::start().await;
    let Transformer {
        input,
        got,
        output: p,
        ..
    } = transformer(&b.bootstrap, "transformer").await;
    let offsets = |next: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("in", 0, Offset::Offset(next))
            .unwrap();
        tpl
    };
    let metadata = input.group_metadata().expect("joined the group");

    // Aborted: neither the output nor the offset.
    blocking(|| p.begin_transaction()).unwrap();
    for r in &got[..5] {
        send(&p, "out", &format!("out-{}", r.offset)).await.unwrap();
    }
    blocking(|| p.send_offsets_to_transaction(&offsets(5), &metadata, TXN_TIMEOUT)).unwrap();
    blocking(|| p.abort_transaction(TXN_TIMEOUT)).unwrap();
    assert_eq!(group_offset(&b.bootstrap, "transformer", "in"), None);

    // Committed: both.
    blocking(|| p.begin_transaction()).unwrap();
    for r in &got {
        send(&p, "out", &format!("out-{}", r.offset)).await.unwrap();
    }
    blocking(|| p.send_offsets_to_transaction(&offsets(10), &metadata, TXN_TIMEOUT)).unwrap();
    blocking(|| p.commit_transaction(TXN_TIMEOUT)).unwrap();
    assert_eq!(group_offset(&b.bootstrap, "transformer", "in"), Some(10));
    let out = read_all(&b.bootstrap, "out", "read_committed", 10).await;
    assert_eq!(out, (0..10).map(|i| format!("out-{i}")).collect::<Vec<_>>());
}

/// OffsetFetch v7 of `group` on `topic` partition 0: (committed offset, error code).
async fn fetch_offset_raw(
    bootstrap: &str,
    group: &str,
    topic: &str,
    require_stable: bool,
) -> (i64, i16) {
    let mut raw = common::raw::RawClient::connect(bootstrap).await;
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_indexes(vec![0]),
        ]))
        .with_require_stable(require_stable);
    let response = raw.call(&request, 7).await;
    assert_eq!(response.error_code, 0);
    let p = &response.topics[0].partitions[0];
    (p.committed_offset, p.error_code)
}

/// KIP-447: while a transaction holds staged offsets for a partition, a read-committed consumer
/// taking the partition over (it asks with `require_stable`) waits for that transaction instead
/// of starting from the older committed offset and processing the same input again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_taking_over_waits_for_offsets_staged_by_an_open_transaction() {
    let b = TestBroker::start().await;
    let Transformer {
        input,
        got,
        output: p,
        plain,
    } = transformer(&b.bootstrap, "handover").await;
    let metadata = input.group_metadata().expect("joined the group");
    blocking(|| p.begin_transaction()).unwrap();
    for r in &got {
        send(&p, "out", &format!("out-{}", r.offset)).await.unwrap();
    }
    let mut next = TopicPartitionList::new();
    next.add_partition_offset("in", 0, Offset::Offset(10))
        .unwrap();
    blocking(|| p.send_offsets_to_transaction(&next, &metadata, TXN_TIMEOUT)).unwrap();

    // The staged offset is not stable yet; without require_stable the old one (none) shows.
    let unstable = ResponseError::UnstableOffsetCommit.code();
    assert_eq!(
        fetch_offset_raw(&b.bootstrap, "handover", "in", true).await,
        (-1, unstable)
    );
    assert_eq!(
        fetch_offset_raw(&b.bootstrap, "handover", "in", false).await,
        (-1, 0)
    );

    // The first consumer leaves; its successor joins while the transaction is still open.
    drop(input);
    let successor = committed_consumer(&b.bootstrap, "handover");
    successor.subscribe(&["in"]).unwrap();
    eventually("the successor is assigned the partition", LONG, || async {
        // Polling serves the rebalance; a record now would be one the transaction consumed.
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(100), successor.recv()).await {
            panic!(
                "the successor read {:?} before the transaction ended",
                m.map(|m| common::owned(&m))
            );
        }
        successor.assignment().ok().filter(|a| a.count() == 1)
    })
    .await;
    blocking(|| p.commit_transaction(TXN_TIMEOUT)).unwrap();
    assert_eq!(
        fetch_offset_raw(&b.bootstrap, "handover", "in", true).await,
        (10, 0)
    );
    send(&plain, "in", "in10").await.unwrap();
    let first = recv_n(&successor, 1, LONG).await;
    assert_eq!(
        texts(&first),
        ["in10"],
        "the successor started where the transaction left off"
    );
}

/// A read-committed fetch below the log start answers OFFSET_OUT_OF_RANGE, also when an open
/// transaction whose start was deleted left the last stable offset below the log start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_committed_fetch_below_the_log_start_is_out_of_range() {
    let b = TestBroker::start().await;
    create_topic(&b.bootstrap, "trimmed", 1, &[]).await;
    let plain = producer(&b.bootstrap, &[]);
    send(&plain, "trimmed", "a").await.unwrap();
    let p = txn_producer(&b.bootstrap, "trimmed-txn", &[]);
    blocking(|| p.begin_transaction()).unwrap();
    assert_eq!(send(&p, "trimmed", "open").await.unwrap(), (0, 1));
    for v in ["b", "c"] {
        send(&plain, "trimmed", v).await.unwrap();
    }
    let admin: AdminClient<DefaultClientContext> =
        client_config(&b.bootstrap, &[]).create().unwrap();
    let mut before = TopicPartitionList::new();
    before
        .add_partition_offset("trimmed", 0, Offset::Offset(3))
        .unwrap();
    let deleted = admin
        .delete_records(&before, &AdminOptions::new())
        .await
        .unwrap();
    deleted
        .find_partition("trimmed", 0)
        .unwrap()
        .error()
        .unwrap();

    let fetch = |offset: i64| {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_isolation_level(1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("trimmed")))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ])
    };
    let mut raw = common::raw::RawClient::connect(&b.bootstrap).await;
    let below = raw.call(&fetch(2), 11).await;
    let p2 = &below.responses[0].partitions[0];
    // The open transaction holds the last stable offset at the log start, not below it.
    assert_eq!((p2.log_start_offset, p2.last_stable_offset), (3, 3));
    assert_eq!(p2.error_code, ResponseError::OffsetOutOfRange.code());
    let at_start = raw.call(&fetch(3), 11).await;
    let p3 = &at_start.responses[0].partitions[0];
    assert_eq!(p3.error_code, 0);
    assert_eq!(
        p3.records.as_ref().map(|r| r.len()),
        Some(0),
        "nothing stable yet"
    );
    blocking(|| p.abort_transaction(TXN_TIMEOUT)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_committing_when_the_broker_stopped_is_completed_on_restart() {
    let mut b = TestBroker::start().await;
    create_topic(&b.bootstrap, "ending", 1, &[]).await;
    create_topic(&b.bootstrap, "source", 1, &[]).await;
    let p = txn_producer(&b.bootstrap, "ender", &[]);
    blocking(|| p.begin_transaction()).unwrap();
    send(&p, "ending", "e1").await.unwrap();
    send(&p, "ending", "e2").await.unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("source", 0, Offset::Offset(7))
        .unwrap();
    // A group's metadata without joining it: no generation, so no member check.
    let group: StreamConsumer = client_config(&b.bootstrap, &[("group.id", "ender-group")])
        .create()
        .unwrap();
    let metadata = group.group_metadata().unwrap();
    blocking(|| p.send_offsets_to_transaction(&tpl, &metadata, TXN_TIMEOUT)).unwrap();
    drop(p);
    b.stop().await;
    // The state a crash between "PrepareCommit is stored" and "the markers are written" leaves:
    // the transaction's last line says PrepareCommit, its partitions have no marker.
    let path = b.dir.path().join("transactions.jsonl");
    let file = std::fs::read_to_string(&path).unwrap();
    let last = file
        .lines()
        .rfind(|l| l.contains("\"ender\""))
        .unwrap()
        .to_string();
    assert!(last.contains("\"Ongoing\""), "{last}");
    let prepared = last.replace("\"Ongoing\"", "\"PrepareCommit\"");
    std::fs::write(&path, format!("{file}{prepared}\n")).unwrap();

    b.restart_after_stop().await;
    assert_eq!(
        read_all(&b.bootstrap, "ending", "read_committed", 2).await,
        ["e1", "e2"]
    );
    assert_eq!(group_offset(&b.bootstrap, "ender-group", "source"), Some(7));
    // Finishing wrote exactly one marker: e1 e2 marker.
    assert_eq!(latest_offset(&b.bootstrap, "ending", 1).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_open_when_the_broker_is_killed_stays_open_for_its_producer() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path()).await;
    let bootstrap = broker.bootstrap.clone();
    create_topic(&bootstrap, "crashy", 2, &[]).await;
    let p = txn_producer(&bootstrap, "crasher", &[]);
    transaction(&p, "crashy", &["before"], true).await;
    blocking(|| p.begin_transaction()).unwrap();
    let send = |payload: String, partition: i32| {
        let p = &p;
        async move {
            p.send(
                FutureRecord::<(), _>::to("crashy")
                    .partition(partition)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        }
    };
    for i in 0..4 {
        send(format!("open{i}"), i % 2).await;
    }
    // SIGKILL in the middle of the transaction: no shutdown code runs.
    broker.kill_and_restart().await;

    // The transaction is still open, as Kafka keeps it across a coordinator restart: it holds
    // the last stable offset, so records written after it wait for it too.
    let plain = producer(&bootstrap, &[]);
    for partition in 0..2 {
        plain
            .send(
                FutureRecord::<(), _>::to("crashy")
                    .partition(partition)
                    .payload("plain"),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let c = committed_consumer(&bootstrap, "crash-reader");
    c.subscribe(&["crashy"]).unwrap();
    assert_eq!(texts(&recv_n(&c, 1, LONG).await), ["before"]);
    assert!(
        drain(&c, Duration::from_millis(1500)).await.is_empty(),
        "nothing after the open transaction is readable yet"
    );

    // Its producer, reconnected, goes on with the same transaction and commits all of it.
    send("open4".into(), 0).await;
    blocking(|| p.commit_transaction(TXN_TIMEOUT)).unwrap();
    let mut got = texts(&recv_n(&c, 7, LONG).await);
    got.sort();
    assert_eq!(
        got,
        [
            "open0", "open1", "open2", "open3", "open4", "plain", "plain"
        ],
        "the whole transaction, then what waited behind it"
    );

    // A new instance of the same transactional id goes on after it, as without the restart
    // (that it fences the old one is `a_second_producer_with_the_same_transactional_id_...`).
    let q = txn_producer(&bootstrap, "crasher", &[]);
    transaction(&q, "crashy", &["after"], true).await;
    assert_eq!(texts(&recv_n(&c, 1, LONG).await), ["after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_by_a_crash_whose_producer_never_returns_is_aborted_at_its_timeout()
{
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path()).await;
    let bootstrap = broker.bootstrap.clone();
    create_topic(&bootstrap, "orphan", 1, &[]).await;
    // A short transaction timeout, so the ticker's abort comes quickly.
    let p = txn_producer(
        &bootstrap,
        "orphaned",
        &[("transaction.timeout.ms", "3000")],
    );
    blocking(|| p.begin_transaction()).unwrap();
    p.send(
        FutureRecord::<(), _>::to("orphan").payload("doomed"),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
    broker.kill_and_restart().await;

    // Its producer stays silent (held, never used again): nothing ends the transaction but the
    // timeout: then what came after it becomes readable, it never does.
    let plain = producer(&bootstrap, &[]);
    plain
        .send(
            FutureRecord::<(), _>::to("orphan").payload("plain"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let c = committed_consumer(&bootstrap, "orphan-reader");
    c.subscribe(&["orphan"]).unwrap();
    assert_eq!(texts(&recv_n(&c, 1, LONG).await), ["plain"]);
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_its_timeout_is_aborted() {
    let b = TestBroker::start_with(|c| {
        c.transaction_check_interval = Duration::from_millis(100);
    })
    .await;
    create_topic(&b.bootstrap, "slow", 1, &[]).await;
    let p = txn_producer(
        &b.bootstrap,
        "sleepy",
        &[
            ("transaction.timeout.ms", "2000"),
            ("message.timeout.ms", "2000"),
        ],
    );
    blocking(|| p.begin_transaction()).unwrap();
    send(&p, "slow", "forgotten").await.unwrap();
    let plain = producer(&b.bootstrap, &[]);
    send(&plain, "slow", "next").await.unwrap();

    // Held back until the broker aborts the transaction; then only "next" is visible.
    let c = committed_consumer(&b.bootstrap, "slow-reader");
    c.subscribe(&["slow"]).unwrap();
    assert_eq!(texts(&recv_n(&c, 1, LONG).await), ["next"]);
    let state = b
        .state()
        .txns
        .snapshot()
        .into_iter()
        .find(|t| t.transactional_id == "sleepy")
        .unwrap();
    assert_eq!(state.state, broker::txn::TxnState::CompleteAbort);
    // The abort bumped the epoch: the producer that let it run out is fenced.
    assert!(blocking(|| p.commit_transaction(TXN_TIMEOUT)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_timeout_above_the_broker_maximum_is_refused() {
    let b = TestBroker::start_with(|c| {
        c.transaction_max_timeout = Duration::from_secs(60);
    })
    .await;
    let p = producer(
        &b.bootstrap,
        &[
            ("transactional.id", "greedy"),
            ("transaction.timeout.ms", "120000"),
        ],
    );
    let err = blocking(|| p.init_transactions(TXN_TIMEOUT)).unwrap_err();
    assert_eq!(
        err.rdkafka_error_code(),
        Some(RDKafkaErrorCode::InvalidTransactionTimeout),
        "{err}"
    );
    // Within the maximum it works.
    let _ok = txn_producer(
        &b.bootstrap,
        "modest",
        &[("transaction.timeout.ms", "60000")],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_batches_need_a_transaction_and_control_batches_are_refused() {
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let b = TestBroker::start().await;
    create_topic(&b.bootstrap, "raw", 1, &[]).await;
    let mut raw = common::raw::RawClient::connect(&b.bootstrap).await;
    let produce = |batch: bytes::Bytes, transactional_id: Option<&str>| {
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_transactional_id(transactional_id.map(|t| {
                kafka_protocol::messages::TransactionalId(StrBytes::from_string(t.into()))
            }))
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("raw")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch)),
                    ]),
            ])
    };
    let with_attributes = |attributes: i16| {
        let mut b = common::one_record_batch(5, 0, 0, b"x").to_vec();
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes::Bytes::from(b)
    };
    let code = |r: kafka_protocol::messages::ProduceResponse| {
        r.responses[0].partition_responses[0].error_code
    };
    // A transactional batch without a transactional id.
    let r = raw.call(&produce(with_attributes(0x10), None), 9).await;
    assert_eq!(code(r), 87, "INVALID_RECORD");
    // A transactional id nobody initialised.
    let r = raw
        .call(&produce(with_attributes(0x10), Some("nobody")), 9)
        .await;
    assert_eq!(code(r), 49, "INVALID_PRODUCER_ID_MAPPING");
    // A control batch from a client.
    let r = raw.call(&produce(with_attributes(0x30), None), 9).await;
    assert_eq!(code(r), 87, "INVALID_RECORD");
    assert_eq!(
        latest_offset(&b.bootstrap, "raw", 1).await,
        0,
        "nothing stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_list_transactions_show_the_coordinator_state() {
    use kafka_protocol::messages::{
        DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest,
        TransactionalId, describe_producers_request,
    };
    let b = TestBroker::start().await;
    create_topic(&b.bootstrap, "shown", 2, &[]).await;
    let open = txn_producer(&b.bootstrap, "open-one", &[]);
    blocking(|| open.begin_transaction()).unwrap();
    for partition in [1, 0] {
        open.send(
            FutureRecord::<(), _>::to("shown")
                .partition(partition)
                .payload("x"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    }
    let done = txn_producer(&b.bootstrap, "done-one", &[]);
    transaction(&done, "shown", &["y"], true).await;

    let mut raw = common::raw::RawClient::connect(&b.bootstrap).await;
    let id = |s: &str| TransactionalId(StrBytes::from_string(s.to_string()));
    let described = raw
        .call(
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![
                id("open-one"),
                id("done-one"),
                id("nobody"),
            ]),
            0,
        )
        .await;
    let s = &described.transaction_states;
    assert_eq!(
        (s[0].error_code, s[0].transaction_state.as_str()),
        (0, "Ongoing")
    );
    assert_eq!(s[0].topics.len(), 1);
    assert_eq!(s[0].topics[0].topic.as_str(), "shown");
    assert_eq!(s[0].topics[0].partitions, [0, 1]);
    assert!(s[0].transaction_start_time_ms > 0);
    assert_eq!(s[0].transaction_timeout_ms, 60_000, "librdkafka's default");
    assert_eq!(
        (s[1].error_code, s[1].transaction_state.as_str()),
        (0, "CompleteCommit")
    );
    assert!(s[1].topics.is_empty());
    assert_eq!(s[2].error_code, 105, "TRANSACTIONAL_ID_NOT_FOUND");

    let listed = raw
        .call(
            &ListTransactionsRequest::default()
                .with_state_filters(vec![StrBytes::from_static_str("Ongoing")]),
            1,
        )
        .await;
    let ids: Vec<&str> = listed
        .transaction_states
        .iter()
        .map(|t| t.transactional_id.as_str())
        .collect();
    assert_eq!(ids, ["open-one"]);
    let all = raw.call(&ListTransactionsRequest::default(), 1).await;
    assert_eq!(all.transaction_states.len(), 2);
    let bogus = raw
        .call(
            &ListTransactionsRequest::default()
                .with_state_filters(vec![StrBytes::from_static_str("Sleeping")]),
            1,
        )
        .await;
    assert_eq!(bogus.unknown_state_filters.len(), 1);
    assert!(bogus.transaction_states.is_empty());

    // DescribeProducers: the open transaction's producer, and where it holds each partition.
    let open_id = s[0].producer_id;
    let producers = raw
        .call(
            &DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(TopicName(StrBytes::from_static_str("shown")))
                    .with_partition_indexes(vec![0, 1, 7]),
            ]),
            0,
        )
        .await;
    let parts = &producers.topics[0].partitions;
    for p in &parts[..2] {
        assert_eq!(p.error_code, 0);
        let mine = p
            .active_producers
            .iter()
            .find(|a| a.producer_id == open_id)
            .unwrap_or_else(|| panic!("partition {}: {:?}", p.partition_index, p.active_producers));
        assert_eq!(mine.last_sequence, 0, "one record sent");
        assert!(
            mine.current_txn_start_offset >= 0,
            "its transaction is open"
        );
        assert!(mine.last_timestamp > 0);
    }
    assert_eq!(parts[2].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    blocking(|| open.abort_transaction(TXN_TIMEOUT)).unwrap();
    let after = raw
        .call(
            &DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(TopicName(StrBytes::from_static_str("shown")))
                    .with_partition_indexes(vec![0]),
            ]),
            0,
        )
        .await;
    let mine = after.topics[0].partitions[0]
        .active_producers
        .iter()
        .find(|a| a.producer_id == open_id)
        .map(|m| m.current_txn_start_offset);
    assert_eq!(mine, Some(-1), "aborted: no open transaction");
}

/// What a transaction's producer learned of its fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed,
    Aborted,
    /// The broker died around the end: either, but all or nothing.
    Unknown,
}

#[derive(Debug)]
struct Attempt {
    /// Values whose send was acknowledged.
    sent: Vec<String>,
    /// Every value the transaction tried to send.
    tried: Vec<String>,
    outcome: Outcome,
}

/// A transactional producer for the chaos test, created again whenever it is fenced.
async fn chaos_producer(bootstrap: &str, id: &str) -> FutureProducer {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let p = producer(
            bootstrap,
            &[
                ("transactional.id", id),
                ("transaction.timeout.ms", "15000"),
                ("message.timeout.ms", "10000"),
            ],
        );
        match blocking(|| p.init_transactions(TXN_TIMEOUT)) {
            Ok(()) => return p,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "init: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One producer's run: `n` transactions of four records over three partitions, every fourth
/// aborted on purpose; any error ends the transaction with an abort (a fenced producer is
/// replaced).
async fn chaos_worker(
    bootstrap: String,
    worker: usize,
    n: usize,
    progress: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<Attempt> {
    let id = format!("chaos-{worker}");
    let mut p = chaos_producer(&bootstrap, &id).await;
    let mut attempts = Vec::new();
    for t in 0..n {
        while blocking(|| p.begin_transaction()).is_err() {
            p = chaos_producer(&bootstrap, &id).await;
        }
        let tried: Vec<String> = (0..4).map(|j| format!("{id}-{t}-{j}")).collect();
        let mut sent = Vec::new();
        let mut failed = false;
        for (j, value) in tried.iter().enumerate() {
            let partition = ((t + j) % 3) as i32;
            match p
                .send(
                    FutureRecord::<(), _>::to("ledger")
                        .partition(partition)
                        .payload(value),
                    Duration::from_secs(10),
                )
                .await
            {
                Ok(_) => sent.push(value.clone()),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let wants_commit = !failed && t % 4 != 3;
        let committed = wants_commit && blocking(|| p.commit_transaction(TXN_TIMEOUT)).is_ok();
        let outcome = if committed {
            Outcome::Committed
        } else if blocking(|| p.abort_transaction(TXN_TIMEOUT)).is_ok() {
            // The broker answered the abort: the transaction is aborted (an abort of a
            // committed one is refused).
            Outcome::Aborted
        } else {
            p = chaos_producer(&bootstrap, &id).await;
            Outcome::Unknown
        };
        attempts.push(Attempt {
            sent,
            tried,
            outcome,
        });
        progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    attempts
}

/// A read-committed reader of every partition of `ledger` (assigned, not in a group, so its
/// positions survive broker restarts), recording (partition, offset, value).
fn chaos_reader(bootstrap: &str) -> StreamConsumer {
    let c = committed_consumer(bootstrap, "chaos-reader");
    let mut tpl = TopicPartitionList::new();
    for partition in 0..3 {
        tpl.add_partition_offset("ledger", partition, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    c
}

/// Jepsen's Kafka checker, in small: concurrent transactional producers and a read-committed
/// consumer while the broker is killed (SIGKILL) and restarted twice. Then a fresh reader checks
/// no aborted read, no lost committed write, no duplicate, all-or-nothing for transactions whose
/// outcome the producer couldn't learn, and offsets increasing per partition; the reader that ran
/// through the crashes saw no aborted record and no duplicate either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_stay_atomic_under_concurrent_producers_and_broker_kills() {
    use std::collections::{BTreeMap, HashSet};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path()).await;
    let bootstrap = broker.bootstrap.clone();
    create_topic(&bootstrap, "ledger", 3, &[]).await;

    let live: Arc<Mutex<Vec<(i32, i64, String)>>> = Arc::default();
    let reader = {
        let live = live.clone();
        let c = chaos_reader(&bootstrap);
        tokio::spawn(async move {
            loop {
                if let Ok(m) = c.recv().await {
                    let r = common::owned(&m);
                    let value = String::from_utf8(r.value.unwrap_or_default()).unwrap();
                    live.lock().unwrap().push((r.partition, r.offset, value));
                }
            }
        })
    };
    let progress = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..3)
        .map(|w| tokio::spawn(chaos_worker(bootstrap.clone(), w, 40, progress.clone())))
        .collect();
    // Kill the broker three times while the producers run: after 15, 45 and 75 of their 120
    // transactions.
    let mut kills = 0;
    for after in [15, 45, 75] {
        eventually("the producers make progress", LONG, || {
            let done = progress.load(std::sync::atomic::Ordering::SeqCst);
            async move { (done >= after).then_some(()) }
        })
        .await;
        broker.kill_and_restart().await;
        kills += 1;
    }
    let mut attempts = Vec::new();
    for w in workers {
        attempts.extend(w.await.unwrap());
    }
    let committed: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Committed)
        .collect();
    let committed_values: usize = committed.iter().map(|a| a.sent.len()).sum();
    assert!(
        committed.len() >= 10,
        "enough transactions committed to mean something: {attempts:?}"
    );

    // A fresh read-committed reader, to the end.
    let c = chaos_reader(&bootstrap);
    let mut read = recv_n(&c, committed_values, LONG).await;
    read.extend(drain(&c, Duration::from_secs(3)).await);
    reader.abort();

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    for r in &read {
        let value = String::from_utf8(r.value.clone().unwrap_or_default()).unwrap();
        *seen.entry(value).or_default() += 1;
        let last = last_offset.insert(r.partition, r.offset);
        assert!(
            last.is_none_or(|l| l < r.offset),
            "offsets increase in partition {}",
            r.partition
        );
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    let mut known = HashSet::new();
    for a in &attempts {
        known.extend(a.tried.iter().cloned());
        let visible: Vec<&String> = a.tried.iter().filter(|v| seen.contains_key(*v)).collect();
        match a.outcome {
            Outcome::Committed => {
                assert_eq!(visible.len(), a.tried.len(), "lost committed write: {a:?}")
            }
            Outcome::Aborted => assert!(visible.is_empty(), "aborted read: {a:?}"),
            Outcome::Unknown => assert!(
                visible.is_empty() || a.sent.iter().all(|v| seen.contains_key(v)),
                "a transaction partly visible: {a:?}, visible {visible:?}"
            ),
        }
    }
    assert!(
        seen.keys().all(|v| known.contains(v)),
        "only values some producer wrote"
    );

    // The reader that ran through the kills: no aborted record, no duplicate.
    let live = live.lock().unwrap().clone();
    let aborted: HashSet<&String> = attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Aborted)
        .flat_map(|a| a.tried.iter())
        .collect();
    let mut live_seen = HashSet::new();
    for (partition, offset, value) in &live {
        assert!(
            !aborted.contains(value),
            "the live reader read aborted {value}"
        );
        assert!(
            live_seen.insert(value.clone()),
            "the live reader read {value} twice ({partition}/{offset})"
        );
    }
    eprintln!(
        "chaos: {kills} kills, {} transactions ({} committed, {} aborted, {} unknown), {} records read, {} by the live reader",
        attempts.len(),
        committed.len(),
        attempts
            .iter()
            .filter(|a| a.outcome == Outcome::Aborted)
            .count(),
        attempts
            .iter()
            .filter(|a| a.outcome == Outcome::Unknown)
            .count(),
        read.len(),
        live.len()
    );
}
