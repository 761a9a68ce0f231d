//! A second, independent client implementation: kafka-python (pure Python, its own protocol
//! code and API versions). Needs `pip install kafka-python` (`.ci/run` installs it).

use crate::common;

use std::time::Duration;

use common::TestBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_produces_consumes_commits_and_administers() {
    run_script(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/compat/kafka_python.py"
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_transactions_and_partition_and_group_admin() {
    run_script(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/compat/kafka_python_txn.py"
    ))
    .await;
}

async fn run_script(script: &str) {
    let b = TestBroker::start().await;
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&b.bootstrap)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("kafka-python finished in time")
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "kafka-python failed (is it installed? pip install kafka-python):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
