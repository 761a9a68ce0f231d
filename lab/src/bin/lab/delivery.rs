//! `lab delivery`: the three delivery semantics side by side, each shown with a consumer that is
//! killed (SIGKILL) in the middle of a record.
//!
//! Records 1 to N go to a new one-partition topic. A first consumer process handles them and is
//! killed at record `--kill-at`; a second one, in the same consumer group, takes over from the
//! group's committed offset. What each did is then read back:
//! - at-most-once commits a record's offset *before* processing it: killed in between, the
//!   record is never processed (lost);
//! - at-least-once processes first and commits after: killed in between, the record is
//!   processed again (duplicated);
//! - exactly-once (Kafka's consume-process-produce) writes the result to an output topic and
//!   the offset in one transaction: killed before the commit, the transaction is aborted (the
//!   successor's `init_transactions` fences it) and a `read_committed` reader sees each result
//!   once, while the aborted one stays in the log for `read_uncommitted` readers.
//!
//! The consumers assign themselves the partition and commit in the group without joining it
//! (Kafka's "simple consumer"), so the second starts at once instead of waiting for the first
//! one's session to expire.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::control::BrokerArg;

const WAIT: Duration = Duration::from_secs(10);
/// What a consumer prints when it reaches the point where it is killed.
const KILL_ME: &str = "kill me now";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Semantics {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
    /// Not a consumer's semantics: the producer side, what `enable.idempotence` prevents.
    IdempotentProducer,
}

impl Semantics {
    fn name(self) -> &'static str {
        match self {
            Semantics::AtMostOnce => "at-most-once",
            Semantics::AtLeastOnce => "at-least-once",
            Semantics::ExactlyOnce => "exactly-once",
            Semantics::IdempotentProducer => "idempotent-producer",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct DeliveryArgs {
    /// at-most-once (commit, then process), at-least-once (process, then commit),
    /// exactly-once (result and offset in one Kafka transaction), or idempotent-producer (a
    /// producer's retried batch, with and without `enable.idempotence`).
    semantics: Semantics,
    /// How many records.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(2..=1000))]
    records: u32,
    /// The record whose handling the first consumer is killed in.
    #[arg(long, default_value_t = 4)]
    kill_at: u32,
    #[command(flatten)]
    broker: BrokerArg,
    /// Run as one of the two consumers: TOPIC GROUP EFFECTS-FILE (used by the command itself).
    #[arg(long, hide = true, num_args = 3)]
    consumer: Option<Vec<String>>,
    /// The consumer's name in what it prints.
    #[arg(long, hide = true, default_value = "consumer")]
    name: String,
    /// Whether this consumer is the one killed.
    #[arg(long, hide = true)]
    killed: bool,
}

pub(crate) async fn delivery(args: DeliveryArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || match &args.consumer {
        Some(parts) => consume(&args, &parts[0], &parts[1], &parts[2]),
        None => demo(&args),
    })
    .await?
}

/// The whole demonstration: the topic, the records, the two consumers, what they did.
fn demo(args: &DeliveryArgs) -> anyhow::Result<()> {
    if args.kill_at == 0 || args.kill_at > args.records {
        bail!(
            "--kill-at must name one of the records, 1 to {}",
            args.records
        );
    }
    let brokers = &args.broker.brokers;
    let run = format!(
        "{}.{}",
        args.semantics.name(),
        chrono::Utc::now().timestamp_millis() % 1_000_000
    );
    let topic = format!("delivery.{run}");
    if args.semantics == Semantics::IdempotentProducer {
        create_topics(brokers, &[&topic])?;
        return crate::retry::demo(brokers, &topic, |t| {
            read_all(brokers, t, "read_uncommitted")
        });
    }
    let effects = std::env::temp_dir().join(format!("lab-delivery-{run}"));
    create_topics(brokers, &[&topic, &format!("{topic}.out")])?;
    let producer: BaseProducer = saga_shared::kafka::client_config(brokers)
        .set("enable.idempotence", "true")
        .create()?;
    for i in 1..=args.records {
        let (key, value) = (format!("r{i}"), i.to_string());
        producer
            .send(BaseRecord::to(&topic).key(&key).payload(&value))
            .map_err(|(e, _)| e)?;
    }
    producer.flush(WAIT)?;
    println!("records 1 to {} are in {topic}", args.records);
    let group = format!("delivery-{run}");
    run_consumer(args, (&topic, &group, &effects), "consumer 1", true)?;
    println!("consumer 1 was killed (SIGKILL)");
    run_consumer(args, (&topic, &group, &effects), "consumer 2", false)?;
    report(args, brokers, &topic, &effects)
}

/// Creates topic `name` with `partitions` partitions and the broker's default replication.
pub(crate) async fn create_topic(brokers: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{NewTopic, TopicReplication};
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
    lab::kafka::create_topic(brokers, &topic)
        .await?
        .map_err(|(topic, code)| anyhow::anyhow!("could not create {topic}: {code}"))
}

/// [`create_topic`] with one partition, each of `names`, from the blocking pool.
fn create_topics(brokers: &str, names: &[&str]) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Handle::current();
    for name in names {
        runtime.block_on(create_topic(brokers, name, 1))?;
    }
    Ok(())
}

/// Runs one consumer as a child process (this binary again), relaying what it prints; the one
/// to be killed is killed with SIGKILL when it says it reached that point.
fn run_consumer(
    args: &DeliveryArgs,
    (topic, group, effects): (&str, &str, &PathBuf),
    name: &str,
    killed: bool,
) -> anyhow::Result<()> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("delivery")
        .arg(args.semantics.name())
        .args(["--records", &args.records.to_string()])
        .args(["--kill-at", &args.kill_at.to_string()])
        .args(["--brokers", &args.broker.brokers])
        .args(["--name", name])
        .arg("--consumer")
        .args([topic, group, &effects.display().to_string()])
        .stdout(Stdio::piped());
    if killed {
        command.arg("--killed");
    }
    let mut child = command.spawn().context("starting a consumer")?;
    let stdout = child.stdout.take().context("the consumer's output")?;
    let mut out = std::io::stdout();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line == KILL_ME {
            child.kill()?;
            break;
        }
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    let status = child.wait()?;
    if !killed && !status.success() {
        bail!("{name} failed ({status})");
    }
    if killed && status.success() {
        bail!("{name} ended before it reached record {}", args.kill_at);
    }
    Ok(())
}

/// One consumer: from the group's committed offset until the last record, each record handled
/// as `semantics` says; the killed one stops at `kill_at` and waits to be killed.
fn consume(args: &DeliveryArgs, topic: &str, group: &str, effects: &str) -> anyhow::Result<()> {
    let brokers = &args.broker.brokers;
    // Declared first, so dropped last: a partition list librdkafka filled in (`committed`) holds
    // references to its partitions, and destroying the consumer before them waits forever.
    let consumer: BaseConsumer = saga_shared::kafka::client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    let transactional = (args.semantics == Semantics::ExactlyOnce).then(|| {
        let p: BaseProducer = saga_shared::kafka::client_config(brokers)
            .set("transactional.id", format!("{group}-processor"))
            .create()?;
        // Fences the killed consumer's producer and aborts its open transaction, before the
        // committed offset is read: until then the transaction's offset is not stable.
        p.init_transactions(WAIT)?;
        anyhow::Ok(p)
    });
    let producer = transactional.transpose()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Stored)?;
    consumer.assign(&assignment)?;
    let committed = consumer.committed(WAIT)?;
    let start = match committed.find_partition(topic, 0).map(|p| p.offset()) {
        Some(Offset::Offset(n)) => format!("offset {n}, the group's committed offset"),
        _ => "the first record: the group has committed nothing".to_owned(),
    };
    say(&args.name, &format!("starts at {start}"));
    let mut worker = Worker {
        args,
        topic,
        consumer: &consumer,
        producer,
        effects: std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(effects)?,
    };
    loop {
        let (record, offset) = worker.next_record()?;
        worker.handle(record, offset)?;
        if record == args.records {
            return Ok(());
        }
    }
}

/// One consumer's parts.
struct Worker<'a> {
    args: &'a DeliveryArgs,
    topic: &'a str,
    consumer: &'a BaseConsumer,
    /// Exactly-once's transactional producer.
    producer: Option<BaseProducer>,
    /// Where the records processed are written (at-most-once and at-least-once).
    effects: std::fs::File,
}

impl Worker<'_> {
    /// The next record's number and offset.
    fn next_record(&self) -> anyhow::Result<(u32, i64)> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if std::time::Instant::now() > deadline {
                bail!("no record arrived within {WAIT:?}");
            }
            let Some(message) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message?;
            let record = message
                .payload_view::<str>()
                .and_then(Result::ok)
                .and_then(|v| v.parse().ok())
                .context("a record that is not a number")?;
            return Ok((record, message.offset()));
        }
    }

    /// Handles one record as the semantics says; killed at `kill_at` if this is the one killed.
    fn handle(&mut self, record: u32, offset: i64) -> anyhow::Result<()> {
        let name = &self.args.name;
        let mut next = TopicPartitionList::new();
        next.add_partition_offset(self.topic, 0, Offset::Offset(offset + 1))?;
        let dies = self.args.killed && record == self.args.kill_at;
        match (self.args.semantics, &self.producer) {
            (Semantics::AtMostOnce, _) => {
                self.consumer.commit(&next, CommitMode::Sync)?;
                if dies {
                    die(
                        name,
                        &format!("committed {record}, killed before processing it"),
                    );
                }
                writeln!(self.effects, "{record}")?;
                say(name, &format!("committed {record}, then processed it"));
            }
            (Semantics::AtLeastOnce, _) => {
                writeln!(self.effects, "{record}")?;
                if dies {
                    die(
                        name,
                        &format!("processed {record}, killed before committing it"),
                    );
                }
                self.consumer.commit(&next, CommitMode::Sync)?;
                say(name, &format!("processed {record}, then committed it"));
            }
            (Semantics::ExactlyOnce, Some(p)) => {
                p.begin_transaction()?;
                let out = format!("{}.out", self.topic);
                let result = record.to_string();
                p.send(BaseRecord::to(&out).key("result").payload(&result))
                    .map_err(|(e, _)| e)?;
                lab::kafka::drain(p, WAIT)?;
                let group = self
                    .consumer
                    .group_metadata()
                    .context("the group's metadata")?;
                p.send_offsets_to_transaction(&next, &group, WAIT)?;
                let wrote = format!("wrote {record}'s result and offset in a transaction");
                if dies {
                    die(name, &format!("{wrote}, killed before committing it"));
                }
                p.commit_transaction(WAIT)?;
                say(name, &format!("{wrote}, committed it"));
            }
            (Semantics::ExactlyOnce | Semantics::IdempotentProducer, _) => {
                bail!("{} has no consumer", self.args.semantics.name())
            }
        }
        Ok(())
    }
}

fn say(name: &str, what: &str) {
    println!("{name}: {what}");
}

/// Says what was done, then asks to be killed and waits for it.
fn die(name: &str, what: &str) -> ! {
    say(name, what);
    println!("{KILL_ME}");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

/// What the consumers did, read back: the processed records, or the results a
/// `read_committed` and a `read_uncommitted` reader see.
fn report(
    args: &DeliveryArgs,
    brokers: &str,
    topic: &str,
    effects: &PathBuf,
) -> anyhow::Result<()> {
    let kill_at = args.kill_at.to_string();
    let (seen, subject, verb) = if args.semantics == Semantics::ExactlyOnce {
        let out = format!("{topic}.out");
        let uncommitted = read_all(brokers, &out, "read_uncommitted")?;
        println!("{out} read_uncommitted: {}", uncommitted.join(" "));
        let committed = read_all(brokers, &out, "read_committed")?;
        println!("{out} read_committed:   {}", committed.join(" "));
        (committed, format!("record {kill_at}'s result"), "written")
    } else {
        let text = std::fs::read_to_string(effects)?;
        let _ = std::fs::remove_file(effects);
        let processed: Vec<String> = text.lines().map(str::to_owned).collect();
        println!("processed: {}", processed.join(" "));
        (processed, format!("record {kill_at}"), "processed")
    };
    let verdict = match seen.iter().filter(|r| **r == kill_at).count() {
        0 => format!("{subject} was never {verb}: lost"),
        1 => format!("{subject} was {verb} once: nothing lost, nothing twice"),
        n => format!("{subject} was {verb} {}: duplicated", times(n)),
    };
    println!("{}: {verdict}", args.semantics.name());
    Ok(())
}

/// "once", "twice", "3 times".
pub(crate) fn times(n: usize) -> String {
    match n {
        1 => "once".to_owned(),
        2 => "twice".to_owned(),
        n => format!("{n} times"),
    }
}

/// The value of every record of one-partition `topic`, as a reader at `isolation` sees them.
fn read_all(brokers: &str, topic: &str, isolation: &str) -> anyhow::Result<Vec<String>> {
    // The end of the partition is how the reader knows it is done, not an error to log.
    let consumer: BaseConsumer<lab::EndIsNotAnError> = saga_shared::kafka::client_config(brokers)
        .set("group.id", "lab-delivery-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create_with_context(lab::EndIsNotAnError)?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + WAIT;
    let mut records = Vec::new();
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => records.push(
                m.payload_view::<str>()
                    .and_then(Result::ok)
                    .unwrap_or("(not text)")
                    .to_owned(),
            ),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(records),
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    bail!("{topic} was not read to its end within {WAIT:?}")
}
