//! Database pool creation and the classification of database errors.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

/// The tables every service's database has, written once: the outbox and the consumed events
/// (`migrations/shared`, version 1).
static SAGA_TABLES: Migrator = sqlx::migrate!("../migrations/shared");

/// A service's whole schema: the shared tables, then its `own` migrations (from version 2).
///
/// # Panics
/// When `own` reuses a version of the shared tables (a mistake caught by any test that builds
/// the service).
pub fn migrator(own: &Migrator) -> Migrator {
    let migrations: Vec<_> = SAGA_TABLES.iter().chain(own.iter()).cloned().collect();
    for shared in SAGA_TABLES.iter() {
        assert!(
            !own.version_exists(shared.version),
            "migration {} is the shared tables' version; a service's own migrations start after it",
            shared.version
        );
    }
    Migrator::with_migrations(migrations)
}

/// A pool that fails fast when the database is gone, so callers can retry on their own terms.
/// It opens `min_connections` before it returns and keeps them open, so that the first requests
/// and events do not each pay for a new connection's authentication.
pub async fn connect(
    url: &str,
    min_connections: u32,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    let min_connections = min_connections.min(max_connections);
    let pool = PgPoolOptions::new()
        .min_connections(min_connections)
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await?;
    let open: Vec<_> =
        futures_util::future::join_all((0..min_connections).map(|_| pool.acquire())).await;
    for conn in open {
        conn?;
    }
    Ok(pool)
}

/// A pool that connects on first use (for tests of the HTTP layer that never reach the database).
pub fn connect_lazy(url: &str) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy(url)
}

/// True when the failure is about the moment, not the event: the database is unreachable
/// ([`is_connectivity`]), or it refused the transaction for a reason that passes (deadlock,
/// serialization failure, statement timeout or cancel, a read-only replica during failover, out
/// of memory or disk). Such errors are retried without limit and never dead-lettered.
pub fn is_transient(err: &sqlx::Error) -> bool {
    is_connectivity(err)
        || matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|code| {
            matches!(code.as_ref(), "40001" | "40P01" | "57014" | "25006" | "53100" | "53200")
        }))
}

/// True when the error says the database could not be reached or dropped us, as opposed to a
/// statement that failed.
pub fn is_connectivity(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01..57P03: admin shutdown, crash shutdown, cannot
            // connect now; 55000 covers "database is not currently accepting connections";
            // 53300: too many connections.
            code.starts_with("08") || code.starts_with("57P") || code == "55000" || code == "53300"
        }),
        _ => false,
    }
}
