//! Metadata: the one broker, and every requested topic (auto-created when allowed).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::str_bytes;
use crate::broker::{Broker, NODE_ID};
use crate::server::Advertised;
use crate::storage::log::LEADER_EPOCH;
use crate::topics::{Topic, TopicError, is_valid_topic_name};

use kafka_protocol::messages::ResponseKind;

use super::{Reply, Route};

pub(super) static ROUTES: &[Route] = &[route!(Metadata, 0..=12, disk, |b, r, c| {
    Reply::send(ResponseKind::Metadata(handle(
        b,
        &c.ctx.advertised,
        r,
        c.version,
    )))
})];

/// `advertised` is the address of the listener the client used: the broker answers with the
/// name the client can reach it by.
pub fn handle(
    broker: &Broker,
    advertised: &Advertised,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let brokers = vec![
        MetadataResponseBroker::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(str_bytes(advertised.host.clone()))
            .with_port(advertised.port),
    ];
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested = match request.topics {
        Some(topics) if !(version == 0 && topics.is_empty()) => Some(topics),
        _ => None,
    };
    let auto_create =
        broker.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let topics = match requested {
        None => broker.topics.list().iter().map(|t| describe(t)).collect(),
        Some(requested) => requested
            .into_iter()
            .map(|r| match r.name {
                Some(name) => lookup(broker, name.as_str(), auto_create),
                None => match broker.topics.get_by_id(r.topic_id) {
                    Some(topic) => describe(&topic),
                    None => MetadataResponseTopic::default()
                        // The name is nullable only from v12.
                        .with_name((version < 12).then(|| TopicName(str_bytes(""))))
                        .with_topic_id(r.topic_id)
                        .with_error_code(ResponseError::UnknownTopicId.code()),
                },
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(broker.cluster_id.clone())))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics)
}

fn lookup(broker: &Broker, name: &str, auto_create: bool) -> MetadataResponseTopic {
    let failed = |e: ResponseError| {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(name))))
            .with_error_code(e.code())
    };
    if let Some(topic) = broker.topics.get(name) {
        return describe(&topic);
    }
    if !is_valid_topic_name(name) {
        return failed(ResponseError::InvalidTopicException);
    }
    if !auto_create {
        return failed(ResponseError::UnknownTopicOrPartition);
    }
    match broker.topics.get_or_create(name) {
        Ok(topic) => describe(&topic),
        Err(TopicError::InvalidName(_)) => failed(ResponseError::InvalidTopicException),
        Err(e) => {
            tracing::warn!(topic = name, "auto-create failed: {e}");
            failed(ResponseError::UnknownTopicOrPartition)
        }
    }
}

pub fn describe(topic: &Topic) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(NODE_ID))
                .with_leader_epoch(LEADER_EPOCH)
                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                .with_isr_nodes(vec![BrokerId(NODE_ID)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_partitions(partitions)
}
