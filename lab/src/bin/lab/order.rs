//! `lab order`: place an order and follow its saga live.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use lab::LabClient;
use notification_service::api::NotificationKind;
use order_service::domain::{LineRequest, OrderRequest, OrderStatus};
use uuid::Uuid;

#[derive(Debug, Args)]
pub(crate) struct OrderArgs {
    /// Who orders.
    #[arg(long, env = "LAB_ORDER_CUSTOMER", default_value = "alice")]
    customer: String,
    /// SKU:QUANTITY, or SKU:QUANTITY:UNIT_PRICE (the order service refuses a price that is not
    /// its catalogue's), repeatable (comma separated in the environment variable).
    #[arg(
        long = "item",
        env = "LAB_ORDER_ITEMS",
        value_delimiter = ',',
        default_value = "LATTE:2"
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
        let (sku, q, p) = match parts[..] {
            [sku, q] => (sku, q, None),
            [sku, q, p] => (sku, q, Some(p.parse()?)),
            _ => bail!("--item must be SKU:QUANTITY or SKU:QUANTITY:UNIT_PRICE, got {item}"),
        };
        items.push(LineRequest {
            sku: sku.to_owned(),
            quantity: q.parse()?,
            unit_price: p,
        });
    }
    let client = LabClient::with_urls(&args.order_url, "", "", &args.notification_url);
    let started = Instant::now();
    let order = client
        .post_order(&OrderRequest {
            customer_id: args.customer.clone(),
            items,
            currency: None,
        })
        .await?;
    let id = order.id;
    if args.print_id {
        println!("{id}");
        return Ok(());
    }
    println!(
        "order {id} placed: {} {} {}",
        order.total,
        order.currency,
        order.status.as_str()
    );
    follow(&client, id, started).await
}

/// Prints each step of order `id`'s saga as it appears, then its notification, until its
/// timeline is complete.
async fn follow(client: &LabClient, id: Uuid, started: Instant) -> anyhow::Result<()> {
    let mut shown = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = client.order(id).await?;
        for step in &o.timeline {
            if !shown.insert(step.event_id) {
                continue;
            }
            println!(
                "  +{:>5} ms  {:<18} -> {:<12} {}",
                started.elapsed().as_millis(),
                step.event,
                step.status.as_str(),
                step.detail.as_deref().unwrap_or(""),
            );
        }
        let status = o.status.as_str();
        if o.timeline_complete() {
            let kind = if o.status == OrderStatus::Confirmed {
                NotificationKind::Confirmed
            } else {
                NotificationKind::Cancelled
            };
            let notes = client
                .wait_notification(id, kind, Duration::from_secs(10))
                .await?;
            for n in notes {
                println!("  notification [{}] {}", n.kind.as_str(), n.message);
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
