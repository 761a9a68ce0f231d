//! Admin APIs over TCP with rdkafka's AdminClient: create/delete topics, configs, groups.

mod common;

use std::time::Duration;

use common::{LONG, TestBroker, consumer, eventually, producer, recv_n};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureRecord;

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
