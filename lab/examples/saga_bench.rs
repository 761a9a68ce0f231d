//! Saga benchmark: the first order and a fixed-rate run started right after the lab is ready
//! (cold start), sustained orders/s through the whole chain, POST-to-notification latency at
//! fixed rates, and the outbox relay's commit-to-publish latency.
//!
//! `cargo run --release -p lab --example saga_bench -- --help`
//!
//! It starts the same in-process system as `lab` (throwaway PostgreSQL, embedded broker, four
//! services) in a temporary directory, tops up wallets and stock so every order takes the full
//! path (order.created -> payment.completed -> inventory.updated -> confirmed), and reports.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use futures_util::StreamExt;
use lab::{Lab, LabClient, LabConfig, Service};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Parser)]
struct Args {
    /// Orders for the throughput run.
    #[arg(long, env = "BENCH_ORDERS", default_value_t = 5000)]
    orders: usize,
    /// Concurrent POSTs in the throughput run.
    #[arg(long, env = "BENCH_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// Fixed rates (orders/s) for the latency runs.
    #[arg(
        long,
        env = "BENCH_RATES",
        value_delimiter = ',',
        default_value = "50,200"
    )]
    rates: Vec<u32>,
    /// Length of each latency run.
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 10)]
    seconds: u64,
    /// Consumers per service.
    #[arg(long, env = "BENCH_CONSUMERS", default_value_t = 2)]
    consumers: usize,
    /// Partitions per topic.
    #[arg(long, env = "BENCH_PARTITIONS", default_value_t = 6)]
    partitions: i32,
    /// After the throughput run, list the SQL statements it ran (calls and time, all four
    /// databases) from `pg_stat_statements`. Costs a little throughput.
    #[arg(long)]
    pg_stats: bool,
    /// Extra PostgreSQL setting `name=value` (repeatable), for experiments.
    #[arg(long = "pg-setting")]
    pg_settings: Vec<String>,
    /// Orders of the fixed-rate run started right after the lab is ready.
    #[arg(long, env = "BENCH_COLD_ORDERS", default_value_t = 500)]
    cold_orders: usize,
    /// Rate of that run (orders/s).
    #[arg(long, env = "BENCH_COLD_RATE", default_value_t = 50)]
    cold_rate: u32,
    /// Only the cold-start figures (first order, the run right after ready), then stop.
    #[arg(long)]
    cold_only: bool,
    /// Serve the dashboard during the runs, as `lab` does (its observer reads every topic).
    #[arg(long)]
    dashboard: bool,
    /// With --dashboard: also keep its chain view open in headless Chromium (what watching the
    /// lab costs; needs chromedriver).
    #[arg(long, requires = "dashboard")]
    browser: bool,
}

/// Turns `pg_stat_statements` on (it needs a server start) when `--pg-stats` is given.
const PG_STATS_SETTINGS: [&str; 2] = [
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track=all",
];

async fn reset_pg_stats(pools: &[PgPool]) -> anyhow::Result<()> {
    for pool in pools {
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(pool)
            .await?;
    }
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(&pools[0])
        .await?;
    Ok(())
}

/// Statements since the reset, over every database, the most frequent first.
async fn print_pg_stats(pool: &PgPool, orders: usize) -> anyhow::Result<()> {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 100), sum(calls)::int8, \
                sum(total_exec_time) \
         FROM pg_stat_statements GROUP BY 1 ORDER BY 2 DESC LIMIT 30",
    )
    .fetch_all(pool)
    .await?;
    println!("\n## SQL statements of the throughput run (pg_stat_statements, all databases)\n");
    println!("| calls | per order | total time | statement |");
    println!("|---|---|---|---|");
    for (query, calls, ms) in rows {
        println!(
            "| {calls} | {:.2} | {ms:.0} ms | `{}` |",
            calls as f64 / orders as f64,
            query.replace('|', "\\|")
        );
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v
}

async fn wait_terminal(orders: &PgPool, ids: &[Uuid], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    // Only the orders not yet seen terminal are asked about again (terminal is final): the
    // database this loads is the one being measured.
    let mut open: Vec<Uuid> = ids.to_vec();
    loop {
        let done: HashSet<Uuid> = sqlx::query_scalar(
            "SELECT id FROM orders WHERE id = ANY($1) AND status IN ('CONFIRMED', 'CANCELLED')",
        )
        .bind(&open)
        .fetch_all(orders)
        .await?
        .into_iter()
        .collect();
        open.retain(|id| !done.contains(id));
        if open.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} orders not terminal within {timeout:?}",
            open.len()
        );
        // Coarse on purpose, for the same reason. The run takes seconds, so 100 ms is under 1%
        // of it.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn relay_latencies(pools: &[PgPool], since: DateTime<Utc>) -> Vec<f64> {
    let mut all = Vec::new();
    for pool in pools {
        let v: Vec<f64> = sqlx::query_scalar(
            "SELECT (extract(epoch FROM published_at - created_at) * 1000)::float8 FROM outbox \
             WHERE created_at >= $1 AND published_at IS NOT NULL",
        )
        .bind(since)
        .fetch_all(pool)
        .await
        .expect("outbox latencies");
        all.extend(v);
    }
    sorted(all)
}

/// The lab under test and the databases the benchmark reads its figures from.
struct Bench {
    client: LabClient,
    /// Superuser pools of the four services' databases, in [`Service::ALL`]'s order.
    pools: Vec<PgPool>,
}

impl Bench {
    fn orders_db(&self) -> &PgPool {
        &self.pools[0]
    }

    fn notifications_db(&self) -> &PgPool {
        &self.pools[3]
    }

    async fn fixed_rate_run(&self, rate: u32, total: usize) -> anyhow::Result<Vec<f64>> {
        Ok(self.timed_run(rate, total).await?.0)
    }

    /// As [`fixed_rate_run`], also returning when each order was sent.
    async fn timed_run(
        &self,
        rate: u32,
        total: usize,
    ) -> anyhow::Result<(Vec<f64>, HashMap<Uuid, DateTime<Utc>>)> {
        fixed_rate_run(
            &self.client,
            self.orders_db(),
            self.notifications_db(),
            rate,
            total,
        )
        .await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    saga_shared::telemetry::init_tracing("error");
    let dir = tempfile::Builder::new().prefix("saga-bench").tempdir()?;
    let lab = start_lab(&args, dir.path()).await?;
    let ready_at = Instant::now();
    let bench = Bench {
        client: LabClient::new(&lab),
        pools: rich_customers_and_stock(&lab).await?,
    };
    let brokers = lab.brokers().to_owned();
    let lab: lab::dashboard::SharedLab = std::sync::Arc::new(tokio::sync::Mutex::new(Some(lab)));
    let watching = if args.dashboard {
        Some(watch(&args, &lab, &bench.client, brokers).await?)
    } else {
        None
    };
    cold_start(&args, &bench, ready_at).await?;
    if !args.cold_only {
        throughput(&args, &bench).await?;
        fixed_rates(&args, &bench).await?;
    }
    for p in bench.pools {
        p.close().await;
    }
    if let Some((dashboard, browser)) = watching {
        if let Some(browser) = browser {
            browser.close().await;
        }
        dashboard.shutdown().await;
    }
    if let Some(lab) = lab.lock().await.take() {
        lab.shutdown().await;
    }
    Ok(())
}

async fn start_lab(args: &Args, dir: &std::path::Path) -> anyhow::Result<Lab> {
    let mut config = LabConfig::ephemeral(dir);
    config.service.consumers = args.consumers;
    config.service.topic_partitions = args.partitions;
    config.service.db_max_connections = 20;
    config.postgres_settings = args.pg_settings.clone();
    if args.pg_stats {
        config
            .postgres_settings
            .extend(PG_STATS_SETTINGS.map(String::from));
    }
    Ok(Lab::start(config, &mut |step| eprintln!("  {step}")).await?)
}

/// Enough money and stock that every order is confirmed (the full chain); returns superuser
/// pools of the four services' databases.
async fn rich_customers_and_stock(lab: &Lab) -> anyhow::Result<Vec<PgPool>> {
    let (server, _) = lab
        .admin()
        .url
        .rsplit_once('/')
        .expect("URL has a database");
    let mut pools = Vec::new();
    for svc in Service::ALL {
        pools.push(PgPool::connect(&format!("{server}/{}", lab.database(svc))).await?);
    }
    sqlx::query("UPDATE wallets SET balance = 1000000000000")
        .execute(&pools[1])
        .await?;
    sqlx::query("UPDATE products SET stock = 1000000000")
        .execute(&pools[2])
        .await?;
    Ok(pools)
}

/// The dashboard, watched by headless Chromium if asked, while the benchmark runs.
async fn watch(
    args: &Args,
    lab: &lab::dashboard::SharedLab,
    client: &LabClient,
    brokers: String,
) -> anyhow::Result<(lab::dashboard::Dashboard, Option<lab::browser::Browser>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/#/", listener.local_addr()?);
    let dashboard =
        lab::dashboard::Dashboard::serve(lab.clone(), client.clone(), brokers, listener)?;
    if !args.browser {
        return Ok((dashboard, None));
    }
    let browser = lab::browser::Browser::start().await;
    browser.goto(&url).await;
    browser
        .wait_text("#svc-order .lag", |t| t.starts_with("lag"))
        .await;
    eprintln!("  the dashboard is open in headless Chromium");
    Ok((dashboard, Some(browser)))
}

/// What a user who places orders the moment the lab says it is up sees.
async fn cold_start(args: &Args, bench: &Bench, ready_at: Instant) -> anyhow::Result<()> {
    let since_ready = ready_at.elapsed();
    let first = bench.fixed_rate_run(1, 1).await?;
    let cold = bench
        .fixed_rate_run(args.cold_rate, args.cold_orders)
        .await?;
    println!("\n## Right after ready (POST sent -> \"confirmed\" notification stored)\n");
    println!(
        "| first order (sent {:.0} ms after ready) | run | p50 | p90 | p99 | max |",
        since_ready.as_secs_f64() * 1000.0
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {:.1} ms | {} orders at {}/s | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
        first[0],
        cold.len(),
        args.cold_rate,
        percentile(&cold, 50.0),
        percentile(&cold, 90.0),
        percentile(&cold, 99.0),
        cold.last().copied().unwrap_or(f64::NAN),
    );
    Ok(())
}

/// `count` orders placed `concurrency` at a time; their ids.
async fn place_many(
    client: &LabClient,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Uuid>> {
    futures_util::stream::iter(0..count)
        .map(|_| place(client))
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// As fast as the system takes them, until every order is terminal (after a warm-up: groups
/// joined, connections open).
async fn throughput(args: &Args, bench: &Bench) -> anyhow::Result<()> {
    let orders_db = bench.orders_db();
    let warm = place_many(&bench.client, 50, 8).await?;
    wait_terminal(orders_db, &warm, Duration::from_secs(60)).await?;
    if args.pg_stats {
        reset_pg_stats(&bench.pools).await?;
    }
    let since = Utc::now();
    let started = Instant::now();
    let ids = place_many(&bench.client, args.orders, args.concurrency).await?;
    let accepted = started.elapsed();
    wait_terminal(orders_db, &ids, Duration::from_secs(600)).await?;
    let all_terminal = started.elapsed();
    let confirmed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE id = ANY($1) AND status = 'CONFIRMED'",
    )
    .bind(&ids)
    .fetch_one(orders_db)
    .await?;
    if args.pg_stats {
        print_pg_stats(orders_db, args.orders).await?;
    }
    let relay = relay_latencies(&bench.pools, since).await;
    println!("\n## Throughput\n");
    println!(
        "| orders | concurrency | POSTs accepted in | all terminal in | orders/s (terminal) | confirmed | relay p50 | relay p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.2} s | {:.2} s | {:.0} | {} | {:.2} ms | {:.2} ms |",
        args.orders,
        args.concurrency,
        accepted.as_secs_f64(),
        all_terminal.as_secs_f64(),
        args.orders as f64 / all_terminal.as_secs_f64(),
        confirmed,
        percentile(&relay, 50.0),
        percentile(&relay, 99.0),
    );
    Ok(())
}

/// Latency at each fixed rate of `--rates`.
async fn fixed_rates(args: &Args, bench: &Bench) -> anyhow::Result<()> {
    println!("\n## Latency at a fixed rate (POST sent -> \"confirmed\" notification stored)\n");
    println!("| rate | orders | p50 | p90 | p99 | max | relay p50 | relay p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut breakdowns = Vec::new();
    for rate in &args.rates {
        let since = Utc::now();
        let relay_before = relay_split();
        let total = (*rate as u64 * args.seconds) as usize;
        let (lat, sent_at) = bench.timed_run(*rate, total).await?;
        let relay = relay_latencies(&bench.pools, since).await;
        breakdowns.push((
            *rate,
            hops(bench, since, &sent_at).await?,
            relay_split().since(&relay_before),
        ));
        println!(
            "| {rate}/s | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} ms | {:.2} ms |",
            lat.len(),
            percentile(&lat, 50.0),
            percentile(&lat, 90.0),
            percentile(&lat, 99.0),
            lat.last().copied().unwrap_or(f64::NAN),
            percentile(&relay, 50.0),
            percentile(&relay, 99.0),
        );
    }
    for (rate, stages, split) in breakdowns {
        print_breakdown(rate, &stages, &split);
    }
    Ok(())
}

/// Where an order's time goes, stage by stage, from the timestamps the services store: the
/// POST until the order's commit; then for each event on the way to the "confirmed"
/// notification, its delivery (the commit that wrote it until the consuming transaction
/// began: the relay's pick-up, the produce and its acknowledgement, the consumer's fetch) and
/// the handler (that beginning until the next event was written, just before its commit). Per
/// stage, every order's duration in ms.
struct Stages(Vec<(&'static str, Vec<f64>)>);

/// Per (topic, order id): the event id and commit time of each outbox row of the run.
type Outbox = HashMap<(String, String), (Uuid, DateTime<Utc>)>;

async fn outbox_rows(pool: &PgPool, since: DateTime<Utc>) -> anyhow::Result<Outbox> {
    let rows: Vec<(Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT event_id, topic, record_key, created_at FROM outbox WHERE created_at >= $1",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, topic, key, created)| ((topic, key), (id, created)))
        .collect())
}

async fn consumed_at(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> anyhow::Result<HashMap<Uuid, DateTime<Utc>>> {
    let rows: Vec<(Uuid, DateTime<Utc>)> =
        sqlx::query_as("SELECT event_id, consumed_at FROM consumed_events WHERE consumed_at >= $1")
            .bind(since)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

async fn hops(
    bench: &Bench,
    since: DateTime<Utc>,
    sent_at: &HashMap<Uuid, DateTime<Utc>>,
) -> anyhow::Result<Stages> {
    let ms = |from: DateTime<Utc>, to: DateTime<Utc>| {
        (to - from).num_microseconds().unwrap_or(0) as f64 / 1000.0
    };
    let [orders, payments, inventory, notifications] = &bench.pools[..] else {
        anyhow::bail!("four databases");
    };
    let (order_out, payment_out, inventory_out) = (
        outbox_rows(orders, since).await?,
        outbox_rows(payments, since).await?,
        outbox_rows(inventory, since).await?,
    );
    let (payment_in, inventory_in) = (
        consumed_at(payments, since).await?,
        consumed_at(inventory, since).await?,
    );
    let notified: HashMap<Uuid, DateTime<Utc>> = sqlx::query_as(
        "SELECT order_id, created_at FROM notifications WHERE kind = 'confirmed' AND created_at >= $1",
    )
    .bind(since)
    .fetch_all(notifications)
    .await?
    .into_iter()
    .collect();
    let names = [
        "POST -> order committed",
        "order.created delivered to payment",
        "payment handler",
        "payment.completed delivered to inventory",
        "inventory handler",
        "inventory.updated delivered to notification, stored",
    ];
    let mut stages: Vec<(&'static str, Vec<f64>)> = names.map(|n| (n, Vec::new())).to_vec();
    for (order, sent) in sent_at {
        let key = |topic: &str| (topic.to_owned(), order.to_string());
        let (Some(o), Some(p), Some(i), Some(n)) = (
            order_out.get(&key("order.created")),
            payment_out.get(&key("payment.completed")),
            inventory_out.get(&key("inventory.updated")),
            notified.get(order),
        ) else {
            continue;
        };
        let (Some(pc), Some(ic)) = (payment_in.get(&o.0), inventory_in.get(&p.0)) else {
            continue;
        };
        let times = [
            ms(*sent, o.1),
            ms(o.1, *pc),
            ms(*pc, p.1),
            ms(p.1, *ic),
            ms(*ic, i.1),
            ms(i.1, *n),
        ];
        for (stage, t) in stages.iter_mut().zip(times) {
            stage.1.push(t);
        }
    }
    Ok(Stages(stages))
}

/// The relays' pick-up (commit to claim) and produce acknowledgement (send to every ack of a
/// claimed batch), as totals and counts from the services' histograms.
#[derive(Debug, Default, Clone, Copy)]
struct RelaySplit {
    pickup: (f64, f64),
    ack: (f64, f64),
}

impl RelaySplit {
    fn since(self, before: &RelaySplit) -> RelaySplit {
        RelaySplit {
            pickup: (
                self.pickup.0 - before.pickup.0,
                self.pickup.1 - before.pickup.1,
            ),
            ack: (self.ack.0 - before.ack.0, self.ack.1 - before.ack.1),
        }
    }
}

/// Sums the `_sum` and `_count` series of the relays' two histograms, all services together.
fn relay_split() -> RelaySplit {
    let text = saga_shared::telemetry::prometheus().render();
    let mut split = RelaySplit::default();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        match name {
            "outbox_pickup_seconds_sum" => split.pickup.0 += value,
            "outbox_pickup_seconds_count" => split.pickup.1 += value,
            "outbox_produce_ack_seconds_sum" => split.ack.0 += value,
            "outbox_produce_ack_seconds_count" => split.ack.1 += value,
            _ => {}
        }
    }
    split
}

fn print_breakdown(rate: u32, stages: &Stages, split: &RelaySplit) {
    let orders = stages.0.first().map_or(0, |s| s.1.len());
    println!("\n## Where the time goes at {rate}/s ({orders} orders)\n");
    println!("| stage | p50 | p90 | mean |");
    println!("|---|---|---|---|");
    let mut total = 0.0;
    for (name, times) in &stages.0 {
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        total += mean;
        let times = sorted(times.clone());
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {mean:.2} ms |",
            percentile(&times, 50.0),
            percentile(&times, 90.0),
        );
    }
    println!("| sum of the means | | | {total:.2} ms |");
    let mean = |(sum, count): (f64, f64)| 1000.0 * sum / count.max(1.0);
    println!(
        "\nOf each delivery, on average over every relay of the run: the relay's pick-up (the \
         commit, its notification, the claim query) {:.2} ms, the produce until acknowledged \
         {:.2} ms; the rest is the consumer's fetch and the start of its transaction.",
        mean(split.pickup),
        mean(split.ack)
    );
}

/// Places `total` orders at `rate` per second; returns each one's latency from POST sent to its
/// "confirmed" notification stored, in ms, sorted.
async fn fixed_rate_run(
    client: &LabClient,
    orders_db: &PgPool,
    notifications_db: &PgPool,
    rate: u32,
    total: usize,
) -> anyhow::Result<(Vec<f64>, HashMap<Uuid, DateTime<Utc>>)> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total);
    for _ in 0..total {
        ticker.tick().await;
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Utc::now();
            place(&c).await.map(|id| (id, sent))
        }));
    }
    let mut sent_at: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    for t in tasks {
        let (id, sent) = t.await??;
        sent_at.insert(id, sent);
    }
    let ids: Vec<Uuid> = sent_at.keys().copied().collect();
    wait_terminal(orders_db, &ids, Duration::from_secs(120)).await?;
    // The notification follows the terminal status; wait for all of them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows: Vec<(Uuid, DateTime<Utc>)> = loop {
        let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT order_id, created_at FROM notifications WHERE kind = 'confirmed' AND order_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(notifications_db)
        .await?;
        if rows.len() == ids.len() || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    anyhow::ensure!(
        rows.len() == ids.len(),
        "missing notifications: {} of {}",
        rows.len(),
        ids.len()
    );
    let latencies = sorted(
        rows.iter()
            .map(|(id, at)| (*at - sent_at[id]).num_microseconds().unwrap_or(0) as f64 / 1000.0)
            .collect(),
    );
    Ok((latencies, sent_at))
}

async fn place(client: &LabClient) -> anyhow::Result<Uuid> {
    let order = client
        .place_order("alice", &[("LATTE", 1, 5000), ("MOCHA", 1, 5500)])
        .await?;
    Ok(order.id)
}
