//! The Spring Boot + Spring Kafka example (`examples/spring`, built by `cargo xtask setup`) run
//! as its readers run it: `java -jar` against a running lab, once on the workspace broker and
//! once on Apache Kafka. It must log every order (placed before and after it started), send a
//! record it cannot read to its dead-letter topic, and go on.

const ON_APACHE_KAFKA: bool = false;

#[path = "saga/helpers.rs"]
#[allow(dead_code)]
mod helpers;

mod jvm;

use helpers::*;
use jvm::JavaApp;
use lab::poison::PoisonKind;

const JAR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/spring/target/spring-notes.jar"
);

async fn the_spring_app_reads_orders_and_dead_letters_what_it_cannot_read(apache_kafka: bool) {
    let t = spawn_lab_on(apache_kafka, |_| {}).await;
    let brokers = t.lab.brokers().to_owned();
    let before = t
        .client
        .place_order("alice", &[("LATTE", 1, 5000)])
        .await
        .unwrap();
    let before = before.id.to_string();

    jvm::built(JAR, "examples/spring");
    let servers = format!("--spring.kafka.bootstrap-servers={brokers}");
    let mut app = JavaApp::start(&["-Xmx256m", "-jar", JAR, &servers]);
    // Its group has no committed offset yet: it starts from the earliest record.
    let line = app.wait_for(&["consumed order", &before]).await;
    assert!(line.contains("customer=alice"), "{line}");
    assert!(line.contains("ce_type=order.created"), "{line}");

    let producer = saga_shared::kafka::producer(&brokers).unwrap();
    let (partition, offset) = lab::poison::publish(&producer, "order.created", PoisonKind::Garbage)
        .await
        .unwrap();
    let at = format!("order.created[{partition}]@{offset}");
    app.wait_for(&["dead-lettered", &at, "order.created-dlt"])
        .await;
    let letters = read_topic(&brokers, "order.created-dlt");
    assert_eq!(letters.len(), 1, "one record in the dead-letter topic");
    assert_eq!(
        header(&letters[0], "kafka_dlt-original-topic").as_deref(),
        Some("order.created")
    );

    // It goes on with the next records.
    let after = t
        .client
        .place_order("bob", &[("MOCHA", 2, 5500)])
        .await
        .unwrap();
    let after = after.id.to_string();
    let line = app.wait_for(&["consumed order", &after]).await;
    assert!(line.contains("customer=bob"), "{line}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_workspace_broker() {
    the_spring_app_reads_orders_and_dead_letters_what_it_cannot_read(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_apache_kafka() {
    the_spring_app_reads_orders_and_dead_letters_what_it_cannot_read(true).await;
}
