//! The dashboard's screenshots in the docs, made again from a real lab:
//!
//! `cargo run -p lab --example screenshots` (needs `chromium` and `chromedriver`, which
//! `cargo xtask setup` installs) writes `docs/images/dashboard-*.png`.
//!
//! It starts a throwaway lab on three broker nodes, places one order of each saga path,
//! publishes a poison record, stops the inventory service while two more orders wait (so lag
//! shows), and photographs each view; last the Brokers view, with node 2 stopped.

use std::path::PathBuf;
use std::time::Duration;

use lab::browser::Browser;
use lab::dashboard::{Dashboard, SharedLab};
use lab::{Lab, LabClient, LabConfig, Service};
use uuid::Uuid;

const WIDTH: u32 = 1360;
const HEIGHT: u32 = 1250;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    saga_shared::telemetry::init_tracing("error");
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/images");
    std::fs::create_dir_all(&out)?;
    let dir = tempfile::Builder::new().prefix("screenshots").tempdir()?;
    let mut config = LabConfig::ephemeral(dir.path());
    config.service.max_attempts = 2;
    config.service.retry_max_ms = 100;
    config.nodes = 3;
    let lab = Lab::start(config, &mut |step| eprintln!("  {step}")).await?;
    let client = LabClient::new(&lab);
    let brokers = lab.brokers().to_owned();
    let shared: SharedLab = std::sync::Arc::new(tokio::sync::Mutex::new(Some(lab)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let dashboard = Dashboard::serve(shared.clone(), client.clone(), brokers.clone(), listener)?;
    let compensated = something_to_show(&shared, &client, &brokers).await?;
    let browser = Browser::start_sized(WIDTH, HEIGHT).await;
    for (name, page, ready) in views(&url, compensated) {
        photograph(&browser, name, &page, ready, &out).await?;
    }
    stop_node_2(&shared).await?;
    let brokers_view = format!("{url}/#/brokers");
    photograph(
        &browser,
        "brokers",
        &brokers_view,
        "#nodes tr[data-state='down']",
        &out,
    )
    .await?;
    browser.close().await;
    dashboard.shutdown().await;
    if let Some(lab) = shared.lock().await.take() {
        lab.shutdown().await;
    }
    Ok(())
}

/// One order of each path and what they leave behind, a poison record, and two orders waiting
/// for the stopped inventory service; returns the compensated order's id.
async fn something_to_show(
    shared: &SharedLab,
    client: &LabClient,
    brokers: &str,
) -> anyhow::Result<Uuid> {
    let mut ids = Vec::new();
    for (customer, sku, price) in [
        ("alice", "LATTE", 5000),
        ("bob", "MOCHA", 5500),
        ("carol", "ICED_TEA", 4500),
    ] {
        let quantity = if sku == "MOCHA" { 3 } else { 1 };
        let order = client
            .place_order(customer, &[(sku, quantity, price)])
            .await?;
        client
            .wait_terminal(order.id, Duration::from_secs(30))
            .await?;
        ids.push(order.id);
    }
    let producer = saga_shared::kafka::producer(brokers)?;
    lab::poison::publish(&producer, "order.created", lab::poison::PoisonKind::Garbage).await?;
    drop(producer);
    shared
        .lock()
        .await
        .as_mut()
        .expect("running")
        .stop_service(Service::Inventory)
        .await;
    for _ in 0..2 {
        client
            .place_order("alice", &[("AMERICANO", 1, 4000)])
            .await?;
    }
    Ok(ids[2])
}

/// Stops node 2 and waits until it leads nothing and no ISR holds it.
async fn stop_node_2(shared: &SharedLab) -> anyhow::Result<()> {
    shared
        .lock()
        .await
        .as_mut()
        .expect("the lab runs")
        .stop_node(2)
        .await?;
    lab::client::eventually(
        "node 2's partitions moved",
        Duration::from_secs(60),
        || async {
            let guard = shared.lock().await;
            let nodes = guard.as_ref()?.nodes()?;
            let moved = nodes
                .partitions
                .iter()
                .all(|p| p.leader != 2 && !p.isr.contains(&2));
            (moved && !nodes.nodes[1].live).then_some(())
        },
    )
    .await?;
    Ok(())
}

/// Each view: its name, its URL, and what shows it is drawn.
fn views(url: &str, compensated: Uuid) -> [(&'static str, String, &'static str); 7] {
    [
        ("chain", format!("{url}/#/"), "#svc-inventory .lag"),
        ("orders", format!("{url}/#/orders"), "#orders tbody tr"),
        (
            "saga",
            format!("{url}/#/orders/{compensated}"),
            ".event[data-topic='order.cancelled']",
        ),
        ("topics", format!("{url}/#/topics"), "#topics tbody tr"),
        (
            "topic",
            format!("{url}/#/topics/order.created"),
            "#records .record",
        ),
        (
            "group",
            format!("{url}/#/groups/inventory-service"),
            "#group-partitions tbody tr",
        ),
        (
            "dlq",
            format!("{url}/#/dlq"),
            "[data-dlq='order.created.dlq'] table",
        ),
    ]
}

/// Photographs `page` once `ready` is drawn ([`lab::browser::photograph`]) into
/// `out/dashboard-<name>.png`.
async fn photograph(
    browser: &Browser,
    name: &str,
    page: &str,
    ready: &str,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let png = lab::browser::photograph(browser, page, ready, None).await?;
    let path = out.join(format!("dashboard-{name}.png"));
    std::fs::write(&path, png)?;
    eprintln!("  wrote {}", path.display());
    Ok(())
}
