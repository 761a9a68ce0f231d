//! Settings every service has; each flag can also be given as an environment variable.

use std::time::Duration;

/// Flattened into each service's own `clap` config.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonConfig {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// PostgreSQL URL of this service's own database.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Kafka bootstrap servers (comma separated).
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Partitions for topics this service creates at start (existing topics are left alone).
    #[arg(long, env = "TOPIC_PARTITIONS", default_value_t = 6)]
    pub topic_partitions: i32,
    /// Consumers this instance runs in its consumer group (each handles its partitions serially).
    #[arg(long, env = "CONSUMERS", default_value_t = 2)]
    pub consumers: usize,
    /// Attempts for a failing event before it goes to the DLQ (lost database connections retry
    /// without limit: the event is not at fault).
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 8)]
    pub max_attempts: u32,
    /// First retry delay, doubled per attempt up to `--retry-max-ms`.
    #[arg(long, env = "RETRY_INITIAL_MS", default_value_t = 50)]
    pub retry_initial_ms: u64,
    /// Cap of the retry delay.
    #[arg(long, env = "RETRY_MAX_MS", default_value_t = 2000)]
    pub retry_max_ms: u64,
    /// Outbox polling interval, the fallback when a NOTIFY is missed.
    #[arg(long, env = "OUTBOX_POLL_MS", default_value_t = 500)]
    pub outbox_poll_ms: u64,
    /// Maximum connections of the database pool.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,
    /// A schema registry (this workspace's or Confluent's, e.g. `http://127.0.0.1:8085`): the
    /// service registers its events' JSON Schemas at start, writes records in Confluent's wire
    /// format and checks the schema id of each record it reads. Without it, plain JSON.
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    pub schema_registry: Option<String>,
}

impl CommonConfig {
    /// Defaults for embedding (the lab, tests): only the URLs must be given.
    pub fn new(database_url: impl Into<String>, brokers: impl Into<String>) -> Self {
        Self {
            host: "127.0.0.1".into(),
            database_url: database_url.into(),
            brokers: brokers.into(),
            topic_partitions: 6,
            consumers: 2,
            max_attempts: 8,
            retry_initial_ms: 50,
            retry_max_ms: 2000,
            outbox_poll_ms: 500,
            db_max_connections: 20,
            schema_registry: None,
        }
    }

    pub fn retry_policy(&self) -> crate::consumer::RetryPolicy {
        crate::consumer::RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            initial: Duration::from_millis(self.retry_initial_ms),
            max: Duration::from_millis(self.retry_max_ms.max(self.retry_initial_ms)),
        }
    }
}
