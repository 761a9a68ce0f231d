//! A Java application (the Spring and Streams examples) run as a child process by a test: its
//! output collected line by line, waited on with a deadline, and the JVM stopped with the test
//! (also when the test process is killed: `apache_kafka::jvm`).

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

/// How long an example may take to show what a test waits for (a cold JVM on two busy cores).
const DEADLINE: Duration = Duration::from_secs(120);

pub struct JavaApp {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

/// Fails with how to build it if `path`, built by `cargo xtask setup`, is missing.
pub fn built(path: &str, pom_dir: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: build it with `cargo xtask setup` \
         (mvn -B -q -f {pom_dir}/pom.xml package -DskipTests)"
    );
}

impl JavaApp {
    /// Runs `java <args>`.
    pub fn start(args: &[&str]) -> Self {
        let java = apache_kafka::jvm().unwrap_or_else(|e| panic!("{e}"));
        let mut child = tokio::process::Command::from(java)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("java runs");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for stream in [
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(stderr),
        ] {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Self { child, lines }
    }

    /// Every line printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a printed line containing every one of `parts`; fails with the whole output
    /// at the deadline or if the JVM exits first.
    pub async fn wait_for(&mut self, parts: &[&str]) -> String {
        self.wait_until(&format!("a line with {parts:?}"), |lines| {
            lines
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .cloned()
        })
        .await
    }

    /// Waits until `check` finds something in the lines printed so far.
    pub async fn wait_until<T>(
        &mut self,
        what: &str,
        mut check: impl FnMut(&[String]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(found) = check(&self.lines.lock().unwrap()) {
                return found;
            }
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the Java app never printed {what} ({}); it printed:\n{}",
                exited.map_or("still running".to_owned(), |s| format!("it exited: {s}")),
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
