//! Runs every `sh` block of `docs/tutorial/*.md` against a real lab, so the tutorial cannot rot.
//!
//! The blocks of one chapter run as one bash script (`set -euo pipefail`, so variables carry over
//! and any failing command fails the test). The tutorial uses the standard addresses; the test starts
//! the lab on free ports and rewrites them, and puts this build's `lab` binary first on PATH.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use lab::dashboard;
use lab::{Lab, LabClient, LabConfig, Service};

fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```sh") => current = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => blocks.push(current.take().unwrap()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

async fn run_chapter(file: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("docs/tutorial").join(file)).unwrap();
    let blocks = sh_blocks(&text);
    assert!(!blocks.is_empty(), "{file} has commands");

    saga_shared::telemetry::init_tracing("warn");
    let dir = tempfile::tempdir().unwrap();
    let mut config = LabConfig::ephemeral(dir.path());
    config.service.max_attempts = 3;
    config.service.retry_max_ms = 200;
    let lab = Lab::start(config, &mut |_| {}).await.unwrap();
    let client = LabClient::new(&lab);
    let brokers = lab.brokers().to_owned();
    let shared = std::sync::Arc::new(tokio::sync::Mutex::new(Some(lab)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dash_addr = listener.local_addr().unwrap();
    let dash =
        dashboard::Dashboard::serve(shared.clone(), client.clone(), brokers.clone(), listener)
            .unwrap();

    let mut script = String::from("set -euo pipefail\n");
    for b in &blocks {
        script.push_str(b);
    }
    let (lab_urls, order) = {
        let guard = shared.lock().await;
        let lab = guard.as_ref().unwrap();
        (
            Service::ALL.map(|s| (s.default_port(), lab.url(s))),
            lab.url(Service::Order),
        )
    };
    for (port, url) in &lab_urls {
        script = script
            .replace(&format!("http://127.0.0.1:{port}"), url)
            .replace(&format!("http://localhost:{port}"), url);
    }
    script = script
        .replace("127.0.0.1:9092", &brokers)
        .replace("http://127.0.0.1:8080", &format!("http://{dash_addr}"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_lab"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .current_dir(dir.path())
        .env("LAB_DASHBOARD_URL", format!("http://{dash_addr}"))
        .env("LAB_ORDER_URL", &order)
        .env("LAB_BROKERS", &brokers)
        .env("LAB_NOTIFICATION_URL", &lab_urls[3].1)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("the chapter's commands finish within 90 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{file} failed:\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );

    dash.shutdown().await;
    let lab = shared.lock().await.take().unwrap();
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase_1_first_event() {
    run_chapter("1-first-event.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase_2_full_chain() {
    run_chapter("2-full-chain.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase_3_failures() {
    run_chapter("3-failures.md").await;
}
