//! Admin APIs over TCP with rdkafka's AdminClient: create/delete topics, configs, groups.

use crate::common;

use std::time::Duration;

use common::raw::RawClient;
use common::{LONG, TestBroker, consumer, eventually, one_record_batch, producer, recv_n};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{CreateTopicsRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    common::client_config(bootstrap, &[]).create().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_partitions_then_delete() {
    let b = TestBroker::start().await;
    let a = admin(&b.bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = a
        .create_topics(
            &[NewTopic::new("orders", 4, TopicReplication::Fixed(1)).set("retention.ms", "60000")],
            &opts,
        )
        .await
        .unwrap();
    assert!(created[0].is_ok());
    let again = a
        .create_topics(
            &[NewTopic::new("orders", 4, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(
        again[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::TopicAlreadyExists
    );
    let bad = a
        .create_topics(
            &[NewTopic::new("bad name!", 1, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(
        bad[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidTopic
    );

    let metadata = a
        .inner()
        .fetch_metadata(Some("orders"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 4);

    let configs = a
        .describe_configs(&[ResourceSpecifier::Topic("orders")], &opts)
        .await
        .unwrap();
    let resource = configs[0].as_ref().unwrap();
    let retention = resource.get("retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("60000"));
    assert!(resource.get("cleanup.policy").is_some());

    let deleted = a.delete_topics(&["orders"], &opts).await.unwrap();
    assert!(deleted[0].is_ok());
    let metadata = a
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    assert!(metadata.topics().iter().all(|t| t.name() != "orders"));
    assert!(!b.dir.path().join("topics/orders").exists(), "data removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_describe_groups() {
    let b = TestBroker::start().await;
    let p = producer(&b.bootstrap, &[]);
    p.send(
        FutureRecord::to("g-topic").key("k").payload("v"),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
    let c = consumer(&b.bootstrap, "described", &[("client.id", "describe-me")]);
    c.subscribe(&["g-topic"]).unwrap();
    recv_n(&c, 1, LONG).await;
    let groups = eventually("group is stable with one member", LONG, || {
        let list = c
            .fetch_group_list(Some("described"), Duration::from_secs(5))
            .ok();
        async move {
            let list = list?;
            let g = list.groups().first()?;
            (g.state() == "Stable" && g.members().len() == 1).then(|| {
                (
                    g.protocol().to_string(),
                    g.members()[0].client_id().to_string(),
                )
            })
        }
    })
    .await;
    assert_eq!(groups.1, "describe-me");
    assert!(!groups.0.is_empty(), "the chosen assignor is reported");
    let all = c.fetch_group_list(None, Duration::from_secs(5)).unwrap();
    assert!(all.groups().iter().any(|g| g.name() == "described"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_message_bytes_is_enforced_per_topic() {
    let b = TestBroker::start().await;
    common::create_topic(&b.bootstrap, "small", 1, &[("max.message.bytes", "1000")]).await;
    let p = producer(&b.bootstrap, &[("compression.codec", "none")]);
    let fits = p
        .send(
            FutureRecord::to("small").key("k").payload(&[b'x'; 100][..]),
            Duration::from_secs(10),
        )
        .await;
    assert!(fits.is_ok(), "{fits:?}");
    let too_big = p
        .send(
            FutureRecord::to("small")
                .key("k")
                .payload(&[b'x'; 2000][..]),
            Duration::from_secs(10),
        )
        .await;
    let err = too_big.expect_err("a batch over max.message.bytes is refused");
    assert_eq!(
        err.0.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge),
        "{err:?}"
    );
    // The same record goes to a topic with the default limit.
    let elsewhere = p
        .send(
            FutureRecord::to("big").key("k").payload(&[b'x'; 2000][..]),
            Duration::from_secs(10),
        )
        .await;
    assert!(elsewhere.is_ok(), "{elsewhere:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_topic_configs_are_accepted_and_described_as_the_table_says() {
    let b = TestBroker::start().await;
    let set = [
        ("cleanup.policy", "delete"),
        ("compression.type", "lz4"),
        ("retention.ms", "3600000"),
        ("retention.bytes", "1048576"),
        ("segment.bytes", "1048576"),
        ("segment.ms", "600000"),
        ("max.message.bytes", "2000"),
        ("message.timestamp.type", "CreateTime"),
        ("min.insync.replicas", "1"),
    ];
    common::create_topic(&b.bootstrap, "configured", 1, &set).await;
    common::create_topic(&b.bootstrap, "plain", 1, &[]).await;
    let a = admin(&b.bootstrap);
    let described = a
        .describe_configs(
            &[
                ResourceSpecifier::Topic("configured"),
                ResourceSpecifier::Topic("plain"),
            ],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let table: Vec<&str> = broker::topics::TOPIC_CONFIGS
        .iter()
        .map(|k| k.name)
        .collect();
    let configured = described[0].as_ref().unwrap();
    let mut names: Vec<&str> = configured.entries.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    let mut expected = table.clone();
    expected.sort_unstable();
    assert_eq!(names, expected, "DescribeConfigs lists exactly the table");
    for (key, value) in set {
        let entry = configured.get(key).unwrap();
        assert_eq!(entry.value.as_deref(), Some(value), "{key}");
        assert_eq!(entry.source, ConfigSource::DynamicTopic, "{key}");
        assert!(!entry.is_default, "{key}");
    }
    let plain = described[1].as_ref().unwrap();
    assert_eq!(plain.entries.len(), table.len());
    for entry in &plain.entries {
        assert_eq!(entry.source, ConfigSource::Default, "{}", entry.name);
        assert!(entry.is_default, "{}", entry.name);
    }
    let default = |key: &str| plain.get(key).unwrap().value.clone().unwrap();
    assert_eq!(default("compression.type"), "producer");
    assert_eq!(default("min.insync.replicas"), "1");
    assert_eq!(default("message.timestamp.type"), "CreateTime");
    assert_eq!(default("retention.ms"), b.config.retention_ms.to_string());
    assert_eq!(default("segment.bytes"), b.config.segment_bytes.to_string());

    // The accepted max.message.bytes is enforced, not just stored.
    let p = producer(&b.bootstrap, &[("compression.codec", "none")]);
    let err = p
        .send(
            FutureRecord::to("configured")
                .key("k")
                .payload(&[b'x'; 3000][..]),
            Duration::from_secs(10),
        )
        .await
        .expect_err("over max.message.bytes");
    assert_eq!(
        err.0.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge)
    );
}

/// Config overrides of a CreateTopics request.
type Configs = &'static [(&'static str, &'static str)];

fn creatable(name: &'static str, configs: &[(&'static str, &'static str)]) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str(name)))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_static_str(k))
                        .with_value(Some(StrBytes::from_static_str(v)))
                })
                .collect(),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_topic_config_values_are_refused_with_their_reason() {
    let b = TestBroker::start().await;
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let cases: [(&'static str, Configs, &str); 6] = [
        (
            // Below Kafka 4's minimum: a segment per batch would let one client fill the
            // broker's file table.
            "tiny-segments",
            &[("segment.bytes", "1024")],
            "invalid config segment.bytes=1024: must be between 1048576 and 1073741824",
        ),
        (
            "compacted",
            &[("cleanup.policy", "compact,archive")],
            "invalid config cleanup.policy=compact,archive: must be delete, compact, or both (compact,delete)",
        ),
        (
            "replicated",
            &[("min.insync.replicas", "2")],
            "invalid config min.insync.replicas=2: this single-node broker keeps one replica, so at most 1",
        ),
        (
            "brotli",
            &[("compression.type", "brotli")],
            "invalid config compression.type=brotli: must be one of producer, uncompressed, gzip, snappy, lz4, zstd",
        ),
        (
            "timeless",
            &[("message.timestamp.type", "Now")],
            "invalid config message.timestamp.type=Now: must be CreateTime or LogAppendTime",
        ),
        (
            "unknown",
            &[("flush.messages", "1")],
            "invalid config flush.messages=1: unknown or unsupported config",
        ),
    ];
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(
            cases
                .iter()
                .map(|(name, configs, _)| creatable(name, configs))
                .chain([creatable("accepted", &[("compression.type", "zstd")])])
                .collect(),
        );
    let response = raw.call(&request, 7).await;
    for (result, (name, _, message)) in response.topics.iter().zip(cases) {
        assert_eq!(result.name.as_str(), name);
        assert_eq!(result.error_code, 40, "{name}: INVALID_CONFIG");
        assert_eq!(result.error_message.as_deref(), Some(message));
        assert!(b.state().topics.get(name).is_none(), "{name} not created");
    }
    // The created topic's answer (v5+) reports every config of the table, overrides marked.
    let accepted = &response.topics[cases.len()];
    assert_eq!(accepted.error_code, 0);
    let configs = accepted.configs.as_ref().unwrap();
    let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
    let table: Vec<&str> = broker::topics::TOPIC_CONFIGS
        .iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, table);
    let compression = configs
        .iter()
        .find(|c| c.name.as_str() == "compression.type")
        .unwrap();
    assert_eq!(compression.value.as_deref(), Some("zstd"));
    assert_eq!(compression.config_source, 1, "TOPIC_CONFIG");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_topics_take_the_broker_clock() {
    let b = TestBroker::start().await;
    common::create_topic(
        &b.bootstrap,
        "appended",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    common::create_topic(&b.bootstrap, "created", 1, &[]).await;
    let an_hour_ago = now_ms() - 3_600_000;
    let before = now_ms();
    let p = producer(&b.bootstrap, &[]);
    for topic in ["appended", "created"] {
        p.send(
            FutureRecord::to(topic)
                .key("k")
                .payload("v")
                .timestamp(an_hour_ago),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    }
    let after = now_ms();
    let c = consumer(&b.bootstrap, "unused", &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("appended", 0, Offset::Beginning)
        .unwrap();
    tpl.add_partition_offset("created", 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 2 {
        let m = tokio::time::timeout(LONG, c.recv())
            .await
            .expect("a record")
            .unwrap();
        seen.insert(m.topic().to_string(), m.timestamp());
    }
    match seen["appended"] {
        Timestamp::LogAppendTime(t) => assert!(
            (before..=after).contains(&t),
            "append time {t} is the broker's clock during the produce ({before}..={after})"
        ),
        other => panic!("expected LogAppendTime, got {other:?}"),
    }
    assert_eq!(seen["created"], Timestamp::CreateTime(an_hour_ago));

    // The produce answer carries the append time (and -1 for a CreateTime topic).
    let mut raw = RawClient::connect(&b.bootstrap).await;
    for (topic, stamped) in [("appended", true), ("created", false)] {
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str(topic)))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(one_record_batch(-1, -1, -1, b"raw"))),
                    ]),
            ]);
        let before = now_ms();
        let response = raw.call(&request, 8).await;
        let p = &response.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0);
        if stamped {
            assert!(
                (before..=now_ms()).contains(&p.log_append_time_ms),
                "{}",
                p.log_append_time_ms
            );
        } else {
            assert_eq!(p.log_append_time_ms, -1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_cluster_names_the_cluster_and_its_one_broker() {
    use kafka_protocol::messages::DescribeClusterRequest;
    let b = TestBroker::start().await;
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let response = raw
        .call(&DescribeClusterRequest::default().with_endpoint_type(1), 1)
        .await;
    assert_eq!(response.error_code, 0);
    assert_eq!(response.cluster_id.as_str(), b.state().cluster_id);
    assert_eq!(response.controller_id.0, 0);
    let brokers: Vec<String> = response
        .brokers
        .iter()
        .map(|b| format!("{}:{}", b.host.as_str(), b.port))
        .collect();
    assert_eq!(brokers, vec![b.bootstrap.clone()]);
    let controllers = raw
        .call(&DescribeClusterRequest::default().with_endpoint_type(2), 1)
        .await;
    assert_eq!(controllers.error_code, 115, "UNSUPPORTED_ENDPOINT_TYPE");
}

/// A single node leads every partition it has: ElectLeaders finds nothing to do, names an
/// unknown partition, and refuses an unclean election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_needs_no_leader_election() {
    use kafka_protocol::messages::ElectLeadersRequest;
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let b = TestBroker::start().await;
    common::create_topic(&b.bootstrap, "led", 1, &[]).await;
    let asked = |election_type: i8| {
        ElectLeadersRequest::default()
            .with_election_type(election_type)
            .with_topic_partitions(Some(vec![
                TopicPartitions::default()
                    .with_topic(TopicName(StrBytes::from_static_str("led")))
                    .with_partitions(vec![0, 7]),
            ]))
    };
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let codes = |r: kafka_protocol::messages::ElectLeadersResponse| -> Vec<(i32, i16)> {
        r.replica_election_results[0]
            .partition_result
            .iter()
            .map(|p| (p.partition_id, p.error_code))
            .collect()
    };
    let preferred = codes(raw.call(&asked(0), 2).await);
    assert_eq!(
        preferred,
        vec![(0, 84), (7, 3)],
        "ELECTION_NOT_NEEDED, UNKNOWN_TOPIC_OR_PARTITION"
    );
    let unclean = codes(raw.call(&asked(1), 2).await);
    assert_eq!(unclean, vec![(0, 42), (7, 42)], "INVALID_REQUEST");
}

/// A single node's one replica of each partition stays where it is: a move to itself is
/// accepted (nothing to do), to any other node refused, a cancel finds no move; none is ever
/// listed; DescribeLogDirs names its one log directory and each partition's size. A topic
/// created with an assignment takes only this node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_moves_no_replicas_and_describes_its_log_dir() {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, BrokerId, DescribeLogDirsRequest,
        ListPartitionReassignmentsRequest,
    };
    let b = TestBroker::start().await;
    common::create_topic(&b.bootstrap, "placed", 2, &[]).await;
    let me = b.state().node_id();
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let to = |index: i32, target: Option<Vec<i32>>| {
        ReassignablePartition::default()
            .with_partition_index(index)
            .with_replicas(target.map(|t| t.into_iter().map(BrokerId).collect()))
    };
    let request = AlterPartitionReassignmentsRequest::default().with_topics(vec![
        ReassignableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("placed")))
            .with_partitions(vec![
                to(0, Some(vec![me])),
                to(1, Some(vec![me + 1])),
                to(0, None),
                to(9, Some(vec![me])),
            ]),
    ]);
    let answer = raw.call(&request, 0).await;
    let codes: Vec<i16> = answer.responses[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(
        codes,
        vec![0, 39, 85, 3],
        "OK, INVALID_REPLICA_ASSIGNMENT, NO_REASSIGNMENT_IN_PROGRESS, UNKNOWN_TOPIC_OR_PARTITION"
    );
    let listed = raw
        .call(&ListPartitionReassignmentsRequest::default(), 0)
        .await;
    assert!(listed.topics.is_empty());

    let dirs = raw
        .call(&DescribeLogDirsRequest::default().with_topics(None), 4)
        .await;
    assert_eq!(dirs.results.len(), 1);
    assert!(dirs.results[0].log_dir.ends_with("topics"), "{dirs:?}");
    let placed = dirs.results[0]
        .topics
        .iter()
        .find(|t| t.name.as_str() == "placed")
        .expect("the topic's partitions");
    assert_eq!(placed.partitions.len(), 2);

    let assigned = |brokers: Vec<i32>| {
        use kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment;
        let assignment = CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(brokers.into_iter().map(BrokerId).collect());
        CreateTopicsRequest::default().with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("assigned")))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![assignment]),
        ])
    };
    let refused = raw.call(&assigned(vec![me + 1]), 5).await;
    assert_eq!(
        refused.topics[0].error_code, 39,
        "INVALID_REPLICA_ASSIGNMENT"
    );
    let created = raw.call(&assigned(vec![me]), 5).await;
    assert_eq!(created.topics[0].error_code, 0);
    assert_eq!(created.topics[0].num_partitions, 1);
}

async fn topic_config(bootstrap: &str, topic: &str, key: &str) -> Option<String> {
    let configs = admin(bootstrap)
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .unwrap();
    let resource = configs[0].as_ref().unwrap();
    resource.get(key).unwrap().value.clone()
}

async fn send_bytes(bootstrap: &str, topic: &str, size: usize) -> Result<(), RDKafkaErrorCode> {
    let p = producer(bootstrap, &[]);
    p.send(
        FutureRecord::<(), _>::to(topic).payload(&vec![b'x'; size]),
        Duration::from_secs(10),
    )
    .await
    .map(|_| ())
    .map_err(|(e, _)| e.rdkafka_error_code().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_change_at_once_and_durably() {
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use rdkafka::admin::AlterConfig;
    let mut b = TestBroker::start().await;
    common::create_topic(&b.bootstrap, "tunable", 1, &[]).await;
    send_bytes(&b.bootstrap, "tunable", 2000).await.unwrap();

    // AlterConfigs (rdkafka, which does not report per-resource errors: those are checked
    // with a raw request): a bad value changes nothing; a good one applies at once.
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let alter = |topic: &str, key: &str, value: &str| {
        use kafka_protocol::messages::alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        kafka_protocol::messages::AlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(topic.into()))
                .with_configs(vec![
                    AlterableConfig::default()
                        .with_name(StrBytes::from_string(key.into()))
                        .with_value(Some(StrBytes::from_string(value.into()))),
                ]),
        ])
    };
    let response = raw.call(&alter("tunable", "segment.bytes", "1"), 2).await;
    assert_eq!(response.responses[0].error_code, 40, "INVALID_CONFIG");
    let response = raw.call(&alter("missing", "retention.ms", "1"), 2).await;
    assert_eq!(
        response.responses[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(
        topic_config(&b.bootstrap, "tunable", "segment.bytes")
            .await
            .as_deref(),
        Some(&*b.config.segment_bytes.to_string()),
        "unchanged"
    );
    let a = admin(&b.bootstrap);
    let small =
        AlterConfig::new(ResourceSpecifier::Topic("tunable")).set("max.message.bytes", "500");
    let results = a
        .alter_configs(&[small], &AdminOptions::new())
        .await
        .unwrap();
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert_eq!(
        topic_config(&b.bootstrap, "tunable", "max.message.bytes")
            .await
            .as_deref(),
        Some("500")
    );
    assert_eq!(
        send_bytes(&b.bootstrap, "tunable", 2000).await,
        Err(RDKafkaErrorCode::MessageSizeTooLarge)
    );

    // Kept across a restart.
    b.restart().await;
    assert_eq!(
        topic_config(&b.bootstrap, "tunable", "max.message.bytes")
            .await
            .as_deref(),
        Some("500")
    );
    assert_eq!(
        send_bytes(&b.bootstrap, "tunable", 2000).await,
        Err(RDKafkaErrorCode::MessageSizeTooLarge)
    );

    // IncrementalAlterConfigs: DELETE goes back to the default; SET another key keeps the rest.
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let op = |name: &str, op: i8, value: Option<&str>| {
        AlterableConfig::default()
            .with_name(StrBytes::from_string(name.into()))
            .with_config_operation(op)
            .with_value(value.map(|v| StrBytes::from_string(v.into())))
    };
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("tunable"))
            .with_configs(vec![
                op("max.message.bytes", 1, None),
                op("retention.ms", 0, Some("3600000")),
            ]),
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("tunable"))
            .with_configs(vec![op("retention.ms", 2, Some("5"))]),
    ]);
    let response = raw.call(&request, 1).await;
    let codes: Vec<i16> = response.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes,
        [0, 40],
        "APPEND on a non-list config is INVALID_CONFIG"
    );
    send_bytes(&b.bootstrap, "tunable", 2000).await.unwrap();
    assert_eq!(
        topic_config(&b.bootstrap, "tunable", "retention.ms")
            .await
            .as_deref(),
        Some("3600000")
    );
}
