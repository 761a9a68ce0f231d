//! A throwaway PostgreSQL built from the locally installed server binaries, and the four service
//! databases, each owned by its own role.
//!
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (the data
//! directory is handed to it). The server is started with a parent-death signal (`setpriv
//! --pdeathsig`), so it stops even if the process that started it is killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("`{cmd}` failed: {output}")]
    Command { cmd: String, output: String },
    #[error("PostgreSQL did not accept connections within {0:?}; see {1}")]
    NotReady(Duration, PathBuf),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// One service database and the role that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceDb {
    pub database: &'static str,
    pub role: &'static str,
}

/// The databases of the four services, in the order order, payment, inventory, notification.
pub const SERVICE_DBS: [ServiceDb; 4] = [
    ServiceDb {
        database: "orders",
        role: "order_service",
    },
    ServiceDb {
        database: "payments",
        role: "payment_service",
    },
    ServiceDb {
        database: "inventory",
        role: "inventory_service",
    },
    ServiceDb {
        database: "notifications",
        role: "notification_service",
    },
];

impl ServiceDb {
    /// Lab-only password of the role (the server listens on 127.0.0.1 only).
    pub fn password(&self) -> String {
        format!("{}-lab", self.role)
    }

    /// The URL the service uses, on the server at `host:port`.
    pub fn url(&self, host: &str, port: u16) -> String {
        format!(
            "postgres://{}:{}@{host}:{port}/{}",
            self.role,
            self.password(),
            self.database
        )
    }
}

/// A PostgreSQL server this process started; stopped by [`TempPostgres::stop`] or on drop.
#[derive(Debug)]
pub struct TempPostgres {
    child: Option<std::process::Child>,
    port: u16,
    password: String,
    data_dir: PathBuf,
    log: PathBuf,
}

fn is_root() -> bool {
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

/// A free TCP port on 127.0.0.1 (there is a small window in which someone else may take it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Finds a PostgreSQL server program: on `PATH`, or where Debian's and Ubuntu's `postgresql`
/// packages put it (`/usr/lib/postgresql/<version>/bin`, newest version first), which is not on
/// `PATH` by default.
pub fn server_binary(program: &str) -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file());
    if let Some(found) = on_path {
        return found;
    }
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
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
    versions
        .pop()
        .map_or_else(|| std::path::PathBuf::from(program), |(_, path)| path)
}

impl TempPostgres {
    /// Starts a server on `dir/pgdata` (running `initdb` first if it is empty) on `port` (0 picks
    /// a free one), with extra `name=value` `settings`. The superuser is `postgres` with a
    /// password kept in `dir/superuser.pw`.
    pub async fn start(dir: &Path, port: u16, settings: &[String]) -> Result<Self, PgError> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let data_dir = dir.join("pgdata");
        let log = dir.join("postgres.log");
        let pw_file = dir.join("superuser.pw");
        let root = is_root();
        let as_postgres = |program: &str| {
            let mut c = Command::new("setpriv");
            if root {
                c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
            }
            c.args(["--pdeathsig=INT", "--"])
                .arg(server_binary(program))
                .current_dir(&dir);
            c
        };
        if root {
            // The postgres user must be able to reach and own what it uses.
            run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
            run(Command::new("chmod").arg("0755").arg(&dir))?;
        }
        if !data_dir.join("PG_VERSION").exists() {
            let password = uuid::Uuid::new_v4().simple().to_string();
            std::fs::write(&pw_file, &password)?;
            if root {
                run(Command::new("chown").arg("postgres:postgres").arg(&pw_file))?;
            }
            run(as_postgres("initdb")
                .arg("-D")
                .arg(&data_dir)
                .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pw_file.display())))?;
        }
        let password = std::fs::read_to_string(&pw_file)?.trim().to_owned();
        let port = if port == 0 { free_port()? } else { port };
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        if root {
            run(Command::new("chown").arg("postgres:postgres").arg(&log))?;
        }
        // Durability settings are relaxed: this is a throwaway lab database.
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(&data_dir)
            .args(["-p", &port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
            ])
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(["-c", "max_connections=300", "-c", "shared_buffers=128MB"])
            // Consumers batch records in one transaction; a rare lock-order deadlock between two
            // of them should cost milliseconds, not the default second.
            .args(["-c", "deadlock_timeout=50ms"])
            .args(settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?;
        let mut pg = Self {
            child: Some(child),
            port,
            password,
            data_dir,
            log,
        };
        pg.wait_ready(Duration::from_secs(60)).await?;
        Ok(pg)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), PgError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(conn) = PgConnection::connect(&self.admin_url("postgres")).await {
                let _ = conn.close().await;
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || Instant::now() > deadline {
                return Err(PgError::NotReady(timeout, self.log.clone()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
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

    /// Stops the server (fast shutdown), waiting for it to exit.
    pub async fn stop(mut self) {
        self.stop_inner().await;
    }

    async fn stop_inner(&mut self) {
        let Some(mut child) = self.child.take() else {
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
        if let Some(mut child) = self.child.take() {
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

/// Superuser operations on a server given by the URL of its `postgres` database.
#[derive(Debug, Clone)]
pub struct PgAdmin {
    /// Superuser URL of the `postgres` database.
    pub url: String,
}

impl PgAdmin {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into() }
    }

    /// Host and port of the server, from the URL.
    pub fn host_port(&self) -> (String, u16) {
        let opts: sqlx::postgres::PgConnectOptions =
            self.url.parse().expect("admin URL was accepted before");
        (opts.get_host().to_owned(), opts.get_port())
    }

    /// Creates the four service databases and roles if missing, so that each role can connect
    /// to its own database only. Returns the URL of each, in [`SERVICE_DBS`] order.
    pub async fn create_service_databases(&self) -> Result<[String; 4], PgError> {
        let mut conn = PgConnection::connect(&self.url).await?;
        for db in SERVICE_DBS {
            let role_exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                    .bind(db.role)
                    .fetch_one(&mut conn)
                    .await?;
            if !role_exists {
                // Identifiers and password are constants of this module, not user input.
                conn.execute(AssertSqlSafe(format!(
                    "CREATE ROLE {} LOGIN PASSWORD '{}'",
                    db.role,
                    db.password()
                )))
                .await?;
            }
            let db_exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(db.database)
                    .fetch_one(&mut conn)
                    .await?;
            if !db_exists {
                conn.execute(AssertSqlSafe(format!(
                    "CREATE DATABASE {} OWNER {}",
                    db.database, db.role
                )))
                .await?;
            }
            conn.execute(AssertSqlSafe(format!(
                "REVOKE ALL ON DATABASE {} FROM PUBLIC",
                db.database
            )))
            .await?;
        }
        conn.close().await?;
        let (host, port) = self.host_port();
        Ok(SERVICE_DBS.map(|db| db.url(&host, port)))
    }

    /// Makes `database` refuse new connections and drops the current ones (fault injection).
    pub async fn block_database(&self, database: &str) -> Result<(), PgError> {
        let mut conn = PgConnection::connect(&self.url).await?;
        conn.execute(AssertSqlSafe(format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
        )))
        .await?;
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(database)
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    }

    /// Lets `database` accept connections again.
    pub async fn unblock_database(&self, database: &str) -> Result<(), PgError> {
        let mut conn = PgConnection::connect(&self.url).await?;
        conn.execute(AssertSqlSafe(format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS true"
        )))
        .await?;
        conn.close().await?;
        Ok(())
    }
}
