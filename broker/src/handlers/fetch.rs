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
use crate::storage::ReadOutcome;
use crate::storage::batch::BatchHeader;
use crate::topics::Partition;

use kafka_protocol::messages::ResponseKind;

use super::route::{Reply, Route, route};

/// Fetch waits (long polling) on the async workers; its reads run on the blocking pool inside.
pub(super) static ROUTES: &[Route] = &[route!(Fetch, 4..=12, async, |b, r, _c| {
    Reply::send(ResponseKind::Fetch(handle(&b, r).await))
})];

/// Longest a fetch may park, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);
/// Most bytes one fetch response carries, whatever the client asks (Kafka's `fetch.max.bytes`).
const MAX_RESPONSE_BYTES: usize = 55 * 1024 * 1024;

pub async fn handle(broker: &Arc<Broker>, request: FetchRequest) -> FetchResponse {
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = Instant::now() + wait;
    let request = Arc::new(request);
    loop {
        let read = {
            let request = request.clone();
            super::route::on_disk(broker, move |b| {
                let mut watches = Vec::new();
                let (response, bytes, errors) = read_once(b, &request, &mut watches);
                (response, bytes, errors, watches)
            })
        };
        let (response, bytes, errors, mut watches) = read.await;
        let enough =
            bytes >= request.min_bytes.max(0) as usize && (bytes > 0 || request.min_bytes <= 0);
        if enough || errors || watches.is_empty() || Instant::now() >= deadline {
            return response;
        }
        let any_changed = select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        tokio::select! {
            _ = any_changed => continue,
            _ = tokio::time::sleep_until(deadline) => return response,
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
}

/// Reads every requested partition once. Subscribes to each partition's end offset *before*
/// reading it, so an append racing with this read still wakes the waiter. Returns the answer,
/// the bytes of records in it, and whether any partition has an error (answered at once).
fn read_once(
    broker: &Broker,
    request: &FetchRequest,
    watches: &mut Vec<watch::Receiver<i64>>,
) -> (FetchResponse, usize, bool) {
    let mut pass = Pass {
        remaining: (request.max_bytes.max(0) as usize).min(MAX_RESPONSE_BYTES),
        total: 0,
        read_committed: request.isolation_level == 1,
        replica: (request.replica_id.0 >= 0).then_some(request.replica_id.0),
        watches,
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
    let total = pass.total;
    (
        FetchResponse::default().with_responses(responses),
        total,
        errors,
    )
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
        let read = if nothing_visible
            || (self.read_committed && fp.fetch_offset >= stable && fp.fetch_offset <= end)
        {
            // Nothing stable to give yet (or anymore, at the end). The last stable offset is
            // never below the log start, so below it the read answers out of range.
            Ok(ReadOutcome::Batches(Bytes::new()))
        } else {
            // KIP-74: the first non-empty partition may exceed the limits by one batch.
            log.read(fp.fetch_offset, limit, self.total == 0)
        };
        match read {
            Ok(ReadOutcome::Batches(records)) => {
                let records = if visible < end {
                    cut_at(records, visible)
                } else {
                    records
                };
                let (records, aborted) = if self.read_committed {
                    let records = cut_at(records, stable);
                    let aborted = last_offset(&records)
                        .map(|last| log.aborted_between(fp.fetch_offset, last))
                        .unwrap_or_default()
                        .into_iter()
                        .map(|a| {
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(a.producer_id))
                                .with_first_offset(a.first_offset)
                        })
                        .collect();
                    (records, aborted)
                } else {
                    (records, Vec::new())
                };
                self.total += records.len();
                self.remaining = self.remaining.saturating_sub(records.len());
                data.with_records(Some(records))
                    .with_aborted_transactions(Some(aborted))
            }
            Ok(ReadOutcome::OutOfRange) => {
                data.with_error_code(ResponseError::OffsetOutOfRange.code())
            }
            Err(e) => {
                tracing::error!(topic, partition = fp.partition, "read failed: {e}");
                data.with_error_code(ResponseError::KafkaStorageError.code())
            }
        }
    }
}

/// The whole batches of `records` that start before `stable` (the last stable offset).
fn cut_at(records: Bytes, stable: i64) -> Bytes {
    let mut end = 0;
    while let Ok(header) = BatchHeader::parse(&records[end..]) {
        if header.base_offset >= stable || end + header.total_len() > records.len() {
            break;
        }
        end += header.total_len();
    }
    records.slice(..end)
}

/// The last offset of the last batch in `records`.
fn last_offset(records: &Bytes) -> Option<i64> {
    let mut at = 0;
    let mut last = None;
    while let Ok(header) = BatchHeader::parse(&records[at..]) {
        if at + header.total_len() > records.len() {
            break;
        }
        last = Some(header.last_offset());
        at += header.total_len();
    }
    last
}
