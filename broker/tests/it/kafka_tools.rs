//! Apache Kafka's own command-line tools (4.4) against the broker: kafka-topics,
//! kafka-console-producer and -consumer, kafka-consumer-groups, kafka-transactions and
//! kafka-configs, run as `java -cp 'compat/kafka/target/lib/*' <main class>`, exactly what
//! their `bin/kafka-*.sh` scripts run. The jars come from
//! `mvn -B -q -f compat/kafka/pom.xml package` (`cargo xtask setup` runs it). The commands are
//! the ones docs/kafka-tools.md shows.

use crate::common;

use std::time::Duration;

use common::{TestBroker, producer};
use rdkafka::producer::{FutureRecord, Producer};

const TOPICS: &str = "org.apache.kafka.tools.TopicCommand";
const CONFIGS: &str = "org.apache.kafka.tools.ConfigCommand";
const CONSOLE_PRODUCER: &str = "org.apache.kafka.tools.ConsoleProducer";
const CONSOLE_CONSUMER: &str = "org.apache.kafka.tools.consumer.ConsoleConsumer";
const GROUPS: &str = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
const TRANSACTIONS: &str = "org.apache.kafka.tools.TransactionsCommand";

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs one tool with `--bootstrap-server` first, feeding it `stdin`; fails the test if it
/// doesn't exit within a minute.
async fn tool(b: &TestBroker, main_class: &str, args: &[&str], stdin: Option<&str>) -> Run {
    // Kafka's jars (a clear error if `cargo xtask setup` has not fetched them), quiet logging,
    // and a JVM that dies with the test.
    let java = apache_kafka::java(main_class).unwrap_or_else(|e| panic!("{e}"));
    let mut command = tokio::process::Command::from(java);
    command
        .args(["--bootstrap-server", &b.bootstrap])
        .args(args);
    let what = format!("{main_class} {args:?} (is a JDK 17+ installed?)");
    let out = common::run_with_input(command, stdin, &what).await;
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Like [`tool`], failing the test unless the tool succeeds; its standard output.
async fn ok(b: &TestBroker, main_class: &str, args: &[&str], stdin: Option<&str>) -> String {
    let run = tool(b, main_class, args, stdin).await;
    assert!(
        run.ok,
        "{main_class} {args:?} failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    run.stdout
}

/// The whitespace-separated columns of the first output line whose columns at the given
/// indexes hold the given values.
fn row(output: &str, wanted: &[(usize, &str)]) -> Vec<String> {
    output
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cols| {
            wanted
                .iter()
                .all(|(i, v)| cols.get(*i).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no line with columns {wanted:?} in:\n{output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_topics_creates_lists_describes_alters_and_deletes() {
    let b = TestBroker::start().await;
    let created = ok(
        &b,
        TOPICS,
        &[
            "--create",
            "--topic",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
        None,
    )
    .await;
    assert!(created.contains("Created topic orders."), "{created}");
    let again = tool(
        &b,
        TOPICS,
        &["--create", "--topic", "orders", "--partitions", "3"],
        None,
    )
    .await;
    assert!(
        !again.ok && again.stdout.contains("already exists"),
        "{}",
        again.stdout
    );

    let listed = ok(&b, TOPICS, &["--list"], None).await;
    assert_eq!(listed.lines().collect::<Vec<_>>(), ["orders"]);

    let described = ok(&b, TOPICS, &["--describe", "--topic", "orders"], None).await;
    assert!(described.contains("PartitionCount: 3"), "{described}");
    assert!(
        described.contains("Configs: retention.ms=3600000"),
        "{described}"
    );
    for p in 0..3 {
        let line = format!("Topic: orders\tPartition: {p}\tLeader: 0\tReplicas: 0\tIsr: 0");
        assert!(described.contains(&line), "{line:?} in:\n{described}");
    }

    ok(
        &b,
        TOPICS,
        &["--alter", "--topic", "orders", "--partitions", "5"],
        None,
    )
    .await;
    let described = ok(&b, TOPICS, &["--describe", "--topic", "orders"], None).await;
    assert!(described.contains("PartitionCount: 5"), "{described}");
    assert!(described.contains("Partition: 4\tLeader: 0"), "{described}");

    ok(&b, TOPICS, &["--delete", "--topic", "orders"], None).await;
    let listed = ok(&b, TOPICS, &["--list"], None).await;
    assert!(!listed.contains("orders"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_producer_and_consumer_then_kafka_consumer_groups() {
    let b = TestBroker::start().await;
    ok(
        &b,
        TOPICS,
        &["--create", "--topic", "events", "--partitions", "2"],
        None,
    )
    .await;
    ok(
        &b,
        CONSOLE_PRODUCER,
        &[
            "--topic",
            "events",
            "--reader-property",
            "parse.key=true",
            "--reader-property",
            "key.separator=:",
        ],
        Some("k1:one\nk2:two\nk3:three\n"),
    )
    .await;
    let consumed = tool(
        &b,
        CONSOLE_CONSUMER,
        &[
            "--topic",
            "events",
            "--group",
            "readers",
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout-ms",
            "30000",
            "--formatter-property",
            "print.key=true",
        ],
        None,
    )
    .await;
    assert!(consumed.ok, "{}\n{}", consumed.stdout, consumed.stderr);
    let mut lines: Vec<&str> = consumed.stdout.lines().collect();
    lines.sort();
    assert_eq!(lines, ["k1\tone", "k2\ttwo", "k3\tthree"]);
    assert!(
        consumed.stderr.contains("Processed a total of 3 messages"),
        "{}",
        consumed.stderr
    );

    let listed = ok(&b, GROUPS, &["--list"], None).await;
    assert_eq!(listed.lines().collect::<Vec<_>>(), ["readers"]);

    // The console consumer committed what it read: no lag. Columns: GROUP TOPIC PARTITION
    // CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID.
    let described = ok(&b, GROUPS, &["--describe", "--group", "readers"], None).await;
    let mut total = 0;
    for p in ["0", "1"] {
        let cols = row(&described, &[(0, "readers"), (2, p)]);
        assert_eq!(cols[1], "events");
        assert_eq!(cols[3], cols[4], "current offset = log end: {cols:?}");
        assert_eq!(cols[5], "0", "lag: {cols:?}");
        total += cols[4].parse::<i32>().unwrap();
    }
    assert_eq!(total, 3);
    let state = ok(
        &b,
        GROUPS,
        &["--describe", "--group", "readers", "--state"],
        None,
    )
    .await;
    assert!(
        row(&state, &[(0, "readers")]).ends_with(&["Empty".to_owned(), "0".to_owned()]),
        "{state}"
    );

    // --dry-run shows the new offsets and changes nothing; --execute moves them.
    let reset = [
        "--reset-offsets",
        "--to-earliest",
        "--group",
        "readers",
        "--topic",
        "events",
    ];
    let dry = ok(&b, GROUPS, &[&reset[..], &["--dry-run"]].concat(), None).await;
    assert_eq!(row(&dry, &[(0, "readers"), (2, "1")])[3], "0", "{dry}");
    let unchanged = ok(&b, GROUPS, &["--describe", "--group", "readers"], None).await;
    assert_eq!(unchanged, described, "a dry run changes nothing");
    let executed = ok(&b, GROUPS, &[&reset[..], &["--execute"]].concat(), None).await;
    assert_eq!(
        row(&executed, &[(0, "readers"), (2, "0")])[3],
        "0",
        "{executed}"
    );
    let described = ok(&b, GROUPS, &["--describe", "--group", "readers"], None).await;
    for p in ["0", "1"] {
        let cols = row(&described, &[(0, "readers"), (2, p)]);
        assert_eq!(cols[3], "0", "reset to the earliest offset: {cols:?}");
        assert_eq!(cols[5], cols[4], "lag is everything again: {cols:?}");
    }

    let deleted = ok(&b, GROUPS, &["--delete", "--group", "readers"], None).await;
    assert!(
        deleted.contains("Deletion of requested consumer groups ('readers') was successful."),
        "{deleted}"
    );
    let listed = ok(&b, GROUPS, &["--list"], None).await;
    assert!(!listed.contains("readers"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_transactions_lists_and_describes() {
    let b = TestBroker::start().await;
    ok(
        &b,
        TOPICS,
        &["--create", "--topic", "ledger", "--partitions", "1"],
        None,
    )
    .await;
    let p = producer(&b.bootstrap, &[("transactional.id", "ledger-writer")]);
    p.init_transactions(Duration::from_secs(10)).unwrap();
    p.begin_transaction().unwrap();
    p.send(
        FutureRecord::to("ledger").key("k").payload("open"),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();

    // Columns: TransactionalId Coordinator ProducerId TransactionState.
    let listed = ok(&b, TRANSACTIONS, &["list"], None).await;
    let cols = row(&listed, &[(0, "ledger-writer"), (3, "Ongoing")]);
    assert_eq!(cols[1], "0", "coordinator: {listed}");
    let described = ok(
        &b,
        TRANSACTIONS,
        &["describe", "--transactional-id", "ledger-writer"],
        None,
    )
    .await;
    let cols = row(&described, &[(0, "0"), (1, "ledger-writer")]);
    assert!(cols.contains(&"Ongoing".to_owned()), "{described}");
    assert!(
        cols.contains(&"ledger-0".to_owned()),
        "the partition in the transaction: {described}"
    );

    p.commit_transaction(Duration::from_secs(10)).unwrap();
    let described = ok(
        &b,
        TRANSACTIONS,
        &["describe", "--transactional-id", "ledger-writer"],
        None,
    )
    .await;
    assert!(
        row(&described, &[(0, "0"), (1, "ledger-writer")]).contains(&"CompleteCommit".to_owned()),
        "{described}"
    );
    let unknown = tool(
        &b,
        TRANSACTIONS,
        &["describe", "--transactional-id", "nobody"],
        None,
    )
    .await;
    assert!(
        !unknown.ok,
        "describing an unknown transactional id fails: {}",
        unknown.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_configs_describes_and_alters_a_topic() {
    let b = TestBroker::start().await;
    ok(
        &b,
        TOPICS,
        &[
            "--create",
            "--topic",
            "payments",
            "--partitions",
            "1",
            "--config",
            "retention.ms=3600000",
        ],
        None,
    )
    .await;
    let topic = ["--entity-type", "topics", "--entity-name", "payments"];
    let described = ok(&b, CONFIGS, &[&["--describe"], &topic[..]].concat(), None).await;
    assert!(
        described.contains("Dynamic configs for topic payments are:"),
        "{described}"
    );
    assert!(described.contains("retention.ms=3600000"), "{described}");
    assert!(!described.contains("max.message.bytes"), "{described}");

    let altered = ok(
        &b,
        CONFIGS,
        &[
            &["--alter"],
            &topic[..],
            &[
                "--add-config",
                "max.message.bytes=500000,retention.ms=7200000",
            ],
        ]
        .concat(),
        None,
    )
    .await;
    assert!(
        altered.contains("Completed updating config for topic payments."),
        "{altered}"
    );
    let described = ok(&b, CONFIGS, &[&["--describe"], &topic[..]].concat(), None).await;
    assert!(
        described.contains("max.message.bytes=500000"),
        "{described}"
    );
    assert!(described.contains("retention.ms=7200000"), "{described}");

    ok(
        &b,
        CONFIGS,
        &[
            &["--alter"],
            &topic[..],
            &["--delete-config", "retention.ms"],
        ]
        .concat(),
        None,
    )
    .await;
    let described = ok(&b, CONFIGS, &[&["--describe"], &topic[..]].concat(), None).await;
    assert!(!described.contains("retention.ms"), "{described}");
    let all = ok(
        &b,
        CONFIGS,
        &[&["--describe", "--all"], &topic[..]].concat(),
        None,
    )
    .await;
    assert!(
        all.contains("retention.ms=604800000"),
        "the default again: {all}"
    );

    let bad = tool(
        &b,
        CONFIGS,
        &[
            &["--alter"],
            &topic[..],
            &["--add-config", "retention.ms=soon"],
        ]
        .concat(),
        None,
    )
    .await;
    assert!(
        !bad.ok,
        "a value that is not a number is refused: {}",
        bad.stdout
    );
}
