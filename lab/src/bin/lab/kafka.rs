//! The commands that speak Kafka to the broker directly: `lab tail` and `lab poison`.

use std::time::Duration;

use clap::Args;
use lab::poison::PoisonKind;

use crate::control::BrokerArg;

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Start at the beginning of each topic instead of its end.
    #[arg(long, env = "LAB_TAIL_FROM_BEGINNING")]
    from_beginning: bool,
    /// Stop after this many records (default: run until Ctrl-C).
    #[arg(long, env = "LAB_TAIL_COUNT")]
    count: Option<usize>,
    /// Only these topics (repeatable); default every saga topic and its DLQ.
    #[arg(long = "topic", env = "LAB_TAIL_TOPICS", value_delimiter = ',')]
    topics: Vec<String>,
    #[command(flatten)]
    broker: BrokerArg,
}

#[derive(Debug, Args)]
pub(crate) struct PoisonArgs {
    /// Where to publish it.
    #[arg(long, env = "LAB_POISON_TOPIC", default_value = "order.created")]
    topic: String,
    /// What kind of poison.
    #[arg(long, env = "LAB_POISON_KIND", value_enum, default_value_t = PoisonKind::Garbage)]
    kind: PoisonKind,
    #[command(flatten)]
    broker: BrokerArg,
}

pub(crate) async fn tail(args: TailArgs) -> anyhow::Result<()> {
    use rdkafka::Offset;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use saga_shared::events::topics;

    let wanted: Vec<String> = if args.topics.is_empty() {
        topics::with_dlqs()
    } else {
        args.topics.clone()
    };
    let consumer: StreamConsumer = saga_shared::kafka::client_config(&args.broker.brokers)
        .set("group.id", "lab-tail")
        .set("enable.auto.commit", "false")
        .create()?;
    let start = if args.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let tpl = partitions_of(&args.broker.brokers, &wanted, start).await?;
    consumer.assign(&tpl)?;
    let until = match args.count {
        Some(n) => format!("until {n} record(s) are printed"),
        None => "Ctrl-C to stop".to_owned(),
    };
    eprintln!(
        "tailing {} partition(s) of {} topic(s) on {} ({until})",
        tpl.count(),
        wanted.len(),
        args.broker.brokers
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
        print_record(&m);
    }
}

/// Every partition of the `wanted` topics that exist on `brokers`, each from `start`.
async fn partitions_of(
    brokers: &str,
    wanted: &[String],
    start: rdkafka::Offset,
) -> anyhow::Result<rdkafka::TopicPartitionList> {
    let metadata = {
        let c: rdkafka::consumer::BaseConsumer =
            saga_shared::kafka::client_config(brokers).create()?;
        tokio::task::spawn_blocking(move || {
            rdkafka::consumer::Consumer::fetch_metadata(&c, None, Duration::from_secs(10))
        })
        .await??
    };
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in metadata
        .topics()
        .iter()
        .filter(|t| wanted.iter().any(|w| w == t.name()))
    {
        for p in t.partitions() {
            tpl.add_partition_offset(t.name(), p.id(), start)?;
        }
    }
    anyhow::ensure!(tpl.count() > 0, "none of the topics exist on {brokers}");
    Ok(tpl)
}

/// One record as `lab tail` shows it: when, where, key, CloudEvents source, id and cause, the
/// schema id of a framed value, then the first 160 characters of its value (its JSON).
fn print_record(m: &impl rdkafka::Message) {
    use rdkafka::message::Headers;
    let header = |name: &str| {
        m.headers()
            .and_then(|h| h.iter().find(|x| x.key == name))
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| "-".into())
    };
    let raw = m.payload().unwrap_or_default();
    // A value in Confluent's wire format: its schema id, then the JSON.
    let schema = saga_shared::schemas::unframe(raw)
        .map(|(id, _)| format!(" schema={id}"))
        .unwrap_or_default();
    let value = String::from_utf8_lossy(saga_shared::schemas::payload(raw));
    let value: String = value.chars().take(160).collect();
    println!(
        "{} {}[{}]@{} key={} source={} ce_id={} cause={}{schema}\n    {}",
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

pub(crate) async fn poison(args: PoisonArgs) -> anyhow::Result<()> {
    let producer = saga_shared::kafka::producer(&args.broker.brokers)?;
    let (partition, offset) = lab::poison::publish(&producer, &args.topic, args.kind).await?;
    println!(
        "published a poison record ({}) to {}[{partition}]@{offset}",
        args.kind.name(),
        args.topic
    );
    Ok(())
}
