//! The lab's throwaway PostgreSQL: a server started from the locally installed binaries as a
//! child process, for the lab and for tests that want a real database of their own.
//!
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user. That
//! user must be able to reach its files: when the data dir lies below a folder it cannot
//! enter (any `0700` home such as `/root`, or what `mktemp -d` makes), the server's files live in
//! `/var/lib/saga-lab/<id>/` instead, owned by `postgres`, and `<data-dir>/postgres` is a symbolic
//! link to that folder, so the data stays between runs. The user's folders are never opened up.
//!
//! The server is started with a parent-death signal (`setpriv --pdeathsig`), so it stops even if
//! the process that started it is killed. It is supervised while it starts: if it exits, the
//! error carries the lines of its log that say why. A lock file (`postmaster.pid`) left behind by
//! a killed server is handled: the start waits for the old server's processes to be gone (never
//! touching a lock whose server is alive), then goes on.
//!
//! Once it runs, [`TempPostgres::exit_watch`] tells when it exits without being asked to (a
//! crash, a kill), with the log to read.
//!
//! [`test_database`] makes an empty database per test on one server per test binary (or the
//! suite's, [`SHARED_TEST_SERVER`]); [`TestServer`] is a server of a test's own.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// Where the server's files go, as root, when the `postgres` user cannot reach the data dir.
pub const RELOCATED_HOME: &str = "/var/lib/saga-lab";

/// How long the lab waits for the processes of a killed server to be gone.
const OLD_SERVER_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("`{cmd}` failed: {output}")]
    Command { cmd: String, output: String },
    #[error(
        "the PostgreSQL server binaries (initdb, postgres) are not installed; install them with \
         `apt-get install postgresql` (Debian, Ubuntu), or use a running server with --postgres-url"
    )]
    BinariesMissing,
    #[error(
        "running as root, the lab runs PostgreSQL as the `postgres` user, which does not exist; \
         `apt-get install postgresql` creates it"
    )]
    NoPostgresUser,
    #[error("`setpriv` is missing; install it with `apt-get install util-linux`")]
    SetprivMissing,
    #[error(
        "cannot use {dir} for PostgreSQL's data: {reason}; choose another folder with --data-dir \
         (or LAB_DATA_DIR)"
    )]
    DataDir { dir: PathBuf, reason: String },
    #[error(
        "an earlier PostgreSQL (PID {pids}) still runs on {dir} after {secs} s; stop it \
         (`kill {pids}`) and start the lab again",
        secs = OLD_SERVER_GRACE.as_secs()
    )]
    StillRunning { pids: String, dir: PathBuf },
    #[error("PostgreSQL exited while starting ({status}):\n{lines}\n(full log: {log})")]
    Exited {
        status: String,
        lines: String,
        log: PathBuf,
    },
    #[error("PostgreSQL did not accept connections within {0:?}; see {1}")]
    NotReady(Duration, PathBuf),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("this process's test server did not start: {0}")]
    TestServer(String),
}

/// A PostgreSQL server this process started; stopped by [`TempPostgres::stop`] or on drop.
#[derive(Debug)]
pub struct TempPostgres {
    /// The server, until it is stopped; shared with its [`ExitWatch`]es.
    child: Arc<Mutex<Option<std::process::Child>>>,
    port: u16,
    password: String,
    data_dir: PathBuf,
    log: PathBuf,
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> Result<(), PgError> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PgError::Command {
            cmd: format!("{cmd:?}"),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

/// A free TCP port on 127.0.0.1, for a server to bind now and maybe again after a restart.
pub fn free_port() -> std::io::Result<u16> {
    free_port_on("127.0.0.1")
}

/// A free TCP port on `host`, chosen below the kernel's range of ephemeral ports
/// (`/proc/sys/net/ipv4/ip_local_port_range`), at a random place. A port the kernel picks for
/// `bind(0)` comes from that range, and so does the local port of every outgoing connection: a
/// test suite opens thousands, and one of them may take the port between this probe and the
/// server's bind, or while a stopped server is down before it binds its port again. Below the
/// range only another such probe can take it, and the random start makes that rare.
///
/// A port is handed out once per process, so that probes made before any of them is bound
/// (a cluster's nodes and controllers) never get the same one.
pub fn free_port_on(host: &str) -> std::io::Result<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let high = ephemeral_ports_start()
        .unwrap_or(32_768)
        .max(LOWEST_PORT + 1);
    let span = u32::from(high - LOWEST_PORT);
    let start = random() % span;
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..span {
        let port = LOWEST_PORT + ((start + i) % span) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind((host, port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    Ok(std::net::TcpListener::bind((host, 0))?.local_addr()?.port())
}

/// The lowest port [`free_port_on`] hands out: above the ones people run servers on by hand
/// (the lab's own 8080 to 9094 among them).
const LOWEST_PORT: u16 = 20_000;

/// The first port of the kernel's ephemeral range (Linux).
fn ephemeral_ports_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// A number that differs between calls and processes (a port's place, not a secret).
fn random() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish() as u32
}

/// Finds a PostgreSQL server program: on `PATH`, or where Debian's and Ubuntu's `postgresql`
/// packages put it (`/usr/lib/postgresql/<version>/bin`, newest version first), which is not on
/// `PATH` by default.
pub fn server_binary(program: &str) -> Option<PathBuf> {
    if let Some(found) = find_on_path(program) {
        return Some(found);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let candidate = e.path().join("bin").join(program);
            candidate.is_file().then_some((version, candidate))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, path)| path)
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Runs a command as the `postgres` user (when root) with a parent-death signal.
fn as_postgres(root: bool, program: &Path, cwd: &Path) -> Command {
    let mut c = Command::new("setpriv");
    if root {
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
    }
    c.args(["--pdeathsig=INT", "--"])
        .arg(program)
        .current_dir(cwd);
    c
}

/// Whether the `postgres` user can enter `dir` (every folder above it must let it through).
fn postgres_can_enter(dir: &Path) -> bool {
    Command::new("setpriv")
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .args(["test", "-x"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The folder the server's files live in, for the lab folder `dir` (`<data-dir>/postgres`):
/// `dir` itself, unless the lab runs as root and the `postgres` user cannot reach it; then a
/// folder below [`RELOCATED_HOME`] that `dir` links to (see the module docs).
fn server_home(dir: &Path, root: bool) -> Result<PathBuf, PgError> {
    let unusable = |reason: String| PgError::DataDir {
        dir: dir.to_owned(),
        reason,
    };
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| unusable(e.to_string()))?;
    // Absolute: the `postgres` user must reach it from `/`, not from our working directory.
    let parent = &parent.canonicalize()?;
    let dir = &parent.join(dir.file_name().unwrap_or("postgres".as_ref()));
    if !root {
        std::fs::create_dir_all(dir)?;
        return Ok(dir.canonicalize()?);
    }
    let postgres_owned = |path: &Path| -> Result<(), PgError> {
        run(Command::new("chown").arg("postgres:postgres").arg(path))?;
        run(Command::new("chmod").arg("0700").arg(path))
    };
    if let Ok(target) = std::fs::read_link(dir) {
        // Relocated by an earlier run.
        std::fs::create_dir_all(&target)?;
        postgres_owned(&target)?;
        return Ok(target);
    }
    if postgres_can_enter(parent) {
        std::fs::create_dir_all(dir)?;
        postgres_owned(dir)?;
        return Ok(dir.canonicalize()?);
    }
    if dir.join("pgdata").join("PG_VERSION").exists() {
        return Err(unusable(format!(
            "its PostgreSQL data ({}) is below a folder the `postgres` user cannot enter; \
             move the data dir elsewhere, or delete {} to start afresh",
            dir.join("pgdata").display(),
            dir.display()
        )));
    }
    if dir.exists() {
        // What a failed start left (an empty folder, a log): nothing worth keeping.
        std::fs::remove_dir_all(dir)?;
    }
    let home = Path::new(RELOCATED_HOME);
    std::fs::create_dir_all(home)?;
    run(Command::new("chmod").arg("0755").arg(home))?;
    sweep_orphans(home);
    let target = home.join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&target)?;
    // Who it belongs to, so that it can be removed once that data dir is gone.
    std::fs::write(target.join(OWNER_FILE), dir.as_os_str().as_encoded_bytes())?;
    postgres_owned(&target)?;
    std::os::unix::fs::symlink(&target, dir)?;
    Ok(target)
}

/// In a relocated server's folder: the path of the data dir's `postgres` link to it.
const OWNER_FILE: &str = "owner";

/// Removes the relocated servers whose data dir is gone (a deleted temporary folder, a removed
/// lab-data): their owner's link no longer points at them, and no process works in them.
fn sweep_orphans(home: &Path) {
    let Ok(entries) = std::fs::read_dir(home) else {
        return;
    };
    for entry in entries.flatten() {
        let target = entry.path();
        let Ok(owner) = std::fs::read(target.join(OWNER_FILE)) else {
            continue;
        };
        let owner = PathBuf::from(std::ffi::OsStr::new(
            std::str::from_utf8(&owner).unwrap_or_default(),
        ));
        let linked = std::fs::read_link(&owner).is_ok_and(|t| t == target);
        if !linked && processes_in(&target.join("pgdata")).is_empty() {
            // Best effort: what stays is retried on the next relocation.
            let _ = std::fs::remove_dir_all(&target);
        }
    }
}

/// Live processes whose working directory is `data_dir`: a server and its backends (PostgreSQL
/// works in its data directory). Zombies, which no longer hold anything, are left out.
fn processes_in(data_dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == data_dir)
                && !is_zombie(*pid)
        })
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// Before starting on `data_dir`: if a server's lock file is there, waits (up to
/// [`OLD_SERVER_GRACE`]) until no process of that server is left, then removes the lock, which
/// is stale by then. PostgreSQL removes a stale lock itself, except when the PID written in it
/// has been taken by another process or is an unreaped zombie, as after a `kill -9` in a
/// container whose first process does not reap.
async fn clear_stale_lock(data_dir: &Path) -> Result<(), PgError> {
    let lock = data_dir.join("postmaster.pid");
    if !lock.exists() {
        return Ok(());
    }
    let deadline = Instant::now() + OLD_SERVER_GRACE;
    loop {
        let pids = processes_in(data_dir);
        if pids.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
            return Err(PgError::StillRunning {
                pids: pids.join(" "),
                dir: data_dir.to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match std::fs::remove_file(&lock) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// The lines of the server's log from byte `from` on that say why it stopped.
fn log_excerpt(log: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let _ = f.seek(SeekFrom::Start(from));
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let telling: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            ["FATAL", "ERROR", "PANIC", "HINT", "DETAIL", "could not"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    let chosen = if telling.is_empty() {
        &lines[lines.len().saturating_sub(10)..]
    } else {
        &telling[..]
    };
    chosen
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The server's programs (`initdb`, `postgres`), once what running them needs is checked:
/// `setpriv`, and as root the `postgres` user.
fn prerequisites() -> Result<(PathBuf, PathBuf), PgError> {
    let (Some(initdb), Some(postgres)) = (server_binary("initdb"), server_binary("postgres"))
    else {
        return Err(PgError::BinariesMissing);
    };
    if find_on_path("setpriv").is_none() {
        return Err(PgError::SetprivMissing);
    }
    if is_root()
        && !Command::new("id")
            .arg("postgres")
            .output()?
            .status
            .success()
    {
        return Err(PgError::NoPostgresUser);
    }
    Ok((initdb, postgres))
}

/// As root, gives `path` to the `postgres` user, who runs the server.
fn chown_to_postgres(root: bool, path: &Path) -> Result<(), PgError> {
    if root {
        run(Command::new("chown").arg("postgres:postgres").arg(path))?;
    }
    Ok(())
}

/// Makes a new cluster in `data_dir` whose superuser `postgres` has a new password, kept in
/// `pw_file`.
fn init_cluster(
    root: bool,
    initdb: &Path,
    dir: &Path,
    data_dir: &Path,
    pw_file: &Path,
) -> Result<(), PgError> {
    if data_dir.exists() {
        // A half-made cluster from an interrupted initdb.
        std::fs::remove_dir_all(data_dir)?;
    }
    let password = uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(pw_file, &password)?;
    chown_to_postgres(root, pw_file)?;
    run(as_postgres(root, initdb, dir)
        .arg("-D")
        .arg(data_dir)
        .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pw_file.display())))
}

/// The lab's server settings, as `-c name=value` arguments.
///
/// A commit is written to the operating system before it is acknowledged
/// (`synchronous_commit=on`), so an accepted order survives a killed lab (`kill -9`, OOM);
/// nothing is forced to disk (`fsync=off`), which only a power loss can tell. Consumers batch
/// records in one transaction; a rare lock-order deadlock between two of them should cost
/// milliseconds, not the default second.
///
/// Autovacuum looks at each database every 5 s instead of every minute: the saga's tables are
/// small and hot (every order updates its customer's wallet row and its products' stock rows,
/// and marks three outbox rows published), so a burst of orders left long chains of dead row
/// versions that every transaction after it walked, until the next round came. After 5,000
/// orders this cost the next orders at 50/s 1.5-3 ms each (`docs/benchmarks.md`).
fn server_settings() -> impl Iterator<Item = &'static str> {
    [
        "listen_addresses=127.0.0.1",
        "unix_socket_directories=",
        "fsync=off",
        "synchronous_commit=on",
        "full_page_writes=off",
        "max_connections=300",
        "shared_buffers=128MB",
        "deadlock_timeout=50ms",
        "autovacuum_naptime=5s",
    ]
    .into_iter()
    .flat_map(|setting| ["-c", setting])
}

impl TempPostgres {
    /// Starts a server on `dir/pgdata` (running `initdb` first if it is empty) on `port` (0 picks
    /// a free one), with extra `name=value` `settings`. The superuser is `postgres` with a
    /// password kept in `dir/superuser.pw`.
    pub async fn start(dir: &Path, port: u16, settings: &[String]) -> Result<Self, PgError> {
        let (initdb, postgres) = prerequisites()?;
        let root = is_root();
        let dir = server_home(dir, root)?;
        let data_dir = dir.join("pgdata");
        let log = dir.join("postgres.log");
        let pw_file = dir.join("superuser.pw");
        if !data_dir.join("PG_VERSION").exists() {
            init_cluster(root, &initdb, &dir, &data_dir, &pw_file)?;
        }
        let password = std::fs::read_to_string(&pw_file)?.trim().to_owned();
        clear_stale_lock(&data_dir).await?;
        let port = if port == 0 { free_port()? } else { port };
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        chown_to_postgres(root, &log)?;
        let log_start = log_file.metadata()?.len();
        let child = as_postgres(root, &postgres, &dir)
            .arg("-D")
            .arg(&data_dir)
            .args(["-p", &port.to_string()])
            .args(server_settings())
            .args(settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?;
        let mut pg = Self {
            child: Arc::new(Mutex::new(Some(child))),
            port,
            password,
            data_dir,
            log,
        };
        pg.wait_ready(Duration::from_secs(60), log_start).await?;
        Ok(pg)
    }

    /// Waits until the server accepts connections; if it exits first, says why at once.
    async fn wait_ready(&mut self, timeout: Duration, log_start: u64) -> Result<(), PgError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(conn) = PgConnection::connect(&self.admin_url("postgres")).await {
                let _ = conn.close().await;
                return Ok(());
            }
            let exited = {
                let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
                let status = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                if status.is_some() {
                    *child = None;
                }
                status
            };
            if let Some(status) = exited {
                return Err(PgError::Exited {
                    status: status.to_string(),
                    lines: log_excerpt(&self.log, log_start),
                    log: self.log.clone(),
                });
            }
            if Instant::now() > deadline {
                return Err(PgError::NotReady(timeout, self.log.clone()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Superuser URL of database `db`.
    pub fn admin_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// The server's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// A handle that tells when the server exits on its own (it crashed, or someone killed it).
    pub fn exit_watch(&self) -> ExitWatch {
        ExitWatch {
            child: self.child.clone(),
            log: self.log.clone(),
        }
    }

    /// Takes the server out of reach of its [`ExitWatch`]es: it is being stopped on purpose.
    fn take_child(&self) -> Option<std::process::Child> {
        self.child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Stops the server (fast shutdown), waiting for it to exit.
    pub async fn stop(mut self) {
        self.stop_inner().await;
    }

    async fn stop_inner(&mut self) {
        let Some(mut child) = self.take_child() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.take_child() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Watches a [`TempPostgres`] for an exit nobody asked for: see [`ExitWatch::exited`].
#[derive(Debug, Clone)]
pub struct ExitWatch {
    child: Arc<Mutex<Option<std::process::Child>>>,
    log: PathBuf,
}

impl ExitWatch {
    /// How often [`ExitWatch::exited`] looks.
    const EVERY: Duration = Duration::from_millis(200);

    /// Resolves when the server has exited on its own, with how it exited (`signal: 9
    /// (SIGKILL)`, `exit status: 1`); never once it is stopped on purpose
    /// ([`TempPostgres::stop`], or dropping it).
    pub async fn exited(&self) -> String {
        loop {
            {
                let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
                match child.as_mut().map(std::process::Child::try_wait) {
                    Some(Ok(Some(status))) => return status.to_string(),
                    Some(Err(e)) => return format!("lost track of it: {e}"),
                    Some(Ok(None)) => {}
                    None => break,
                }
            }
            tokio::time::sleep(Self::EVERY).await;
        }
        std::future::pending().await
    }

    /// The server's log file, where it says why it stopped.
    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// A server of its own for one test: in a temporary folder that is removed with it, started on a
/// free port. Each test takes a [`TestServer::fresh_database`].
#[derive(Debug)]
pub struct TestServer {
    server: Option<TempPostgres>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Result<Self, PgError> {
        let dir = tempfile::Builder::new().prefix("lab-pg-test").tempdir()?;
        let server = start_in_own_folder(dir.path()).await?;
        Ok(Self {
            server: Some(server),
            _dir: dir,
        })
    }

    /// A new, empty database; returns its superuser URL.
    pub async fn fresh_database(&self) -> Result<String, PgError> {
        create_database(&self.admin_url()).await
    }

    /// The superuser URL of its `postgres` database.
    pub fn admin_url(&self) -> String {
        let server = self.server.as_ref().expect("running until dropped");
        server.admin_url("postgres")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Stops the server (TempPostgres's drop) before its folder goes.
        self.server.take();
    }
}

/// The variable that hands tests a running server to share, as the superuser URL of its
/// `postgres` database.
pub const SHARED_TEST_SERVER: &str = "LAB_TEST_POSTGRES_URL";

/// A new, empty database for one test; returns its superuser URL. It lives on the server named
/// by [`SHARED_TEST_SERVER`] if set, else on a server this process starts on first use and keeps
/// until it exits: one server per test binary, a fresh database per test.
pub async fn test_database() -> Result<String, PgError> {
    create_database(&test_server_url().await?).await
}

/// The superuser URL of the `postgres` database of the tests' server: the one named by
/// [`SHARED_TEST_SERVER`] if set, else this process's, started on first use.
pub async fn test_server_url() -> Result<String, PgError> {
    match std::env::var(SHARED_TEST_SERVER) {
        Ok(url) => Ok(url),
        Err(_) => tokio::task::spawn_blocking(process_server)
            .await
            .map_err(|e| PgError::TestServer(e.to_string()))?,
    }
}

/// Creates an empty database on the server whose `postgres` database `admin` reaches; returns
/// the new database's superuser URL.
async fn create_database(admin: &str) -> Result<String, PgError> {
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(admin).await?;
    conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await?;
    conn.close().await?;
    let base = admin.strip_suffix("/postgres").unwrap_or(admin);
    Ok(format!("{base}/{name}"))
}

/// This process's test server, started on first use: on a thread of its own that lives as long
/// as the process, since the server's parent-death signal follows the thread that started it.
/// Its folder is named after the process; a later start removes those of processes gone.
fn process_server() -> Result<String, PgError> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    let started = SERVER.get_or_init(|| {
        let (tell, told) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let server = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(PgError::from)
                .and_then(|runtime| runtime.block_on(process_server_start()));
            let _ = tell.send(
                server
                    .as_ref()
                    .map(|s| s.admin_url("postgres"))
                    .map_err(ToString::to_string),
            );
            let _kept = server;
            loop {
                std::thread::park();
            }
        });
        told.recv()
            .unwrap_or_else(|_| Err("the test server's thread ended before it said".into()))
    });
    started.clone().map_err(PgError::TestServer)
}

async fn process_server_start() -> Result<TempPostgres, PgError> {
    let tmp = std::env::temp_dir();
    // Folders of earlier test processes: their servers stopped with them.
    for entry in std::fs::read_dir(&tmp)?.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("lab-pg-process-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = tmp.join(format!("lab-pg-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    start_in_own_folder(&dir).await
}

/// A server on a free port in `dir`, a folder of the caller's own: the `postgres` user (when
/// root) may enter it, instead of the server's files being relocated (they would outlive it).
async fn start_in_own_folder(dir: &Path) -> Result<TempPostgres, PgError> {
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    TempPostgres::start(dir, 0, &[]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lock_is_kept_while_a_process_works_in_the_data_dir_and_cleared_after() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().canonicalize().unwrap();
        // Stands in for a backend outliving its killed postmaster: it works in the data dir.
        let mut backend = Command::new("sleep")
            .arg("60")
            .current_dir(&data_dir)
            .spawn()
            .unwrap();
        let lock = data_dir.join("postmaster.pid");
        std::fs::write(&lock, format!("{}\n{}\n", backend.id(), data_dir.display())).unwrap();
        assert_eq!(processes_in(&data_dir), vec![backend.id()]);

        let waiting = tokio::spawn({
            let data_dir = data_dir.clone();
            async move { clear_stale_lock(&data_dir).await }
        });
        let still_waiting = tokio::time::timeout(Duration::from_millis(300), async {
            while !waiting.is_finished() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .is_err();
        assert!(still_waiting, "waits while the old server's process lives");
        assert!(lock.exists(), "a live server's lock is never removed");

        backend.kill().unwrap();
        backend.wait().unwrap();
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("done once the process is gone")
            .unwrap()
            .unwrap();
        assert!(!lock.exists(), "the stale lock is removed");
    }

    #[test]
    fn relocated_servers_whose_data_dir_is_gone_are_swept() {
        let home = tempfile::tempdir().unwrap();
        let users = tempfile::tempdir().unwrap();
        let relocate = |name: &str, owner: &Path| {
            let target = home.path().join(name);
            std::fs::create_dir_all(target.join("pgdata")).unwrap();
            std::fs::write(
                target.join(OWNER_FILE),
                owner.as_os_str().as_encoded_bytes(),
            )
            .unwrap();
            target
        };
        // A data dir that still links to its server, and one that was deleted.
        let kept_link = users.path().join("kept").join("postgres");
        std::fs::create_dir_all(kept_link.parent().unwrap()).unwrap();
        let kept = relocate("kept", &kept_link);
        std::os::unix::fs::symlink(&kept, &kept_link).unwrap();
        let gone = relocate("gone", &users.path().join("deleted").join("postgres"));
        // A folder without an owner file is not ours to judge.
        let unknown = home.path().join("unknown");
        std::fs::create_dir_all(&unknown).unwrap();
        sweep_orphans(home.path());
        assert!(kept.exists() && unknown.exists());
        assert!(!gone.exists());
    }

    #[test]
    fn the_log_excerpt_keeps_the_lines_that_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("postgres.log");
        std::fs::write(
            &log,
            "old run: FATAL something earlier\n\
             LOG:  starting PostgreSQL 15\n\
             FATAL:  lock file \"postmaster.pid\" already exists\n\
             HINT:  Is another postmaster (PID 42) running?\n",
        )
        .unwrap();
        let from = "old run: FATAL something earlier\n".len() as u64;
        let excerpt = log_excerpt(&log, from);
        assert_eq!(
            excerpt,
            "  FATAL:  lock file \"postmaster.pid\" already exists\n  \
             HINT:  Is another postmaster (PID 42) running?"
        );
    }

    #[test]
    fn free_ports_come_from_below_the_ephemeral_range_and_differ() {
        let high = ephemeral_ports_start().unwrap_or(32_768);
        let ports: std::collections::BTreeSet<u16> =
            (0..20).map(|_| free_port().unwrap()).collect();
        for &port in &ports {
            assert!((LOWEST_PORT..high).contains(&port), "{port}");
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
        assert_eq!(ports.len(), 20, "each handed out once: {ports:?}");
    }
}
