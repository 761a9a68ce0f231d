//! `lab order`: place an order and follow its saga live.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use lab::LabClient;
use serde_json::json;

#[derive(Debug, Args)]
pub(crate) struct OrderArgs {
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
    /// Print only the new order's id and return (for `ORDER_ID=$(lab order --print-id)`);
    /// follow it with `lab wait order $ORDER_ID CONFIRMED`.
    #[arg(long)]
    print_id: bool,
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

pub(crate) async fn order(args: OrderArgs) -> anyhow::Result<()> {
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
    if args.print_id {
        println!("{id}");
        return Ok(());
    }
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
