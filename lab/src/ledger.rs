//! The ledger: the saga's one consume-transform-produce step done with Kafka transactions, next
//! to the outbox that the services use.
//!
//! It reads every money movement with `isolation.level=read_committed` (`payment.completed`, a
//! debit; `payment.refunded`, a credit), writes one entry per movement to `ledger.entries`, and
//! commits its consumer offsets *inside* the same transaction. So an entry exists exactly when its
//! input is marked as read, without any database: a crash between the two is impossible, and a
//! transaction that did not commit is invisible to `read_committed` readers and re-done from the
//! committed offsets. Its consumer group is `ledger`, its `transactional.id` `lab-ledger`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, TopicPartitionList};
use saga_shared::events::{SagaEvent, Topic};
use serde::{Deserialize, Serialize};

/// Where the entries go.
pub const TOPIC: &str = "ledger.entries";
/// The consumer group, and the transactional id of its producer.
pub const GROUP: &str = "ledger";
pub const TRANSACTIONAL_ID: &str = "lab-ledger";

/// Records handled in one transaction, at most.
const MAX_BATCH: usize = 200;
const WAIT: Duration = Duration::from_secs(10);

/// One money movement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub order_id: String,
    pub payment_id: String,
    pub customer_id: String,
    /// `debit` (charged) or `credit` (refunded).
    pub kind: String,
    pub amount: i64,
}

impl Entry {
    /// The entry for a record of `topic`, if it is a money movement that decodes.
    fn of(topic: &str, payload: &[u8]) -> Option<Entry> {
        let event = SagaEvent::decode(Topic::parse(topic)?, payload).ok()?;
        Some(match event {
            SagaEvent::PaymentCompleted(e) => Entry {
                order_id: e.order_id.to_string(),
                payment_id: e.payment_id.to_string(),
                customer_id: e.customer_id.to_string(),
                kind: "debit".into(),
                amount: e.amount.get(),
            },
            SagaEvent::PaymentRefunded(e) => Entry {
                order_id: e.order_id.to_string(),
                payment_id: e.payment_id.to_string(),
                customer_id: e.customer_id.to_string(),
                kind: "credit".into(),
                amount: e.amount.get(),
            },
            _ => return None,
        })
    }
}

/// The running ledger: a thread of its own (rdkafka's transactional calls block).
pub struct Ledger {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ledger {
    /// Creates `ledger.entries` (one partition) if needed, and starts.
    pub async fn start(brokers: &str) -> anyhow::Result<Ledger> {
        let admin: AdminClient<DefaultClientContext> =
            saga_shared::kafka::client_config(brokers).create()?;
        let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1));
        // Exists already: fine.
        let _ = admin
            .create_topics([&topic], &AdminOptions::new().operation_timeout(Some(WAIT)))
            .await;
        let stop = Arc::new(AtomicBool::new(false));
        let (brokers, flag) = (brokers.to_owned(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("ledger".into())
            .spawn(move || {
                // A failed round (the broker away, a fenced producer) starts again from the
                // committed offsets with new clients.
                while !flag.load(Ordering::Relaxed) {
                    if let Err(e) = run(&brokers, &flag) {
                        tracing::warn!(error = %e, "ledger: starting again from the committed offsets");
                        let until = Instant::now() + Duration::from_secs(1);
                        while Instant::now() < until && !flag.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })?;
        Ok(Ledger {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops after the transaction in progress, and waits for it.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn run(brokers: &str, stop: &AtomicBool) -> anyhow::Result<()> {
    let consumer: BaseConsumer = saga_shared::kafka::client_config(brokers)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&[
        Topic::PaymentCompleted.name(),
        Topic::PaymentRefunded.name(),
    ])?;
    let producer: BaseProducer = saga_shared::kafka::client_config(brokers)
        .set("transactional.id", TRANSACTIONAL_ID)
        .set("transaction.timeout.ms", "10000")
        .create()?;
    producer.init_transactions(WAIT)?;
    while !stop.load(Ordering::Relaxed) {
        let Some(first) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let mut batch = vec![first?];
        while batch.len() < MAX_BATCH {
            match consumer.poll(Duration::ZERO) {
                Some(m) => batch.push(m?),
                None => break,
            }
        }
        producer.begin_transaction()?;
        for msg in &batch {
            // A record that is not a money movement (never, unless forged) moves the offsets on
            // and writes nothing; the services dead-letter it.
            let Some(entry) = msg.payload().and_then(|p| Entry::of(msg.topic(), p)) else {
                continue;
            };
            let value = serde_json::to_vec(&entry)?;
            producer
                .send(
                    BaseRecord::to(TOPIC)
                        .key(entry.customer_id.as_str())
                        .payload(&value),
                )
                .map_err(|(e, _)| e)?;
        }
        // The input's next offsets, in the same transaction as the output.
        let mut next: std::collections::BTreeMap<(&str, i32), i64> = Default::default();
        for msg in &batch {
            let at = next.entry((msg.topic(), msg.partition())).or_default();
            *at = (*at).max(msg.offset() + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            offsets.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))?;
        }
        let group = consumer
            .group_metadata()
            .ok_or_else(|| anyhow::anyhow!("no group metadata yet"))?;
        producer.send_offsets_to_transaction(&offsets, &group, WAIT)?;
        saga_shared::kafka::drain(&producer, WAIT)?;
        producer.commit_transaction(WAIT)?;
    }
    Ok(())
}
