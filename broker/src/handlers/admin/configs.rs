//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs: a topic's configs (and the
//! broker's, read-only), and what the admin APIs share: config sources and refusals.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::handlers::route::str_bytes;
use crate::topics::TopicError;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// The config source of a topic config: set on the topic, or the default.
pub(super) fn source(overridden: bool) -> i8 {
    if overridden {
        SOURCE_TOPIC
    } else {
        SOURCE_DEFAULT
    }
}

/// The configs a request sets, name to value (an entry without a value sets nothing).
pub(super) fn set_configs<'a>(
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

pub(super) fn describe_configs(
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
pub(super) type Refusal = (ResponseError, String);

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

/// Applies new overrides to a topic (or only checks them). In a cluster, checked here and
/// made through the active controller, so that every node's copy takes them.
fn apply_configs(
    broker: &Broker,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), Refusal> {
    let local = |configs, validate_only| {
        broker
            .topics
            .alter_configs(name, configs, validate_only)
            .map_err(|e| (e.kafka_error(), client_message(&e)))
    };
    let Some(quorum) = &broker.quorum else {
        return local(configs, validate_only);
    };
    local(configs.clone(), true)?;
    if validate_only {
        return Ok(());
    }
    crate::cluster::alter_configs(quorum, name, configs.clone())?;
    local(configs, false)
}

/// AlterConfigs: the given configs replace all of a topic's overrides.
pub(super) fn alter_configs(broker: &Broker, request: AlterConfigsRequest) -> AlterConfigsResponse {
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
pub(super) fn incremental_alter_configs(
    broker: &Broker,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let responses = request
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.as_str();
            // Deleting broker configs changes nothing: none is set at run time (what
            // kafka-reassign-partitions --verify does to clear replication throttles).
            let only_deletes = r.configs.iter().all(|c| c.config_operation == OP_DELETE);
            if r.resource_type == RESOURCE_BROKER && only_deletes {
                return kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name);
            }
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

/// What a client is told of a failed topic operation: its own mistake in full, the broker's
/// storage failure only as such (the detail goes to the log).
pub(super) fn client_message(e: &TopicError) -> String {
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
