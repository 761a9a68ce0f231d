//! Fetch, with real long polling: a fetch that finds too little data parks on the end-offset
//! watches of its partitions and answers the moment any of them moves (or at `max_wait_ms`).
//! A read-committed fetch returns data only below each partition's last stable offset, with the
//! aborted transactions of that range.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::select_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId};
use tokio::sync::watch;
use tokio::time::Instant;

use super::partitions::{answer_each_led_in, partition_answer};
use crate::broker::Broker;
use crate::storage::Records;
use crate::topics::Partition;
use crate::zero_copy::FileRange;

use kafka_protocol::messages::ResponseKind;

use super::route::{Reply, Route, route};

/// Fetch waits (long polling) on the async workers; its reads run on the blocking pool inside.
pub(super) static ROUTES: &[Route] = &[route!(Fetch, 4..=12, async, |b, r, _c| {
    let (response, files) = handle(&b, r).await;
    Reply::SendWithFiles(Box::new(ResponseKind::Fetch(response)), files)
})];

/// Longest a fetch may park, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);
/// Most bytes one fetch response carries, whatever the client asks (Kafka's `fetch.max.bytes`).
const MAX_RESPONSE_BYTES: usize = 55 * 1024 * 1024;

/// The answer, and the file ranges its records' placeholders stand for (sent from the files).
pub async fn handle(
    broker: &Arc<Broker>,
    request: FetchRequest,
) -> (FetchResponse, Vec<(usize, FileRange)>) {
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = Instant::now() + wait;
    let request = Arc::new(request);
    loop {
        let read = {
            let request = request.clone();
            super::route::on_disk(broker, move |b| {
                let mut watches = Vec::new();
                let read = read_once(b, &request, &mut watches);
                (read, watches)
            })
        };
        let (read, mut watches) = read.await;
        let enough = read.bytes >= request.min_bytes.max(0) as usize
            && (read.bytes > 0 || request.min_bytes <= 0);
        if enough || read.errors || watches.is_empty() || Instant::now() >= deadline {
            return (read.response, read.files);
        }
        let any_changed = select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        tokio::select! {
            _ = any_changed => continue,
            _ = tokio::time::sleep_until(deadline) => return (read.response, read.files),
        }
    }
}

partition_answer!(PartitionData, |index| {
    PartitionData::default()
        .with_partition_index(index)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica(BrokerId(-1))
        .with_aborted_transactions(Some(Vec::new()))
        .with_records(Some(Bytes::new()))
});

/// One pass over a fetch's partitions: the bytes it may still return, what it returned, and
/// the end-offset watches of the partitions it read.
struct Pass<'a> {
    remaining: usize,
    total: usize,
    /// Read-committed (isolation level 1) stops at each partition's last stable offset and
    /// lists the aborted transactions of what it returns, for the client to drop.
    read_committed: bool,
    /// A follower's fetch (`replica_id`): it reads to the log end, and tells the leader how far
    /// it got. A consumer reads below the high watermark.
    replica: Option<i32>,
    watches: &'a mut Vec<watch::Receiver<i64>>,
    /// The file ranges the answer's placeholders stand for.
    files: Vec<(usize, FileRange)>,
}

/// What one pass read: the answer, the bytes of records in it, whether any partition has an
/// error (answered at once), and the file ranges to send.
struct Read {
    response: FetchResponse,
    bytes: usize,
    errors: bool,
    files: Vec<(usize, FileRange)>,
}

/// Reads every requested partition once. Subscribes to each partition's end offset *before*
/// reading it, so an append racing with this read still wakes the waiter.
fn read_once(
    broker: &Broker,
    request: &FetchRequest,
    watches: &mut Vec<watch::Receiver<i64>>,
) -> Read {
    let mut pass = Pass {
        remaining: (request.max_bytes.max(0) as usize).min(MAX_RESPONSE_BYTES),
        total: 0,
        read_committed: request.isolation_level == 1,
        replica: (request.replica_id.0 >= 0).then_some(request.replica_id.0),
        watches,
        files: Vec::new(),
    };
    let responses: Vec<FetchableTopicResponse> = request
        .topics
        .iter()
        .map(|t| {
            let name = t.topic.as_str();
            let topic = broker.topics.get(name);
            let partitions = answer_each_led_in(
                topic.as_deref(),
                &t.partitions,
                |fp| fp.partition,
                |fp, partition, data| Ok(pass.read(name, partition, fp, data)),
            );
            let id = topic.map(|t| t.id).unwrap_or_default();
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(id)
                .with_partitions(partitions)
        })
        .collect();
    let errors = responses
        .iter()
        .flat_map(|t| &t.partitions)
        .any(|p| p.error_code != 0);
    Read {
        response: FetchResponse::default().with_responses(responses),
        bytes: pass.total,
        errors,
        files: pass.files,
    }
}

impl Pass<'_> {
    /// Reads one partition from the fetch offset, within the bytes left.
    fn read(
        &mut self,
        topic: &str,
        partition: &Partition,
        fp: &FetchPartition,
        data: PartitionData,
    ) -> PartitionData {
        if let Some(follower) = self.replica {
            partition.follower_fetched(follower, fp.fetch_offset);
        }
        self.watches.push(partition.subscribe());
        let log = partition.log();
        let (end, start) = (log.next_offset(), log.log_start_offset());
        let high_watermark = log.high_watermark();
        let stable = log.last_stable_offset();
        let data = data
            .with_high_watermark(high_watermark)
            .with_last_stable_offset(stable)
            .with_log_start_offset(start);
        let visible = if self.replica.is_some() {
            end
        } else {
            high_watermark
        };
        let limit = (fp.partition_max_bytes.max(0) as usize).min(self.remaining);
        let nothing_visible = fp.fetch_offset >= visible && fp.fetch_offset <= end;
        if nothing_visible
            || (self.read_committed && fp.fetch_offset >= stable && fp.fetch_offset <= end)
        {
            // Nothing stable to give yet (or anymore, at the end). The last stable offset is
            // never below the log start, so below it the read answers out of range.
            return data
                .with_records(Some(Bytes::new()))
                .with_aborted_transactions(Some(Vec::new()));
        }
        let until = if self.read_committed {
            visible.min(stable)
        } else {
            visible
        };
        // KIP-74: the first non-empty partition may exceed the limits by one batch.
        match log.read_batches(fp.fetch_offset, limit, self.total == 0, until) {
            Ok(Some(batches)) => {
                let aborted = if self.read_committed && !batches.records.is_empty() {
                    log.aborted_between(fp.fetch_offset, batches.next_offset - 1)
                        .into_iter()
                        .map(|a| {
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(a.producer_id))
                                .with_first_offset(a.first_offset)
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let len = batches.records.len();
                self.total += len;
                self.remaining = self.remaining.saturating_sub(len);
                match self.records(batches.records) {
                    Ok(records) => data
                        .with_records(Some(records))
                        .with_aborted_transactions(Some(aborted)),
                    Err(e) => {
                        tracing::error!(topic, partition = fp.partition, "read failed: {e}");
                        data.with_error_code(ResponseError::KafkaStorageError.code())
                    }
                }
            }
            Ok(None) => data.with_error_code(ResponseError::OffsetOutOfRange.code()),
            Err(e) => {
                tracing::error!(topic, partition = fp.partition, "read failed: {e}");
                data.with_error_code(ResponseError::KafkaStorageError.code())
            }
        }
    }

    /// What the answer carries for `records`: the bytes, or a placeholder for a file range.
    fn records(&mut self, records: Records) -> std::io::Result<Bytes> {
        match records {
            Records::Memory(bytes) => Ok(bytes),
            Records::File(range) => {
                let index = self.files.len();
                match range.placeholder(index) {
                    Some(placeholder) => {
                        self.files.push((index, range));
                        Ok(placeholder)
                    }
                    None => range.read(),
                }
            }
        }
    }
}
