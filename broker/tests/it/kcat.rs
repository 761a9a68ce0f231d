//! kcat (librdkafka's command-line client) against the broker: -L, -P, -C and -G, and the
//! isolation levels of transactions.
//! Needs `kcat` on PATH (`apt-get install kcat`; `.ci/run` installs it).

use crate::common;

use std::time::Duration;

use common::TestBroker;
use tokio::process::Command;

async fn kcat(args: &[&str], stdin: Option<&str>) -> String {
    let mut command = Command::new("kcat");
    command.args(args);
    let out = common::run_with_input(command, stdin, "kcat (apt-get install kcat)").await;
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Output lines, sorted (records of several partitions arrive in any order).
fn sorted_lines(output: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = output.lines().collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_lists_produces_consumes_and_joins_a_group() {
    let b = TestBroker::start_with(|c| c.default_partitions = 3).await;
    let bs = b.bootstrap.as_str();

    kcat(
        &["-b", bs, "-P", "-t", "kcat-topic", "-K", ":"],
        Some("a:1\nb:2\nc:3\nd:4\n"),
    )
    .await;

    let listing = kcat(&["-b", bs, "-L"], None).await;
    assert!(listing.contains("1 brokers:"), "{listing}");
    assert!(listing.contains(&format!("broker 0 at {bs}")), "{listing}");
    assert!(
        listing.contains("topic \"kcat-topic\" with 3 partitions"),
        "{listing}"
    );

    let consumed = kcat(
        &[
            "-b",
            bs,
            "-C",
            "-t",
            "kcat-topic",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%k=%s\n",
        ],
        None,
    )
    .await;
    assert_eq!(sorted_lines(&consumed), vec!["a=1", "b=2", "c=3", "d=4"]);

    let grouped = kcat(
        &[
            "-b",
            bs,
            "-G",
            "kcat-group",
            "kcat-topic",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%k=%s\n",
        ],
        None,
    )
    .await;
    assert_eq!(sorted_lines(&grouped), vec!["a=1", "b=2", "c=3", "d=4"]);
    let listed = b.state().offsets.group_offsets("kcat-group");
    assert!(!listed.is_empty(), "kcat's group committed offsets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_reads_committed_transactions_only_with_read_committed() {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    let b = TestBroker::start().await;
    let bs = b.bootstrap.as_str();
    common::create_topic(bs, "kcat-txn", 1, &[]).await;
    let p: FutureProducer = common::producer(bs, &[("transactional.id", "kcat-writer")]);
    let timeout = Duration::from_secs(20);
    tokio::task::block_in_place(|| p.init_transactions(timeout)).unwrap();
    for (value, commit) in [("c1", true), ("a1", false), ("c2", true)] {
        p.begin_transaction().unwrap();
        p.send(
            FutureRecord::<(), _>::to("kcat-txn").payload(value),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
        tokio::task::block_in_place(|| {
            if commit {
                p.commit_transaction(timeout)
            } else {
                p.abort_transaction(timeout)
            }
        })
        .unwrap();
    }
    let read = |isolation: &'static str| {
        let setting = format!("isolation.level={isolation}");
        async move {
            kcat(
                &[
                    "-b",
                    bs,
                    "-C",
                    "-t",
                    "kcat-txn",
                    "-o",
                    "beginning",
                    "-e",
                    "-X",
                    &setting,
                    "-f",
                    "%s\n",
                ],
                None,
            )
            .await
        }
    };
    assert_eq!(read("read_committed").await, "c1\nc2\n");
    assert_eq!(read("read_uncommitted").await, "c1\na1\nc2\n");
}
