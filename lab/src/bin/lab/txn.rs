//! `lab txn`: Kafka transactions from the command line, to see what `read_committed` readers see:
//! a committed and an aborted transaction, a producer that dies with its transaction open, and
//! a zombie producer fenced by its successor.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::control::BrokerArg;

/// How long the broker lets a transaction stay open before it aborts it (short, to watch).
const TRANSACTION_TIMEOUT_MS: &str = "5000";
const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub(crate) struct TxnArgs {
    #[command(subcommand)]
    what: TxnDemo,
    #[command(flatten)]
    broker: BrokerArg,
}

#[derive(Debug, Subcommand)]
enum TxnDemo {
    /// Write VALUE to TOPIC in a transaction and commit it.
    Commit { topic: String, value: String },
    /// Write VALUE to TOPIC in a transaction and abort it.
    Abort { topic: String, value: String },
    /// Write VALUE to TOPIC in a transaction, then exit without ending it, as a crashed producer
    /// would: the broker aborts it after its timeout (5 s).
    Crash { topic: String, value: String },
    /// Two producers with one transactional.id: the second fences the first (a zombie), whose
    /// commit is refused; the second's commits.
    Fence { topic: String },
}

fn producer(brokers: &str, transactional_id: &str) -> anyhow::Result<BaseProducer> {
    let p: BaseProducer = saga_shared::kafka::client_config(brokers)
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
        .create()?;
    p.init_transactions(WAIT)
        .context("initialising the transactional producer")?;
    Ok(p)
}

/// Sends `value` in the open transaction and waits until it is written. Every demo record has
/// the same key, so they share one partition, whose order shows what a reader sees.
fn send(p: &BaseProducer, topic: &str, value: &str) -> anyhow::Result<()> {
    p.send(BaseRecord::to(topic).key("demo").payload(value))
        .map_err(|(e, _)| e)?;
    lab::kafka::drain(p, WAIT)?;
    Ok(())
}

fn fenced(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    )
}

pub(crate) async fn txn(args: TxnArgs) -> anyhow::Result<()> {
    let brokers = args.broker.brokers.clone();
    tokio::task::spawn_blocking(move || run(&brokers, args.what)).await?
}

fn run(brokers: &str, what: TxnDemo) -> anyhow::Result<()> {
    match what {
        TxnDemo::Commit { topic, value } => {
            let p = producer(brokers, "lab-txn-demo")?;
            p.begin_transaction()?;
            send(&p, &topic, &value)?;
            p.commit_transaction(WAIT)?;
            println!("committed {value:?} to {topic}");
        }
        TxnDemo::Abort { topic, value } => {
            let p = producer(brokers, "lab-txn-demo")?;
            p.begin_transaction()?;
            send(&p, &topic, &value)?;
            p.abort_transaction(WAIT)?;
            println!("aborted {value:?} in {topic}");
        }
        TxnDemo::Crash { topic, value } => {
            let p = producer(brokers, "lab-txn-crash")?;
            p.begin_transaction()?;
            send(&p, &topic, &value)?;
            println!("left {value:?} in an open transaction on {topic}, and died");
            // No commit, no abort, no goodbye: the process just ends.
            std::process::exit(0);
        }
        TxnDemo::Fence { topic } => {
            let zombie = producer(brokers, "lab-txn-fence")?;
            zombie.begin_transaction()?;
            send(&zombie, &topic, "from the old instance")?;
            println!("producer 1 (transactional.id lab-txn-fence) began a transaction");
            let successor = producer(brokers, "lab-txn-fence")?;
            println!("producer 2 with the same transactional.id started: producer 1 is fenced");
            match zombie.commit_transaction(WAIT) {
                Err(e) if fenced(&e) => {
                    println!("producer 1 commits: refused, it was fenced");
                }
                Err(e) => anyhow::bail!("producer 1's commit failed otherwise: {e}"),
                Ok(()) => anyhow::bail!("producer 1's commit went through: not fenced"),
            }
            successor.begin_transaction()?;
            send(&successor, &topic, "from the new instance")?;
            successor.commit_transaction(WAIT)?;
            println!("producer 2 committed \"from the new instance\" to {topic}");
        }
    }
    Ok(())
}
