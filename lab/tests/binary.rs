//! The `lab` binary itself, as a user runs it: it starts everything and serves an order; it stops
//! cleanly on Ctrl-C; it runs as root from below a `0700` folder; it starts again at once after
//! its whole process group was killed with SIGKILL, and finishes what was accepted before; a
//! second lab on the same data dir, and a taken port, are refused with one clear line; a
//! PostgreSQL killed under it stops it with one line naming the log; a 503 from `/ready` is not
//! logged as an error.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use lab::LabClient;
use order_service::domain::OrderStatus;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tokio::task::JoinHandle;

fn postgres_processes_of(dir: &Path) -> usize {
    let out = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("postgres") && l.contains(&*dir.to_string_lossy()))
        .count()
}

/// Every port free-picked, so tests run side by side.
const FREE_PORTS: [&str; 14] = [
    "--schema-registry-port",
    "0",
    "--broker-port",
    "0",
    "--dashboard-port",
    "0",
    "--order-port",
    "0",
    "--payment-port",
    "0",
    "--inventory-port",
    "0",
    "--notification-port",
    "0",
];

/// Where the lab keeps its data.
#[derive(Clone, Copy)]
enum DataDir<'a> {
    /// `--data-dir <path>`.
    Flag(&'a Path),
    /// No flag: the default `lab-data`, below the working directory `cwd`.
    DefaultIn(&'a Path),
}

impl DataDir<'_> {
    fn path(self) -> PathBuf {
        match self {
            DataDir::Flag(p) => p.to_owned(),
            DataDir::DefaultIn(cwd) => cwd.join("lab-data"),
        }
    }
}

fn lab_command(data_dir: DataDir<'_>, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_lab"));
    match data_dir {
        DataDir::Flag(path) => cmd.arg("--data-dir").arg(path),
        DataDir::DefaultIn(cwd) => cmd.current_dir(cwd),
    };
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, to be killed as a whole like a closed terminal would.
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// A lab started as a process, up (it printed its addresses).
struct RunningLab {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Everything the lab writes to stderr, read as it comes (an unread pipe that fills up
    /// would block the lab on its next log line), until it exits.
    stderr: JoinHandle<String>,
    printed: Vec<String>,
    order_url: String,
    payment_url: String,
    notification_url: String,
    dashboard_url: String,
}

impl RunningLab {
    /// Starts the lab on `data_dir` with free ports and waits until it says it is up.
    async fn start(data_dir: DataDir<'_>, within: Duration) -> RunningLab {
        let mut child = lab_command(data_dir, &FREE_PORTS).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut pipe = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text).await;
            text
        });
        let mut printed = Vec::new();
        let up = tokio::time::timeout(within, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                printed.push(line.clone());
                if line.contains("Press Ctrl-C") {
                    return true;
                }
            }
            false
        })
        .await;
        if up != Ok(true) {
            let _ = child.start_kill();
            let _ = child.wait().await;
            panic!(
                "the lab was not up within {within:?}: {printed:#?}\nstderr: {}",
                stderr.await.unwrap()
            );
        }
        let url = |name: &str| {
            printed
                .iter()
                .find(|l| l.trim_start().starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or_else(|| panic!("{name} URL printed: {printed:#?}"))
                .to_owned()
        };
        RunningLab {
            order_url: url("order-service"),
            payment_url: url("payment-service"),
            notification_url: url("notification-service"),
            dashboard_url: url("dashboard"),
            child,
            lines,
            stderr,
            printed,
        }
    }

    fn client(&self) -> LabClient {
        LabClient::with_urls(
            self.order_url.clone(),
            String::new(),
            String::new(),
            self.notification_url.clone(),
        )
    }

    /// Places an order and waits until it is CONFIRMED; returns its id.
    async fn order_confirmed(&self) -> uuid::Uuid {
        let client = self.client();
        let order = client
            .place_order("alice", &[("LATTE", 1, 5000)])
            .await
            .unwrap();
        let id = order.id;
        let done = client
            .wait_terminal(id, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(done.status, OrderStatus::Confirmed);
        id
    }

    /// Ctrl-C, then the lines printed after it; asserts a clean exit.
    async fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        let exited = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        if exited.is_err() {
            let _ = self.child.start_kill();
        }
        let mut rest = Vec::new();
        while let Ok(Some(line)) = self.lines.next_line().await {
            rest.push(line);
        }
        let stderr = self.stderr.await.unwrap();
        let status = exited
            .unwrap_or_else(|_| {
                panic!(
                    "the lab exits within 60 s of Ctrl-C; it printed {rest:#?}\nstderr: {stderr}"
                )
            })
            .unwrap();
        assert!(status.success(), "{status:?}; stderr: {stderr}");
        rest
    }

    /// Waits (with a deadline) for the lab to exit on its own; its status, and what it printed
    /// after starting (stdout) and in all (stderr).
    async fn exits_within(
        mut self,
        within: Duration,
    ) -> (std::process::ExitStatus, Vec<String>, String) {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the lab exits on its own within {within:?}"))
            .unwrap();
        let mut rest = Vec::new();
        while let Some(line) = self.lines.next_line().await.unwrap() {
            rest.push(line);
        }
        (status, rest, self.stderr.await.unwrap())
    }

    /// SIGKILL to the lab's whole process group, as an OOM kill or a closed terminal does.
    async fn kill_process_group(mut self) {
        let pgid = self.child.id().unwrap();
        assert!(
            std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status()
                .unwrap()
                .success()
        );
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("a SIGKILLed lab is gone at once")
            .unwrap();
    }
}

/// Runs the lab with `args` and expects it to fail at once; returns what it printed to stderr.
async fn refused(data_dir: DataDir<'_>, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        lab_command(data_dir, args).output(),
    )
    .await
    .expect("a refused lab exits at once")
    .unwrap();
    assert!(!out.status.success(), "the lab was refused: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn is_root() -> bool {
    lab::pg::is_root()
}

/// Removes what a root lab put below /var/lib/saga-lab for `data_dir`, if anything.
fn remove_relocated(data_dir: &Path) {
    if let Ok(target) = std::fs::read_link(data_dir.join("postgres")) {
        let _ = std::fs::remove_dir_all(target);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_starts_serves_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let lab = RunningLab::start(DataDir::Flag(dir.path()), Duration::from_secs(60)).await;
    assert!(
        lab.printed.iter().any(|l| l.contains("curl -s -X POST")),
        "{:#?}",
        lab.printed
    );
    assert_eq!(
        postgres_processes_of(dir.path()),
        1,
        "one PostgreSQL runs for the lab"
    );
    assert!(
        !lab.printed.iter().any(|l| l.contains("ERROR")),
        "a start-up without an error logs none: {:#?}",
        lab.printed
    );
    lab.order_confirmed().await;
    // The schema registry it prints answers (Confluent's API; its `_schemas` topic was made).
    let registry = lab
        .printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("schema registry"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the schema registry's address is printed")
        .to_owned();
    let config = reqwest::get(format!("{registry}/config"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(config, r#"{"compatibilityLevel":"BACKWARD"}"#);
    let rest = lab.stop().await;
    assert!(rest.iter().any(|l| l == "stopped."), "{rest:#?}");
    assert_eq!(
        postgres_processes_of(dir.path()),
        0,
        "PostgreSQL stopped with the lab"
    );
    remove_relocated(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_runs_below_a_private_folder_and_keeps_its_data() {
    // What `mktemp -d` and every root home directory are.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    // A clone in a home folder, `/root/project`: the project folder itself is open, a folder
    // above it is not. The README's command, run there: the default data dir.
    let project = private.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::set_permissions(
        &project,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let lab = RunningLab::start(DataDir::DefaultIn(&project), Duration::from_secs(60)).await;
    let data_dir = DataDir::DefaultIn(&project).path();
    let id = lab.order_confirmed().await;
    lab.stop().await;
    if is_root() {
        let target = std::fs::read_link(data_dir.join("postgres"))
            .expect("as root, <data-dir>/postgres links to a folder the postgres user reaches");
        assert!(
            target.starts_with(lab::pg::RELOCATED_HOME),
            "{}",
            target.display()
        );
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(private.path()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "the private folder was left as it was");

    // The second run, with --data-dir, finds the first run's data.
    let lab = RunningLab::start(DataDir::Flag(&data_dir), Duration::from_secs(60)).await;
    let order = lab.client().order(id).await.unwrap();
    assert_eq!(order.status, OrderStatus::Confirmed, "{order:?}");
    lab.stop().await;
    remove_relocated(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_killed_with_sigkill_starts_again_at_once_and_finishes_accepted_orders() {
    let dir = tempfile::tempdir().unwrap();
    let lab = RunningLab::start(DataDir::Flag(dir.path()), Duration::from_secs(60)).await;
    // With payment stopped, an accepted order waits in PENDING.
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/api/services/payment/stop", lab.dashboard_url))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{res:?}");
    let order = lab
        .client()
        .place_order("alice", &[("MOCHA", 1, 5500)])
        .await
        .unwrap();
    let id = order.id;
    assert_eq!(order.status, OrderStatus::Pending);
    lab.kill_process_group().await;

    let restarted = Instant::now();
    let lab = RunningLab::start(DataDir::Flag(dir.path()), Duration::from_secs(20)).await;
    let took = restarted.elapsed();
    assert!(took < Duration::from_secs(20), "ready after {took:?}");
    let done = lab
        .client()
        .wait_terminal(id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        done.status,
        OrderStatus::Confirmed,
        "the order accepted before the kill completes: {done:?}"
    );
    lab.stop().await;
    remove_relocated(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_lab_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lab = RunningLab::start(DataDir::Flag(dir.path()), Duration::from_secs(60)).await;
    let stderr = refused(DataDir::Flag(dir.path()), &FREE_PORTS).await;
    let pid = lab.child.id().unwrap().to_string();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("a lab is already running on the data dir") && stderr.contains(&pid),
        "{stderr}"
    );
    lab.order_confirmed().await;
    lab.stop().await;
    remove_relocated(dir.path());
}

/// The order service prices orders from the inventory service's catalogue: without inventory it
/// could never be ready, so the lab says so at once instead of waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_service_without_the_inventory_service_is_one_line_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = FREE_PORTS.to_vec();
    args.extend(["--services", "order,notification"]);
    let stderr = refused(DataDir::Flag(dir.path()), &args).await;
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("start inventory with it, e.g. --services order,inventory,notification"),
        "{stderr}"
    );
    assert_eq!(postgres_processes_of(dir.path()), 0, "nothing was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_one_line_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut args = FREE_PORTS.to_vec();
    let at = args.iter().position(|a| *a == "--order-port").unwrap();
    args[at + 1] = &port;
    let stderr = refused(DataDir::Flag(dir.path()), &args).await;
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&format!("port {port} (order-service) is already in use"))
            && stderr.contains("--order-port")
            && stderr.contains("LAB_ORDER_PORT"),
        "{stderr}"
    );
    assert_eq!(postgres_processes_of(dir.path()), 0, "nothing was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_that_exits_while_starting_is_reported_at_once_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err = lab::pg::TempPostgres::start(
        &dir.path().join("postgres"),
        0,
        &["shared_buffers=lots".to_owned()],
    )
    .await
    .expect_err("an invalid setting stops PostgreSQL");
    let text = err.to_string();
    assert!(
        text.contains("PostgreSQL exited while starting") && text.contains("shared_buffers"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "reported at once, not after the start-up timeout: {:?}",
        started.elapsed()
    );
    remove_relocated(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_that_cannot_be_written_is_one_line_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    // Below a regular file: no folder can be made there, root or not.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let stderr = refused(DataDir::Flag(&file.join("lab-data")), &FREE_PORTS).await;
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("cannot write the data dir") && stderr.contains("--data-dir"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Not a directory").count(),
        1,
        "the cause is said once: {stderr}"
    );
}

/// The lab's own PostgreSQL server: its postmaster's PID and port, from its lock file.
fn postmaster(data_dir: &Path) -> (String, u16) {
    let pid_file = data_dir
        .join("postgres")
        .join("pgdata")
        .join("postmaster.pid");
    let text = std::fs::read_to_string(&pid_file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    (lines[0].trim().to_owned(), lines[3].trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_killed_while_the_lab_runs_stops_the_lab_with_one_line_naming_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let lab = RunningLab::start(DataDir::Flag(dir.path()), Duration::from_secs(60)).await;
    let (pid, _) = postmaster(dir.path());
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (status, rest, stderr) = lab.exits_within(Duration::from_secs(60)).await;
    assert!(!status.success(), "a failure exit: {status:?}");
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("PostgreSQL"))
        .collect();
    assert_eq!(said.len(), 1, "one line: {stderr}");
    assert!(
        said[0].starts_with("error: the lab's PostgreSQL exited while the lab ran")
            && said[0].contains("SIGKILL")
            && said[0].contains("postgres.log"),
        "what happened and the log to read: {stderr}"
    );
    assert!(
        rest.iter().any(|l| l == "stopped."),
        "stopped cleanly: {rest:#?}"
    );
    assert_eq!(
        postgres_processes_of(dir.path()),
        0,
        "nothing of PostgreSQL is left"
    );
    remove_relocated(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_ready_answer_is_not_logged_as_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let lab = RunningLab::start(DataDir::Flag(dir.path()), Duration::from_secs(60)).await;
    // Payment's database refuses connections: its /ready answers 503, as while it starts.
    let (_, port) = postmaster(dir.path());
    let password = std::fs::read_to_string(dir.path().join("postgres").join("superuser.pw"))
        .unwrap()
        .trim()
        .to_owned();
    let admin = lab::pg::PgAdmin::new(format!(
        "postgres://postgres:{password}@127.0.0.1:{port}/postgres"
    ));
    let database = lab::Service::Payment.db().database;
    admin.block_database(&database).await.unwrap();
    let http = reqwest::Client::new();
    let ready = format!("{}/ready", lab.payment_url);
    lab::client::eventually(
        "payment's /ready to answer 503",
        Duration::from_secs(30),
        || async {
            let res = http.get(&ready).send().await.ok()?;
            (res.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE).then_some(())
        },
    )
    .await
    .expect("payment's /ready answers 503 without its database");
    admin.unblock_database(&database).await.unwrap();
    // A real server error is still an ERROR: the log shows it (checked in saga-shared's tests).
    let printed = lab.printed.clone();
    let rest = lab.stop().await;
    let errors: Vec<&String> = printed
        .iter()
        .chain(&rest)
        // tower-http's line for a failed response (its span, naming the path, is below the
        // lab's `warn` filter); the only requests here are to /ready.
        .filter(|l| l.contains("ERROR") && l.contains("response failed"))
        .collect();
    assert!(
        errors.is_empty(),
        "/ready's 503 logged as an error: {errors:#?}"
    );
    remove_relocated(dir.path());
}
