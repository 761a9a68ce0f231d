//! Produce: validate, de-duplicate and append each partition's batches. A transactional
//! produce is taken only from the transactional id's current producer epoch and only for the
//! partitions of its ongoing transaction, under that id's lock (see `crate::txn`).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::str_bytes;
use crate::broker::Broker;
use crate::storage::AppendError;
use crate::storage::batch::BatchHeader;
use crate::txn::TxnError;

use kafka_protocol::messages::ResponseKind;

use super::{Reply, Route};

/// Advertised from v0 because librdkafka turns compression off when Produce v0 is missing;
/// v0-v2 (message format v0/v1) requests themselves are refused by closing the connection.
pub(super) static ROUTES: &[Route] = &[route!(Produce, 0..=9, disk, |b, r, _c| {
    match handle(b, r) {
        Some(response) => Reply::send(ResponseKind::Produce(response)),
        None => Reply::Nothing,
    }
})];

/// Returns `None` for acks=0, which gets no response at all.
pub fn handle(broker: &Broker, request: ProduceRequest) -> Option<ProduceResponse> {
    let responses = request
        .topic_data
        .into_iter()
        .map(|topic_data| {
            let topic = broker.topics.get(topic_data.name.as_str());
            let partition_responses = topic_data
                .partition_data
                .into_iter()
                .map(|data| {
                    let response = PartitionProduceResponse::default()
                        .with_index(data.index)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1);
                    let fail = |e: ResponseError, message: String| {
                        response
                            .clone()
                            .with_error_code(e.code())
                            .with_error_message(Some(str_bytes(message)))
                    };
                    let Some(partition) = topic.as_ref().and_then(|t| t.partition(data.index)) else {
                        return fail(ResponseError::UnknownTopicOrPartition, "unknown topic or partition".into());
                    };
                    let Some(records) = data.records else {
                        return fail(ResponseError::InvalidRecord, "no records".into());
                    };
                    let mut records = records.to_vec();
                    let header = BatchHeader::parse(&records).ok();
                    let batch_transactional = header.is_some_and(|h| h.is_transactional());
                    let appended = match (&request.transactional_id, header) {
                        (Some(id), Some(header)) if batch_transactional => broker
                            .txns
                            .with_produce(
                                id.as_str(),
                                header.producer_id,
                                header.producer_epoch,
                                (topic_data.name.as_str(), data.index),
                                || partition.append(&mut records),
                            ),
                        (Some(_), _) if header.is_some() => {
                            return fail(ResponseError::InvalidRecord, "a transactional produce needs transactional batches".into());
                        }
                        (None, _) if batch_transactional => {
                            return fail(ResponseError::InvalidRecord, "a transactional batch needs a transactional id".into());
                        }
                        _ => Ok(partition.append(&mut records)),
                    };
                    let appended = match appended {
                        Ok(appended) => appended,
                        Err(e) => {
                            let (code, message) = match e {
                                // Produce has no PRODUCER_FENCED; clients take this one as fenced.
                                TxnError::Fenced => (ResponseError::InvalidProducerEpoch, "the producer was fenced by a newer instance"),
                                TxnError::UnknownProducer => (ResponseError::InvalidProducerIdMapping, "the producer id is not the transactional id's"),
                                TxnError::InvalidState => (ResponseError::InvalidTxnState, "the partition is not in an ongoing transaction of this producer"),
                                TxnError::Storage => (ResponseError::KafkaStorageError, "the broker could not store the batch"),
                            };
                            return fail(code, message.into());
                        }
                    };
                    match appended {
                        Ok(produced) => response
                            .with_base_offset(produced.appended.base_offset())
                            .with_log_append_time_ms(produced.log_append_time)
                            .with_log_start_offset(produced.log_start_offset),
                        Err(e) => {
                            let code = match &e {
                                AppendError::Corrupt(_) => ResponseError::CorruptMessage,
                                AppendError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
                                AppendError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
                                AppendError::TooLarge { .. } | AppendError::InflatesTooLarge { .. } => ResponseError::MessageTooLarge,
                                AppendError::Refused(_) => ResponseError::InvalidRecord,
                                AppendError::Deleted => ResponseError::UnknownTopicOrPartition,
                                AppendError::Io(_) => ResponseError::KafkaStorageError,
                            };
                            // What was wrong with the client's batch is said; the broker's own
                            // storage failures stay in its log.
                            let message = match &e {
                                AppendError::Io(_) => {
                                    tracing::error!(topic = %topic_data.name.as_str(), partition = data.index, "produce failed: {e}");
                                    "the broker could not store the batch".to_owned()
                                }
                                _ => {
                                    tracing::debug!(topic = %topic_data.name.as_str(), partition = data.index, "produce refused: {e}");
                                    e.to_string()
                                }
                            };
                            fail(code, message)
                        }
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_partition_responses(partition_responses)
        })
        .collect();
    (request.acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}
