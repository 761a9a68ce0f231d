//! CreateTopics, DeleteTopics, CreatePartitions and DeleteRecords.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;

use crate::broker::Broker;
use crate::cluster;
use crate::handlers::partitions::{answer_each_led, partition_answer};
use crate::handlers::route::str_bytes;
use crate::storage::AppendError;
use crate::topics::Topic;

use super::configs::{Refusal, client_message, set_configs, source};

pub(super) fn create_topics(
    broker: &Broker,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    // One request makes at most so many partitions in all (Kafka's controller refuses an
    // "excessively large" operation the same way): all of it is refused, not a part.
    let asked: i64 = request
        .topics
        .iter()
        .map(|t| i64::from(partition_count(broker, t).max(0)))
        .sum();
    let cap = broker.config.max_partitions_per_request;
    let too_many = (asked > i64::from(cap)).then(|| {
        format!("one request may create at most {cap} partitions; this one asks for {asked}")
    });
    let validate_only = request.validate_only;
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let result = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            let created = match &too_many {
                Some(message) => Err((ResponseError::PolicyViolation, message.clone())),
                None => create_one(broker, &t, validate_only),
            };
            match created {
                Ok(topic) => {
                    created_answer(broker, result, topic, partition_count(broker, &t), version)
                }
                Err((error, message)) => result
                    .with_error_code(error.code())
                    .with_error_message(Some(str_bytes(message))),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// The partitions a CreateTopics entry asks for (-1: the broker's default; with explicit
/// assignments, one per assignment).
fn partition_count(broker: &Broker, t: &CreatableTopic) -> i32 {
    match t.num_partitions {
        _ if !t.assignments.is_empty() => t.assignments.len() as i32,
        -1 => broker.topics.default_partitions(),
        n => n,
    }
}

/// Where a CreateTopics entry's partitions go in a cluster: a replication factor (-1: the
/// default), or explicit assignments, partition 0 first (Kafka's rules: then neither a
/// partition count nor a replication factor).
fn placement(broker: &Broker, t: &CreatableTopic) -> Result<cluster::Placement, Refusal> {
    let partitions = partition_count(broker, t);
    if t.assignments.is_empty() {
        let replication = match t.replication_factor {
            -1 => broker.default_replication_factor(),
            n if n >= 1 => n as usize,
            n => {
                return Err((
                    ResponseError::InvalidReplicationFactor,
                    format!("replication factor {n} must be at least 1"),
                ));
            }
        };
        return Ok(cluster::Placement {
            partitions,
            replication,
            assignments: Vec::new(),
        });
    }
    if t.num_partitions != -1 || t.replication_factor != -1 {
        return Err((
            ResponseError::InvalidRequest,
            "give either assignments or a partition count and replication factor, not both".into(),
        ));
    }
    let mut assignments: Vec<_> = t.assignments.iter().collect();
    assignments.sort_by_key(|a| a.partition_index);
    if (0..).zip(&assignments).any(|(i, a)| a.partition_index != i) {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "assignments must name partitions 0, 1, 2 and so on, each once".into(),
        ));
    }
    let assignments = assignments
        .iter()
        .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
        .collect();
    Ok(cluster::Placement {
        partitions,
        replication: 0,
        assignments,
    })
}

/// Creates one topic of a CreateTopics request, or with `validate_only` checks that it could
/// be (no topic then).
fn create_one(
    broker: &Broker,
    t: &CreatableTopic,
    validate_only: bool,
) -> Result<Option<Arc<Topic>>, Refusal> {
    let name = t.name.as_str();
    let configs = set_configs(t.configs.iter().map(|c| (&c.name, &c.value)));
    let partitions = partition_count(broker, t);
    if let Some(quorum) = &broker.quorum {
        let placement = placement(broker, t)?;
        broker
            .topics
            .validate(name, partitions, &configs)
            .map_err(|e| (e.kafka_error(), client_message(&e)))?;
        if validate_only {
            return Ok(None);
        }
        return cluster::create_topic(broker, quorum, name, placement, configs).map(Some);
    }
    if t.replication_factor > 1 {
        return Err((
            ResponseError::InvalidReplicationFactor,
            "this single-node broker keeps one replica".into(),
        ));
    }
    let me = broker.node_id();
    if let Some(a) = t
        .assignments
        .iter()
        .find(|a| a.broker_ids != [BrokerId(me)])
    {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            format!(
                "partition {}: this single-node broker is node {me}, the only replica",
                a.partition_index
            ),
        ));
    }
    let outcome = if validate_only {
        broker
            .topics
            .validate(name, partitions, &configs)
            .map(|_| None)
    } else {
        broker
            .topics
            .create(name, Some(partitions), configs)
            .map(Some)
    };
    outcome.map_err(|e| (e.kafka_error(), client_message(&e)))
}

/// The answer for a topic created (or validated): its id, and from v5 on its partition count,
/// replication factor and configs.
fn created_answer(
    broker: &Broker,
    result: CreatableTopicResult,
    topic: Option<Arc<Topic>>,
    partitions: i32,
    version: i16,
) -> CreatableTopicResult {
    let overrides = topic
        .as_ref()
        .map(|t| t.configs.clone())
        .unwrap_or_default();
    let replicas = match (&broker.quorum, &topic) {
        (Some(quorum), Some(topic)) => quorum
            .image()
            .topics
            .get(&topic.id)
            .and_then(|t| t.partitions.values().next())
            .map_or(1, |p| p.replicas.len() as i16),
        _ => 1,
    };
    let result = result.with_topic_id(topic.map(|t| t.id).unwrap_or_default());
    if version < 5 {
        return result;
    }
    let shown = broker
        .topics
        .config_entries(&overrides)
        .into_iter()
        .map(|entry| {
            CreatableTopicConfigs::default()
                .with_name(str_bytes(entry.name))
                .with_value(Some(str_bytes(entry.value)))
                .with_config_source(source(entry.overridden))
        })
        .collect();
    result
        .with_num_partitions(partitions)
        .with_replication_factor(replicas)
        .with_configs(Some(shown))
}

pub(super) fn delete_topics(broker: &Broker, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`; v6 uses `topics` with a name or an id.
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = request
        .topic_names
        .iter()
        .map(|n| (Some(n.as_str().to_string()), uuid::Uuid::nil()))
        .collect();
    targets.extend(
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.as_str().to_string()), t.topic_id)),
    );
    let responses = targets
        .into_iter()
        .map(|(name, id)| {
            let name = name.or_else(|| broker.topics.get_by_id(id).map(|t| t.name.clone()));
            let result = DeletableTopicResult::default()
                .with_name(name.clone().map(|n| TopicName(str_bytes(n))))
                .with_topic_id(id);
            let Some(name) = name else {
                return result.with_error_code(ResponseError::UnknownTopicId.code());
            };
            if let Some(quorum) = &broker.quorum {
                let id = broker.topics.get(&name).map(|t| t.id).unwrap_or(id);
                return match crate::cluster::delete_topic(quorum, &name) {
                    Ok(()) => result.with_topic_id(id),
                    Err((error, message)) => result
                        .with_error_code(error.code())
                        .with_error_message(Some(str_bytes(message))),
                };
            }
            match broker.topics.delete(&name) {
                Ok(topic) => {
                    if let Err(e) = broker.offsets.delete_topic(&name) {
                        tracing::warn!(topic = name, "could not drop committed offsets: {e}");
                    }
                    result.with_topic_id(topic.id)
                }
                Err(e) => result
                    .with_error_code(e.kafka_error().code())
                    .with_error_message(Some(str_bytes(client_message(&e)))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

partition_answer!(DeleteRecordsPartitionResult, |index| {
    DeleteRecordsPartitionResult::default()
        .with_partition_index(index)
        .with_low_watermark(-1)
});

/// Moves partitions' log start offsets up (`-1`: to the high watermark).
pub(super) fn delete_records(
    broker: &Broker,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.as_str();
            let partitions = answer_each_led(
                broker,
                name,
                t.partitions.iter(),
                |p| p.partition_index,
                |p, partition, result: DeleteRecordsPartitionResult| match partition
                    .delete_records_before(p.offset)
                {
                    Ok(start) => Ok(result.with_low_watermark(start)),
                    Err(e) => {
                        if matches!(e, AppendError::Io(_)) {
                            tracing::error!(
                                topic = name,
                                partition = p.partition_index,
                                "delete records failed: {e}"
                            );
                        }
                        Err(e.kafka_error().into())
                    }
                },
            );
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

/// Grows a topic of a cluster through the active controller, which places the new partitions
/// on the nodes itself (an explicit assignment is refused, as in CreateTopics).
fn grow_in_cluster(
    broker: &Broker,
    quorum: &crate::quorum::Quorum,
    t: &CreatePartitionsTopic,
    validate_only: bool,
    result: CreatePartitionsTopicResult,
) -> CreatePartitionsTopicResult {
    let refused = |(error, message): Refusal| {
        result
            .clone()
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(message)))
    };
    if t.assignments.is_some() {
        return refused((
            ResponseError::InvalidReplicaAssignment,
            "this cluster assigns replicas itself; give a count only".into(),
        ));
    }
    if validate_only {
        return match quorum.image().grow(t.name.as_str(), t.count) {
            Ok(_) => result,
            Err(e) => refused(crate::cluster::refused(&e)),
        };
    }
    match crate::cluster::create_partitions(broker, quorum, t.name.as_str(), t.count) {
        Ok(()) => result,
        Err(refusal) => refused(refusal),
    }
}

/// Grows topics (never shrinks). Consumer groups need nothing from the broker: their leader sees
/// the new partition count in its metadata refresh and rejoins, and the new assignment takes the
/// new partitions.
pub(super) fn create_partitions(
    broker: &Broker,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = request
        .topics
        .into_iter()
        .map(|t| {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if let Some(quorum) = &broker.quorum {
                return grow_in_cluster(broker, quorum, &t, request.validate_only, result);
            }
            // One node: an explicit assignment can only name it.
            let me = broker.node_id();
            let assignable = t
                .assignments
                .as_ref()
                .is_none_or(|a| a.iter().all(|p| p.broker_ids.iter().all(|b| b.0 == me)));
            if !assignable {
                return result
                    .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                    .with_error_message(Some(str_bytes(format!(
                        "this cluster has one broker, id {me}"
                    ))));
            }
            match broker
                .topics
                .add_partitions(t.name.as_str(), t.count, request.validate_only)
            {
                Ok(_) => result,
                Err(e) => result
                    .with_error_code(e.kafka_error().code())
                    .with_error_message(Some(str_bytes(client_message(&e)))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
