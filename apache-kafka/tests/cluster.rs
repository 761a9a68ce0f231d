//! Starts real Apache Kafka clusters and asks them, with kcat, which brokers they have.

use std::process::Command;
use std::time::{Duration, Instant};

use apache_kafka::{KafkaCluster, KafkaConfig};

/// The broker ids `kcat -L` lists through `bootstrap`, polled until `want` or a deadline.
async fn wait_for_brokers(bootstrap: &str, want: &[u32]) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("kcat")
            .args(["-b", bootstrap, "-L", "-m", "5"])
            .output()
            .expect("kcat runs (cargo xtask setup installs it)");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut ids: Vec<u32> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("broker "))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        ids.sort_unstable();
        if ids == want || Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_single_node_cluster_serves_clients() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = KafkaCluster::start(dir.path(), KafkaConfig::for_tests(1))
        .await
        .unwrap();
    assert_eq!(wait_for_brokers(&kafka.bootstrap(), &[1]).await, [1]);
}

#[tokio::test]
async fn a_quorum_of_three_keeps_serving_while_one_node_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut kafka = KafkaCluster::start(dir.path(), KafkaConfig::for_tests(3))
        .await
        .unwrap();
    let all = kafka.bootstrap();
    assert_eq!(wait_for_brokers(&all, &[1, 2, 3]).await, [1, 2, 3]);
    kafka.kill(2).unwrap();
    // The controllers fence the dead broker once its session times out; the others still serve.
    assert_eq!(wait_for_brokers(&all, &[1, 3]).await, [1, 3]);
    kafka.restart(2).await.unwrap();
    assert_eq!(wait_for_brokers(&all, &[1, 2, 3]).await, [1, 2, 3]);
}
