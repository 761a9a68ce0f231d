//! The known pitfalls of Kafka-compatible brokers: the places where real clients break on a
//! broker that is almost right. Each is pinned by a raw-protocol test: topic ids and leader epochs
//! that change across a restart (clients drop their metadata), a fetch that cuts a batch or names a
//! preferred read replica, OffsetFetch v8 answered in the old top-level fields. The ApiVersions
//! ones (an answer a client cannot parse, a too-new request version) live in `robustness.rs`.

use crate::common;

use common::raw::RawClient;
use common::{TestBroker, one_record_batch};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn name(s: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(s))
}

async fn metadata(
    raw: &mut RawClient,
    topic: &'static str,
) -> metadata_response::MetadataResponseTopic {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic))),
        ]))
        .with_allow_auto_topic_creation(true);
    raw.call(&request, 12).await.topics.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_ids_are_stable_and_leader_epochs_constant_across_restarts() {
    let mut b = TestBroker::start().await;
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let before = metadata(&mut raw, "ids").await;
    assert!(!before.topic_id.is_nil(), "topic ids are never nil");
    assert_eq!(before.partitions[0].leader_epoch, 0);
    drop(raw);
    b.restart().await;
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let after = metadata(&mut raw, "ids").await;
    assert_eq!(after.topic_id, before.topic_id, "the id survives a restart");
    assert_eq!(
        after.partitions[0].leader_epoch, 0,
        "the leader epoch never changes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_returns_the_whole_batch_and_no_preferred_replica() {
    let b = TestBroker::start().await;
    let mut raw = RawClient::connect(&b.bootstrap).await;
    metadata(&mut raw, "batches").await;
    // One batch of 3 records: offsets 0..=2.
    let mut batch = one_record_batch(-1, -1, -1, b"x").to_vec();
    let one = batch.clone();
    // Build a 3-record batch by hand from the one-record layout: reuse the record bytes.
    let record = &one[61..];
    batch.truncate(61);
    for delta in 0..3u8 {
        let mut r = record.to_vec();
        r[3] = delta << 1; // offset delta (zigzag varint)
        batch.extend_from_slice(&r);
    }
    let len = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&len.to_be_bytes());
    batch[23..27].copy_from_slice(&2i32.to_be_bytes()); // last offset delta
    batch[57..61].copy_from_slice(&3i32.to_be_bytes()); // records
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name("batches"))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch.clone().into())),
                ]),
        ]);
    let produced = raw.call(&produce, 9).await;
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);

    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name("batches"))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_fetch_offset(1)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let fetched = raw.call(&fetch, 12).await;
    let p = &fetched.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(
        p.preferred_read_replica,
        BrokerId(-1),
        "Fetch v11+: no preferred replica"
    );
    assert_eq!(p.high_watermark, 3);
    let records = p.records.as_ref().unwrap();
    assert_eq!(
        records.len(),
        batch.len(),
        "the whole batch containing offset 1"
    );
    assert_eq!(
        &records[0..8],
        &0i64.to_be_bytes(),
        "starting at the batch's base offset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_fetch_v8_answers_in_the_groups_array() {
    let b = TestBroker::start().await;
    let mut raw = RawClient::connect(&b.bootstrap).await;
    // Offsets are only stored for partitions that exist.
    metadata(&mut raw, "v8-topic").await;
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("v8-group")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(name("v8-topic"))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(42),
                ]),
        ]);
    let committed = raw.call(&commit, 8).await;
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    let fetch = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(StrBytes::from_static_str("v8-group")))
            .with_topics(Some(vec![
                OffsetFetchRequestTopics::default()
                    .with_name(name("v8-topic"))
                    .with_partition_indexes(vec![0, 1]),
            ])),
    ]);
    let fetched = raw.call(&fetch, 8).await;
    assert!(
        fetched.topics.is_empty(),
        "v8 answers in `groups`, not `topics`"
    );
    let partitions = &fetched.groups[0].topics[0].partitions;
    assert_eq!(partitions[0].committed_offset, 42);
    assert_eq!(partitions[1].committed_offset, -1, "nothing committed");
}
