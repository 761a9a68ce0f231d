//! `lab wait`: wait, with a deadline, until the running lab shows something, then say so in one
//! line (the tutorial's blocks use it instead of polling loops). Exits with an error naming what
//! it saw last when the deadline passes.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand};
use notification_service::api::NotificationKind;
use order_service::domain::OrderStatus;
use uuid::Uuid;

use lab::dashboard::api::{DlqRecords, Nodes, OutboxBacklog, TopicDetail};
use lab::dashboard::explorer::GroupView;

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
        id: Uuid,
        /// PENDING, PAID, COMPENSATING, CONFIRMED or CANCELLED.
        #[arg(value_parser = order_status)]
        status: OrderStatus,
        /// The order service.
        #[arg(long, env = "LAB_ORDER_URL", default_value = "http://127.0.0.1:8081")]
        order_url: String,
    },
    /// Until an order has a notification of this kind (received, confirmed, cancelled), e.g.
    /// `lab wait notification <id> received`.
    Notification {
        id: Uuid,
        #[arg(value_parser = notification_kind)]
        kind: NotificationKind,
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
    /// Until a consumer reading committed data only (`isolation.level=read_committed`) reads
    /// this many records from the start of a topic, e.g. `lab wait committed txn-demo 2`.
    Committed {
        topic: String,
        records: usize,
        #[command(flatten)]
        broker: BrokerArg,
    },
    /// Until a group is Stable and its members together own this many partitions of a topic,
    /// e.g. `lab wait assigned inventory-service payment.completed 8`.
    Assigned {
        group: String,
        topic: String,
        partitions: usize,
        #[command(flatten)]
        broker: BrokerArg,
    },
    /// Until a node of the lab's cluster (`lab --nodes 3`) is fenced (it leads nothing and is in
    /// no ISR) or in sync (live and in the ISR of every partition it replicates), e.g.
    /// `lab wait node 1 fenced`.
    Node {
        id: i32,
        #[arg(value_enum)]
        state: NodeWanted,
        #[command(flatten)]
        lab: LabApi,
    },
    /// Until a consumer group has members and has read everything: its committed offsets at
    /// the end of every partition it reads (lag 0), e.g. `lab wait caught-up payment-service`.
    CaughtUp {
        group: String,
        #[command(flatten)]
        lab: LabApi,
    },
    /// Until a partition's earliest offset (its log start) is at least this one: retention or
    /// DeleteRecords removed the records before it, e.g. `lab wait earliest short-lived 3`.
    Earliest {
        topic: String,
        offset: i64,
        #[arg(long, default_value_t = 0)]
        partition: i32,
        #[command(flatten)]
        lab: LabApi,
    },
    /// Until a service's outbox holds this many events it committed and has not published
    /// yet, e.g. `lab wait outbox order 0` (all published).
    Outbox {
        #[arg(value_enum)]
        service: lab::Service,
        pending: i64,
        #[command(flatten)]
        lab: LabApi,
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

/// What `lab wait node` waits for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum NodeWanted {
    /// Fenced: it leads no partition and is in no ISR.
    Fenced,
    /// Live, and in the ISR of every partition it replicates.
    InSync,
}

fn order_status(s: &str) -> Result<OrderStatus, String> {
    OrderStatus::parse(s).ok_or_else(|| {
        format!("{s:?} is not a status: PENDING, PAID, COMPENSATING, CONFIRMED or CANCELLED")
    })
}

fn notification_kind(s: &str) -> Result<NotificationKind, String> {
    NotificationKind::try_from(s.to_owned())
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
        } => order_reached(order_url, *id, *status).await,
        WaitFor::Notification {
            id,
            kind,
            notification_url,
        } => notification(notification_url, *id, *kind).await,
        WaitFor::Group {
            group,
            members,
            broker,
        } => group_members(&broker.brokers, group, *members).await,
        WaitFor::Assigned {
            group,
            topic,
            partitions,
            broker,
        } => group_assigned(&broker.brokers, group, topic, *partitions).await,
        WaitFor::Committed {
            topic,
            records,
            broker,
        } => committed(&broker.brokers, topic, *records).await,
        WaitFor::Dlq {
            topic,
            records,
            lab,
        } => dead_letters(lab, topic, *records).await,
        WaitFor::Node { id, state, lab } => node_is(lab, *id, *state).await,
        WaitFor::CaughtUp { group, lab } => caught_up(lab, group).await,
        WaitFor::Earliest {
            topic,
            offset,
            partition,
            lab,
        } => earliest_at(lab, topic, *partition, *offset).await,
        WaitFor::Outbox {
            service,
            pending,
            lab,
        } => outbox_holds(lab, *service, *pending).await,
    }
}

async fn earliest_at(lab: &LabApi, topic: &str, partition: i32, wanted: i64) -> (bool, String) {
    let detail = match lab
        .get::<TopicDetail>(&format!("/api/topics/{topic}"))
        .await
    {
        Ok(detail) => detail,
        Err(e) => return (false, e.to_string()),
    };
    let Some(p) = detail
        .topic
        .partitions
        .iter()
        .find(|p| p.partition == partition)
    else {
        return (false, format!("{topic} has no partition {partition}"));
    };
    (
        p.start >= wanted,
        format!(
            "{topic}[{partition}]: earliest offset {}, end {}",
            p.start, p.end
        ),
    )
}

async fn outbox_holds(lab: &LabApi, service: lab::Service, wanted: i64) -> (bool, String) {
    let path = format!("/api/services/{}/outbox", service.short_name());
    match lab.get::<OutboxBacklog>(&path).await {
        Ok(backlog) => (
            backlog.pending == wanted,
            format!("{}: outbox {} pending", backlog.service, backlog.pending),
        ),
        Err(e) => (false, e.to_string()),
    }
}

async fn caught_up(lab: &LabApi, group: &str) -> (bool, String) {
    let view = match lab.get::<GroupView>(&format!("/api/groups/{group}")).await {
        Ok(view) => view,
        Err(e) => return (false, e.to_string()),
    };
    let read = view.partitions.iter().filter(|p| p.committed.is_some());
    let done = view.state == "Stable" && view.lag == 0 && read.count() > 0;
    let seen = if done {
        format!("{group}: {}, read everything (lag 0)", view.state)
    } else {
        format!("{group}: {}, lag {}", view.state, view.lag)
    };
    (done, seen)
}

async fn node_is(lab: &LabApi, id: i32, wanted: NodeWanted) -> (bool, String) {
    let nodes = match lab.get::<Nodes>("/api/nodes").await {
        Ok(nodes) => nodes,
        Err(e) => return (false, e.to_string()),
    };
    let Some(node) = nodes.nodes.iter().find(|n| n.id == id) else {
        return (false, format!("no node {id}"));
    };
    let replicated: Vec<_> = nodes
        .partitions
        .iter()
        .filter(|p| p.replicas.contains(&id))
        .collect();
    let in_isr = replicated.iter().filter(|p| p.isr.contains(&id)).count();
    match wanted {
        NodeWanted::Fenced => {
            let done = nodes.settled && !node.live && node.leads == 0 && in_isr == 0;
            let seen = if done {
                format!("node {id} is fenced: it leads nothing and is in no ISR")
            } else {
                format!("node {id} leads {} and is in {in_isr} ISRs", node.leads)
            };
            (done, seen)
        }
        NodeWanted::InSync => {
            let done = nodes.settled && node.live && in_isr == replicated.len();
            let seen = if done {
                format!("node {id} is in sync: in the ISR of every partition it replicates")
            } else {
                format!(
                    "node {id} is in the ISR of {in_isr} of the {} partitions it replicates",
                    replicated.len()
                )
            };
            (done, seen)
        }
    }
}

async fn order_reached(order_url: &str, id: Uuid, status: OrderStatus) -> (bool, String) {
    let client = lab::LabClient::with_urls(order_url.to_owned(), "", "", "");
    match client.order(id).await {
        Ok(order) => (
            order.status == status,
            format!("order {id} is {}", order.status.as_str()),
        ),
        Err(_) => (false, format!("order {id} is not found")),
    }
}

async fn notification(notification_url: &str, id: Uuid, kind: NotificationKind) -> (bool, String) {
    let client = lab::LabClient::with_urls("", "", "", notification_url.to_owned());
    let found = client
        .notifications(id)
        .await
        .ok()
        .and_then(|list| list.into_iter().find(|n| n.kind == kind));
    let kind = kind.as_str();
    match found {
        Some(n) => (true, format!("notification [{kind}] {}", n.message)),
        None => (false, format!("no {kind} notification for order {id}")),
    }
}

async fn group_members(brokers: &str, group: &str, members: usize) -> (bool, String) {
    match lab::groups::describe(brokers, Some(group)).await {
        Ok(groups) => match groups.into_iter().find(|g| g.name == group) {
            Some(g) => (
                g.state == "Stable" && g.members.len() == members,
                format!("{group}: {}, {} member(s)", g.state, g.members.len()),
            ),
            None => (false, format!("{group}: no such group")),
        },
        Err(e) => (false, format!("{group}: {e}")),
    }
}

async fn group_assigned(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: usize,
) -> (bool, String) {
    let groups = match lab::groups::describe(brokers, Some(group)).await {
        Ok(groups) => groups,
        Err(e) => return (false, format!("{group}: {e}")),
    };
    let Some(g) = groups.into_iter().find(|g| g.name == group) else {
        return (false, format!("{group}: no such group"));
    };
    let owned: std::collections::BTreeSet<i32> = g
        .members
        .iter()
        .flat_map(|m| m.assignment.iter())
        .filter(|(t, _)| t == topic)
        .flat_map(|(_, ps)| ps.iter().copied())
        .collect();
    (
        g.state == "Stable" && owned.len() == partitions,
        format!(
            "{group}: {}, {} member(s) own {} partitions of {topic}",
            g.state,
            g.members.len(),
            owned.len()
        ),
    )
}

async fn committed(brokers: &str, topic: &str, records: usize) -> (bool, String) {
    let (brokers, t) = (brokers.to_owned(), topic.to_owned());
    match tokio::task::spawn_blocking(move || committed_records(&brokers, &t)).await {
        Ok(Ok(values)) => (
            values.len() == records,
            format!(
                "{topic}: {} committed record(s): {}",
                values.len(),
                values.join(", ")
            ),
        ),
        Ok(Err(e)) => (false, format!("{topic}: {e}")),
        Err(e) => (false, e.to_string()),
    }
}

async fn dead_letters(lab: &LabApi, topic: &str, records: usize) -> (bool, String) {
    match lab.get::<DlqRecords>(&format!("/api/dlq/{topic}")).await {
        Ok(dlq) => {
            let n = dlq.records.len();
            (n == records, format!("{}: {n} record(s)", dlq.topic))
        }
        Err(e) => (false, e.to_string()),
    }
}

/// The values a `read_committed` consumer reads from the start of `topic` up to where it can read
/// (the last stable offset of each partition).
fn committed_records(brokers: &str, topic: &str) -> anyhow::Result<Vec<String>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};

    let consumer: BaseConsumer<lab::EndIsNotAnError> = saga_shared::kafka::client_config(brokers)
        .set("group.id", "lab-wait")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create_with_context(lab::EndIsNotAnError)?;
    let partitions = lab::kafka::partitions_of(&consumer, topic, Duration::from_secs(5))?;
    anyhow::ensure!(!partitions.is_empty(), "no topic {topic}");
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut at_end = std::collections::BTreeSet::new();
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while at_end.len() < partitions.len() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => values.push(
                m.payload()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default(),
            ),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(values)
}
