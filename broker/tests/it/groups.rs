//! Consumer groups over TCP with rdkafka: assignment, rebalancing on leave and on session
//! expiry, independent groups, and committed offsets across consumer and broker restarts.

use crate::common;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    BrokerProcess, LONG, Received, TestBroker, consumer, eventually, owned, producer, recv_n,
};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    GroupId, JoinGroupRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;

async fn produce_keyed(bootstrap: &str, topic: &str, range: std::ops::Range<usize>) {
    let p = producer(bootstrap, &[]);
    let sends: Vec<_> = range
        .map(|i| {
            let key = format!("k{i}");
            p.send_result(FutureRecord::to(topic).key(&key).payload(&format!("v{i}")))
                .unwrap()
        })
        .collect();
    for s in sends {
        s.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// A group member that records what it receives and commits after each record.
struct Member {
    consumer: Arc<StreamConsumer>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_member(
    bootstrap: &str,
    group: &str,
    topic: &str,
    seen: Arc<Mutex<Vec<Received>>>,
) -> Member {
    let c = Arc::new(consumer(bootstrap, group, &[]));
    c.subscribe(&[topic]).unwrap();
    let consumer = c.clone();
    let task = tokio::spawn(async move {
        loop {
            match c.recv().await {
                Ok(m) => {
                    seen.lock().unwrap().push(owned(&m));
                    c.commit_message(&m, CommitMode::Async).unwrap();
                }
                Err(e) => eprintln!("consumer error: {e}"),
            }
        }
    });
    Member { consumer, task }
}

fn assigned(c: &StreamConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

fn values(seen: &Mutex<Vec<Received>>) -> HashSet<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_split_six_partitions_and_survivors_take_over() {
    let b = TestBroker::start().await;
    common::create_topic(&b.bootstrap, "six", 6, &[]).await;
    produce_keyed(&b.bootstrap, "six", 0..300).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let members: Vec<Member> = (0..3)
        .map(|_| spawn_member(&b.bootstrap, "trio", "six", seen.clone()))
        .collect();

    // Disjoint assignments that cover all six partitions, two each.
    eventually("three members own two partitions each", LONG, || {
        let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| assigned(&m.consumer)).collect();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let ok = union == (0..6).collect() && total == 6 && sets.iter().all(|s| s.len() == 2);
        async move { ok.then_some(()) }
    })
    .await;
    eventually("first 300 records consumed", LONG, || {
        let n = values(&seen).len();
        async move { (n == 300).then_some(()) }
    })
    .await;

    // One member leaves (LeaveGroup on close); the other two take over its partitions.
    let mut members = members;
    let leaving = members.remove(0);
    leaving.task.abort();
    let _ = leaving.task.await;
    let leaving = Arc::try_unwrap(leaving.consumer)
        .ok()
        .expect("task held the only other reference");
    leaving.unsubscribe();
    drop(leaving);
    eventually("two members cover all six partitions", LONG, || {
        let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| assigned(&m.consumer)).collect();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let ok = union == (0..6).collect() && total == 6;
        async move { ok.then_some(()) }
    })
    .await;

    // Nothing is lost: everything produced after the leave arrives too.
    produce_keyed(&b.bootstrap, "six", 300..600).await;
    eventually("all 600 records consumed", LONG, || {
        let n = values(&seen).len();
        async move { (n == 600).then_some(()) }
    })
    .await;
    for m in members {
        m.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_read_one_topic_independently() {
    let b = TestBroker::start().await;
    produce_keyed(&b.bootstrap, "shared", 0..50).await;
    let a = consumer(&b.bootstrap, "group-a", &[]);
    let c = consumer(&b.bootstrap, "group-b", &[]);
    a.subscribe(&["shared"]).unwrap();
    c.subscribe(&["shared"]).unwrap();
    let from_a = recv_n(&a, 50, LONG).await;
    let from_b = recv_n(&c, 50, LONG).await;
    let offsets = |rs: &[Received]| rs.iter().map(|r| r.offset).collect::<Vec<_>>();
    assert_eq!(offsets(&from_a), (0..50).collect::<Vec<_>>());
    assert_eq!(offsets(&from_b), (0..50).collect::<Vec<_>>());
    // Group a commits halfway; group b's position is untouched by it.
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("shared", 0, rdkafka::Offset::Offset(25))
        .unwrap();
    a.commit(&tpl, CommitMode::Sync).unwrap();
    let b_committed = c.committed(Duration::from_secs(10)).unwrap();
    let b_offset = b_committed.find_partition("shared", 0).unwrap().offset();
    assert_eq!(
        b_offset,
        rdkafka::Offset::Invalid,
        "group b has committed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_consumer_restart_and_broker_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path()).await;
    let bootstrap = broker.bootstrap.clone();
    produce_keyed(&bootstrap, "durable", 0..10).await;
    {
        let c = consumer(&bootstrap, "resumer", &[]);
        c.subscribe(&["durable"]).unwrap();
        let got = recv_n(&c, 10, LONG).await;
        c.commit_message_offsets(&got[9]);
    }
    // A new consumer of the same group resumes after the commit.
    produce_keyed(&bootstrap, "durable", 10..15).await;
    {
        let c = consumer(&bootstrap, "resumer", &[]);
        c.subscribe(&["durable"]).unwrap();
        let got = recv_n(&c, 5, LONG).await;
        assert_eq!(
            got[0].offset, 10,
            "resumes at the committed offset after a consumer restart"
        );
        c.commit_message_offsets(&got[4]);
    }
    // SIGKILL: no shutdown hook runs.
    broker.kill();
    produce_nothing_while_down(&bootstrap).await;
    broker.restart().await;
    produce_keyed(&bootstrap, "durable", 15..18).await;
    let c = consumer(&bootstrap, "resumer", &[]);
    c.subscribe(&["durable"]).unwrap();
    let got = recv_n(&c, 3, LONG).await;
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![15, 16, 17],
        "resumes at the committed offset after the broker was killed"
    );
}

async fn produce_nothing_while_down(bootstrap: &str) {
    let port: u16 = bootstrap.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the killed broker is really gone"
    );
}

trait CommitOne {
    fn commit_message_offsets(&self, r: &Received);
}
impl CommitOne for StreamConsumer {
    fn commit_message_offsets(&self, r: &Received) {
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&r.topic, r.partition, rdkafka::Offset::Offset(r.offset + 1))
            .unwrap();
        self.commit(&tpl, CommitMode::Sync).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_member_is_expelled_after_its_session_timeout() {
    let b = TestBroker::start().await;
    common::create_topic(&b.bootstrap, "quiet", 2, &[]).await;
    // A raw member joins with a 2 s session and then never heartbeats.
    let mut raw = common::raw::RawClient::connect(&b.bootstrap).await;
    let join = |member: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("silent")))
            .with_session_timeout_ms(2000)
            .with_rebalance_timeout_ms(2000)
            .with_member_id(StrBytes::from_string(member.into()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(bytes::Bytes::from_static(&[
                        0, 0, 0, 0, 0, 1, 0, 5, b'q', b'u', b'i', b'e', b't', 0, 0, 0, 0,
                    ])),
            ])
    };
    let first = raw.call(&join(""), 5).await;
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED hands out an id");
    let joined = raw.call(&join(first.member_id.as_str()), 5).await;
    assert_eq!(joined.error_code, 0);
    let synced = raw
        .call(
            &SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("silent")))
                .with_generation_id(joined.generation_id)
                .with_member_id(joined.member_id.clone()),
            3,
        )
        .await;
    assert_eq!(synced.error_code, 0);

    let c = consumer(&b.bootstrap, "silent", &[]);
    c.subscribe(&["quiet"]).unwrap();
    let c = Arc::new(c);
    let poller = {
        let c = c.clone();
        tokio::spawn(async move {
            loop {
                let _ = c.recv().await;
            }
        })
    };
    eventually("the live member owns both partitions", LONG, || {
        let owned = assigned(&c);
        async move { (owned == BTreeSet::from([0, 1])).then_some(()) }
    })
    .await;
    let description = b.state().groups.describe("silent").unwrap();
    assert_eq!(
        description.members.len(),
        1,
        "the silent member was removed"
    );
    assert_ne!(description.members[0].member_id, joined.member_id.as_str());
    poller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_for_unknown_topics_or_partitions_are_refused_and_the_rest_committed() {
    let mut b = TestBroker::start().await;
    common::create_topic(&b.bootstrap, "real", 2, &[]).await;
    let topic = |name: &'static str, partitions: &[(i32, i64)]| {
        OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(o)
                    })
                    .collect(),
            )
    };
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("careful")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            topic("real", &[(0, 7), (2, 8), (1, 9)]),
            topic("imaginary", &[(0, 10)]),
        ]);
    let mut raw = common::raw::RawClient::connect(&b.bootstrap).await;
    let response = raw.call(&commit, 8).await;
    let codes: Vec<(&str, i32, i16)> = response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.as_str(), p.partition_index, p.error_code))
        })
        .collect();
    // UNKNOWN_TOPIC_OR_PARTITION is 3.
    assert_eq!(
        codes,
        vec![
            ("real", 0, 0),
            ("real", 2, 3),
            ("real", 1, 0),
            ("imaginary", 0, 3)
        ]
    );
    assert!(
        b.state().topics.get("imaginary").is_none(),
        "a commit creates no topic"
    );

    // What was committed, also after a restart: only the real partitions.
    drop(raw);
    b.restart().await;
    let mut raw = common::raw::RawClient::connect(&b.bootstrap).await;
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("careful")))
        .with_topics(None);
    let fetched = raw.call(&fetch, 7).await;
    let stored: Vec<(&str, i32, i64)> = fetched
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.as_str(), p.partition_index, p.committed_offset))
        })
        .collect();
    let mut stored = stored;
    stored.sort_unstable();
    assert_eq!(stored, vec![("real", 0, 7), ("real", 1, 9)]);
    let asked = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("careful")))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("imaginary")))
                .with_partition_indexes(vec![0]),
        ]));
    let fetched = raw.call(&asked, 7).await;
    assert_eq!(fetched.topics[0].partitions[0].committed_offset, -1);
}
