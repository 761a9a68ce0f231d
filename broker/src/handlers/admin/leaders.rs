//! ElectLeaders (KIP-460): give partitions back to their preferred leaders, the first of their
//! replicas, which is where CreateTopics spread the leaders; after failovers the leaders pile up
//! on the nodes that stayed. Unclean elections (a leader from outside the ISR, which loses
//! acknowledged records) are refused: `unclean.leader.election.enable` is false.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use uuid::Uuid;

use crate::broker::Broker;
use crate::cluster;
use crate::handlers::route::str_bytes;
use crate::metadata::MetadataError;

/// ElectLeaders' election type of a preferred-leader election.
const PREFERRED: i8 = 0;

pub(super) fn elect_leaders(broker: &Broker, request: ElectLeadersRequest) -> ElectLeadersResponse {
    let everything = request.topic_partitions.is_none();
    let asked = asked(broker, &request);
    let outcomes: Vec<Result<(), (ResponseError, String)>> = if request.election_type != PREFERRED {
        let refusal = (
            ResponseError::InvalidRequest,
            "unclean elections are off (unclean.leader.election.enable=false)".to_owned(),
        );
        asked.iter().map(|_| Err(refusal.clone())).collect()
    } else {
        elect(broker, &asked)
    };
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for ((topic, partition, _), outcome) in asked.into_iter().zip(outcomes) {
        let result = PartitionResult::default().with_partition_id(partition);
        let result = match outcome {
            Ok(()) => result,
            // Asked for everything: only the partitions that moved (or could not) are listed.
            Err((ResponseError::ElectionNotNeeded, _)) if everything => continue,
            Err((error, message)) => result
                .with_error_code(error.code())
                .with_error_message(Some(str_bytes(message))),
        };
        match results.iter_mut().find(|r| r.topic == topic) {
            Some(r) => r.partition_result.push(result),
            None => results.push(
                ReplicaElectionResult::default()
                    .with_topic(topic)
                    .with_partition_result(vec![result]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}

/// The partitions asked for (all of them for none): topic, index, and the topic's id if it
/// exists.
fn asked(broker: &Broker, request: &ElectLeadersRequest) -> Vec<(TopicName, i32, Option<Uuid>)> {
    let id_of = |name: &str| match &broker.quorum {
        Some(quorum) => quorum.image().topic_id(name),
        None => broker.topics.get(name).map(|t| t.id),
    };
    match &request.topic_partitions {
        Some(topics) => topics
            .iter()
            .flat_map(|t| {
                let id = id_of(t.topic.as_str());
                t.partitions.iter().map(move |p| (t.topic.clone(), *p, id))
            })
            .collect(),
        None => broker
            .topics
            .list()
            .iter()
            .flat_map(|t| {
                let name = TopicName(str_bytes(t.name.clone()));
                let id = id_of(&t.name);
                t.partitions
                    .iter()
                    .map(move |p| (name.clone(), p.index, id))
            })
            .collect(),
    }
}

/// Each partition's election: on a single node, its one replica leads already.
fn elect(
    broker: &Broker,
    asked: &[(TopicName, i32, Option<Uuid>)],
) -> Vec<Result<(), (ResponseError, String)>> {
    let unknown = || {
        (
            ResponseError::UnknownTopicOrPartition,
            "no such partition".to_owned(),
        )
    };
    let Some(quorum) = &broker.quorum else {
        return asked
            .iter()
            .map(|(name, partition, _)| {
                let exists = broker
                    .topics
                    .get(name.as_str())
                    .is_some_and(|t| t.partition(*partition).is_some());
                Err(if exists {
                    (
                        ResponseError::ElectionNotNeeded,
                        "a single node leads every partition".into(),
                    )
                } else {
                    unknown()
                })
            })
            .collect();
    };
    let known: Vec<(Uuid, i32)> = asked
        .iter()
        .filter_map(|(_, partition, id)| id.map(|id| (id, *partition)))
        .collect();
    let mut decided = match cluster::elect_preferred(quorum, known) {
        Ok(decided) => decided.into_iter(),
        Err(refusal) => return asked.iter().map(|_| Err(refusal.clone())).collect(),
    };
    asked
        .iter()
        .map(|(_, _, id)| {
            if id.is_none() {
                return Err(unknown());
            }
            match decided.next() {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err((election_error(&e), e.to_string())),
                None => Err(unknown()),
            }
        })
        .collect()
}

fn election_error(e: &MetadataError) -> ResponseError {
    match e {
        MetadataError::ElectionNotNeeded { .. } => ResponseError::ElectionNotNeeded,
        MetadataError::PreferredLeaderNotAvailable { .. } => {
            ResponseError::PreferredLeaderNotAvailable
        }
        _ => ResponseError::UnknownTopicOrPartition,
    }
}
