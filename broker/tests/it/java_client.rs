//! The official Java client (`org.apache.kafka:kafka-clients` 4.4) as a judge of the broker:
//! each test starts a broker and runs one JUnit class of `compat/java` against it with the
//! JUnit console launcher. Needs Java 17+ and the compiled tests with their jars:
//! `mvn -B -q -f compat/java/pom.xml package -DskipTests` (`cargo xtask setup` runs it).

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::TestBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_producer() {
    run_class("ProducerTest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_transactions() {
    run_class("TransactionTest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_consumer_groups() {
    run_class("ConsumerGroupTest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_admin_client() {
    run_class("AdminTest").await;
}

/// Runs `dev.sagalab.compat.<class>` against a fresh broker; fails with the launcher's output.
async fn run_class(class: &str) {
    let project = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../compat/java"));
    let classes = project.join("target/test-classes");
    let lib = project.join("target/lib");
    assert!(
        classes.join("dev/sagalab/compat").is_dir()
            && lib.join("kafka-clients-4.4.0.jar").is_file(),
        "the Java client tests are not built ({} and {}): run `cargo xtask setup` \
         (it runs `mvn -B -q -f compat/java/pom.xml package -DskipTests`)",
        classes.display(),
        lib.display()
    );
    let b = TestBroker::start().await;
    // A JVM that dies with the test.
    let java = apache_kafka::jvm().unwrap_or_else(|e| panic!("{e}"));
    let run = tokio::process::Command::from(java)
        .arg(format!("-Dbootstrap.servers={}", b.bootstrap))
        // The client's warnings and errors only.
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .arg("-cp")
        .arg(format!("{}:{}/*", classes.display(), lib.display()))
        .args([
            "org.junit.platform.console.ConsoleLauncher",
            "execute",
            "--disable-banner",
            "--disable-ansi-colors",
            "--details=tree",
            "--fail-if-no-tests",
        ])
        .arg(format!("--select-class=dev.sagalab.compat.{class}"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(200), run)
        .await
        .unwrap_or_else(|_| panic!("{class} did not finish within 200 s"))
        .expect("java runs (is a JDK 17+ installed?)");
    assert!(
        out.status.success(),
        "{class} failed against the broker ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
