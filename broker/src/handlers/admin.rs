//! Admin APIs: CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords, DescribeConfigs,
//! AlterConfigs and IncrementalAlterConfigs (topic configs).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::partitions::{answer_each, partition_answer};
use super::route::str_bytes;
use crate::broker::Broker;
use crate::storage::AppendError;
use crate::topics::{Topic, TopicError};

use kafka_protocol::messages::ResponseKind;

use super::route::{Reply, Route, route};

/// Topic changes write to disk; DescribeConfigs takes the topics' lock, held across those writes.
pub(super) static ROUTES: &[Route] = &[
    route!(CreateTopics, 2..=7, disk, |b, r, c| {
        Reply::send(ResponseKind::CreateTopics(create_topics(b, r, c.version)))
    }),
    route!(DeleteTopics, 1..=6, disk, |b, r, _c| {
        Reply::send(ResponseKind::DeleteTopics(delete_topics(b, r)))
    }),
    route!(CreatePartitions, 0..=3, disk, |b, r, _c| {
        Reply::send(ResponseKind::CreatePartitions(create_partitions(b, r)))
    }),
    route!(DeleteRecords, 0..=2, disk, |b, r, _c| {
        Reply::send(ResponseKind::DeleteRecords(delete_records(b, r)))
    }),
    route!(AlterConfigs, 0..=2, disk, |b, r, _c| {
        Reply::send(ResponseKind::AlterConfigs(alter_configs(b, r)))
    }),
    route!(IncrementalAlterConfigs, 0..=1, disk, |b, r, _c| {
        Reply::send(ResponseKind::IncrementalAlterConfigs(
            incremental_alter_configs(b, r),
        ))
    }),
    route!(DescribeConfigs, 1..=4, disk, |b, r, _c| {
        Reply::send(ResponseKind::DescribeConfigs(describe_configs(b, r)))
    }),
];

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// The config source of a topic config: set on the topic, or the default.
fn source(overridden: bool) -> i8 {
    if overridden {
        SOURCE_TOPIC
    } else {
        SOURCE_DEFAULT
    }
}

pub fn create_topics(
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

/// The configs a request sets, name to value (an entry without a value sets nothing).
fn set_configs<'a>(
    entries: impl Iterator<Item = (&'a StrBytes, &'a Option<StrBytes>)>,
) -> BTreeMap<String, String> {
    entries
        .filter_map(|(name, value)| {
            Some((
                name.as_str().to_string(),
                value.as_ref()?.as_str().to_string(),
            ))
        })
        .collect()
}

/// The partitions a CreateTopics entry asks for (-1: the broker's default).
fn partition_count(broker: &Broker, t: &CreatableTopic) -> i32 {
    match t.num_partitions {
        -1 => broker.topics.default_partitions(),
        n => n,
    }
}

/// Creates one topic of a CreateTopics request, or with `validate_only` checks that it could
/// be (no topic then).
fn create_one(
    broker: &Broker,
    t: &CreatableTopic,
    validate_only: bool,
) -> Result<Option<Arc<Topic>>, Refusal> {
    if t.replication_factor > 1 {
        return Err((
            ResponseError::InvalidReplicationFactor,
            "this single-node broker keeps one replica".into(),
        ));
    }
    let name = t.name.as_str();
    let configs = set_configs(t.configs.iter().map(|c| (&c.name, &c.value)));
    let partitions = partition_count(broker, t);
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
        .with_replication_factor(1)
        .with_configs(Some(shown))
}

pub fn delete_topics(broker: &Broker, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
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

pub fn describe_configs(
    broker: &Broker,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let entries = match resource.resource_type {
                RESOURCE_TOPIC => topic_config_entries(broker, resource.resource_name.as_str()),
                RESOURCE_BROKER => Ok(broker_config_entries(broker)),
                _ => Err((
                    ResponseError::InvalidRequest,
                    "only topic and broker configs are described".into(),
                )),
            };
            let entries = match entries {
                Ok(entries) => entries,
                Err((error, message)) => {
                    return result
                        .with_error_code(error.code())
                        .with_error_message(Some(str_bytes(message)));
                }
            };
            let wanted = |key: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
            };
            let configs = entries
                .into_iter()
                .filter(|(k, _, _)| wanted(k))
                .map(|(name, value, source)| {
                    DescribeConfigsResourceResult::default()
                        .with_name(str_bytes(name))
                        .with_value(value.map(str_bytes))
                        // Topic configs can be altered; broker configs are the command line's.
                        .with_read_only(resource.resource_type != RESOURCE_TOPIC)
                        .with_config_source(source)
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// A described config: its name, value and source.
type ConfigEntry = (String, Option<String>, i8);

/// Every config of a topic, set on it or the broker's default.
fn topic_config_entries(broker: &Broker, name: &str) -> Result<Vec<ConfigEntry>, Refusal> {
    let Some(topic) = broker.topics.get(name) else {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            "unknown topic".into(),
        ));
    };
    Ok(broker
        .topics
        .config_entries(&topic.configs)
        .into_iter()
        .map(|entry| {
            (
                entry.name.to_string(),
                Some(entry.value),
                source(entry.overridden),
            )
        })
        .collect())
}

/// The broker's settings as Kafka names them: from its command line, or fixed for one node.
fn broker_config_entries(broker: &Broker) -> Vec<ConfigEntry> {
    let c = &broker.config;
    let set: [(&str, String); 7] = [
        ("num.partitions", c.default_partitions.to_string()),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
        ),
        ("log.retention.ms", c.retention_ms.to_string()),
        ("log.retention.bytes", c.retention_bytes.to_string()),
        ("log.segment.bytes", c.segment_bytes.to_string()),
        ("log.roll.ms", c.segment_ms.to_string()),
        ("socket.request.max.bytes", c.max_request_bytes.to_string()),
    ];
    let fixed = [
        ("default.replication.factor", "1"),
        ("min.insync.replicas", "1"),
    ];
    set.into_iter()
        .map(|(name, value)| (name.to_string(), Some(value), SOURCE_STATIC_BROKER))
        .chain(
            fixed
                .into_iter()
                .map(|(name, value)| (name.to_string(), Some(value.to_string()), SOURCE_DEFAULT)),
        )
        .collect()
}

/// Why a config change of one resource is refused: the error and what the client reads.
type Refusal = (ResponseError, String);

/// The topic a config change is for; broker configs are the command line's.
fn altered_topic(
    broker: &Broker,
    resource_type: i8,
    name: &str,
) -> Result<BTreeMap<String, String>, Refusal> {
    match resource_type {
        RESOURCE_TOPIC => broker.topics.get(name).map(|t| t.configs.clone()).ok_or((
            ResponseError::UnknownTopicOrPartition,
            format!("unknown topic '{name}'"),
        )),
        RESOURCE_BROKER => Err((
            ResponseError::InvalidRequest,
            "broker configs are set on the broker's command line".into(),
        )),
        other => Err((
            ResponseError::InvalidRequest,
            format!("unsupported resource type {other}"),
        )),
    }
}

/// Applies new overrides to a topic (or only checks them).
fn apply_configs(
    broker: &Broker,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), Refusal> {
    broker
        .topics
        .alter_configs(name, configs, validate_only)
        .map_err(|e| (e.kafka_error(), client_message(&e)))
}

/// AlterConfigs: the given configs replace all of a topic's overrides.
pub fn alter_configs(broker: &Broker, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let responses = request
        .resources
        .into_iter()
        .map(|r| {
            let result =
                altered_topic(broker, r.resource_type, r.resource_name.as_str()).and_then(|_| {
                    let configs = set_configs(r.configs.iter().map(|c| (&c.name, &c.value)));
                    apply_configs(
                        broker,
                        r.resource_name.as_str(),
                        configs,
                        request.validate_only,
                    )
                });
            let (error, message) = match result {
                Ok(()) => (None, None),
                Err((e, m)) => (Some(e), Some(str_bytes(m))),
            };
            kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse::default(
            )
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name)
            .with_error_code(error.map_or(0, |e| e.code()))
            .with_error_message(message)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;
/// The one list-valued topic config (APPEND and SUBTRACT apply to list configs only).
const LIST_CONFIGS: &[&str] = &["cleanup.policy"];

/// IncrementalAlterConfigs: set, delete (back to the default), append to or subtract from a
/// list, each on the topic's current overrides.
pub fn incremental_alter_configs(
    broker: &Broker,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let responses = request
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.as_str();
            let result = altered_topic(broker, r.resource_type, name).and_then(|mut configs| {
                for c in &r.configs {
                    let key = c.name.as_str().to_string();
                    let value = c.value.as_ref().map(|v| v.as_str().to_string());
                    match (c.config_operation, value) {
                        (OP_SET, Some(value)) => {
                            configs.insert(key, value);
                        }
                        (OP_DELETE, _) => {
                            configs.remove(&key);
                        }
                        (op @ (OP_APPEND | OP_SUBTRACT), Some(value)) if LIST_CONFIGS.contains(&key.as_str()) => {
                            let current = configs.get(&key).cloned().unwrap_or_else(|| {
                                broker.topics.config_entries(&BTreeMap::new()).into_iter().find(|e| e.name == key).map(|e| e.value).unwrap_or_default()
                            });
                            let mut items: Vec<String> = current.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
                            for v in value.split(',').filter(|s| !s.is_empty()) {
                                if op == OP_APPEND && !items.iter().any(|i| i == v) {
                                    items.push(v.to_string());
                                } else if op == OP_SUBTRACT {
                                    items.retain(|i| i != v);
                                }
                            }
                            configs.insert(key, items.join(","));
                        }
                        (OP_APPEND | OP_SUBTRACT, _) => {
                            return Err((ResponseError::InvalidConfig, format!("{key} is not a list config")));
                        }
                        (op, _) => {
                            return Err((ResponseError::InvalidRequest, format!("invalid operation {op} for {key}")));
                        }
                    }
                }
                apply_configs(broker, name, configs, request.validate_only)
            });
            let (error, message) = match result {
                Ok(()) => (None, None),
                Err((e, m)) => (Some(e), Some(str_bytes(m))),
            };
            kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(error.map_or(0, |e| e.code()))
                .with_error_message(message)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

partition_answer!(DeleteRecordsPartitionResult, |index| {
    DeleteRecordsPartitionResult::default()
        .with_partition_index(index)
        .with_low_watermark(-1)
});

/// Moves partitions' log start offsets up (`-1`: to the high watermark).
pub fn delete_records(broker: &Broker, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.as_str();
            let partitions = answer_each(
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

/// Grows topics (never shrinks). Consumer groups need nothing from the broker: their leader sees
/// the new partition count in its metadata refresh and rejoins, and the new assignment takes the
/// new partitions.
pub fn create_partitions(
    broker: &Broker,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = request
        .topics
        .into_iter()
        .map(|t| {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            // One node: an explicit assignment can only name it.
            let assignable = t.assignments.as_ref().is_none_or(|a| {
                a.iter()
                    .all(|p| p.broker_ids.iter().all(|b| b.0 == crate::broker::NODE_ID))
            });
            if !assignable {
                return result
                    .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                    .with_error_message(Some(str_bytes(format!(
                        "this cluster has one broker, id {}",
                        crate::broker::NODE_ID
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

/// What a client is told of a failed topic operation: its own mistake in full, the broker's
/// storage failure only as such (the detail goes to the log).
fn client_message(e: &TopicError) -> String {
    match e {
        TopicError::Io(_) => {
            tracing::error!("topic operation failed: {e}");
            "the broker could not store the change".to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;

    use super::*;
    use crate::BrokerConfig;
    use crate::topics::TOPIC_CONFIGS;

    #[test]
    fn describe_configs_lists_exactly_the_table_with_values_and_sources() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            retention_bytes: 12345,
            ..BrokerConfig::default()
        };
        let broker = Broker::open(config, "localhost".into(), 9092).unwrap();
        let overrides = BTreeMap::from([("compression.type".to_string(), "zstd".to_string())]);
        broker.topics.create("t", Some(1), overrides).unwrap();
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(str_bytes("t"))
                .with_configuration_keys(None),
        ]);
        let response = describe_configs(&broker, request);
        let configs = &response.results[0].configs;
        let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
        let table: Vec<&str> = TOPIC_CONFIGS.iter().map(|k| k.name).collect();
        assert_eq!(names, table);
        let get = |name: &str| configs.iter().find(|c| c.name.as_str() == name).unwrap();
        let compression = get("compression.type");
        assert_eq!(compression.value.as_deref(), Some("zstd"));
        assert_eq!(compression.config_source, SOURCE_TOPIC);
        let retention = get("retention.bytes");
        assert_eq!(
            retention.value.as_deref(),
            Some("12345"),
            "the broker's setting"
        );
        assert_eq!(retention.config_source, SOURCE_DEFAULT);
    }
}
