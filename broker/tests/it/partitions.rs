//! CreatePartitions and DeleteRecords with rdkafka's AdminClient: a topic grows (never shrinks),
//! keeps its data and its new partition count across a restart, and a consumer group rebalances
//! onto the new partitions; DeleteRecords moves the log start offset, durably.

use crate::common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LONG, TestBroker, consumer, create_topic, eventually, owned, producer, recv_n};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    common::client_config(bootstrap, &[]).create().unwrap()
}

async fn grow(bootstrap: &str, topic: &str, count: usize) -> Result<(), RDKafkaErrorCode> {
    let results = admin(bootstrap)
        .create_partitions(&[NewPartitions::new(topic, count)], &AdminOptions::new())
        .await
        .unwrap();
    results[0].clone().map(|_| ()).map_err(|(_, e)| e)
}

async fn send_to(bootstrap: &str, topic: &str, partition: i32, value: &str) {
    let p = producer(bootstrap, &[]);
    p.send(
        FutureRecord::<(), _>::to(topic)
            .partition(partition)
            .payload(value),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_grows_never_shrinks_and_keeps_its_partitions_across_a_restart() {
    let mut b = TestBroker::start().await;
    create_topic(&b.bootstrap, "growing", 1, &[]).await;
    send_to(&b.bootstrap, "growing", 0, "old").await;
    assert_eq!(
        grow(&b.bootstrap, "growing", 1).await,
        Err(RDKafkaErrorCode::InvalidPartitions),
        "same count"
    );
    assert_eq!(grow(&b.bootstrap, "growing", 3).await, Ok(()));
    assert_eq!(
        grow(&b.bootstrap, "growing", 2).await,
        Err(RDKafkaErrorCode::InvalidPartitions),
        "shrinking"
    );
    assert_eq!(
        grow(&b.bootstrap, "missing", 2).await,
        Err(RDKafkaErrorCode::UnknownTopicOrPartition)
    );
    assert_eq!(b.state().topics.get("growing").unwrap().partitions.len(), 3);
    send_to(&b.bootstrap, "growing", 2, "new").await;
    b.restart().await;
    assert_eq!(b.state().topics.get("growing").unwrap().partitions.len(), 3);
    let c = consumer(&b.bootstrap, "reader", &[]);
    c.subscribe(&["growing"]).unwrap();
    let mut got: Vec<(i32, String)> = recv_n(&c, 2, LONG)
        .await
        .into_iter()
        .map(|r| (r.partition, String::from_utf8(r.value.unwrap()).unwrap()))
        .collect();
    got.sort();
    assert_eq!(got, [(0, "old".to_string()), (2, "new".to_string())]);
}

/// A consumer that keeps polling (rebalances happen inside poll) and records what it reads.
fn member(bootstrap: &str, seen: Arc<Mutex<Vec<(i32, String)>>>) -> Arc<StreamConsumer> {
    let c = Arc::new(consumer(bootstrap, "growers", &[]));
    c.subscribe(&["elastic"]).unwrap();
    let polled = c.clone();
    tokio::spawn(async move {
        while let Ok(m) = polled.recv().await {
            let r = owned(&m);
            seen.lock()
                .unwrap()
                .push((r.partition, String::from_utf8(r.value.unwrap()).unwrap()));
        }
    });
    c
}

fn assigned(c: &StreamConsumer) -> BTreeSet<i32> {
    c.assignment()
        .unwrap()
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_rebalances_onto_new_partitions() {
    let b = TestBroker::start().await;
    create_topic(&b.bootstrap, "elastic", 1, &[]).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let one = member(&b.bootstrap, seen.clone());
    let two = member(&b.bootstrap, seen.clone());
    // One partition, two members: one of them idles.
    eventually("the group shares one partition", LONG, || {
        let (a, b) = (assigned(&one), assigned(&two));
        async move { (a.len() + b.len() == 1).then_some(()) }
    })
    .await;

    grow(&b.bootstrap, "elastic", 2).await.unwrap();
    // The members see the new count in their metadata refresh, rejoin, and each gets one.
    eventually("each member owns one partition", LONG, || {
        let (a, b) = (assigned(&one), assigned(&two));
        async move { (a.len() == 1 && b.len() == 1 && a.union(&b).count() == 2).then_some(()) }
    })
    .await;
    send_to(&b.bootstrap, "elastic", 1, "on-the-new-one").await;
    eventually("the new partition is consumed", LONG, || {
        let got = seen.lock().unwrap().clone();
        async move {
            got.contains(&(1, "on-the-new-one".to_string()))
                .then_some(())
        }
    })
    .await;
}

/// DeleteRecords of partition 0 before `offset`: the new low watermark, or the error.
async fn delete_before(bootstrap: &str, topic: &str, offset: Offset) -> Result<i64, String> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, offset).unwrap();
    let result = admin(bootstrap)
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .map_err(|e| e.to_string())?;
    let p = result.find_partition(topic, 0).unwrap();
    p.error().map_err(|e| e.to_string())?;
    match p.offset() {
        Offset::Offset(o) => Ok(o),
        other => Err(format!("{other:?}")),
    }
}

fn low_watermark(bootstrap: &str, topic: &str) -> i64 {
    let c: StreamConsumer = common::client_config(bootstrap, &[]).create().unwrap();
    tokio::task::block_in_place(|| c.fetch_watermarks(topic, 0, Duration::from_secs(10)))
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_log_start_durably() {
    let mut b = TestBroker::start().await;
    create_topic(&b.bootstrap, "trimmed", 1, &[]).await;
    for i in 0..10 {
        send_to(&b.bootstrap, "trimmed", 0, &format!("r{i}")).await;
    }
    assert_eq!(
        delete_before(&b.bootstrap, "trimmed", Offset::Offset(4)).await,
        Ok(4)
    );
    assert_eq!(low_watermark(&b.bootstrap, "trimmed"), 4);
    assert!(
        delete_before(&b.bootstrap, "trimmed", Offset::Offset(11))
            .await
            .is_err(),
        "beyond the high watermark"
    );
    assert_eq!(
        delete_before(&b.bootstrap, "trimmed", Offset::Offset(2)).await,
        Ok(4),
        "never moves back"
    );
    let c = consumer(&b.bootstrap, "after-trim", &[]);
    c.subscribe(&["trimmed"]).unwrap();
    let got = recv_n(&c, 6, LONG).await;
    assert_eq!(got[0].offset, 4);
    drop(c);

    b.restart().await;
    assert_eq!(
        low_watermark(&b.bootstrap, "trimmed"),
        4,
        "survives a restart"
    );
    assert_eq!(
        delete_before(&b.bootstrap, "trimmed", Offset::End).await,
        Ok(10),
        "everything"
    );
    send_to(&b.bootstrap, "trimmed", 0, "fresh").await;
    let c = consumer(&b.bootstrap, "after-all", &[]);
    c.subscribe(&["trimmed"]).unwrap();
    let got = recv_n(&c, 1, LONG).await;
    assert_eq!(
        (got[0].offset, got[0].value.as_deref()),
        (10, Some(&b"fresh"[..]))
    );
}
