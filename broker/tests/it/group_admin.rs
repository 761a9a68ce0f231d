//! DeleteGroups (rdkafka's AdminClient) and OffsetDelete (no rdkafka API: a raw request):
//! only groups without members are deleted, with their offsets; offsets of a topic a group's
//! members subscribe to are kept.

use crate::common;

use std::time::Duration;

use common::raw::RawClient;
use common::{LONG, TestBroker, client_config, consumer, create_topic, producer, recv_n};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{GroupId, OffsetDeleteRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    client_config(bootstrap, &[]).create().unwrap()
}

async fn delete_group(bootstrap: &str, group: &str) -> Result<(), RDKafkaErrorCode> {
    let results = admin(bootstrap)
        .delete_groups(&[group], &AdminOptions::new())
        .await
        .unwrap();
    results[0].clone().map(|_| ()).map_err(|(_, e)| e)
}

fn committed(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    let c: StreamConsumer = client_config(bootstrap, &[("group.id", group)])
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got =
        tokio::task::block_in_place(|| c.committed_offsets(tpl, Duration::from_secs(10))).unwrap();
    match got.find_partition(topic, 0).unwrap().offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

fn commit(c: &StreamConsumer, topic: &str, offset: i64) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync).unwrap();
}

async fn fill(bootstrap: &str, topic: &str) {
    create_topic(bootstrap, topic, 1, &[]).await;
    let p = producer(bootstrap, &[]);
    p.send(
        FutureRecord::<(), _>::to(topic).payload("x"),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_groups_without_members_are_deleted_with_their_offsets() {
    let mut b = TestBroker::start().await;
    fill(&b.bootstrap, "work").await;
    {
        let c = consumer(&b.bootstrap, "finished", &[]);
        c.subscribe(&["work"]).unwrap();
        recv_n(&c, 1, LONG).await;
        commit(&c, "work", 1);
    } // closed: it left the group
    let busy = consumer(&b.bootstrap, "busy", &[]);
    busy.subscribe(&["work"]).unwrap();
    recv_n(&busy, 1, LONG).await;
    commit(&busy, "work", 1);

    assert_eq!(committed(&b.bootstrap, "finished", "work"), Some(1));
    assert_eq!(
        delete_group(&b.bootstrap, "busy").await,
        Err(RDKafkaErrorCode::NonEmptyGroup)
    );
    assert_eq!(delete_group(&b.bootstrap, "finished").await, Ok(()));
    assert_eq!(committed(&b.bootstrap, "finished", "work"), None);
    assert_eq!(
        delete_group(&b.bootstrap, "finished").await,
        Err(RDKafkaErrorCode::GroupIdNotFound),
        "already gone"
    );
    assert_eq!(
        committed(&b.bootstrap, "busy", "work"),
        Some(1),
        "untouched"
    );
    // Deletion is durable.
    drop(busy);
    b.restart().await;
    assert_eq!(committed(&b.bootstrap, "finished", "work"), None);
    assert_eq!(committed(&b.bootstrap, "busy", "work"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_delete_keeps_the_offsets_of_subscribed_topics() {
    let b = TestBroker::start().await;
    fill(&b.bootstrap, "subscribed").await;
    fill(&b.bootstrap, "former").await;
    let c = consumer(&b.bootstrap, "deleter", &[]);
    c.subscribe(&["subscribed"]).unwrap();
    recv_n(&c, 1, LONG).await;
    commit(&c, "subscribed", 1);
    commit(&c, "former", 1);

    let mut raw = RawClient::connect(&b.bootstrap).await;
    let request = |group: &str| {
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_topics(
                ["subscribed", "former", "nonexistent"]
                    .into_iter()
                    .map(|t| {
                        OffsetDeleteRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_static_str(t)))
                            .with_partitions(vec![
                                OffsetDeleteRequestPartition::default().with_partition_index(0),
                            ])
                    })
                    .collect(),
            )
    };
    let response = raw.call(&request("deleter"), 0).await;
    assert_eq!(response.error_code, 0);
    let codes: Vec<i16> = response
        .topics
        .iter()
        .map(|t| t.partitions[0].error_code)
        .collect();
    // GROUP_SUBSCRIBED_TO_TOPIC, deleted, UNKNOWN_TOPIC_OR_PARTITION
    assert_eq!(codes, [86, 0, 3]);
    assert_eq!(committed(&b.bootstrap, "deleter", "subscribed"), Some(1));
    assert_eq!(committed(&b.bootstrap, "deleter", "former"), None);
    let response = raw.call(&request("nobody"), 0).await;
    assert_eq!(response.error_code, 69, "GROUP_ID_NOT_FOUND");
}
