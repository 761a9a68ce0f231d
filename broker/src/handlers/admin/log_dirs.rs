//! DescribeLogDirs: where this node keeps its replicas, one log directory, and each replica's
//! size. `kafka-reassign-partitions` asks every node before it moves replicas, and
//! `kafka-log-dirs` prints it.

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use crate::broker::Broker;
use crate::handlers::route::str_bytes;

pub(super) fn describe_log_dirs(
    broker: &Broker,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let me = broker.node_id();
    let image = broker.quorum.as_ref().map(|q| q.image());
    // In a cluster every node has a log for every partition; its replicas are the ones the
    // metadata names it in.
    let is_replica = |id: uuid::Uuid, index: i32| match &image {
        Some(image) => image
            .partition(id, index)
            .is_some_and(|p| p.replicas.contains(&me)),
        None => true,
    };
    let asked = |name: &str, index: i32| match &request.topics {
        None => true,
        Some(topics) => topics
            .iter()
            .any(|t| t.topic.as_str() == name && t.partitions.contains(&index)),
    };
    let mut topics = Vec::new();
    for topic in broker.topics.list() {
        let partitions: Vec<DescribeLogDirsPartition> = topic
            .partitions
            .iter()
            .filter(|p| is_replica(topic.id, p.index) && asked(&topic.name, p.index))
            .map(|p| {
                DescribeLogDirsPartition::default()
                    .with_partition_index(p.index)
                    .with_partition_size(p.log().size_bytes() as i64)
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(str_bytes(topic.name.clone())))
                    .with_partitions(partitions),
            );
        }
    }
    let dir = broker.config.data_dir.join("topics");
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(-1)
        .with_usable_bytes(-1);
    DescribeLogDirsResponse::default().with_results(vec![result])
}
