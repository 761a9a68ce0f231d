//! The `lab` binary itself: it starts everything, serves an order, and on Ctrl-C (SIGINT) stops
//! everything and exits, leaving no PostgreSQL behind.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

fn postgres_processes_of(dir: &std::path::Path) -> usize {
    let out = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("postgres") && l.contains(&*dir.to_string_lossy()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_starts_serves_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lab"))
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--broker-port",
            "0",
            "--dashboard-port",
            "0",
            "--order-port",
            "0",
        ])
        .args([
            "--payment-port",
            "0",
            "--inventory-port",
            "0",
            "--notification-port",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let order_url = tokio::time::timeout(Duration::from_secs(60), async {
        let mut order_url = None;
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push(line.clone());
            if line.trim_start().starts_with("order-service") {
                order_url = line.split_whitespace().nth(1).map(str::to_owned);
            }
            if line.contains("Press Ctrl-C") {
                break;
            }
        }
        order_url
    })
    .await
    .expect("the lab is up within 60 s")
    .expect("the order service URL is printed");
    assert!(
        printed.iter().any(|l| l.contains("curl -s -X POST")),
        "{printed:#?}"
    );
    assert_eq!(
        postgres_processes_of(dir.path()),
        1,
        "one PostgreSQL runs for the lab"
    );

    let client = lab::LabClient::with_urls(order_url, String::new(), String::new(), String::new());
    let order = client
        .place_order("alice", &[("LATTE", 1, 5000)])
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap();
    let done = client
        .wait_terminal(id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done["status"], "CONFIRMED");

    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the lab exits within 60 s of Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push(line);
    }
    assert!(rest.iter().any(|l| l == "stopped."), "{rest:#?}");
    assert_eq!(
        postgres_processes_of(dir.path()),
        0,
        "PostgreSQL stopped with the lab"
    );
}
