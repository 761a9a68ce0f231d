//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455): move a partition's
//! replicas to other nodes while it keeps serving. The active controller adds the target's new
//! replicas first; they copy the log from the leader like any follower and join the ISR; then
//! the old ones are dropped and, if the leader was one of them, the target's first in-sync
//! replica leads. `kafka-reassign-partitions` drives both APIs.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use uuid::Uuid;

use crate::broker::Broker;
use crate::cluster::{self, Refusal};
use crate::handlers::route::str_bytes;
use crate::metadata::{MetadataImage, NodeId};

/// A move the controller is asked for: topic id, partition, target (`None`: cancel).
type Move = (Uuid, i32, Option<Vec<NodeId>>);

/// One partition of an AlterPartitionReassignments request: its topic, index, and target
/// replicas (`None`: cancel the move under way).
struct Asked {
    topic: TopicName,
    partition: i32,
    target: Option<Vec<NodeId>>,
}

pub(super) fn alter_partition_reassignments(
    broker: &Broker,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let asked: Vec<Asked> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| Asked {
                topic: t.name.clone(),
                partition: p.partition_index,
                target: p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
            })
        })
        .collect();
    let outcomes = match &broker.quorum {
        Some(quorum) => reassign(quorum, &asked, request.allow_replication_factor_change),
        None => asked.iter().map(|a| on_single_node(broker, a)).collect(),
    };
    let mut responses: Vec<ReassignableTopicResponse> = Vec::new();
    for (a, outcome) in asked.into_iter().zip(outcomes) {
        let mut answer = ReassignablePartitionResponse::default().with_partition_index(a.partition);
        if let Err((error, message)) = outcome {
            answer = answer
                .with_error_code(error.code())
                .with_error_message(Some(str_bytes(message)));
        }
        match responses.iter_mut().find(|r| r.name == a.topic) {
            Some(r) => r.partitions.push(answer),
            None => responses.push(
                ReassignableTopicResponse::default()
                    .with_name(a.topic)
                    .with_partitions(vec![answer]),
            ),
        }
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(request.allow_replication_factor_change)
        .with_responses(responses)
}

/// The moves asked of a cluster, decided by its active controller: each one's outcome.
fn reassign(
    quorum: &crate::quorum::Quorum,
    asked: &[Asked],
    allow_replication_factor_change: bool,
) -> Vec<Result<(), Refusal>> {
    let image = quorum.image();
    let checked: Vec<Result<Move, Refusal>> = asked
        .iter()
        .map(|a| check(&image, a, allow_replication_factor_change))
        .collect();
    let sent: Vec<_> = checked.iter().filter_map(|c| c.clone().ok()).collect();
    let mut decided = match cluster::reassign(quorum, sent) {
        Ok(decided) => decided.into_iter(),
        Err(refusal) => return asked.iter().map(|_| Err(refusal.clone())).collect(),
    };
    checked
        .into_iter()
        .map(|c| {
            c?;
            match decided.next() {
                Some(outcome) => outcome.map_err(|e| cluster::refused(&e)),
                None => Err(unknown()),
            }
        })
        .collect()
}

/// A move checked against this node's image: the partition exists, and keeps its replica
/// count unless the request allows a change (KIP-860).
fn check(
    image: &MetadataImage,
    a: &Asked,
    allow_replication_factor_change: bool,
) -> Result<Move, Refusal> {
    let id = image.topic_id(a.topic.as_str()).ok_or_else(unknown)?;
    let state = image.partition(id, a.partition).ok_or_else(unknown)?;
    if let Some(target) = &a.target {
        let original = state.replicas.len() - state.adding.len();
        if !allow_replication_factor_change && target.len() != original {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!(
                    "the partition has {original} replicas and the target {}; the request does \
                     not allow a change of replication factor",
                    target.len()
                ),
            ));
        }
    }
    Ok((id, a.partition, a.target.clone()))
}

/// A move asked of a single node: its one replica stays where it is.
fn on_single_node(broker: &Broker, a: &Asked) -> Result<(), Refusal> {
    let exists = broker
        .topics
        .get(a.topic.as_str())
        .is_some_and(|t| t.partition(a.partition).is_some());
    if !exists {
        return Err(unknown());
    }
    let me = broker.node_id();
    match &a.target {
        None => Err((
            ResponseError::NoReassignmentInProgress,
            "a single node moves no replicas".into(),
        )),
        Some(target) if target[..] == [me] => Ok(()),
        Some(_) => Err((
            ResponseError::InvalidReplicaAssignment,
            format!("this single-node broker is node {me}, the only replica"),
        )),
    }
}

fn unknown() -> Refusal {
    (
        ResponseError::UnknownTopicOrPartition,
        "no such partition".into(),
    )
}

pub(super) fn list_partition_reassignments(
    broker: &Broker,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let Some(quorum) = &broker.quorum else {
        return ListPartitionReassignmentsResponse::default();
    };
    let image = quorum.image();
    let wanted = |name: &str, partition: i32| match &request.topics {
        None => true,
        Some(topics) => topics
            .iter()
            .any(|t| t.name.as_str() == name && t.partition_indexes.contains(&partition)),
    };
    let ids = |nodes: &[NodeId]| nodes.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for topic in image.topics.values() {
        let partitions: Vec<OngoingPartitionReassignment> = topic
            .partitions
            .iter()
            .filter(|(index, p)| p.moving() && wanted(&topic.name, **index))
            .map(|(index, p)| {
                OngoingPartitionReassignment::default()
                    .with_partition_index(*index)
                    .with_replicas(ids(&p.replicas))
                    .with_adding_replicas(ids(&p.adding))
                    .with_removing_replicas(ids(&p.removing))
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(str_bytes(topic.name.clone())))
                    .with_partitions(partitions),
            );
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
