//! Metadata: the brokers (the one node, or the live nodes of a cluster), the active
//! controller, and every requested topic (auto-created when allowed); DescribeCluster: the
//! brokers and the controller.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use uuid::Uuid;

use super::route::str_bytes;
use crate::broker::{Broker, NODE_ID};
use crate::cluster;
use crate::config::Advertised;
use crate::metadata::{MetadataImage, NO_LEADER, NodeId, TopicState};
use crate::offset_store::OFFSETS_TOPIC;
use crate::quorum::Quorum;
use crate::storage::log::LEADER_EPOCH;
use crate::topics::{Topic, TopicError, is_valid_topic_name};

use kafka_protocol::messages::ResponseKind;

use super::route::{Reply, Route, route};

pub(super) static ROUTES: &[Route] = &[
    route!(Metadata, 0..=12, disk, |b, r, c| {
        Reply::send(ResponseKind::Metadata(handle(
            b,
            &c.ctx.advertised,
            r,
            c.version,
        )))
    }),
    route!(DescribeCluster, 0..=1, async, |b, r, c| {
        Reply::send(ResponseKind::DescribeCluster(describe_cluster(
            &b,
            &c.ctx.advertised,
            r,
        )))
    }),
];

/// Endpoint type 2 (KIP-919) asks for the controllers, which a single node without KRaft does
/// not have as separate endpoints.
const ENDPOINT_CONTROLLERS: i8 = 2;

/// A broker as clients are told of it.
struct Node {
    id: i32,
    host: String,
    port: i32,
}

/// The brokers clients may use and the active controller (-1 while there is none): a single
/// node is both; in a cluster, the live (registered, unfenced) nodes, this one always, at the
/// address of the listener the client came through.
fn cluster_view(broker: &Broker, advertised: &Advertised) -> (Vec<Node>, i32) {
    let me = Node {
        id: broker.node_id(),
        host: advertised.host.clone(),
        port: advertised.port,
    };
    let Some(quorum) = &broker.quorum else {
        return (vec![me], NODE_ID);
    };
    let image = quorum.image();
    let mut nodes: Vec<Node> = image
        .brokers
        .iter()
        .filter(|(id, b)| !b.fenced && **id != me.id)
        .map(|(id, b)| Node {
            id: *id,
            host: b.host.clone(),
            port: i32::from(b.port),
        })
        .collect();
    nodes.push(me);
    nodes.sort_by_key(|n| n.id);
    (nodes, quorum.controller_id().unwrap_or(-1))
}

/// DescribeCluster (KIP-700): the cluster id, the brokers and the active controller.
pub fn describe_cluster(
    broker: &Broker,
    advertised: &Advertised,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let (nodes, controller) = cluster_view(broker, advertised);
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(str_bytes(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(controller))
        .with_cluster_authorized_operations(i32::MIN);
    if request.endpoint_type == ENDPOINT_CONTROLLERS {
        return response
            .with_controller_id(BrokerId(-1))
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes("this broker has no controller endpoints")));
    }
    response.with_brokers(
        nodes
            .into_iter()
            .map(|n| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(n.id))
                    .with_host(str_bytes(n.host))
                    .with_port(n.port)
            })
            .collect(),
    )
}

/// `advertised` is the address of the listener the client used: the broker answers with the
/// name the client can reach it by.
pub fn handle(
    broker: &Broker,
    advertised: &Advertised,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let (nodes, controller) = cluster_view(broker, advertised);
    let brokers = nodes
        .into_iter()
        .map(|n| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(n.id))
                .with_host(str_bytes(n.host))
                .with_port(n.port)
        })
        .collect();
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested = match request.topics {
        Some(topics) if !(version == 0 && topics.is_empty()) => Some(topics),
        _ => None,
    };
    let auto_create =
        broker.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    // Automatic creation makes each topic with the default partition count, and one request no
    // more partitions in all than a CreateTopics may.
    let mut may_create = if auto_create {
        (broker.config.max_partitions_per_request / broker.topics.default_partitions().max(1))
            .max(1)
    } else {
        0
    };
    if let Some(quorum) = &broker.quorum {
        let topics = replicated_topics(broker, quorum, requested, &mut may_create, version);
        return MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(Some(str_bytes(broker.cluster_id.clone())))
            .with_controller_id(BrokerId(controller))
            .with_topics(topics);
    }
    let topics = match requested {
        None => broker
            .topics
            .list()
            .iter()
            .map(|t| describe(broker, t))
            .collect(),
        Some(requested) => requested
            .into_iter()
            .map(|r| match r.name {
                Some(name) => lookup(broker, name.as_str(), &mut may_create),
                None => match broker.topics.get_by_id(r.topic_id) {
                    Some(topic) => describe(broker, &topic),
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
        .with_controller_id(BrokerId(controller))
        .with_topics(topics)
}

/// A topic's metadata, creating it if `may_create` (topics this request may still create) is
/// above zero.
fn lookup(broker: &Broker, name: &str, may_create: &mut i32) -> MetadataResponseTopic {
    let failed = |e: ResponseError| {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(name))))
            .with_error_code(e.code())
    };
    if let Some(topic) = broker.topics.get(name) {
        return describe(broker, &topic);
    }
    if !is_valid_topic_name(name) {
        return failed(ResponseError::InvalidTopicException);
    }
    if *may_create <= 0 {
        return failed(ResponseError::UnknownTopicOrPartition);
    }
    *may_create -= 1;
    match broker.topics.get_or_create(name) {
        Ok(topic) => describe(broker, &topic),
        // A name Kafka would refuse, or a topic still being created (the client asks again).
        Err(e @ (TopicError::InvalidName(_) | TopicError::Collides { .. } | TopicError::Busy)) => {
            failed(e.kafka_error())
        }
        Err(e) => {
            tracing::warn!(topic = name, "auto-create failed: {e}");
            failed(ResponseError::UnknownTopicOrPartition)
        }
    }
}

/// A topic's partitions, each led by this node (replication comes next: until then a node of a
/// cluster serves its own topics).
pub fn describe(broker: &Broker, topic: &Topic) -> MetadataResponseTopic {
    let me = BrokerId(broker.node_id());
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(me)
                .with_leader_epoch(LEADER_EPOCH)
                .with_replica_nodes(vec![me])
                .with_isr_nodes(vec![me])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_partitions(partitions)
}

/// The topics of a cluster, as its metadata says: each partition's leader, leader epoch,
/// replicas, in-sync replicas and the replicas that are down. A missing topic is created
/// through the active controller when `may_create` allows.
fn replicated_topics(
    broker: &Broker,
    quorum: &Quorum,
    requested: Option<Vec<MetadataRequestTopic>>,
    may_create: &mut i32,
    version: i16,
) -> Vec<MetadataResponseTopic> {
    let image = quorum.image();
    let Some(requested) = requested else {
        return image
            .topics
            .iter()
            .map(|(id, t)| describe_replicated(&image, *id, t))
            .collect();
    };
    requested
        .into_iter()
        .map(|r| match r.name {
            Some(name) => match image.topic_id(name.as_str()) {
                Some(id) => describe_replicated(&image, id, &image.topics[&id]),
                None => create_replicated(broker, quorum, name.as_str(), may_create),
            },
            None => match image.topics.get(&r.topic_id) {
                Some(t) => describe_replicated(&image, r.topic_id, t),
                None => MetadataResponseTopic::default()
                    .with_name((version < 12).then(|| TopicName(str_bytes(""))))
                    .with_topic_id(r.topic_id)
                    .with_error_code(ResponseError::UnknownTopicId.code()),
            },
        })
        .collect()
}

/// Creates topic `name` with the defaults through the active controller, if `may_create`
/// allows: `LEADER_NOT_AVAILABLE` once created (as Kafka answers, so the client asks again
/// when the new leaders have taken the lead), or why not.
fn create_replicated(
    broker: &Broker,
    quorum: &Quorum,
    name: &str,
    may_create: &mut i32,
) -> MetadataResponseTopic {
    let failed = |e: ResponseError| {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(name))))
            .with_error_code(e.code())
    };
    if !is_valid_topic_name(name) {
        return failed(ResponseError::InvalidTopicException);
    }
    if *may_create <= 0 {
        return failed(ResponseError::UnknownTopicOrPartition);
    }
    *may_create -= 1;
    let placement = cluster::Placement {
        partitions: broker.topics.default_partitions(),
        replication: broker.default_replication_factor(),
        assignments: Vec::new(),
    };
    match cluster::create_topic(broker, quorum, name, placement, BTreeMap::new()) {
        // As Kafka answers: the leaders named now may not have taken the lead yet (their
        // nodes follow the metadata a moment later), so the client asks again shortly.
        Ok(_) | Err((ResponseError::TopicAlreadyExists, _)) => {
            failed(ResponseError::LeaderNotAvailable)
        }
        Err((error, message)) => {
            tracing::info!(topic = name, %message, "auto-create refused");
            failed(match error {
                ResponseError::NotController | ResponseError::RequestTimedOut => {
                    ResponseError::LeaderNotAvailable
                }
                other => other,
            })
        }
    }
}

/// A topic of the metadata image as clients are told of it.
fn describe_replicated(
    image: &MetadataImage,
    id: Uuid,
    topic: &TopicState,
) -> MetadataResponseTopic {
    let live = image.live_brokers();
    let ids = |nodes: &[NodeId]| nodes.iter().map(|n| BrokerId(*n)).collect::<Vec<_>>();
    let partitions = topic
        .partitions
        .iter()
        .map(|(index, p)| {
            let offline: Vec<NodeId> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| !live.contains(r))
                .collect();
            let answer = MetadataResponsePartition::default()
                .with_partition_index(*index)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(ids(&offline));
            if p.leader == NO_LEADER {
                answer.with_error_code(ResponseError::LeaderNotAvailable.code())
            } else {
                answer
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(id)
        .with_is_internal(topic.name == OFFSETS_TOPIC)
        .with_partitions(partitions)
}
