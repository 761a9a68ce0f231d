//! The dashboard's JSON API as types: what each route takes and answers. The page reads them as
//! JSON; the `lab` commands decode the ones they use with these same types, so the two cannot
//! drift apart. Order data is the order service's own ([`Order`], [`OrderStatus`]).

use std::sync::Arc;

use order_service::api::Order;
use order_service::domain::OrderStatus;
use saga_shared::events::Topic;
use serde::{Deserialize, Serialize};

use super::explorer::{
    BrokerInfo, ConfigEntry, GroupView, PlannedOffset, Record, ResetTo, Start, TopicSummary,
};
use super::observer::Seen;
use crate::dlq::DeadLetter;
pub use crate::nodes::{NodeState, Nodes, Placement};
use crate::poison::PoisonKind;

/// Fault switches of one service (`POST /api/faults/{service}` takes and answers them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultSettings {
    /// Every event handler attempt fails (retries, then the DLQ).
    #[serde(default)]
    pub fail_handlers: bool,
    /// Extra delay before each handler attempt.
    #[serde(default)]
    pub slow_ms: u64,
}

/// `GET /api/status`: the broker and each service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabStatus {
    pub brokers: String,
    /// The schema registry the services use (empty if none).
    #[serde(default)]
    pub schema_registry: String,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub url: String,
    pub running: bool,
    /// Its database, the password shown as `***`.
    pub database_url: String,
    pub faults: FaultSettings,
}

/// `POST /api/services/{service}/stop` and `.../start`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRunning {
    pub service: String,
    pub running: bool,
    /// Where it listens, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// `POST /api/services/{service}/scale?consumers=N`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleParams {
    pub consumers: usize,
}

/// A service's consumers after `scale`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceScaled {
    pub service: String,
    pub consumers: usize,
}

/// `GET /api/services/{service}/outbox`: its outbox rows not published yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxBacklog {
    pub service: String,
    pub pending: i64,
}

/// `POST /api/broker/stop` and `.../start`: whether the embedded broker runs now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerRunning {
    pub running: bool,
}

/// `GET /api/dlq/{topic}`: the records of a dead-letter topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DlqRecords {
    /// The dead-letter topic, e.g. `order.created.dlq`.
    pub topic: String,
    pub waiting: usize,
    pub replayed: usize,
    pub records: Vec<DeadLetter>,
}

/// Which records `POST /api/dlq/{topic}/replay` sends back: one (`partition` and `offset`),
/// every waiting record one consumer group dead-lettered (`group`), or every record still
/// waiting (none of them).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayParams {
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub group: Option<String>,
}

/// `POST /api/nodes/{id}/isolate?keep_clients=true`: cut the node off from the other nodes
/// only, its clients still reach it (default: from them and from every client).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolateParams {
    #[serde(default)]
    pub keep_clients: bool,
}

/// What `POST /api/dlq/{topic}/replay` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replayed {
    pub topic: String,
    pub replayed: usize,
    pub already_replayed: usize,
}

/// `GET /api/contract`: the services, what each consumes and publishes (from their
/// declarations), and the topics: what the chain diagram is drawn from.
#[derive(Debug, Clone, Serialize)]
pub struct Contract {
    pub services: Vec<ContractService>,
    pub topics: Vec<Topic>,
    pub brokers: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContractService {
    pub name: &'static str,
    pub short: &'static str,
    pub url: Option<String>,
    pub consumes: &'static [Topic],
    pub publishes: &'static [Topic],
}

/// `POST /api/poison`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoisonRequest {
    pub topic: Topic,
    pub kind: PoisonKind,
}

/// Where a poison record or a produced one landed.
#[derive(Debug, Clone, Serialize)]
pub struct Produced {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// For a poison record: which kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<PoisonKind>,
}

/// `GET /api/orders`: passed to the order service's list.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersQuery {
    pub status: Option<OrderStatus>,
    pub limit: Option<u32>,
}

/// `GET /api/orders/{id}`: the order (from the order service, if it answers) and every record
/// of it the dashboard saw, with topic, partition, offset and causation.
#[derive(Debug, Clone, Serialize)]
pub struct OrderView {
    pub order: Option<Order>,
    pub events: Vec<Arc<Seen>>,
}

/// `GET /api/topics`.
#[derive(Debug, Clone, Serialize)]
pub struct Topics {
    pub bootstrap: String,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicSummary>,
}

/// `GET /api/topics/{topic}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicDetail {
    pub topic: TopicSummary,
    pub configs: Vec<ConfigEntry>,
}

/// Where `GET /api/topics/{topic}/messages` starts reading.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    Earliest,
    /// The last `limit` records.
    #[default]
    Latest,
    /// The offset given as `value`.
    Offset,
    /// The first record at or after the time given as `value` (ms since the epoch).
    Timestamp,
}

/// Which records a reader sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Only committed transactions' records (librdkafka's default).
    #[default]
    ReadCommitted,
    ReadUncommitted,
}

/// `GET /api/topics/{topic}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    #[serde(default)]
    pub partition: i32,
    #[serde(default)]
    pub from: ReadFrom,
    /// The offset or the time for `from=offset` / `from=timestamp`.
    pub value: Option<i64>,
    pub limit: Option<usize>,
    #[serde(default)]
    pub isolation: Isolation,
}

impl MessagesQuery {
    /// Where to start, or why the query does not say.
    pub fn start(&self) -> Result<Start, String> {
        let need = |what: &str| {
            self.value
                .ok_or_else(|| format!("from={what} needs a value"))
        };
        Ok(match self.from {
            ReadFrom::Earliest => Start::Earliest,
            ReadFrom::Latest => Start::Latest,
            ReadFrom::Offset => Start::Offset(need("offset")?),
            ReadFrom::Timestamp => Start::Timestamp(need("timestamp")?),
        })
    }
}

/// `GET /api/topics/{topic}/messages`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct Messages {
    pub topic: String,
    pub partition: i32,
    pub records: Vec<Record>,
}

/// `GET /api/groups`.
#[derive(Debug, Clone, Serialize)]
pub struct Groups {
    pub groups: Vec<GroupView>,
}

/// `POST /api/groups/{group}/reset`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResetRequest {
    #[serde(flatten)]
    pub to: ResetTo,
    /// Only this topic (default: every topic the group has committed on).
    pub topic: Option<String>,
    /// Only say where the offsets would go (Kafka's `--dry-run`).
    #[serde(default)]
    pub dry_run: bool,
}

/// What a reset moved (or, as a dry run, would move).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupReset {
    pub group: String,
    pub dry_run: bool,
    pub partitions: Vec<PlannedOffset>,
}

/// `GET /api/schemas`: the lab's schema registry and its subjects.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Schemas {
    pub registry: String,
    pub subjects: Vec<crate::schemas::Subject>,
}

/// `GET /api/schemas/{subject}/diff?from=N&to=M`: what changed, a line per property.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchemaDiff {
    pub subject: String,
    pub from: i32,
    pub to: i32,
    pub lines: Vec<String>,
}
