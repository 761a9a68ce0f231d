//! `lab` / `lab up`: start everything, say where it is, stop on Ctrl-C.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lab::dashboard::{Dashboard, SharedLab};
use lab::{Lab, LabClient, LabConfig, Service};

#[derive(Debug, Clone, Args)]
pub(crate) struct UpArgs {
    /// Where PostgreSQL and broker data live (kept between runs).
    #[arg(long, env = "LAB_DATA_DIR", default_value = "lab-data")]
    data_dir: PathBuf,
    /// Superuser URL of an existing PostgreSQL (its `postgres` database); without it the lab starts its own.
    #[arg(long, env = "LAB_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Port of the lab's own PostgreSQL (0: any free port).
    #[arg(long, env = "LAB_POSTGRES_PORT", default_value_t = 0)]
    postgres_port: u16,
    /// Bootstrap servers of an external Kafka-compatible broker; without it the workspace broker runs embedded.
    #[arg(long, env = "LAB_BROKERS")]
    brokers: Option<String>,
    /// Port of the embedded broker (a cluster's other nodes take the ports after it).
    #[arg(long, env = "LAB_BROKER_PORT", default_value_t = 9092)]
    broker_port: u16,
    /// Nodes of the embedded broker: 3 runs it as a cluster (a metadata quorum, every saga
    /// topic on three replicas with min.insync.replicas 2).
    #[arg(long, env = "LAB_NODES", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    nodes: u8,
    /// Port of the dashboard (0: any free port, as for every port below).
    #[arg(long, env = "LAB_DASHBOARD_PORT", default_value_t = 8080)]
    dashboard_port: u16,
    /// Host names the dashboard answers to besides IP addresses, `localhost` and `--host`
    /// (comma separated, e.g. `lab.example`), when it is reached by another name (a proxy, a
    /// container's name); other names are refused (DNS rebinding).
    #[arg(
        long,
        env = "LAB_DASHBOARD_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "NAMES"
    )]
    dashboard_allowed_hosts: Vec<String>,
    /// Port of the order service.
    #[arg(long, env = "LAB_ORDER_PORT", default_value_t = 8081)]
    order_port: u16,
    /// Port of the payment service.
    #[arg(long, env = "LAB_PAYMENT_PORT", default_value_t = 8082)]
    payment_port: u16,
    /// Port of the inventory service.
    #[arg(long, env = "LAB_INVENTORY_PORT", default_value_t = 8083)]
    inventory_port: u16,
    /// Port of the notification service.
    #[arg(long, env = "LAB_NOTIFICATION_PORT", default_value_t = 8084)]
    notification_port: u16,
    /// Port of the schema registry (Confluent's REST API; its data in the broker's `_schemas`).
    #[arg(long, env = "LAB_SCHEMA_REGISTRY_PORT", default_value_t = lab::system::SCHEMA_REGISTRY_PORT)]
    schema_registry_port: u16,
    /// Use this schema registry (Confluent's, say: `http://HOST:8081`) instead of serving one:
    /// the services register and check their schemas there, the dashboard and `lab schema` show
    /// it. Any registry with Confluent's REST API and JSON Schema support will do.
    #[arg(long, env = "LAB_SCHEMA_REGISTRY", value_name = "URL")]
    schema_registry: Option<String>,
    /// Address everything binds to.
    #[arg(long, env = "LAB_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Consumers per service.
    #[arg(long, env = "LAB_CONSUMERS", default_value_t = 2)]
    consumers: usize,
    /// Start only these services (comma separated, e.g. `order,notification`); start the others
    /// later with `lab start <service>`.
    #[arg(
        long,
        env = "LAB_SERVICES",
        value_enum,
        value_delimiter = ',',
        default_values_t = Service::ALL
    )]
    services: Vec<Service>,
    /// Attempts before a failing event goes to the DLQ.
    #[arg(long, env = "LAB_MAX_ATTEMPTS", default_value_t = 5)]
    max_attempts: u32,
}

/// The lab stopped because its PostgreSQL exited; already said on stderr.
#[derive(Debug, thiserror::Error)]
#[error("the lab's PostgreSQL exited")]
pub(crate) struct PostgresExited;

pub(crate) async fn up(args: UpArgs) -> anyhow::Result<()> {
    saga_shared::telemetry::init_tracing("warn");
    let guard = lab::dashboard::guard::Guard::new(
        args.dashboard_allowed_hosts
            .iter()
            .map(String::as_str)
            // `--host` by name (an address is accepted anyway).
            .chain(Some(args.host.as_str()).filter(|h| h.parse::<std::net::IpAddr>().is_err())),
    )
    .context("--dashboard-allowed-hosts (LAB_DASHBOARD_ALLOWED_HOSTS)")?;
    // The lab serves its broker too: as many open files as the system allows it.
    broker::server::raise_open_file_limit();
    let config = lab_config(&args);

    let started = Instant::now();
    let mut steps = Steps::new();
    let mut progress = |step: &str| steps.next(step);
    // A taken data dir or port is reported before anything starts.
    let started_lab = match Lab::preflight(&config, &[("dashboard", args.dashboard_port)]) {
        Ok(lock) => Lab::start_locked(config, lock, &mut progress).await,
        Err(e) => Err(e),
    };
    let lab = match started_lab {
        Ok(lab) => lab,
        Err(e) => {
            steps.clear();
            return Err(e.into());
        }
    };
    steps.next("starting the dashboard");
    let postgres_exit = lab.postgres_exit_watch();
    let client = LabClient::new(&lab);
    let brokers = lab.brokers().to_owned();
    let registry = lab.schema_registry_url().to_owned();
    let shared: SharedLab = Arc::new(tokio::sync::Mutex::new(Some(lab)));
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.dashboard_port))
        .await
        .with_context(|| format!("binding the dashboard to port {}", args.dashboard_port))?;
    let dashboard_port = listener.local_addr()?.port();
    let dashboard = Dashboard::serve_guarded(
        shared.clone(),
        client.clone(),
        brokers.clone(),
        listener,
        guard,
    )?;
    steps.next("");
    steps.clear();

    println!(
        "\nThe saga lab is up after {:.1} s (data in {}).\n",
        started.elapsed().as_secs_f64(),
        args.data_dir.display()
    );
    print_addresses(&args, &client, dashboard_port, &brokers, &registry);
    println!("\nPress Ctrl-C to stop everything.");

    let died = until_stopped(postgres_exit).await;
    println!("\nstopping...");
    lab::system::bounded(
        "the dashboard",
        std::time::Duration::from_secs(5),
        dashboard.shutdown(),
    )
    .await;
    let lab = shared.lock().await.take();
    if let Some(lab) = lab {
        lab.shutdown().await;
    }
    println!("stopped.");
    match died {
        Some(_) => Err(PostgresExited.into()),
        None => Ok(()),
    }
}

/// The lab's configuration from the command line.
fn lab_config(args: &UpArgs) -> LabConfig {
    let mut config = LabConfig::standard(&args.data_dir);
    config.postgres_url = args.postgres_url.clone();
    config.postgres_port = args.postgres_port;
    config.brokers = args.brokers.clone();
    config.broker_port = args.broker_port;
    config.schema_registry_port = args.schema_registry_port;
    config.service.schema_registry = args.schema_registry.clone();
    config.nodes = usize::from(args.nodes);
    config.host = args.host.clone();
    config.service.consumers = args.consumers;
    config.service.max_attempts = args.max_attempts;
    config.services = args.services.iter().copied().collect();
    config.ports.insert(Service::Order, args.order_port);
    config.ports.insert(Service::Payment, args.payment_port);
    config.ports.insert(Service::Inventory, args.inventory_port);
    config
        .ports
        .insert(Service::Notification, args.notification_port);
    config
}

/// The start-up's steps: a spinner on the current one (on a terminal), and a `done` line with
/// its time for each finished one.
struct Steps {
    bar: ProgressBar,
    tty: bool,
    current: Option<(String, Instant)>,
}

impl Steps {
    fn new() -> Self {
        let tty = std::io::stdout().is_terminal();
        let bar = if tty {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Self {
            bar,
            tty,
            current: None,
        }
    }

    /// Ends the current step (its `done` line) and starts `step`.
    fn next(&mut self, step: &str) {
        if let Some((done, since)) = self.current.take() {
            let line = format!("  done  {done} ({} ms)", since.elapsed().as_millis());
            if self.tty {
                self.bar.println(line)
            } else {
                println!("{line}")
            }
        }
        self.bar.set_message(step.to_owned());
        self.current = Some((step.to_owned(), Instant::now()));
    }

    fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// Where everything is, and the first order to place.
fn print_addresses(
    args: &UpArgs,
    client: &LabClient,
    dashboard_port: u16,
    brokers: &str,
    registry: &str,
) {
    let host = if args.host == "0.0.0.0" {
        "127.0.0.1"
    } else {
        args.host.as_str()
    };
    let routes = [
        "POST /orders, GET /orders/{id}",
        "GET /wallets/{customer_id}, GET /payments?order_id=",
        "GET /products, GET /products/{sku}",
        "GET /notifications?order_id=",
    ];
    for (svc, what) in Service::ALL.iter().zip(routes) {
        if args.services.contains(svc) {
            println!("  {:<22}{:<26}{what}", svc.name(), client_url(client, *svc));
        } else {
            println!(
                "  {:<22}{:<26}(not started: lab start {})",
                svc.name(),
                client_url(client, *svc),
                svc.short_name()
            );
        }
    }
    println!("  {:<22}http://{host}:{dashboard_port}", "dashboard");
    println!("  {:<22}{brokers}", "broker (Kafka API)");
    println!("  {:<22}{registry:<26}GET /subjects", "schema registry");
    println!("\nEvery service also has /health, /ready, /metrics and /openapi.json.");
    println!("\nPlace an order:\n");
    println!(
        "  curl -s -X POST {}/orders -H 'content-type: application/json' \\\n    -d '{{\"customer_id\":\"alice\",\"items\":[{{\"sku\":\"LATTE\",\"quantity\":2,\"unit_price\":5000}}]}}'",
        client.order
    );
    // How the user ran this binary: through cargo (which sets CARGO_MANIFEST_DIR for `cargo
    // run`), or installed as `lab`.
    let lab = if std::env::var_os("CARGO_MANIFEST_DIR").is_some() {
        "cargo run --release -p lab --"
    } else {
        "lab"
    };
    println!("\nor follow one live:  {lab} order --customer alice --item MOCHA:3");
    println!("and one it cancels:  {lab} order --customer bob --item MOCHA:3   (bob cannot pay)");
}

/// Waits for Ctrl-C (or SIGTERM), or for the lab's own PostgreSQL to die under it: then the
/// services could only time out on their pools, so the lab says so and stops. `Some` (how it
/// exited, its log) in that case.
async fn until_stopped(
    postgres_exit: Option<lab::pg::ExitWatch>,
) -> Option<(String, std::path::PathBuf)> {
    let postgres_died = async {
        match &postgres_exit {
            Some(watch) => Some((watch.exited().await, watch.log().to_owned())),
            None => std::future::pending().await,
        }
    };
    let died = tokio::select! {
        () = saga_shared::shutdown::ctrl_c_or_sigterm() => None,
        died = postgres_died => died,
    };
    if let Some((how, log)) = &died {
        eprintln!(
            "error: the lab's PostgreSQL exited while the lab ran ({how}); the services cannot \
             work without it, so the lab stops. Its log: {}",
            log.display()
        );
    }
    died
}

pub(crate) fn client_url(client: &LabClient, svc: Service) -> &str {
    match svc {
        Service::Order => &client.order,
        Service::Payment => &client.payment,
        Service::Inventory => &client.inventory,
        Service::Notification => &client.notification,
    }
}
