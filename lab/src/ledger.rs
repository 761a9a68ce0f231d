//! The ledger: the saga's one consume-transform-produce step done with Kafka transactions, next
//! to the outbox that the services use.
//!
//! It reads every money movement with `isolation.level=read_committed` (`payment.completed`, a
//! debit; `payment.refunded`, a credit), writes one entry per movement to `ledger.entries`, and
//! commits its consumer offsets *inside* the same transaction. So an entry exists exactly when its
//! input is marked as read, without any database: a crash between the two is impossible, and a
//! transaction that did not commit is invisible to `read_committed` readers and re-done from the
//! committed offsets. Its consumer group is `ledger`, its `transactional.id` `lab-ledger`.
//!
//! Money is counted once per *event*, not per delivery: an entry is keyed by the `ce_id` of the
//! event it records, and a `payment.completed` republished or replayed with the same `ce_id`
//! (a DLQ replay, a producer's retry, a forger) adds nothing. The ids already counted are not kept
//! in a database but in `ledger.entries` itself: each round of the ledger, after
//! `init_transactions` (which ends any transaction an earlier instance left open, so nothing of
//! it is pending), reads `ledger.entries` from its start to its end with `read_committed` and
//! remembers every key; then it consumes. Only committed entries count, so an aborted transaction
//! (whose input offsets were not committed either) is redone, and a committed one is never
//! doubled. The set lives in memory, one id per entry; a round that fails throws it away and the
//! next round rebuilds it from the topic.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use saga_shared::events::{SagaEvent, Topic};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where the entries go: the lab's own topic, not part of the services' contract (no service
/// reads or writes it, and `saga_shared::events::Topic` does not name it).
pub const TOPIC: &str = "ledger.entries";
/// The consumer group, and the transactional id of its producer.
pub const GROUP: &str = "ledger";
pub const TRANSACTIONAL_ID: &str = "lab-ledger";

/// Records handled in one transaction, at most.
const MAX_BATCH: usize = 200;
/// How long a transaction waits for more records after its first.
const GATHER: Duration = Duration::from_millis(100);
const WAIT: Duration = Duration::from_secs(10);

/// One money movement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The `ce_id` of the event this entry records; also the record's key.
    pub event_id: Uuid,
    pub order_id: String,
    pub payment_id: String,
    pub customer_id: String,
    /// `debit` (charged) or `credit` (refunded).
    pub kind: String,
    pub amount: i64,
}

impl Entry {
    /// The entry for a record of `topic`, if it is a money movement that decodes.
    fn of(event_id: Uuid, topic: &str, payload: &[u8]) -> Option<Entry> {
        let event = SagaEvent::decode(Topic::parse(topic)?, payload).ok()?;
        Some(match event {
            SagaEvent::PaymentCompleted(e) => Entry {
                event_id,
                order_id: e.order_id.to_string(),
                payment_id: e.payment_id.to_string(),
                customer_id: e.customer_id.to_string(),
                kind: "debit".into(),
                amount: e.amount.get(),
            },
            SagaEvent::PaymentRefunded(e) => Entry {
                event_id,
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
    /// Told when the ledger's thread ends.
    ended: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Ledger {
    /// Creates `ledger.entries` (one partition) if needed, and starts.
    pub async fn start(brokers: &str) -> anyhow::Result<Ledger> {
        let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(-1));
        // Exists already: fine.
        let _ = crate::kafka::create_topic(brokers, &topic).await;
        let stop = Arc::new(AtomicBool::new(false));
        let (brokers, flag) = (brokers.to_owned(), stop.clone());
        let (tell_ended, ended) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
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
                let _ = tell_ended.send(());
            })?;
        Ok(Ledger {
            stop,
            ended: Some(ended),
        })
    }

    /// Stops after the transaction in progress, and waits for it, at most `limit`: a thread
    /// still blocked in the Kafka client after that (closing a consumer whose group coordinator
    /// is away can take that long) is left to end with the process, and nothing waits for it.
    pub async fn stop(mut self, limit: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ended) = self.ended.take()
            && tokio::time::timeout(limit, ended).await.is_err()
        {
            tracing::warn!("the ledger did not stop within {limit:?}; going on without it");
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
    // Fences an earlier instance and ends its open transaction: from here on nothing of
    // `ledger.entries` is pending, and reading it to its end sees every entry that counts.
    producer.init_transactions(WAIT)?;
    let mut counted = counted_ids(brokers, stop)?;
    tracing::debug!(
        entries = counted.len(),
        "ledger: the counted event ids are rebuilt"
    );
    while !stop.load(Ordering::Relaxed) {
        let Some(first) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let batch = gather(&consumer, first?)?;
        producer.begin_transaction()?;
        for msg in &batch {
            // A record that is not a money movement (never, unless forged), or one without an
            // event id, moves the offsets on and writes nothing; the services dead-letter it.
            // One whose event is counted already (a republished or replayed copy) writes nothing
            // either; nor does a DLQ redrive addressed to another group.
            let Some(id) = event_id(msg) else { continue };
            if !saga_shared::dlq::addressed_to(msg, GROUP) || counted.contains(&id) {
                continue;
            }
            let payload = msg.payload().map(saga_shared::schemas::payload);
            let Some(entry) = payload.and_then(|p| Entry::of(id, msg.topic(), p)) else {
                continue;
            };
            let value = serde_json::to_vec(&entry)?;
            let key = id.to_string();
            producer
                .send(BaseRecord::to(TOPIC).key(key.as_str()).payload(&value))
                .map_err(|(e, _)| e)?;
            // Kept for the rest of this round; if its transaction fails, the round ends and the
            // next one rebuilds the set from what was committed.
            counted.insert(id);
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
        crate::kafka::drain(&producer, WAIT)?;
        producer.commit_transaction(WAIT)?;
    }
    Ok(())
}

/// `first` and what else arrives within [`GATHER`], up to [`MAX_BATCH`] records: one
/// transaction's input. At the saga's pace that is a few payments per transaction instead of
/// one, and the ledger's round trips (a transaction is five requests and two markers) no longer
/// land on the very moment each payment is on its way to the inventory service.
fn gather<'c>(
    consumer: &'c BaseConsumer,
    first: BorrowedMessage<'c>,
) -> anyhow::Result<Vec<BorrowedMessage<'c>>> {
    let mut batch = vec![first];
    let gathering = Instant::now();
    while batch.len() < MAX_BATCH {
        let left = GATHER.saturating_sub(gathering.elapsed());
        match consumer.poll(left) {
            Some(m) => batch.push(m?),
            None => break,
        }
    }
    Ok(batch)
}

/// The `ce_id` header of a record, if it is a UUID.
fn event_id<M: Message>(msg: &M) -> Option<Uuid> {
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key == saga_shared::envelope::header::ID)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
        .and_then(|v| Uuid::parse_str(v).ok())
}

/// The event ids of every committed entry of `ledger.entries` (its keys), read with
/// `read_committed` from the start of each partition to its end.
fn counted_ids(brokers: &str, stop: &AtomicBool) -> anyhow::Result<HashSet<Uuid>> {
    let reader: BaseConsumer<crate::EndIsNotAnError> = saga_shared::kafka::client_config(brokers)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create_with_context(crate::EndIsNotAnError)?;
    let mut assignment = TopicPartitionList::new();
    let mut open = 0usize;
    for p in crate::kafka::partitions_of(&reader, TOPIC, WAIT)? {
        let (low, high) = reader.fetch_watermarks(TOPIC, p, WAIT)?;
        if high > low {
            assignment.add_partition_offset(TOPIC, p, Offset::Offset(low))?;
            open += 1;
        }
    }
    let mut ids = HashSet::new();
    if open == 0 {
        return Ok(ids);
    }
    reader.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while open > 0 {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            anyhow::bail!("{TOPIC} was not read to its end");
        }
        match reader.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => {
                // Entries written before they were keyed by event id (keyed by customer) have no
                // id to remember.
                if let Some(id) = m
                    .key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .and_then(|k| Uuid::parse_str(k).ok())
                {
                    ids.insert(id);
                }
            }
        }
    }
    Ok(ids)
}
