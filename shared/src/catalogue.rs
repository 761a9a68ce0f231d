//! The shop's catalogue as a table: *event-carried state transfer* over a compacted topic.
//!
//! The inventory service owns the products. Every change of a product row (a price, a name, a
//! stock level after a reservation) marks the row unpublished, in the same statement (a database
//! trigger, `migrations/inventory/0004_catalogue.sql`), and its outbox relay moves the state of
//! the marked products into the outbox every 100 ms ([`queue_changes`], [`QUEUE_INTERVAL`]), and
//! the outbox relay publishes it to [`TOPIC`], keyed by SKU: the
//! product's whole current state, not what happened to it, and only its latest, so the topic's
//! traffic is bounded by the number of products rather than the order rate. The topic
//! is compacted (`cleanup.policy=compact`), so the log keeps at least the latest state of every
//! product however old it is, and a reader that starts late, or from an empty database, reads
//! the whole catalogue from the beginning.
//!
//! The order service keeps its own copy ([`CatalogueReader`], into its `catalogue` table) and
//! prices orders from it, so a client cannot set its own price. The position it read up to is
//! stored in the same transaction as the rows (`catalogue_position`), so the copy and its offsets
//! cannot disagree after a crash, and no consumer group offsets are involved. A record it cannot
//! read goes to `inventory.products.dlq`; a tombstone (a null value) deletes the product.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use crate::consumer::RetryPolicy;
use crate::consumer::dead_letter::{self, DeadLetter};
use crate::domain::{Sku, Won};
use crate::shutdown::Shutdown;

/// The compacted topic of the catalogue: one record per product change, keyed by SKU.
pub const TOPIC: &str = "inventory.products";

/// The catalogue topic's settings: compacted, in segments of 1 MiB (only closed segments are
/// cleaned, so a small segment lets the lab see compaction happen).
pub const TOPIC_CONFIG: [(&str, &str); 2] =
    [("cleanup.policy", "compact"), ("segment.bytes", "1048576")];

/// The group id the reader's client is named by (it assigns partitions itself and commits
/// nothing: its position is in its database).
const READER_GROUP: &str = "order-service.catalogue";

/// Most records applied in one transaction.
const MAX_BATCH: usize = 256;

/// How often the products changed since are moved into the outbox: their latest state only,
/// so the catalogue's traffic does not grow with the order rate.
pub const QUEUE_INTERVAL: Duration = Duration::from_millis(100);

/// Moves the state of every product changed since into the outbox (the database's
/// `publish_catalogue()`, which wakes the relay when it queued any), every [`QUEUE_INTERVAL`]
/// until `shutdown` fires: what the service that writes the catalogue runs. `published` is set
/// once every product's state is on the topic (nothing left to queue, nothing of the topic
/// waiting in the outbox): the service is ready then, so that an order service started after
/// it reads the whole catalogue before it takes an order.
pub async fn queue_changes(
    pool: PgPool,
    service: &'static str,
    published: Arc<AtomicBool>,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(QUEUE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        if let Err(err) = sqlx::query("SELECT publish_catalogue()")
            .execute(&pool)
            .await
        {
            tracing::warn!(service, error = %err, "queueing the catalogue's changes");
        }
        if !published.load(Ordering::Acquire) && all_published(&pool).await {
            tracing::info!(service, "catalogue published");
            published.store(true, Ordering::Release);
        }
    }
}

/// Whether every product's state is on the catalogue topic: none marked unpublished, none of
/// the topic's rows waiting in the outbox.
async fn all_published(pool: &PgPool) -> bool {
    sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM products WHERE NOT in_catalogue) \
            AND NOT EXISTS (SELECT 1 FROM outbox WHERE topic = $1 AND published_at IS NULL)",
    )
    .bind(TOPIC)
    .fetch_one(pool)
    .await
    .unwrap_or(false)
}

/// A service's part in the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// None of its business.
    None,
    /// It owns the products and publishes them (its schema registers the topic's).
    Writes,
    /// It keeps a copy in its `catalogue` table, and is ready once the copy has been read to
    /// the end.
    Reads,
}

/// A product as the catalogue topic carries it: its whole current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    pub sku: Sku,
    pub name: String,
    /// The list price of one unit.
    pub unit_price: Won,
    /// Units available.
    #[schema(minimum = 0)]
    pub stock: i64,
}

impl Product {
    /// The JSON Schema of the topic's values ([`crate::schemas`]).
    pub fn json_schema() -> serde_json::Value {
        crate::schemas::of::<Product>()
    }
}

/// A product's row in a reader's `catalogue` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Listed {
    pub sku: String,
    pub name: String,
    pub unit_price: i64,
    pub stock: i64,
    /// Where it was read: the catalogue topic's partition and the record's offset.
    pub partition: i32,
    pub offset: i64,
}

/// The prices of a reader's copy, in memory: what the order service prices from, kept by its
/// [`CatalogueReader`] (loaded from the table at start, then each batch's changes, set before the
/// batch commits so that the table never shows a price the list does not have yet). Empty, and
/// not [`PriceList::is_loaded`], until the reader has started: then the table is asked.
#[derive(Debug, Clone, Default)]
pub struct PriceList {
    prices: Arc<std::sync::RwLock<BTreeMap<String, i64>>>,
    loaded: Arc<AtomicBool>,
}

impl PriceList {
    /// Whether the reader has loaded it.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The prices of `skus` it lists.
    pub fn of(&self, skus: &[&str]) -> BTreeMap<String, i64> {
        let prices = self.prices.read().unwrap();
        skus.iter()
            .filter_map(|&sku| Some((sku.to_owned(), *prices.get(sku)?)))
            .collect()
    }

    fn load(&self, all: BTreeMap<String, i64>) {
        *self.prices.write().unwrap() = all;
        self.loaded.store(true, Ordering::Release);
    }

    fn apply(&self, changes: &[Change]) {
        let mut prices = self.prices.write().unwrap();
        for change in changes {
            match &change.product {
                Some(p) => prices.insert(change.sku.clone(), p.unit_price.get()),
                None => prices.remove(&change.sku),
            };
        }
    }
}

/// One record of the catalogue topic, read: the product it sets, or `None` for a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub partition: i32,
    pub offset: i64,
    pub sku: String,
    pub product: Option<Product>,
}

/// Why a catalogue record cannot be read (it goes to the DLQ).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unreadable {
    #[error("a catalogue record needs its SKU as key")]
    NoKey,
    #[error("the value is not a product: {0}")]
    NotAProduct(String),
    #[error("the value is product {value} under key {key}")]
    OtherKey { key: String, value: String },
    #[error("stock must not be negative")]
    NegativeStock,
}

/// A catalogue record's change (its value may carry Confluent's schema frame).
pub fn read(
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Change, Unreadable> {
    let sku = key
        .and_then(|k| std::str::from_utf8(k).ok())
        .filter(|k| !k.is_empty())
        .ok_or(Unreadable::NoKey)?
        .to_owned();
    let product = match value {
        None => None,
        Some(value) => {
            let product: Product = serde_json::from_slice(crate::schemas::payload(value))
                .map_err(|e| Unreadable::NotAProduct(e.to_string()))?;
            if product.sku.as_str() != sku {
                return Err(Unreadable::OtherKey {
                    key: sku,
                    value: product.sku.to_string(),
                });
            }
            if product.stock < 0 {
                return Err(Unreadable::NegativeStock);
            }
            Some(product)
        }
    };
    Ok(Change {
        partition,
        offset,
        sku,
        product,
    })
}

/// Moves each partition's next offset in `next` past the `(partition, offset)`s `read`.
pub fn advance(next: &mut BTreeMap<i32, i64>, read: impl IntoIterator<Item = (i32, i64)>) {
    for (partition, offset) in read {
        let at = next.entry(partition).or_default();
        *at = (*at).max(offset + 1);
    }
}

/// Applies `changes` (in log order) to the `catalogue` table and moves `catalogue_position`
/// to `next` (each partition's offset after the last record read, a change or not), in the
/// caller's transaction: the latest change of each SKU wins.
pub async fn apply(
    conn: &mut PgConnection,
    changes: &[Change],
    next: &BTreeMap<i32, i64>,
) -> Result<(), sqlx::Error> {
    let mut latest: BTreeMap<&str, &Change> = BTreeMap::new();
    for change in changes {
        latest.insert(&change.sku, change);
    }
    let (set, gone): (Vec<&Change>, Vec<&Change>) =
        latest.into_values().partition(|c| c.product.is_some());
    let products = set.iter().filter_map(|c| c.product.as_ref());
    sqlx::query(
        "WITH gone AS (DELETE FROM catalogue WHERE sku = ANY($7)) \
         INSERT INTO catalogue AS c (sku, name, unit_price, stock, partition, \"offset\") \
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::int[], $6::bigint[]) \
         ON CONFLICT (sku) DO UPDATE SET name = excluded.name, unit_price = excluded.unit_price, \
             stock = excluded.stock, partition = excluded.partition, \"offset\" = excluded.\"offset\", \
             updated_at = now()",
    )
    .bind(products.clone().map(|p| p.sku.to_string()).collect::<Vec<_>>())
    .bind(products.clone().map(|p| p.name.clone()).collect::<Vec<_>>())
    .bind(products.clone().map(|p| p.unit_price.get()).collect::<Vec<_>>())
    .bind(products.map(|p| p.stock).collect::<Vec<_>>())
    .bind(set.iter().map(|c| c.partition).collect::<Vec<_>>())
    .bind(set.iter().map(|c| c.offset).collect::<Vec<_>>())
    .bind(gone.iter().map(|c| c.sku.clone()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO catalogue_position (partition, next_offset) \
         SELECT * FROM unnest($1::int[], $2::bigint[]) \
         ON CONFLICT (partition) DO UPDATE \
             SET next_offset = GREATEST(catalogue_position.next_offset, excluded.next_offset)",
    )
    .bind(next.keys().copied().collect::<Vec<_>>())
    .bind(next.values().copied().collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Every product of a reader's `catalogue` table, by SKU.
pub async fn listed(pool: &PgPool) -> Result<Vec<Listed>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sku, name, unit_price, stock, partition, \"offset\" FROM catalogue ORDER BY sku",
    )
    .fetch_all(pool)
    .await
}

/// The prices of `skus` in a reader's `catalogue` table (those it lists).
pub async fn prices(pool: &PgPool, skus: &[&str]) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT sku, unit_price FROM catalogue WHERE sku = ANY($1)")
            .bind(skus)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the catalogue topic {TOPIC} has no partitions yet")]
    NoTopic,
    #[error("looking up the catalogue topic's ends: {0}")]
    Lookup(#[from] tokio::task::JoinError),
}

/// Keeps a service's `catalogue` table a copy of the catalogue topic (see the module's
/// documentation); `ready` is set once it has read every partition to the end and lists a
/// product (a service that prices orders cannot take one before).
pub struct CatalogueReader {
    pub brokers: String,
    pub pool: PgPool,
    /// For the DLQ.
    pub producer: FutureProducer,
    pub ready: Arc<AtomicBool>,
    /// Delays between attempts to publish to the DLQ.
    pub retry: RetryPolicy,
    /// The `service` label of its metrics.
    pub service: &'static str,
    /// Kept as the table is.
    pub prices: PriceList,
}

impl CatalogueReader {
    /// Reads until `shutdown` fires, starting again after a failure.
    pub async fn run(self, mut shutdown: Shutdown) {
        loop {
            match self.read(&mut shutdown).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "reading the catalogue; starting again"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    async fn read(&self, shutdown: &mut Shutdown) -> Result<(), ReadError> {
        let consumer: StreamConsumer = crate::kafka::client_config(&self.brokers)
            .set("group.id", READER_GROUP)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut next: BTreeMap<i32, i64> = sqlx::query_as::<_, (i32, i64)>(
            "SELECT partition, next_offset FROM catalogue_position",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        let all: Vec<(String, i64)> = sqlx::query_as("SELECT sku, unit_price FROM catalogue")
            .fetch_all(&self.pool)
            .await?;
        self.prices.load(all.into_iter().collect());
        let brokers = self.brokers.clone();
        let ends = tokio::task::spawn_blocking(move || log_ends(&brokers)).await??;
        let mut tpl = TopicPartitionList::new();
        for &p in ends.keys() {
            let offset = next
                .get(&p)
                .map_or(Offset::Beginning, |&o| Offset::Offset(o));
            tpl.add_partition_offset(TOPIC, p, offset)?;
        }
        consumer.assign(&tpl)?;
        self.mark_ready_if_read(&ends, &next).await?;
        loop {
            let first = tokio::select! {
                m = consumer.recv() => m,
                _ = shutdown.wait() => return Ok(()),
            };
            let mut batch = vec![first?];
            while batch.len() < MAX_BATCH {
                match consumer.recv().now_or_never() {
                    Some(m) => batch.push(m?),
                    None => break,
                }
            }
            advance(&mut next, batch.iter().map(|m| (m.partition(), m.offset())));
            self.apply_batch(&batch, &next, shutdown).await?;
            self.mark_ready_if_read(&ends, &next).await?;
        }
    }

    /// Says the service is ready once the copy has been read to `ends` (each partition's end
    /// when the reader started) and lists a product.
    async fn mark_ready_if_read(
        &self,
        ends: &BTreeMap<i32, i64>,
        next: &BTreeMap<i32, i64>,
    ) -> Result<(), ReadError> {
        if self.ready.load(Ordering::Acquire)
            || ends
                .iter()
                .any(|(p, &end)| next.get(p).copied().unwrap_or(0) < end)
        {
            return Ok(());
        }
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM catalogue")
            .fetch_one(&self.pool)
            .await?;
        if count > 0 {
            tracing::info!(products = count, "catalogue read to its end");
            self.ready.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Applies the readable records of `batch` in one transaction, with the positions `next`
    /// (past the whole batch); the others go to the DLQ first, and the position moves past
    /// them too.
    async fn apply_batch(
        &self,
        batch: &[BorrowedMessage<'_>],
        next: &BTreeMap<i32, i64>,
        shutdown: &mut Shutdown,
    ) -> Result<(), ReadError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut changes = Vec::with_capacity(batch.len());
        for msg in batch {
            match read(msg.partition(), msg.offset(), msg.key(), msg.payload()) {
                Ok(change) => changes.push(change),
                Err(why) => {
                    let error = why.to_string();
                    let letter = DeadLetter {
                        group: READER_GROUP,
                        attempts: 1,
                        error: &error,
                    };
                    if !dead_letter::publish(&self.producer, &self.retry, msg, &letter, shutdown)
                        .await
                    {
                        return Ok(());
                    }
                    metrics::counter!("catalogue_records_total", "service" => self.service, "outcome" => "dead_lettered").increment(1);
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        apply(&mut tx, &changes, next).await?;
        self.prices.apply(&changes);
        tx.commit().await?;
        metrics::counter!("catalogue_records_total", "service" => self.service, "outcome" => "applied")
            .increment(changes.len() as u64);
        Ok(())
    }
}

/// Each partition of the catalogue topic (the services create it at start) and the offset it
/// ends at; a partition with nothing left in it (its records all deleted) counts as ending at 0.
fn log_ends(brokers: &str) -> Result<BTreeMap<i32, i64>, ReadError> {
    let consumer: BaseConsumer = crate::kafka::client_config(brokers).create()?;
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(TOPIC), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == TOPIC && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(ReadError::NoTopic);
    }
    partitions
        .into_iter()
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(TOPIC, p, timeout)?;
            Ok((p, if low == high { 0 } else { high }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_a_product_under_its_own_sku_or_a_tombstone() {
        let value = br#"{"sku":"LATTE","name":"Caffe Latte","unit_price":5000,"stock":7}"#;
        let change = read(2, 9, Some(b"LATTE"), Some(value)).unwrap();
        assert_eq!(change.product.unwrap().unit_price.get(), 5000);
        let framed = crate::schemas::frame(3, value);
        assert!(read(2, 10, Some(b"LATTE"), Some(&framed)).is_ok());
        assert_eq!(read(2, 11, Some(b"LATTE"), None).unwrap().product, None);
        assert_eq!(read(2, 12, None, Some(value)), Err(Unreadable::NoKey));
        assert!(matches!(
            read(2, 13, Some(b"MOCHA"), Some(value)),
            Err(Unreadable::OtherKey { .. })
        ));
        let negative = br#"{"sku":"LATTE","name":"x","unit_price":5000,"stock":-1}"#;
        assert_eq!(
            read(2, 14, Some(b"LATTE"), Some(negative)),
            Err(Unreadable::NegativeStock)
        );
        let free = br#"{"sku":"LATTE","name":"x","unit_price":0,"stock":1}"#;
        assert!(matches!(
            read(2, 15, Some(b"LATTE"), Some(free)),
            Err(Unreadable::NotAProduct(_))
        ));
    }
}
