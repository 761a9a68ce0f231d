//! `lab`: the whole saga system in one command, and a few commands to play with it.
//!
//! `up` starts the lab and prints where everything is; `order` places an order and follows it;
//! `kafka` has the commands that speak Kafka directly (`tail`, `poison`); `control` the ones that
//! ask a running lab's control API (`dlq`, `fault`, `stop`, `start`, `env`, `groups`, `service`);
//! `reset` moves a consumer group's offsets.

mod control;
mod delivery;
mod kafka;
mod keys;
mod order;
mod reset;
mod retry;
mod schema;
mod txn;
mod up;
mod wait;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use control::{
    DlqAction, FaultArgs, GroupsArgs, NodeAction, PartArg, PartitionsArgs, ScaleArgs, ServiceArg,
    ServiceRunArgs, TopicAction,
};
use delivery::DeliveryArgs;
use kafka::{PoisonArgs, TailArgs};
use keys::KeysArgs;
use order::OrderArgs;
use reset::ResetArgs;
use schema::SchemaArgs;
use txn::TxnArgs;
use up::UpArgs;
use wait::WaitArgs;

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
    /// Stop one service of a running lab (orders keep being accepted; it catches up on start),
    /// or its embedded broker (`lab stop broker`: the services keep accepting orders, their
    /// outboxes keep the events until it is back).
    Stop(PartArg),
    /// Start a stopped service (or the stopped broker) of a running lab again.
    Start(PartArg),
    /// Run a service with this many consumers in its consumer group (it restarts, and the
    /// group rebalances); past the partitions of a topic, a consumer gets none of them.
    Scale(ScaleArgs),
    /// The embedded broker's nodes (`lab --nodes 3`): list them with the partitions each leads,
    /// or stop, start, isolate or reconnect one on a running lab.
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// Print a service's settings as shell exports (database URL, brokers, schema registry), to run another
    /// instance of it against the running lab: `eval "$(lab env payment)"`.
    Env(ServiceArg),
    /// Describe consumer groups: state, members and the partitions each member owns.
    Groups(GroupsArgs),
    /// Move a consumer group's committed offsets to reprocess (or skip) records: to the
    /// earliest or latest, an offset or a time; refused while the group has members, and only
    /// a plan without --execute (Kafka's kafka-consumer-groups --reset-offsets).
    Reset(ResetArgs),
    /// Run one service on its own, as its own binary would (e.g. a second payment instance
    /// next to a running lab, after `eval "$(lab env payment)"`); stops on Ctrl-C.
    Service(ServiceRunArgs),
    /// Wait until an order has a status, a group is Stable with N members or has read
    /// everything, a DLQ holds N records, a service's outbox N events, a partition's earliest
    /// offset reaches N, or a node is fenced or in sync; prints what it saw (fails after
    /// --timeout seconds).
    Wait(WaitArgs),
    /// Kafka transactions to watch: commit, abort, a producer that dies mid-transaction, and a
    /// zombie producer fenced by its successor.
    Txn(TxnArgs),
    /// Delivery semantics side by side: a consumer killed in the middle of a record loses it
    /// (at-most-once), processes it twice (at-least-once) or neither (exactly-once).
    Delivery(DeliveryArgs),
    /// Which partition a record lands on: each key always on one (its hash, which librdkafka
    /// and the Java client compute differently), records without a key on a "sticky" one.
    Keys(KeysArgs),
    /// The schema registry's subjects (the events' JSON Schemas the services registered): list
    /// them, show or diff versions, try a change against the compatibility rules, set a
    /// subject's level, send a record again written with another version.
    Schema(SchemaArgs),
    /// Create a topic with its partitions, replication factor and configs.
    Topic {
        #[command(subcommand)]
        action: TopicAction,
    },
    /// Add partitions to a topic (never fewer); its consumer groups rebalance onto them.
    Partitions(PartitionsArgs),
    /// Photograph a page of the dashboard once a CSS selector is drawn (and its text contains
    /// --contains): the tutorial's screenshots, taken by the tutorial test at the point of the
    /// chapter they show.
    #[command(hide = true)]
    Screenshot {
        /// The page, e.g. http://127.0.0.1:8080/#/groups/payment-service.
        url: String,
        /// A CSS selector that shows the page is drawn.
        #[arg(long)]
        wait: String,
        /// Text the selector's element must contain first.
        #[arg(long)]
        contains: Option<String>,
        /// The PNG file to write.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Run a throwaway PostgreSQL for a test suite: prints the superuser URL of its `postgres`
    /// database, then runs until standard input closes (`cargo xtask test` shares one among
    /// all the tests it runs, as `LAB_TEST_POSTGRES_URL`).
    #[command(hide = true)]
    TestPostgres,
}

fn main() -> std::process::ExitCode {
    quiet_when_stdout_closes();
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
        // Said when it happened, in its own line.
        Err(e) if e.is::<up::PostgresExited>() => std::process::ExitCode::FAILURE,
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
        None => up::up(cli.up).await,
        Some(Command::Up(args)) => up::up(args).await,
        Some(Command::Order(args)) => order::order(args).await,
        Some(Command::Dlq { action }) => control::dlq(action).await,
        Some(Command::Fault(a)) => control::fault(a).await,
        Some(Command::Tail(a)) => kafka::tail(a).await,
        Some(Command::Poison(a)) => kafka::poison(a).await,
        Some(Command::Stop(a)) => control::stop_or_start(a, "stop").await,
        Some(Command::Start(a)) => control::stop_or_start(a, "start").await,
        Some(Command::Node { action }) => control::node(action).await,
        Some(Command::Env(a)) => control::env(a).await,
        Some(Command::Service(a)) => control::run_service(a).await,
        Some(Command::Groups(a)) => control::groups(a).await,
        Some(Command::Scale(a)) => control::scale(a).await,
        Some(Command::Reset(a)) => reset::reset(a).await,
        Some(Command::Wait(a)) => wait::wait(a).await,
        Some(Command::Txn(a)) => txn::txn(a).await,
        Some(Command::Delivery(a)) => delivery::delivery(a).await,
        Some(Command::Keys(a)) => keys::keys(a).await,
        Some(Command::Schema(a)) => schema::schema(a).await,
        Some(Command::Topic { action }) => control::topic(action).await,
        Some(Command::Partitions(a)) => control::partitions(a).await,
        Some(Command::TestPostgres) => test_postgres().await,
        Some(Command::Screenshot {
            url,
            wait,
            contains,
            out,
        }) => screenshot(&url, &wait, contains.as_deref(), &out).await,
    }
}

/// `lab screenshot`.
async fn screenshot(
    url: &str,
    wait: &str,
    contains: Option<&str>,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let url = latest_order(url).await?;
    let browser = lab::browser::Browser::start_sized(1360, 1000).await;
    let png = lab::browser::photograph(&browser, &url, wait, contains).await;
    browser.close().await;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, png?)?;
    Ok(())
}

/// `url` with `{latest:STATUS}` made the id of the newest order with that status, which the
/// dashboard's API gives (for an order's page).
async fn latest_order(url: &str) -> anyhow::Result<String> {
    let Some(start) = url.find("{latest:") else {
        return Ok(url.to_owned());
    };
    let end = start
        + url[start..]
            .find('}')
            .context("`{latest:` without its `}`")?;
    let status = &url[start + "{latest:".len()..end];
    let base = &url[..url
        .find("/?")
        .or_else(|| url.find("/#"))
        .unwrap_or(url.len())];
    let orders: Vec<serde_json::Value> =
        reqwest::get(format!("{base}/api/orders?status={status}&limit=1"))
            .await?
            .error_for_status()?
            .json()
            .await?;
    let id = orders
        .first()
        .and_then(|o| o["id"].as_str())
        .with_context(|| format!("no {status} order"))?;
    Ok(format!("{}{id}{}", &url[..start], &url[end + 1..]))
}

/// `lab test-postgres`.
async fn test_postgres() -> anyhow::Result<()> {
    use std::io::Write;
    let server = lab_postgres::TestServer::start().await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", server.admin_url())?;
    out.flush()?;
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
        .await??;
    drop(server);
    Ok(())
}

/// A reader that stops early (`lab node list | head -3`) closes standard output: that ends the
/// command, successfully, instead of a panic about a broken pipe (which also fails the pipeline
/// under `set -o pipefail`).
fn quiet_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}
