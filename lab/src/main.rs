//! `lab`: the whole saga system in one command, and a few commands to play with it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lab::dashboard::{self, SharedLab};
use lab::{Lab, LabClient, LabConfig, Service};
use serde_json::{Value, json};

/// A forged array length in a request must close that connection, not abort the process.
#[global_allocator]
static ALLOCATOR: broker::wire_alloc::LazyHugeAlloc = broker::wire_alloc::LazyHugeAlloc;

#[derive(Debug, Parser)]
#[command(
    name = "lab",
    version,
    about = "The Kafka saga lab: broker, PostgreSQL and four services in one command"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    up: UpArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start everything (the default).
    Up(UpArgs),
    /// Place an order and follow its saga live.
    Order(OrderArgs),
    /// List or replay a dead-letter topic.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Switch faults of a running lab's service on or off.
    Fault(FaultArgs),
    /// Print events as they flow through the broker (every saga topic and DLQ).
    Tail(TailArgs),
    /// Publish a poison record (garbage bytes or schema-invalid JSON) to a topic.
    Poison(PoisonArgs),
    /// Stop one service of a running lab (orders keep being accepted; it catches up on start).
    Stop(ServiceArg),
    /// Start a stopped service of a running lab again.
    Start(ServiceArg),
    /// Print a service's settings as shell exports (database URL, brokers), to run another
    /// instance of it against the running lab: `eval "$(lab env payment)"`.
    Env(ServiceArg),
    /// Describe consumer groups: state, members and the partitions each member owns.
    Groups(GroupsArgs),
    /// Run one service on its own, as its own binary would (e.g. a second payment instance
    /// next to a running lab, after `eval "$(lab env payment)"`); stops on Ctrl-C.
    Service(ServiceRunArgs),
}

#[derive(Debug, Args)]
struct ServiceRunArgs {
    #[arg(value_enum)]
    service: Service,
    /// HTTP port (default: the service's own, 8081-8084).
    #[arg(long, env = "PORT")]
    port: Option<u16>,
    #[command(flatten)]
    common: saga_shared::config::CommonConfig,
}

#[derive(Debug, Args)]
struct GroupsArgs {
    /// Only this group (default: every group).
    #[arg(env = "LAB_GROUP")]
    group: Option<String>,
    /// Kafka bootstrap servers of the running lab.
    #[arg(long, env = "LAB_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
}

#[derive(Debug, Clone, Args)]
struct UpArgs {
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
    /// Port of the embedded broker.
    #[arg(long, env = "LAB_BROKER_PORT", default_value_t = 9092)]
    broker_port: u16,
    /// Port of the dashboard (0: any free port, as for every port below).
    #[arg(long, env = "LAB_DASHBOARD_PORT", default_value_t = 8080)]
    dashboard_port: u16,
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
    /// Address everything binds to.
    #[arg(long, env = "LAB_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Consumers per service.
    #[arg(long, env = "LAB_CONSUMERS", default_value_t = 2)]
    consumers: usize,
    /// Attempts before a failing event goes to the DLQ.
    #[arg(long, env = "LAB_MAX_ATTEMPTS", default_value_t = 5)]
    max_attempts: u32,
}

#[derive(Debug, Args)]
struct OrderArgs {
    /// Who orders.
    #[arg(long, env = "LAB_ORDER_CUSTOMER", default_value = "alice")]
    customer: String,
    /// SKU:QUANTITY:UNIT_PRICE, repeatable (comma separated in the environment variable).
    #[arg(
        long = "item",
        env = "LAB_ORDER_ITEMS",
        value_delimiter = ',',
        default_value = "LATTE:2:5000"
    )]
    items: Vec<String>,
    /// The order service.
    #[arg(long, env = "LAB_ORDER_URL", default_value = "http://127.0.0.1:8081")]
    order_url: String,
    #[arg(
        long,
        env = "LAB_NOTIFICATION_URL",
        default_value = "http://127.0.0.1:8084"
    )]
    notification_url: String,
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// Print the records of `<topic>.dlq`.
    List(DlqArgs),
    /// Publish every record of `<topic>.dlq` to its original topic again.
    Replay(DlqArgs),
}

#[derive(Debug, Args)]
struct DlqArgs {
    /// The original topic, e.g. order.created.
    #[arg(long, env = "LAB_DLQ_TOPIC", default_value = "order.created")]
    topic: String,
    #[arg(
        long,
        env = "LAB_DASHBOARD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    dashboard_url: String,
}

#[derive(Debug, Args)]
struct TailArgs {
    /// Start at the beginning of each topic instead of its end.
    #[arg(long, env = "LAB_TAIL_FROM_BEGINNING")]
    from_beginning: bool,
    /// Stop after this many records (default: run until Ctrl-C).
    #[arg(long, env = "LAB_TAIL_COUNT")]
    count: Option<usize>,
    /// Only these topics (repeatable); default every saga topic and its DLQ.
    #[arg(long = "topic", env = "LAB_TAIL_TOPICS", value_delimiter = ',')]
    topics: Vec<String>,
    /// Kafka bootstrap servers of the running lab.
    #[arg(long, env = "LAB_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
}

#[derive(Debug, Args)]
struct PoisonArgs {
    /// Where to publish it.
    #[arg(long, env = "LAB_POISON_TOPIC", default_value = "order.created")]
    topic: String,
    /// What kind of poison.
    #[arg(long, env = "LAB_POISON_KIND", value_enum, default_value_t = PoisonKind::Garbage)]
    kind: PoisonKind,
    /// Kafka bootstrap servers of the running lab.
    #[arg(long, env = "LAB_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PoisonKind {
    /// Bytes that are not JSON, no headers.
    Garbage,
    /// Proper CloudEvents headers around JSON that does not match the topic's schema.
    Invalid,
}

#[derive(Debug, Args)]
struct FaultArgs {
    #[arg(env = "LAB_SERVICE", value_enum)]
    service: Service,
    /// Make every event handler attempt fail (retries, then the DLQ).
    #[arg(long, env = "LAB_FAULT_FAIL", default_value_t = false)]
    fail: bool,
    /// Delay each event handler attempt by this many milliseconds.
    #[arg(long, env = "LAB_FAULT_SLOW_MS", default_value_t = 0)]
    slow_ms: u64,
    #[arg(
        long,
        env = "LAB_DASHBOARD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    dashboard_url: String,
}

#[derive(Debug, Args)]
struct ServiceArg {
    #[arg(env = "LAB_SERVICE", value_enum)]
    service: Service,
    #[arg(
        long,
        env = "LAB_DASHBOARD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    dashboard_url: String,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, no backtrace: what went wrong and the fix, then each cause the message
            // does not already say.
            let mut line = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !line.contains(&cause) {
                    line.push_str(": ");
                    line.push_str(&cause);
                }
            }
            eprintln!("error: {line}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => up(cli.up).await,
        Some(Command::Up(args)) => up(args).await,
        Some(Command::Order(args)) => order(args).await,
        Some(Command::Dlq {
            action: DlqAction::List(a),
        }) => {
            let v = call(
                reqwest::Method::GET,
                &format!("{}/api/dlq/{}", a.dashboard_url, a.topic),
                None,
            )
            .await?;
            print_dlq(&v)
        }
        Some(Command::Dlq {
            action: DlqAction::Replay(a),
        }) => {
            let url = format!("{}/api/dlq/{}/replay", a.dashboard_url, a.topic);
            let v = call(reqwest::Method::POST, &url, None).await?;
            println!(
                "replayed {} record(s) of {} to {}",
                v["replayed"], v["topic"], a.topic
            );
            Ok(())
        }
        Some(Command::Fault(a)) => {
            let url = format!("{}/api/faults/{}", a.dashboard_url, a.service.short_name());
            let body = json!({"fail_handlers": a.fail, "slow_ms": a.slow_ms});
            let v = call(reqwest::Method::POST, &url, Some(body)).await?;
            println!("{}: {v}", a.service.short_name());
            Ok(())
        }
        Some(Command::Tail(a)) => tail(a).await,
        Some(Command::Poison(a)) => poison(a).await,
        Some(Command::Stop(a)) => {
            let url = format!(
                "{}/api/services/{}/stop",
                a.dashboard_url,
                a.service.short_name()
            );
            println!("{}", call(reqwest::Method::POST, &url, None).await?);
            Ok(())
        }
        Some(Command::Start(a)) => {
            let url = format!(
                "{}/api/services/{}/start",
                a.dashboard_url,
                a.service.short_name()
            );
            println!("{}", call(reqwest::Method::POST, &url, None).await?);
            Ok(())
        }
        Some(Command::Env(a)) => {
            let status = call(
                reqwest::Method::GET,
                &format!("{}/api/status", a.dashboard_url),
                None,
            )
            .await?;
            let name = a.service.name();
            let svc = status["services"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["name"] == name)
                .with_context(|| format!("the lab reports no {name}"))?;
            for (var, value) in [
                ("DATABASE_URL", &svc["database_url"]),
                ("KAFKA_BROKERS", &status["brokers"]),
            ] {
                println!("export {var}='{}'", value.as_str().unwrap_or_default());
            }
            Ok(())
        }
        Some(Command::Service(a)) => run_service(a).await,
        Some(Command::Groups(a)) => {
            let groups = lab::groups::describe(&a.brokers, a.group.as_deref()).await?;
            let text: String = groups.iter().map(|g| format!("{g}\n")).collect();
            print_out(&text)
        }
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    saga_shared::telemetry::init_tracing("warn");
    let mut config = LabConfig::standard(&args.data_dir);
    config.postgres_url = args.postgres_url.clone();
    config.postgres_port = args.postgres_port;
    config.brokers = args.brokers.clone();
    config.broker_port = args.broker_port;
    config.host = args.host.clone();
    config.service.consumers = args.consumers;
    config.service.max_attempts = args.max_attempts;
    config.ports.insert(Service::Order, args.order_port);
    config.ports.insert(Service::Payment, args.payment_port);
    config.ports.insert(Service::Inventory, args.inventory_port);
    config
        .ports
        .insert(Service::Notification, args.notification_port);

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
    let started = Instant::now();
    let mut step_started = Instant::now();
    let mut current: Option<String> = None;
    let mut progress = |step: &str| {
        if let Some(done) = current.take() {
            let line = format!("  done  {done} ({} ms)", step_started.elapsed().as_millis());
            if tty {
                bar.println(line)
            } else {
                println!("{line}")
            }
        }
        step_started = Instant::now();
        bar.set_message(step.to_owned());
        current = Some(step.to_owned());
    };
    // A taken data dir or port is reported before anything starts.
    let started_lab = match Lab::preflight(&config, &[("dashboard", args.dashboard_port)]) {
        Ok(lock) => Lab::start_locked(config, lock, &mut progress).await,
        Err(e) => Err(e),
    };
    let lab = match started_lab {
        Ok(lab) => lab,
        Err(e) => {
            bar.finish_and_clear();
            return Err(e.into());
        }
    };
    progress("starting the dashboard");
    let client = LabClient::new(&lab);
    let brokers = lab.brokers().to_owned();
    let shared: SharedLab = Arc::new(tokio::sync::Mutex::new(Some(lab)));
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.dashboard_port))
        .await
        .with_context(|| format!("binding the dashboard to port {}", args.dashboard_port))?;
    let dashboard_port = listener.local_addr()?.port();
    let dashboard = dashboard::router(shared.clone(), client.clone(), brokers.clone());
    let (stop_dash, dash_rx) = tokio::sync::oneshot::channel::<()>();
    let dash_task = tokio::spawn(async move {
        axum::serve(listener, dashboard)
            .with_graceful_shutdown(async move {
                let _ = dash_rx.await;
            })
            .await
    });
    progress("");
    bar.finish_and_clear();

    let host = if args.host == "0.0.0.0" {
        "127.0.0.1"
    } else {
        args.host.as_str()
    };
    println!(
        "\nThe saga lab is up after {:.1} s (data in {}).\n",
        started.elapsed().as_secs_f64(),
        args.data_dir.display()
    );
    let routes = [
        "POST /orders, GET /orders/{id}",
        "GET /wallets/{customer_id}, GET /payments?order_id=",
        "GET /products, GET /products/{sku}",
        "GET /notifications?order_id=",
    ];
    for (svc, what) in Service::ALL.iter().zip(routes) {
        println!(
            "  {:<22}{:<26}{what}",
            svc.name(),
            client_url(&client, *svc)
        );
    }
    println!("  {:<22}http://{host}:{dashboard_port}", "dashboard");
    println!("  {:<22}{brokers}", "broker (Kafka API)");
    println!("\nEvery service also has /health, /ready, /metrics and /openapi.json.");
    println!("\nPlace an order:\n");
    println!(
        "  curl -s -X POST {}/orders -H 'content-type: application/json' \\\n    -d '{{\"customer_id\":\"alice\",\"items\":[{{\"sku\":\"LATTE\",\"quantity\":2,\"unit_price\":5000}}]}}'",
        client.order
    );
    println!(
        "\nor follow one live:  cargo run --release -p lab -- order --customer bob --item MOCHA:3:5500"
    );
    println!("\nPress Ctrl-C to stop everything.");

    saga_shared::shutdown::ctrl_c_or_sigterm().await;
    println!("\nstopping...");
    let _ = stop_dash.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), dash_task).await;
    let lab = shared.lock().await.take();
    if let Some(lab) = lab {
        lab.shutdown().await;
    }
    println!("stopped.");
    Ok(())
}

fn client_url(client: &LabClient, svc: Service) -> &str {
    match svc {
        Service::Order => &client.order,
        Service::Payment => &client.payment,
        Service::Inventory => &client.inventory,
        Service::Notification => &client.notification,
    }
}

/// `lab service`: the same service its own binary runs (`saga_shared::service::build`), in this
/// process.
async fn run_service(a: ServiceRunArgs) -> anyhow::Result<()> {
    saga_shared::telemetry::init_tracing("info");
    let svc = a.service;
    let port = a.port.unwrap_or(svc.default_port());
    let app = svc.build(&a.common, port, Arc::default()).await?;
    eprintln!("{} listening on port {}", svc.name(), app.port());
    app.run_until_stopped().await?;
    Ok(())
}

async fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("is the lab running? calling {url}"))?;
    let status = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{url} answered {status}: {}",
            v["detail"].as_str().unwrap_or("")
        );
    }
    Ok(v)
}

fn print_dlq(v: &Value) -> anyhow::Result<()> {
    use std::fmt::Write;
    let records = v["records"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "{}: {} record(s)\n",
        v["topic"].as_str().unwrap_or("?"),
        records.len()
    );
    for r in records {
        let h = |name: &str| {
            r["headers"]
                .as_array()
                .and_then(|hs| hs.iter().find(|p| p[0] == name))
                .and_then(|p| p[1].as_str())
                .unwrap_or("-")
                .to_owned()
        };
        writeln!(
            out,
            "  {}@{}  from {}[{}]@{}  group={} attempts={}  error: {}",
            r["partition"],
            r["offset"],
            h("dlq_original_topic"),
            h("dlq_original_partition"),
            h("dlq_original_offset"),
            h("dlq_consumer_group"),
            h("dlq_attempts"),
            h("dlq_error"),
        )?;
    }
    print_out(&out)
}

/// Writes `text` to stdout. A reader that stopped early (`lab groups | grep -q ...`) is not an
/// error: like any Unix tool, the command then just ends.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

async fn order(args: OrderArgs) -> anyhow::Result<()> {
    let mut items = Vec::new();
    for item in &args.items {
        let parts: Vec<&str> = item.split(':').collect();
        let [sku, q, p] = parts[..] else {
            bail!("--item must be SKU:QUANTITY:UNIT_PRICE, got {item}")
        };
        items.push(
            json!({"sku": sku, "quantity": q.parse::<i64>()?, "unit_price": p.parse::<i64>()?}),
        );
    }
    let client = LabClient::with_urls(
        args.order_url.clone(),
        String::new(),
        String::new(),
        args.notification_url.clone(),
    );
    let started = Instant::now();
    let order = client
        .post_order(json!({"customer_id": args.customer, "items": items}))
        .await?;
    let id = order["id"].as_str().context("order without id")?.to_owned();
    println!(
        "order {id} placed: {} {} {}",
        order["total"],
        order["currency"].as_str().unwrap_or(""),
        order["status"]
    );
    let mut shown = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = client.order(&id).await?;
        let timeline = o["timeline"].as_array().cloned().unwrap_or_default();
        for step in &timeline {
            let Some(event_id) = step["event_id"].as_str() else {
                continue;
            };
            if !shown.insert(event_id.to_owned()) {
                continue;
            }
            println!(
                "  +{:>5} ms  {:<18} -> {:<12} {}",
                started.elapsed().as_millis(),
                step["event"].as_str().unwrap_or(""),
                step["status"].as_str().unwrap_or(""),
                step["detail"].as_str().unwrap_or(""),
            );
        }
        let status = o["status"].as_str().unwrap_or("");
        if lab::client::timeline_complete(&o) {
            let kind = if status == "CONFIRMED" {
                "confirmed"
            } else {
                "cancelled"
            };
            let notes = client
                .wait_notification(&id, kind, Duration::from_secs(10))
                .await?;
            for n in notes {
                println!(
                    "  notification [{}] {}",
                    n["kind"].as_str().unwrap_or(""),
                    n["message"].as_str().unwrap_or("")
                );
            }
            println!("{status} after {} ms", started.elapsed().as_millis());
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("order {id} is still {status} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn tail(args: TailArgs) -> anyhow::Result<()> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers;
    use rdkafka::{Message, Offset, TopicPartitionList};
    use saga_shared::events::topics;

    let wanted: Vec<String> = if args.topics.is_empty() {
        topics::with_dlqs()
    } else {
        args.topics.clone()
    };
    let consumer: StreamConsumer = saga_shared::kafka::client_config(&args.brokers)
        .set("group.id", "lab-tail")
        .set("enable.auto.commit", "false")
        .create()?;
    let brokers = args.brokers.clone();
    let metadata = {
        let c: rdkafka::consumer::BaseConsumer =
            saga_shared::kafka::client_config(&brokers).create()?;
        tokio::task::spawn_blocking(move || c.fetch_metadata(None, Duration::from_secs(10)))
            .await??
    };
    let start = if args.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let mut tpl = TopicPartitionList::new();
    for t in metadata
        .topics()
        .iter()
        .filter(|t| wanted.iter().any(|w| w == t.name()))
    {
        for p in t.partitions() {
            tpl.add_partition_offset(t.name(), p.id(), start)?;
        }
    }
    anyhow::ensure!(
        tpl.count() > 0,
        "none of the topics exist on {}",
        args.brokers
    );
    consumer.assign(&tpl)?;
    eprintln!(
        "tailing {} partitions of {} topics on {} (Ctrl-C to stop)",
        tpl.count(),
        wanted.len(),
        args.brokers
    );
    let mut seen = 0usize;
    loop {
        if args.count.is_some_and(|n| seen >= n) {
            return Ok(());
        }
        let m = tokio::select! {
            m = consumer.recv() => m?,
            _ = saga_shared::shutdown::ctrl_c_or_sigterm() => return Ok(()),
        };
        seen += 1;
        let header = |name: &str| {
            m.headers()
                .and_then(|h| h.iter().find(|x| x.key == name))
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| "-".into())
        };
        let value = m
            .payload()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let value: String = value.chars().take(160).collect();
        println!(
            "{} {}[{}]@{} key={} source={} ce_id={} cause={}\n    {}",
            header("ce_time"),
            m.topic(),
            m.partition(),
            m.offset(),
            m.key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_else(|| "-".into()),
            header("ce_source"),
            header("ce_id"),
            header("ce_causationid"),
            value,
        );
    }
}

async fn poison(args: PoisonArgs) -> anyhow::Result<()> {
    use rdkafka::message::OwnedHeaders;
    use rdkafka::producer::FutureRecord;

    let producer = saga_shared::kafka::producer(&args.brokers)?;
    let order_id = uuid::Uuid::now_v7();
    let (value, headers): (Vec<u8>, OwnedHeaders) = match args.kind {
        PoisonKind::Garbage => (
            b"\x00\xffthis is not an event".to_vec(),
            OwnedHeaders::new(),
        ),
        PoisonKind::Invalid => {
            let env = saga_shared::Envelope::new(&args.topic, "/lab-poison", order_id);
            (
                br#"{"order_id":"not-a-uuid","items":"many"}"#.to_vec(),
                env.to_headers(),
            )
        }
    };
    let key = order_id.to_string();
    let record = FutureRecord::to(&args.topic)
        .key(&key)
        .payload(&value)
        .headers(headers);
    let (partition, offset) = producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|d| (d.partition, d.offset))
        .map_err(|(e, _)| e)?;
    println!(
        "published a {} poison record to {}[{partition}]@{offset}",
        clap::ValueEnum::to_possible_value(&args.kind)
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default(),
        args.topic
    );
    Ok(())
}
