//! `lab wait`: wait, with a deadline, until the running lab shows something, then say so in one
//! line (the tutorial's blocks use it instead of polling loops). Exits with an error naming what
//! it saw last when the deadline passes.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::control::{BrokerArg, LabApi};

#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    #[command(subcommand)]
    what: WaitFor,
    /// Give up after this many seconds.
    #[arg(long, global = true, env = "LAB_WAIT_TIMEOUT", default_value_t = 30)]
    timeout: u64,
}

#[derive(Debug, Subcommand)]
enum WaitFor {
    /// Until an order has a status, e.g. `lab wait order <id> CONFIRMED`.
    Order {
        id: String,
        /// PENDING, PAID, COMPENSATING, CONFIRMED or CANCELLED.
        status: String,
        /// The order service.
        #[arg(long, env = "LAB_ORDER_URL", default_value = "http://127.0.0.1:8081")]
        order_url: String,
    },
    /// Until an order has a notification of this kind (received, confirmed, cancelled), e.g.
    /// `lab wait notification <id> received`.
    Notification {
        id: String,
        kind: String,
        #[arg(
            long,
            env = "LAB_NOTIFICATION_URL",
            default_value = "http://127.0.0.1:8084"
        )]
        notification_url: String,
    },
    /// Until a consumer group is Stable with this many members, e.g.
    /// `lab wait group payment-service --members 3`.
    Group {
        group: String,
        #[arg(long)]
        members: usize,
        #[command(flatten)]
        broker: BrokerArg,
    },
    /// Until a dead-letter topic holds this many records, e.g. `lab wait dlq order.created 1`.
    Dlq {
        /// The original topic.
        topic: String,
        records: usize,
        #[command(flatten)]
        lab: LabApi,
    },
}

pub(crate) async fn wait(args: WaitArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let (done, seen) = check(&args.what).await;
        if done {
            println!("{seen}");
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("still not there after {} s: {seen}", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the condition holds, and what was seen, in the line printed at the end.
async fn check(what: &WaitFor) -> (bool, String) {
    match what {
        WaitFor::Order {
            id,
            status,
            order_url,
        } => {
            let url = format!("{order_url}/orders/{id}");
            let order: Option<Value> =
                async { reqwest::get(&url).await.ok()?.json().await.ok() }.await;
            let now = order
                .as_ref()
                .and_then(|o| o["status"].as_str())
                .unwrap_or("not found")
                .to_owned();
            (now == *status, format!("order {id} is {now}"))
        }
        WaitFor::Notification {
            id,
            kind,
            notification_url,
        } => {
            let url = format!("{notification_url}/notifications?order_id={id}");
            let list: Option<Value> =
                async { reqwest::get(&url).await.ok()?.json().await.ok() }.await;
            let found = list
                .as_ref()
                .and_then(Value::as_array)
                .and_then(|l| l.iter().find(|n| n["kind"] == kind.as_str()).cloned());
            match found {
                Some(n) => (
                    true,
                    format!(
                        "notification [{kind}] {}",
                        n["message"].as_str().unwrap_or_default()
                    ),
                ),
                None => (false, format!("no {kind} notification for order {id}")),
            }
        }
        WaitFor::Group {
            group,
            members,
            broker,
        } => match lab::groups::describe(&broker.brokers, Some(group)).await {
            Ok(groups) => match groups.into_iter().find(|g| g.name == *group) {
                Some(g) => (
                    g.state == "Stable" && g.members.len() == *members,
                    format!("{group}: {}, {} member(s)", g.state, g.members.len()),
                ),
                None => (false, format!("{group}: no such group")),
            },
            Err(e) => (false, format!("{group}: {e}")),
        },
        WaitFor::Dlq {
            topic,
            records,
            lab,
        } => match lab.get(&format!("/api/dlq/{topic}")).await {
            Ok(v) => {
                let n = v["records"].as_array().map_or(0, Vec::len);
                let dlq = v["topic"].as_str().unwrap_or(topic).to_owned();
                (n == *records, format!("{dlq}: {n} record(s)"))
            }
            Err(e) => (false, e.to_string()),
        },
    }
}
