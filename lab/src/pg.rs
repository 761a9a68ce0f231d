//! The lab's PostgreSQL ([`lab_postgres`]) and the four service databases, each owned by its own
//! role.

pub use lab_postgres::{
    ExitWatch, PgError, RELOCATED_HOME, TempPostgres, free_port, free_port_on, is_root,
    server_binary,
};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// One service database and the role that owns it (from the service's declaration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDb {
    pub database: String,
    pub role: String,
}

impl ServiceDb {
    /// The same with `suffix` appended to the database's name (several labs on one server).
    pub fn with_suffix(mut self, suffix: &str) -> Self {
        self.database.push_str(suffix);
        self
    }

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

/// SQLSTATE of `CREATE ROLE` for a role that exists, and of a catalog row written twice at once.
const DUPLICATE_OBJECT: &str = "42710";
const UNIQUE_VIOLATION: &str = "23505";

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

    /// Creates the service databases and roles if missing, so that each role can connect to its
    /// own database only. Returns the URL of each, in the order of `dbs`.
    pub async fn create_service_databases<const N: usize>(
        &self,
        dbs: &[ServiceDb; N],
    ) -> Result<[String; N], PgError> {
        let mut conn = PgConnection::connect(&self.url).await?;
        for db in dbs {
            let role_exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                    .bind(&db.role)
                    .fetch_one(&mut conn)
                    .await?;
            if !role_exists {
                // Identifiers and password are constants of this module, not user input. Another
                // lab on the same server may create the role at the same moment: that is fine.
                let created = conn
                    .execute(AssertSqlSafe(format!(
                        "CREATE ROLE {} LOGIN PASSWORD '{}'",
                        db.role,
                        db.password()
                    )))
                    .await;
                match created {
                    Err(sqlx::Error::Database(e))
                        if e.code().as_deref() == Some(DUPLICATE_OBJECT)
                            || e.code().as_deref() == Some(UNIQUE_VIOLATION) => {}
                    other => {
                        other?;
                    }
                }
            }
            let db_exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&db.database)
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
        Ok(dbs.each_ref().map(|db| db.url(&host, port)))
    }

    /// Drops `database` and the connections to it, if it exists.
    pub async fn drop_database(&self, database: &str) -> Result<(), PgError> {
        self.execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .await
    }

    /// Makes `database` refuse new connections and drops the current ones (fault injection).
    pub async fn block_database(&self, database: &str) -> Result<(), PgError> {
        self.execute(&format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
        ))
        .await
    }

    /// Lets `database` accept connections again.
    pub async fn unblock_database(&self, database: &str) -> Result<(), PgError> {
        self.execute(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
            .await
    }

    /// Runs `sql` as the superuser. Database names are the lab's own identifiers, never user
    /// input.
    async fn execute(&self, sql: &str) -> Result<(), PgError> {
        let mut conn = PgConnection::connect(&self.url).await?;
        conn.execute(AssertSqlSafe(sql.to_owned())).await?;
        conn.close().await?;
        Ok(())
    }
}
