//! Jepsen-style tests of the cluster: three `broker` processes, real clients writing and reading
//! all the time, and a nemesis that takes nodes down in the ways real clusters lose them: a
//! leader SIGKILLed and restarted, a leader paused (SIGSTOP) past its session and resumed, and a
//! node cut off by a network partition (each node in a network namespace of its own; see
//! [`crate::netns`]). Each fault lasts until the others have fenced the node and the workload
//! has gone on without it, then heals, and the next one starts once every ISR is whole again.
//!
//! Afterwards the history is checked, as Jepsen's Kafka checker does: no acknowledged record
//! lost (each is where its acknowledgement said), none written twice, each producer's records
//! in order in each partition, no record read that is not in the final log at the offset it was
//! read from (nothing read and later cut off), the consumer group's committed offsets never
//! behind the last commit that succeeded, and every ISR whole. The transactional variant checks
//! that every transaction is all or nothing: committed ones whole, aborted ones absent,
//! undecided ones (their commit failed in flight) one or the other, across the loss of its
//! coordinator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::cluster::{Cluster, create_with, txn_coordinator};
use crate::common::{LONG, client_config, eventually};
use crate::netns::Namespaces;

const TOPIC: &str = "jepsen";
const PARTITIONS: i32 = 3;
/// How many records the workload must have acknowledged while a fault lasts.
const PROGRESS: usize = 100;

/// What was written: each value's acknowledgement, `(partition, offset)`, or its error.
type Writes = Arc<Mutex<BTreeMap<String, Result<(i32, i64), String>>>>;

/// The ways the nemesis takes a node down.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL, then started again on its data.
    Kill,
    /// SIGSTOP past its session, then SIGCONT: it wakes up believing it still leads.
    Pause,
    /// Its network cut (from the other nodes and every client), then mended.
    Partition,
}

/// A cluster in network namespaces where this machine allows them (root), else on loopback,
/// with the faults that can be done there.
async fn cluster() -> (Cluster, Vec<Fault>) {
    if Namespaces::available() {
        let cluster = Cluster::start_in(Namespaces::new(3), 2000).await;
        (cluster, vec![Fault::Kill, Fault::Pause, Fault::Partition])
    } else {
        eprintln!("no network namespaces here (they need root): this run leaves out the partition");
        (Cluster::start(2000).await, vec![Fault::Kill, Fault::Pause])
    }
}

/// A cluster (see [`cluster`]) whose nodes agree, with the workload's topic; its faults and the
/// bootstrap list of its three nodes.
async fn prepared() -> (Cluster, Vec<Fault>, String) {
    let (cluster, faults) = cluster().await;
    cluster.agreed(&[1, 2, 3]).await;
    topic(&cluster).await;
    let bootstrap: String = (1..=3)
        .map(|id| cluster.bootstrap(id))
        .collect::<Vec<_>>()
        .join(",");
    (cluster, faults, bootstrap)
}

/// Waits for the writers to end: their last deliveries end within their message timeout.
async fn joined(writers: Vec<tokio::task::JoinHandle<()>>) {
    for task in writers {
        tokio::time::timeout(Duration::from_secs(150), task)
            .await
            .expect("the writers end")
            .unwrap();
    }
}

/// Creates the workload's topic, three replicas, min.insync.replicas 2, every ISR whole.
async fn topic(cluster: &Cluster) {
    create_with(
        &cluster.bootstrap(1),
        TOPIC,
        PARTITIONS,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await
    .unwrap();
    whole(cluster, &[1, 2, 3]).await;
}

/// Waits until nodes `ids` agree that every partition of the topic has all three replicas in
/// sync.
async fn whole(cluster: &Cluster, ids: &[i32]) {
    cluster
        .placed(ids, TOPIC, |p| {
            p.len() == PARTITIONS as usize && p.iter().all(|p| p.isr.len() == 3)
        })
        .await;
}

/// Applies `fault` to node `victim`, waits until the other nodes have fenced it (it leads
/// nothing and is in no ISR) and `progress` says the workload went on (within `within`), then
/// heals it and waits until every ISR is whole again.
async fn nemesis(
    cluster: &mut Cluster,
    (fault, victim): (Fault, i32),
    within: Duration,
    progress: impl Fn() -> usize,
) {
    eprintln!("nemesis: {fault:?} node {victim}");
    let others: Vec<i32> = (1..=3).filter(|id| *id != victim).collect();
    match fault {
        Fault::Kill => cluster.kill(victim),
        Fault::Pause => cluster.signal(victim, "STOP"),
        Fault::Partition => cluster.cut(victim, true),
    }
    cluster
        .placed(&others, TOPIC, |p| {
            p.iter()
                .all(|p| p.leader != victim && !p.isr.contains(&victim))
        })
        .await;
    let before = progress();
    eventually(
        &format!("{PROGRESS} more acknowledged without node {victim}"),
        within,
        || async { (progress() >= before + PROGRESS).then_some(()) },
    )
    .await;
    match fault {
        Fault::Kill => cluster.start_node(victim).await,
        Fault::Pause => cluster.signal(victim, "CONT"),
        Fault::Partition => cluster.cut(victim, false),
    }
    whole(cluster, &[1, 2, 3]).await;
}

/// The leader of partition `index`, as node `at` sees it.
async fn leader(cluster: &Cluster, at: i32, index: usize) -> i32 {
    let placements = cluster
        .placements(at, TOPIC)
        .await
        .expect("a metadata answer");
    placements[index].leader
}

/// An idempotent `acks=all` producer writing `w{writer}-{seq}` (keyed by seq, so spread over
/// the partitions) until `stop`, at most 10 records in flight, recording every outcome.
fn writer(
    bootstrap: String,
    writer: usize,
    writes: Writes,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let producer: FutureProducer = client_config(
            &bootstrap,
            &[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("message.timeout.ms", "120000"),
                ("request.timeout.ms", "5000"),
                ("linger.ms", "1"),
            ],
        )
        .create()
        .unwrap();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(10));
        let mut pace = tokio::time::interval(Duration::from_millis(4));
        let mut seq = 0u64;
        while !stop.load(Ordering::SeqCst) {
            pace.tick().await;
            let permit = in_flight.clone().acquire_owned().await.unwrap();
            let value = format!("w{writer}-{seq:06}");
            let key = seq.to_string();
            seq += 1;
            let delivery =
                match producer.send_result(FutureRecord::to(TOPIC).payload(&value).key(&key)) {
                    Ok(delivery) => delivery,
                    Err((e, _)) => panic!(
                        "writer {writer}: {e}; fatal: {:?}",
                        producer.client().fatal_error()
                    ),
                };
            let writes = writes.clone();
            tokio::spawn(async move {
                let outcome = match delivery.await {
                    Ok(Ok(d)) => Ok((d.partition, d.offset)),
                    Ok(Err((e, _))) => Err(e.to_string()),
                    Err(_) => Err("the producer went away".into()),
                };
                writes.lock().unwrap().insert(value, outcome);
                drop(permit);
            });
        }
        // Every delivery ends (acknowledged or failed) before the producer is dropped.
        let _ = in_flight.acquire_many(10).await.unwrap();
        tokio::task::block_in_place(|| producer.flush(Duration::from_secs(130))).unwrap();
    })
}

/// What the live reader saw: each record at `(partition, offset)`, and per partition the
/// offset of its last commit that succeeded.
#[derive(Default)]
struct Reads {
    records: Vec<(i32, i64, String)>,
    committed: BTreeMap<i32, i64>,
}

/// A `read_committed` consumer of group `jepsen-readers` reading the topic until `stop`,
/// committing its position (synchronously) every 50 records.
fn reader(
    bootstrap: String,
    reads: Arc<Mutex<Reads>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let consumer: StreamConsumer = client_config(
            &bootstrap,
            &[
                ("group.id", "jepsen-readers"),
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "earliest"),
                ("isolation.level", "read_committed"),
            ],
        )
        .create()
        .unwrap();
        consumer.subscribe(&[TOPIC]).unwrap();
        let mut since_commit = 0;
        while !stop.load(Ordering::SeqCst) {
            let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await
            else {
                continue;
            };
            let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            reads
                .lock()
                .unwrap()
                .records
                .push((m.partition(), m.offset(), value));
            since_commit += 1;
            if since_commit >= 50 {
                since_commit = 0;
                commit(&consumer, &reads);
            }
        }
    })
}

/// Commits `consumer`'s position; once the commit succeeded, records it.
fn commit(consumer: &StreamConsumer, reads: &Mutex<Reads>) {
    let Ok(position) = consumer.position() else {
        return;
    };
    let done = tokio::task::block_in_place(|| {
        consumer.commit(&position, rdkafka::consumer::CommitMode::Sync)
    });
    if done.is_ok() {
        let mut reads = reads.lock().unwrap();
        for e in position.elements() {
            if let Offset::Offset(o) = e.offset() {
                reads.committed.insert(e.partition(), o);
            }
        }
    }
}

/// Every record of the topic, read `read_committed` from the start to the end of each
/// partition: `(partition, offset) -> value`.
async fn final_log(bootstrap: &str) -> BTreeMap<(i32, i64), String> {
    use rdkafka::error::KafkaError;
    let consumer: StreamConsumer = client_config(
        bootstrap,
        &[
            ("group.id", "jepsen-checker"),
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "true"),
        ],
    )
    .create()
    .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut ended = BTreeSet::new();
    let mut log = BTreeMap::new();
    while ended.len() < PARTITIONS as usize {
        match tokio::time::timeout(LONG, consumer.recv())
            .await
            .expect("the end of every partition")
        {
            Ok(m) => {
                let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                log.insert((m.partition(), m.offset()), value);
                ended.remove(&m.partition());
            }
            Err(KafkaError::PartitionEOF(p)) => {
                ended.insert(p);
            }
            Err(e) => panic!("{e}"),
        }
    }
    log
}

/// The group's committed offset of each partition, as a new member would start from it.
async fn committed_offsets(bootstrap: &str, group: &str) -> BTreeMap<i32, i64> {
    let consumer: StreamConsumer = client_config(bootstrap, &[("group.id", group)])
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        partitions.add_partition(TOPIC, p);
    }
    let committed = tokio::task::block_in_place(|| {
        consumer.committed_offsets(partitions, Duration::from_secs(20))
    })
    .unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// The history's checks for plain (idempotent) writes; see the module's comment.
fn check_writes(
    writes: &BTreeMap<String, Result<(i32, i64), String>>,
    reads: &Reads,
    log: &BTreeMap<(i32, i64), String>,
) {
    let failed: Vec<_> = writes.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "writes failed: {failed:?}");
    for (value, outcome) in writes {
        let at = outcome.clone().unwrap();
        assert_eq!(
            log.get(&at),
            Some(value),
            "{value} was acknowledged at {at:?}"
        );
    }
    let mut seen = BTreeSet::new();
    let mut last: BTreeMap<(i32, &str), &str> = BTreeMap::new();
    for ((partition, _), value) in log {
        assert!(seen.insert(value), "{value} is in the log twice");
        assert!(writes.contains_key(value), "{value} was never written");
        let (writer, seq) = value.split_once('-').unwrap();
        if let Some(before) = last.insert((*partition, writer), seq) {
            assert!(
                before < seq,
                "{writer}: {before} before {seq} in {partition}"
            );
        }
    }
    for (partition, offset, value) in &reads.records {
        assert_eq!(
            log.get(&(*partition, *offset)),
            Some(value),
            "read {value} at {partition}@{offset}, which the log does not hold"
        );
    }
}

/// Idempotent `acks=all` writers and a `read_committed` consumer group run through a leader
/// SIGKILLed, a leader paused past its session and a node cut off the network (where this
/// machine allows network namespaces); see the module's comment for what is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_through_kills_pauses_and_partitions() {
    let (mut cluster, faults, bootstrap) = prepared().await;
    let writes: Writes = Arc::default();
    let reads: Arc<Mutex<Reads>> = Arc::default();
    let (stop_writing, stop_reading) = (Arc::default(), Arc::new(AtomicBool::new(false)));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            writer(
                bootstrap.clone(),
                w,
                writes.clone(),
                Arc::clone(&stop_writing),
            )
        })
        .collect();
    let reader = reader(bootstrap.clone(), reads.clone(), stop_reading.clone());
    let acknowledged = || {
        let writes = writes.lock().unwrap();
        writes.values().filter(|r| r.is_ok()).count()
    };
    for (i, fault) in faults.iter().enumerate() {
        let victim = leader(&cluster, 1, i % PARTITIONS as usize).await;
        // A write in flight to a paused leader holds its partition until the request times
        // out (5 s) and the producer learns the new leader: on a busy two-core machine, after
        // a controller change too, the first writes after a fault took longer than 30 s once.
        nemesis(&mut cluster, (*fault, victim), 2 * LONG, acknowledged).await;
    }
    stop_writing.store(true, Ordering::SeqCst);
    joined(writers).await;
    // The group got over every fault: it reads on until it has read every acknowledged record.
    let acked: BTreeSet<String> = {
        let writes = writes.lock().unwrap();
        let acked = writes.iter().filter(|(_, r)| r.is_ok());
        acked.map(|(v, _)| v.clone()).collect()
    };
    eventually("the group read every acknowledged record", LONG, || async {
        let reads = reads.lock().unwrap();
        let read: BTreeSet<&String> = reads.records.iter().map(|(_, _, v)| v).collect();
        acked.iter().all(|v| read.contains(v)).then_some(())
    })
    .await;
    stop_reading.store(true, Ordering::SeqCst);
    tokio::time::timeout(LONG, reader)
        .await
        .expect("the reader ends")
        .unwrap();
    let log = final_log(&bootstrap).await;
    let writes = writes.lock().unwrap().clone();
    let reads = std::mem::take(&mut *reads.lock().unwrap());
    eprintln!(
        "{} written, {} read live, {} in the log",
        writes.len(),
        reads.records.len(),
        log.len()
    );
    check_writes(&writes, &reads, &log);
    let committed = committed_offsets(&bootstrap, "jepsen-readers").await;
    for (partition, offset) in &reads.committed {
        let now = committed.get(partition).copied().unwrap_or(-1);
        assert!(
            now >= *offset,
            "partition {partition}: committed {offset}, now {now}"
        );
    }
}

/// How a transaction ended, as its producer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Committed,
    Aborted,
    /// Its commit failed in flight: committed or aborted, the producer cannot tell.
    Unknown,
}

/// The records of transaction `n` of transactional writer `w`: one per partition and one more.
fn txn_values(w: usize, n: u64) -> Vec<(i32, String)> {
    (0..4)
        .map(|i| (i % PARTITIONS, format!("t{w}-{n:05}-{i}")))
        .collect()
}

/// A transactional producer (`transactional.id` `tw-{w}`) writing transactions of four records
/// over the partitions until `stop`, every fourth one aborted on purpose; each transaction's
/// end is recorded. A producer that fails beyond an abort is replaced by a new instance with
/// the same transactional id, as a restarted service would be.
fn txn_writer(
    bootstrap: String,
    w: usize,
    ended: Arc<Mutex<BTreeMap<(usize, u64), Ended>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(30);
        let start = || {
            let producer: FutureProducer = client_config(
                &bootstrap,
                &[
                    ("transactional.id", &format!("tw-{w}")),
                    ("transaction.timeout.ms", "20000"),
                    ("request.timeout.ms", "5000"),
                ],
            )
            .create()
            .unwrap();
            // A new instance waits while the coordinator moves.
            while let Err(e) = producer.init_transactions(timeout) {
                assert!(!e.to_string().contains("Fatal"), "init: {e}");
            }
            producer
        };
        let mut producer = start();
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let end = one_transaction(&runtime, &producer, (w, n));
            if end == Ended::Unknown {
                // Ended or not, a new instance aborts whatever is left open.
                producer = start();
            }
            ended.lock().unwrap().insert((w, n), end);
            n += 1;
        }
    })
}

/// Sets its flag when dropped (on a panic too).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Transaction `n` of writer `w`: begun, written, and committed or (every fourth) aborted.
fn one_transaction(
    runtime: &tokio::runtime::Handle,
    producer: &FutureProducer,
    (w, n): (usize, u64),
) -> Ended {
    let timeout = Duration::from_secs(30);
    if producer.begin_transaction().is_err() {
        return Ended::Unknown;
    }
    let mut written = true;
    for (partition, value) in txn_values(w, n) {
        let record = FutureRecord::to(TOPIC)
            .payload(&value)
            .key(&value)
            .partition(partition);
        written &= runtime.block_on(producer.send(record, timeout)).is_ok();
    }
    if written && n % 4 != 3 {
        if producer.commit_transaction(timeout).is_ok() {
            return Ended::Committed;
        }
        return Ended::Unknown;
    }
    match producer.abort_transaction(timeout) {
        Ok(()) => Ended::Aborted,
        Err(_) => Ended::Unknown,
    }
}

/// The history's checks for transactions: each committed transaction whole and once, each
/// aborted one absent, each undecided one whole or absent, and each writer's transactions in
/// order in every partition.
fn check_transactions(ended: &BTreeMap<(usize, u64), Ended>, log: &BTreeMap<(i32, i64), String>) {
    let mut seen: BTreeMap<&str, (i32, i64)> = BTreeMap::new();
    let mut last: BTreeMap<(i32, &str), &str> = BTreeMap::new();
    for ((partition, offset), value) in log {
        assert!(
            seen.insert(value, (*partition, *offset)).is_none(),
            "{value} is in the log twice"
        );
        let (writer, rest) = value.split_once('-').unwrap();
        let n = &rest[..5];
        if let Some(before) = last.insert((*partition, writer), n) {
            assert!(before <= n, "{writer}: {before} before {n} in {partition}");
        }
    }
    for (&(w, n), end) in ended {
        let values = txn_values(w, n);
        let present: Vec<&(i32, String)> = values
            .iter()
            .filter(|(p, v)| seen.get(v.as_str()).is_some_and(|(at, _)| at == p))
            .collect();
        let whole = present.len() == values.len();
        match end {
            Ended::Committed => assert!(whole, "t{w}-{n} committed, found {present:?}"),
            Ended::Aborted => assert!(present.is_empty(), "t{w}-{n} aborted, found {present:?}"),
            Ended::Unknown => assert!(
                whole || present.is_empty(),
                "t{w}-{n} undecided, found part of it: {present:?}"
            ),
        }
    }
}

/// Transactional writers run through the loss of a transaction coordinator (SIGKILLed), a
/// leader paused past its session and a node cut off the network: every transaction is all or
/// nothing to a `read_committed` reader, nothing is written twice, and each writer's
/// transactions keep their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_stay_all_or_nothing_through_kills_pauses_and_partitions() {
    let (mut cluster, faults, bootstrap) = prepared().await;
    let ended: Arc<Mutex<BTreeMap<(usize, u64), Ended>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // The writers are blocking threads, which the runtime waits for as it shuts down: a failed
    // assertion stops them, so the test fails at once instead of hanging.
    let _stop_on_failure = StopOnDrop(stop.clone());
    let writers: Vec<_> = (0..2)
        .map(|w| txn_writer(bootstrap.clone(), w, ended.clone(), stop.clone()))
        .collect();
    let committed = || {
        let ended = ended.lock().unwrap();
        // Records, as the nemesis counts progress: four per committed transaction.
        4 * ended.values().filter(|e| **e == Ended::Committed).count() / 2
    };
    let coordinator = txn_coordinator(&cluster, 1, "tw-0", -1).await;
    for (i, fault) in faults.iter().enumerate() {
        let victim = match fault {
            Fault::Kill => coordinator,
            _ => leader(&cluster, 1, i % PARTITIONS as usize).await,
        };
        // A transactional producer whose coordinator vanished waits out its request timeout,
        // finds the new coordinator, and may have to start a new instance: slower to resume
        // than plain writes, and slower still on a busy machine.
        nemesis(&mut cluster, (*fault, victim), 2 * LONG, committed).await;
    }
    stop.store(true, Ordering::SeqCst);
    joined(writers).await;
    let log = final_log(&bootstrap).await;
    let ended = ended.lock().unwrap().clone();
    let count = |e: Ended| ended.values().filter(|x| **x == e).count();
    eprintln!(
        "{} transactions: {} committed, {} aborted, {} undecided; {} records in the log",
        ended.len(),
        count(Ended::Committed),
        count(Ended::Aborted),
        count(Ended::Unknown),
        log.len()
    );
    check_transactions(&ended, &log);
}
