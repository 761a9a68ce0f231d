//! The whole system in one process: PostgreSQL, the broker and the four services.
//!
//! Used by the `lab` binary, the integration tests and the benchmark, so what the tests check is
//! what a user runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use saga_shared::config::CommonConfig;
use saga_shared::faults::Faults;
use saga_shared::service::{Readiness, SagaService, ServiceApp};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::lock::{DataDirLock, LockError};
use saga_shared::events::Topic;

use crate::pg::{PgAdmin, PgError, ServiceDb, TempPostgres};

/// The four services. On the command line: `order`, `payment`, `inventory`, `notification` (or
/// the full names, `order-service`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Service {
    #[value(alias = "order-service")]
    Order,
    #[value(alias = "payment-service")]
    Payment,
    #[value(alias = "inventory-service")]
    Inventory,
    #[value(alias = "notification-service")]
    Notification,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::Order,
        Service::Payment,
        Service::Inventory,
        Service::Notification,
    ];

    /// The short name, as on the command line and in the dashboard's URLs.
    pub fn short_name(self) -> &'static str {
        self.name().trim_end_matches("-service")
    }

    /// Its name, from its declaration (`saga_shared::service::SagaService`).
    pub fn name(self) -> &'static str {
        self.declared(|d| d.name)
    }

    /// Its standard port, the one the docs, the tutorial and the compose file use.
    pub fn default_port(self) -> u16 {
        self.declared(|d| d.port)
    }

    /// The topics it consumes (its consumer group subscribes to exactly these).
    pub fn consumes(self) -> &'static [Topic] {
        self.declared(|d| d.consumes)
    }

    /// The topics it publishes to.
    pub fn publishes(self) -> &'static [Topic] {
        self.declared(|d| d.publishes)
    }

    /// Its database and the role that owns it.
    pub fn db(self) -> ServiceDb {
        self.declared(|d| ServiceDb {
            database: d.database.to_owned(),
            role: d.role.clone(),
        })
    }

    /// What the service declares about itself.
    fn declared<T>(self, pick: impl FnOnce(&Declared) -> T) -> T {
        fn of<S: SagaService>() -> Declared {
            Declared {
                name: S::NAME,
                port: S::DEFAULT_PORT,
                database: S::DATABASE,
                role: S::database_role(),
                consumes: S::consumes(),
                publishes: S::PUBLISHES,
            }
        }
        pick(&match self {
            Service::Order => of::<order_service::OrderService>(),
            Service::Payment => of::<payment_service::PaymentService>(),
            Service::Inventory => of::<inventory_service::InventoryService>(),
            Service::Notification => of::<notification_service::NotificationService>(),
        })
    }

    /// Builds it (not yet running) with the lab's settings.
    pub async fn build(
        self,
        common: &CommonConfig,
        port: u16,
        faults: Arc<Faults>,
    ) -> Result<ServiceApp, saga_shared::service::HostError> {
        use saga_shared::service::build;
        match self {
            Service::Order => build::<order_service::OrderService>(common, port, faults).await,
            Service::Payment => {
                build::<payment_service::PaymentService>(common, port, faults).await
            }
            Service::Inventory => {
                build::<inventory_service::InventoryService>(common, port, faults).await
            }
            Service::Notification => {
                build::<notification_service::NotificationService>(common, port, faults).await
            }
        }
    }

    /// `order` or `order-service`, ..., as on the command line.
    pub fn parse(s: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(s, false).ok()
    }
}

/// The constants of one service's declaration.
struct Declared {
    name: &'static str,
    port: u16,
    database: &'static str,
    role: String,
    consumes: &'static [Topic],
    publishes: &'static [Topic],
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("PostgreSQL: {0}")]
    Pg(#[from] PgError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(
        "port {port} ({what}) is already in use, by another lab or program; choose another \
         with {flag} (or {env}; 0 picks a free port)"
    )]
    PortInUse {
        what: &'static str,
        port: u16,
        flag: String,
        env: String,
    },
    #[error("broker: {0}")]
    Broker(String),
    #[error("{service}: {source}")]
    Service {
        service: &'static str,
        source: saga_shared::service::HostError,
    },
    #[error("{service} did not become ready: {reason}")]
    NotReady {
        service: &'static str,
        reason: String,
    },
    #[error(
        "the order service prices orders from the inventory service's catalogue (the compacted \
         topic inventory.products): start inventory with it, e.g. --services order,inventory,notification"
    )]
    OrderWithoutInventory,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How long a started service may take to hold its partitions.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What to start and where.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// PostgreSQL data, broker logs.
    pub data_dir: PathBuf,
    /// Superuser URL (of the `postgres` database) of an existing server; none starts one.
    pub postgres_url: Option<String>,
    /// Port of the throwaway PostgreSQL (0: any free port).
    pub postgres_port: u16,
    /// Extra `name=value` settings of the throwaway PostgreSQL (e.g. the benchmark's
    /// `shared_preload_libraries=pg_stat_statements`).
    pub postgres_settings: Vec<String>,
    /// Bootstrap servers of an existing Kafka-compatible broker; none embeds the workspace broker.
    pub brokers: Option<String>,
    /// Port of the embedded broker (0: any free port); a cluster's other nodes take the ports
    /// after it.
    pub broker_port: u16,
    /// Nodes of the embedded broker: 1, or a cluster of 3 (`--nodes`).
    pub nodes: usize,
    /// HTTP port of each service (0: any free port).
    pub ports: BTreeMap<Service, u16>,
    /// Port of the lab's schema registry (0: any free port), kept in the broker's `_schemas`.
    /// Not served when `service.schema_registry` names another registry (Confluent's, say):
    /// the services, the dashboard and `lab schema` use that one.
    pub schema_registry_port: u16,
    /// Address the services and the broker bind to.
    pub host: String,
    /// Settings given to every service (database URL and brokers are filled in by the lab).
    pub service: CommonConfig,
    /// The services started with the lab (all by default); the others can be started later
    /// with [`Lab::start_service`] (`lab start <service>`).
    pub services: std::collections::BTreeSet<Service>,
    /// Appended to each service database's name (empty: `orders`, `payments`, ...), so that
    /// several labs can share one PostgreSQL server given by `postgres_url` (the tests do).
    pub database_suffix: String,
}

impl LabConfig {
    /// The standard ports: broker 9092, services 8081-8084.
    pub fn standard(data_dir: impl Into<PathBuf>) -> Self {
        let mut c = Self::ephemeral(data_dir);
        c.broker_port = 9092;
        c.schema_registry_port = SCHEMA_REGISTRY_PORT;
        c.ports = Service::ALL
            .iter()
            .map(|s| (*s, s.default_port()))
            .collect();
        c
    }

    /// Free ports everywhere (tests).
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            postgres_url: None,
            postgres_port: 0,
            postgres_settings: Vec::new(),
            brokers: None,
            broker_port: 0,
            nodes: 1,
            ports: Service::ALL.iter().map(|s| (*s, 0)).collect(),
            schema_registry_port: 0,
            host: "127.0.0.1".into(),
            service: CommonConfig::new("", ""),
            services: Service::ALL.into_iter().collect(),
            database_suffix: String::new(),
        }
    }
}

struct RunningService {
    port: u16,
    readiness: Arc<Readiness>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// A running lab.
pub struct Lab {
    /// Held while the lab runs: one lab per data dir.
    _lock: DataDirLock,
    config: LabConfig,
    postgres: Option<TempPostgres>,
    admin: PgAdmin,
    /// Each service's database and role, in [`Service::ALL`]'s order.
    dbs: [ServiceDb; 4],
    db_urls: [String; 4],
    /// The embedded broker's nodes (none with an external broker).
    embedded: Option<crate::nodes::Embedded>,
    brokers: String,
    services: BTreeMap<Service, RunningService>,
    /// Fault switches survive a service restart.
    faults: BTreeMap<Service, Arc<Faults>>,
    /// The ledger, the saga's consume-transform-produce step with Kafka transactions.
    ledger: Option<crate::ledger::Ledger>,
    /// The schema registry: its URL and the task serving it (none for a registry given in
    /// `service.schema_registry`).
    registry: Option<(String, Option<JoinHandle<()>>)>,
    /// Services started at least once (the others were left out with `--services`).
    ever_started: std::collections::BTreeSet<Service>,
    /// Consumers per service where `lab scale` changed it from the configured count.
    scaled: BTreeMap<Service, usize>,
}

/// The schema registry's standard port (Confluent's own default, 8081, is the order service's).
pub const SCHEMA_REGISTRY_PORT: u16 = 8085;

/// What the lab's command line calls a port, for the one-line error of a taken one.
fn port_flag(what: &str) -> (String, String) {
    let short = what.trim_end_matches("-service");
    (
        format!("--{short}-port"),
        format!("LAB_{}_PORT", short.to_uppercase().replace('-', "_")),
    )
}

impl Lab {
    /// What can go wrong before anything starts, checked at once: the data dir is taken by
    /// another lab or cannot be written, or a fixed port is in use. `extra_ports` are ports the
    /// caller binds itself (the dashboard), by name. Returns the data dir's lock, for
    /// [`Lab::start_locked`].
    pub fn preflight(
        config: &LabConfig,
        extra_ports: &[(&'static str, u16)],
    ) -> Result<DataDirLock, LabError> {
        if config.services.contains(&Service::Order)
            && !config.services.contains(&Service::Inventory)
        {
            return Err(LabError::OrderWithoutInventory);
        }
        let lock = DataDirLock::acquire(&config.data_dir)?;
        let mut ports: Vec<(&'static str, u16)> = extra_ports.to_vec();
        if config.postgres_url.is_none() {
            ports.push(("postgres", config.postgres_port));
        }
        if config.brokers.is_none() && config.broker_port != 0 {
            for i in 0..config.nodes.max(1) {
                ports.push(("broker", config.broker_port + i as u16));
            }
        }
        ports.extend(config.ports.iter().map(|(svc, port)| (svc.name(), *port)));
        if config.service.schema_registry.is_none() {
            ports.push(("schema-registry", config.schema_registry_port));
        }
        for (what, port) in ports {
            if port == 0 {
                continue;
            }
            if let Err(e) = std::net::TcpListener::bind((config.host.as_str(), port))
                && e.kind() == std::io::ErrorKind::AddrInUse
            {
                let (flag, env) = port_flag(what);
                return Err(LabError::PortInUse {
                    what,
                    port,
                    flag,
                    env,
                });
            }
        }
        Ok(lock)
    }

    /// Starts everything; `progress` is told about each step as it begins.
    pub async fn start(config: LabConfig, progress: &mut dyn FnMut(&str)) -> Result<Lab, LabError> {
        let lock = Self::preflight(&config, &[])?;
        Self::start_locked(config, lock, progress).await
    }

    /// [`Lab::start`] after [`Lab::preflight`].
    pub async fn start_locked(
        config: LabConfig,
        lock: DataDirLock,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Lab, LabError> {
        let (postgres, admin) = match &config.postgres_url {
            Some(url) => (None, PgAdmin::new(url.clone())),
            None => {
                progress("starting PostgreSQL");
                let pg = TempPostgres::start(
                    &config.data_dir.join("postgres"),
                    config.postgres_port,
                    &config.postgres_settings,
                )
                .await?;
                let admin = PgAdmin::new(pg.admin_url("postgres"));
                (Some(pg), admin)
            }
        };
        progress("creating databases and roles");
        let dbs = Service::ALL.map(|svc| svc.db().with_suffix(&config.database_suffix));
        let db_urls = admin.create_service_databases(&dbs).await?;
        let mut lab = Lab {
            _lock: lock,
            config,
            postgres,
            admin,
            dbs,
            db_urls,
            embedded: None,
            brokers: String::new(),
            services: BTreeMap::new(),
            faults: Service::ALL
                .iter()
                .map(|s| (*s, Arc::new(Faults::default())))
                .collect(),
            ledger: None,
            registry: None,
            ever_started: Default::default(),
            scaled: BTreeMap::new(),
        };
        lab.start_broker(progress).await?;
        match lab.config.service.schema_registry.clone() {
            Some(url) => lab.registry = Some((url, None)),
            None => {
                progress("starting the schema registry");
                lab.start_registry().await?;
            }
        }
        lab.start_services(progress).await?;
        if lab.config.services.contains(&Service::Payment) {
            progress("starting the ledger");
            lab.start_ledger().await?;
        }
        Ok(lab)
    }

    /// The embedded broker's nodes, unless the lab was given a broker.
    async fn start_broker(&mut self, progress: &mut dyn FnMut(&str)) -> Result<(), LabError> {
        if let Some(brokers) = &self.config.brokers {
            self.brokers = brokers.clone();
            return Ok(());
        }
        progress(if self.config.nodes > 1 {
            "starting the broker's nodes"
        } else {
            "starting the broker"
        });
        let embedded = crate::nodes::Embedded::start(
            &self.config.data_dir,
            &self.config.host,
            self.config.broker_port,
            self.config.nodes,
            self.config.service.topic_partitions,
        )
        .await?;
        self.brokers = embedded.bootstrap();
        self.embedded = Some(embedded);
        Ok(())
    }

    /// Starts the configured services and waits until they are ready. With the order service,
    /// the inventory service comes first, until its catalogue is all on the topic: the order
    /// service prices from that catalogue and is ready once it has read what the topic held
    /// when it started, which is then the whole of it.
    async fn start_services(&mut self, progress: &mut dyn FnMut(&str)) -> Result<(), LabError> {
        let services = self.config.services.clone();
        let (first, rest): (Vec<Service>, Vec<Service>) = services
            .iter()
            .partition(|&&s| s == Service::Inventory && services.contains(&Service::Order));
        for &svc in &first {
            progress(&format!("starting {}", svc.name()));
            self.spawn(svc).await?;
            progress("publishing the catalogue");
            self.wait_catalogue_published(svc).await?;
        }
        for &svc in &rest {
            progress(&format!("starting {}", svc.name()));
            self.spawn(svc).await?;
        }
        progress("joining the consumer groups");
        for &svc in &services {
            self.wait_ready(svc).await?;
        }
        Ok(())
    }

    /// Waits until `svc`, the service that writes the catalogue, has all of it on the topic.
    async fn wait_catalogue_published(&self, svc: Service) -> Result<(), LabError> {
        let Some(running) = self.services.get(&svc) else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while running.readiness.catalogue_published() == Some(false) {
            if tokio::time::Instant::now() > deadline {
                return Err(LabError::NotReady {
                    service: svc.name(),
                    reason: format!("its catalogue was not published within {READY_TIMEOUT:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Serves the schema registry (Confluent's REST API, `schema-registry/`) on its port, kept
    /// in the broker's compacted `_schemas` topic.
    async fn start_registry(&mut self) -> Result<(), LabError> {
        let registry = schema_registry::Registry::open(&self.brokers)
            .await
            .map_err(|e| LabError::Broker(format!("the schema registry: {e}")))?;
        let listener = tokio::net::TcpListener::bind((
            self.config.host.as_str(),
            self.config.schema_registry_port,
        ))
        .await?;
        let port = listener.local_addr()?.port();
        self.config.schema_registry_port = port;
        let task = schema_registry::api::spawn(listener, registry);
        let host = if self.config.host == "0.0.0.0" {
            "127.0.0.1"
        } else {
            self.config.host.as_str()
        };
        self.registry = Some((format!("http://{host}:{port}"), Some(task)));
        Ok(())
    }

    /// The schema registry's URL.
    pub fn schema_registry_url(&self) -> &str {
        self.registry.as_ref().map_or("", |(url, _)| url.as_str())
    }

    /// Waits until `svc` is ready: its consumers hold their partitions, its producer knows its
    /// topics (what its `/ready` reports).
    async fn wait_ready(&self, svc: Service) -> Result<(), LabError> {
        let Some(running) = self.services.get(&svc) else {
            return Ok(());
        };
        running
            .readiness
            .wait(READY_TIMEOUT)
            .await
            .map_err(|reason| LabError::NotReady {
                service: svc.name(),
                reason,
            })
    }

    /// Stops the embedded broker, every node (the services keep running and retry).
    pub async fn stop_broker(&mut self) {
        if let Some(embedded) = &mut self.embedded {
            embedded.stop_all().await;
        }
    }

    fn embedded_mut(&mut self) -> Result<&mut crate::nodes::Embedded, LabError> {
        self.embedded
            .as_mut()
            .ok_or_else(|| LabError::Broker("no embedded broker".into()))
    }

    /// Starts the embedded broker's nodes again on the same addresses and data.
    pub async fn restart_broker(&mut self) -> Result<(), LabError> {
        self.embedded_mut()?.start_all().await
    }

    /// Stops node `id` of the embedded cluster cleanly: its partitions get new leaders.
    pub async fn stop_node(&mut self, id: i32) -> Result<(), LabError> {
        self.embedded_mut()?.stop_node(id).await
    }

    /// Starts node `id` of the embedded cluster again, on its data.
    pub async fn start_node(&mut self, id: i32) -> Result<(), LabError> {
        self.embedded_mut()?.start_node(id).await
    }

    /// Cuts node `id` of the embedded cluster off the network as `cut` says (from the other
    /// nodes, or from them and from every client, while it runs), or reconnects it.
    pub fn isolate_node(&mut self, id: i32, cut: broker::link::Cut) -> Result<(), LabError> {
        self.embedded_mut()?.isolate_node(id, cut)
    }

    /// The embedded broker's nodes and partitions (none with an external broker).
    pub fn nodes(&self) -> Option<crate::nodes::Nodes> {
        self.embedded.as_ref().map(|e| e.describe())
    }

    /// The embedded broker's nodes that run, by id (0 for a single node).
    pub fn running_nodes(&self) -> Vec<i32> {
        self.embedded
            .as_ref()
            .map_or_else(Vec::new, |e| e.running())
    }

    /// Starts `svc` (again), on the port it had before, if any, and waits until it is ready.
    pub async fn start_service(&mut self, svc: Service) -> Result<(), LabError> {
        self.spawn(svc).await?;
        self.wait_ready(svc).await?;
        if svc == Service::Payment {
            self.start_ledger().await?;
        }
        Ok(())
    }

    /// Stops the ledger after its transaction in progress and starts a new one, which rebuilds
    /// the event ids it counted from `ledger.entries`.
    pub async fn restart_ledger(&mut self) -> Result<(), LabError> {
        if let Some(ledger) = self.ledger.take() {
            ledger.stop(Duration::from_secs(30)).await;
        }
        self.start_ledger().await
    }

    /// Starts the ledger (it follows the payments) unless it runs.
    async fn start_ledger(&mut self) -> Result<(), LabError> {
        if self.ledger.is_none() {
            let ledger = crate::ledger::Ledger::start(&self.brokers)
                .await
                .map_err(|e| LabError::Broker(format!("the ledger: {e}")))?;
            self.ledger = Some(ledger);
        }
        Ok(())
    }

    /// Starts `svc` (again) without waiting for it to be ready.
    async fn spawn(&mut self, svc: Service) -> Result<(), LabError> {
        if self.services.contains_key(&svc) {
            return Ok(());
        }
        let mut common = self.config.service.clone();
        common.host = self.config.host.clone();
        common.database_url = self.db_urls[svc as usize].clone();
        common.brokers = self.brokers.clone();
        common.consumers = self.consumers(svc);
        // The lab's own schema registry, or the one it was given (Confluent's, say).
        if !self.schema_registry_url().is_empty() {
            common.schema_registry = Some(self.schema_registry_url().to_owned());
        }
        // Any free port is chosen here rather than by the first bind: a restart binds it again,
        // and a port of the ephemeral range may be taken by an outgoing connection by then.
        let port = match self.config.ports.get(&svc).copied().unwrap_or(0) {
            0 => crate::pg::free_port_on(&self.config.host)?,
            port => port,
        };
        let faults = self.faults[&svc].clone();
        let running = spawn_service(svc, common, port, faults).await?;
        // A restart keeps the port.
        self.config.ports.insert(svc, running.port);
        self.services.insert(svc, running);
        self.ever_started.insert(svc);
        Ok(())
    }

    /// How many consumers `svc` runs in its group.
    pub fn consumers(&self, svc: Service) -> usize {
        self.scaled
            .get(&svc)
            .copied()
            .unwrap_or(self.config.service.consumers)
    }

    /// Runs `svc` with `consumers` consumers in its group from now on: the service restarts
    /// with them (its consumers leave the group and join again, a rebalance).
    pub async fn scale(&mut self, svc: Service, consumers: usize) -> Result<(), LabError> {
        self.scaled.insert(svc, consumers.max(1));
        self.stop_service(svc).await;
        self.start_service(svc).await
    }

    /// Stops `svc` gracefully (its consumers leave their group).
    pub async fn stop_service(&mut self, svc: Service) {
        if let Some(s) = self.services.remove(&svc) {
            let _ = s.stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(20), s.task).await;
        }
    }

    pub fn is_running(&self, svc: Service) -> bool {
        self.services.contains_key(&svc)
    }

    /// Whether `svc` was started at least once (not left out with `--services`).
    pub fn was_started(&self, svc: Service) -> bool {
        self.ever_started.contains(&svc)
    }

    /// Base URL of a service, e.g. `http://127.0.0.1:8081`.
    pub fn url(&self, svc: Service) -> String {
        let port = self.config.ports.get(&svc).copied().unwrap_or(0);
        let host = if self.config.host == "0.0.0.0" {
            "127.0.0.1"
        } else {
            &self.config.host
        };
        format!("http://{host}:{port}")
    }

    /// The configuration the lab was started with.
    pub fn config(&self) -> &LabConfig {
        &self.config
    }

    /// Bootstrap servers of the broker.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The name of a service's database (its declared one, with the lab's suffix).
    pub fn database(&self, svc: Service) -> &str {
        &self.dbs[svc as usize].database
    }

    /// URL of a service's database (as its own role).
    pub fn db_url(&self, svc: Service) -> &str {
        &self.db_urls[svc as usize]
    }

    /// Tells when the lab's own PostgreSQL exits without being asked to; none when the lab uses
    /// a server it did not start (`--postgres-url`).
    pub fn postgres_exit_watch(&self) -> Option<crate::pg::ExitWatch> {
        self.postgres.as_ref().map(TempPostgres::exit_watch)
    }

    pub fn admin(&self) -> &PgAdmin {
        &self.admin
    }

    /// The fault switches of a service.
    pub fn faults(&self, svc: Service) -> Arc<Faults> {
        self.faults[&svc].clone()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.config.data_dir
    }

    /// Stops the services, the broker and PostgreSQL, in that order.
    pub async fn shutdown(mut self) {
        if let Some(ledger) = self.ledger.take() {
            ledger.stop(Duration::from_secs(5)).await;
        }
        if let Some((_, Some(registry))) = self.registry.take() {
            registry.abort();
        }
        let running: Vec<_> = std::mem::take(&mut self.services).into_values().collect();
        let mut tasks = Vec::new();
        for s in running {
            let _ = s.stop.send(());
            tasks.push(s.task);
        }
        let services = async {
            futures_util::future::join_all(tasks).await;
        };
        bounded("the services", Duration::from_secs(20), services).await;
        bounded("the broker", Duration::from_secs(5), self.stop_broker()).await;
        if let Some(pg) = self.postgres.take() {
            bounded("PostgreSQL", Duration::from_secs(10), pg.stop()).await;
        }
    }
}

/// Runs `step` of a shutdown, giving up after `limit` with a warning that names it: stopping
/// never hangs on one stuck part (what is left stops with the process).
pub async fn bounded(what: &str, limit: Duration, step: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(limit, step).await.is_err() {
        tracing::warn!("{what} did not stop within {limit:?}; going on without it");
    }
}

async fn spawn_service(
    svc: Service,
    common: CommonConfig,
    port: u16,
    faults: Arc<Faults>,
) -> Result<RunningService, LabError> {
    let app = svc
        .build(&common, port, faults)
        .await
        .map_err(|source| LabError::Service {
            service: svc.name(),
            source,
        })?;
    let port = app.port();
    let readiness = app.readiness();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    Ok(RunningService {
        port,
        readiness,
        stop,
        task,
    })
}
