//! Fetch, with real long polling: a fetch that finds too little data parks on the end-offset
//! watches of its partitions and answers the moment any of them moves (or at `max_wait_ms`).
//! A read-committed fetch returns data only below each partition's last stable offset, with the
//! aborted transactions of that range.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::select_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::broker::Broker;
use crate::storage::ReadOutcome;
use crate::storage::batch::BatchHeader;

use kafka_protocol::messages::ResponseKind;

use super::{Reply, Route};

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
            super::on_disk(broker, move |b| {
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

/// Reads every requested partition once. Subscribes to each partition's end offset *before*
/// reading it, so an append racing with this read still wakes the waiter.
fn read_once(
    broker: &Broker,
    request: &FetchRequest,
    watches: &mut Vec<watch::Receiver<i64>>,
) -> (FetchResponse, usize, bool) {
    let mut remaining = (request.max_bytes.max(0) as usize).min(MAX_RESPONSE_BYTES);
    let mut total = 0usize;
    let mut errors = false;
    // Read-committed (isolation level 1) stops at each partition's last stable offset and lists
    // the aborted transactions of what it returns, for the client to drop.
    let read_committed = request.isolation_level == 1;
    let responses = request
        .topics
        .iter()
        .map(|fetch_topic| {
            let topic = broker.topics.get(fetch_topic.topic.as_str());
            let partitions = fetch_topic
                .partitions
                .iter()
                .map(|fp| {
                    let data = PartitionData::default()
                        .with_partition_index(fp.partition)
                        .with_high_watermark(-1)
                        .with_last_stable_offset(-1)
                        .with_log_start_offset(-1)
                        .with_preferred_read_replica(BrokerId(-1))
                        .with_aborted_transactions(Some(Vec::new()))
                        .with_records(Some(Bytes::new()));
                    let Some(partition) = topic.as_ref().and_then(|t| t.partition(fp.partition)) else {
                        errors = true;
                        return data.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    watches.push(partition.subscribe());
                    let log = partition.log();
                    let (end, start) = (log.next_offset(), log.log_start_offset());
                    let stable = log.last_stable_offset();
                    let data = data
                        .with_high_watermark(end)
                        .with_last_stable_offset(stable)
                        .with_log_start_offset(start);
                    let limit = (fp.partition_max_bytes.max(0) as usize).min(remaining);
                    // KIP-74: the first non-empty partition may exceed the limits by one batch.
                    let read = if read_committed && fp.fetch_offset >= stable && fp.fetch_offset <= end {
                        // Nothing stable to give yet (or anymore, at the end). The last stable
                        // offset is never below the log start, so below it the read answers
                        // out of range.
                        Ok(ReadOutcome::Batches(Bytes::new()))
                    } else {
                        log.read(fp.fetch_offset, limit, total == 0)
                    };
                    match read {
                        Ok(ReadOutcome::Batches(records)) => {
                            let (records, aborted) = if read_committed {
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
                            total += records.len();
                            remaining = remaining.saturating_sub(records.len());
                            data.with_records(Some(records))
                                .with_aborted_transactions(Some(aborted))
                        }
                        Ok(ReadOutcome::OutOfRange) => {
                            errors = true;
                            data.with_error_code(ResponseError::OffsetOutOfRange.code())
                        }
                        Err(e) => {
                            tracing::error!(topic = %fetch_topic.topic.as_str(), partition = fp.partition, "read failed: {e}");
                            errors = true;
                            data.with_error_code(ResponseError::KafkaStorageError.code())
                        }
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(fetch_topic.topic.clone())
                .with_topic_id(topic.as_ref().map(|t| t.id).unwrap_or_default())
                .with_partitions(partitions)
        })
        .collect();
    (
        FetchResponse::default().with_responses(responses),
        total,
        errors,
    )
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
