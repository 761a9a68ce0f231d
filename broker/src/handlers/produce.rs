//! Produce: validate, de-duplicate and append each partition's batches. A transactional
//! produce is taken only from the transactional id's current producer epoch and only for the
//! partitions of its ongoing transaction, under that id's lock (see `crate::txn`). In a
//! cluster, where the coordinator may be another node, the partition's producer state checks a
//! transactional batch (its epoch, its sequence), and the first batch of a transaction here is
//! checked with the coordinator as well (KIP-890): a batch that comes after its transaction
//! ended (delayed on the network past an abort) must not open a transaction that the
//! producer's next one would end with its own marker.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use bytes::Bytes;

use super::partitions::{PartitionAnswer, Refused, answer_each_led};
use super::route::str_bytes;
use crate::broker::Broker;
use crate::storage::AppendError;
use crate::storage::batch::BatchError;
use crate::storage::batch::BatchHeader;
use crate::topics::{Partition, Produced};
use crate::txn::TxnError;

use kafka_protocol::messages::ResponseKind;

use super::route::{Reply, Route, route};

/// Advertised from v0 because librdkafka turns compression off when Produce v0 is missing;
/// v0-v2 (message format v0/v1) requests themselves are refused by closing the connection.
pub(super) static ROUTES: &[Route] = &[route!(Produce, 0..=9, disk, |b, r, _c| {
    match handle(b, r) {
        Some(response) => Reply::send(ResponseKind::Produce(response)),
        None => Reply::Nothing,
    }
})];

impl PartitionAnswer for PartitionProduceResponse {
    fn empty(index: i32) -> Self {
        PartitionProduceResponse::default()
            .with_index(index)
            .with_base_offset(-1)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(-1)
    }

    fn with_refusal(self, refused: Refused) -> Self {
        let record_errors = refused
            .records
            .iter()
            .map(|index| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(*index as i32)
                    .with_batch_index_error_message(refused.message.clone().map(str_bytes))
            })
            .collect();
        self.with_error_code(refused.error.code())
            .with_error_message(refused.message.map(str_bytes))
            .with_record_errors(record_errors)
    }
}

/// Returns `None` for acks=0, which gets no response at all.
pub fn handle(broker: &Broker, request: ProduceRequest) -> Option<ProduceResponse> {
    let transactional_id = request.transactional_id.as_ref().map(|id| id.as_str());
    // In a cluster, acks=all waits for the in-sync replicas.
    let replicated = broker.quorum.is_some() && request.acks == -1;
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(request.timeout_ms.max(0) as u64);
    let responses = request
        .topic_data
        .into_iter()
        .map(|t| {
            let name = t.name.as_str();
            let min_isr = if replicated {
                min_insync(broker, name)
            } else {
                1
            };
            let partitions = answer_each_led(
                broker,
                name,
                t.partition_data,
                |data| data.index,
                |data, partition, answer: PartitionProduceResponse| {
                    let Some(records) = data.records else {
                        return Err(Refused::with_message(
                            ResponseError::InvalidRecord,
                            "no records",
                        ));
                    };
                    if replicated && partition.isr_len() < min_isr {
                        return Err(Refused::with_message(
                            ResponseError::NotEnoughReplicas,
                            format!(
                                "{} in-sync replicas, min.insync.replicas is {min_isr}",
                                partition.isr_len()
                            ),
                        ));
                    }
                    let epoch = partition.leader_epoch();
                    let produced = append(broker, transactional_id, (name, partition), records)?;
                    if replicated {
                        let end = partition.log().next_offset();
                        tokio::runtime::Handle::current()
                            .block_on(partition.replicated((end, epoch), min_isr, deadline))
                            .map_err(Refused::from)?;
                    }
                    Ok(answer
                        .with_base_offset(produced.appended.base_offset())
                        .with_log_append_time_ms(produced.log_append_time)
                        .with_log_start_offset(produced.log_start_offset))
                },
            );
            TopicProduceResponse::default()
                .with_name(t.name)
                .with_partition_responses(partitions)
        })
        .collect();
    (request.acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

/// A topic's `min.insync.replicas`: its own, or the cluster's default.
fn min_insync(broker: &Broker, topic: &str) -> usize {
    let default = broker
        .config
        .cluster
        .as_ref()
        .map_or(1, |c| c.min_insync_replicas);
    broker
        .topics
        .get(topic)
        .and_then(|t| t.configs.get("min.insync.replicas")?.parse().ok())
        .unwrap_or(default)
}

/// Appends one partition's batch: a transactional batch under its transactional id's lock (the
/// producer must be current and the partition in its ongoing transaction), any other as is.
fn append(
    broker: &Broker,
    transactional_id: Option<&str>,
    (topic, partition): (&str, &Partition),
    records: Bytes,
) -> Result<Produced, Refused> {
    let mut records = records.to_vec();
    let header = BatchHeader::parse(&records).ok();
    let transactional = header.is_some_and(|h| h.is_transactional());
    let appended = match (transactional_id, header) {
        // In a cluster the coordinator may be elsewhere, as in Kafka: the partition's own
        // producer state checks the batch (its epoch, its sequence), and the coordinator
        // whether a batch that would open a transaction here belongs to an ongoing one.
        (Some(id), Some(header)) if transactional && broker.txns.is_replicated() => {
            let verified = match partition.begin_verification(header.producer_id) {
                Some(guard) => {
                    verify_in_transaction(broker, id, &header, (topic, partition.index))?;
                    Some((header.producer_id, guard))
                }
                None => None,
            };
            partition.append_checked(&mut records, verified)
        }
        (Some(id), Some(header)) if transactional => broker
            .txns
            .with_produce(
                id,
                header.producer_id,
                header.producer_epoch,
                (topic, partition.index),
                || partition.append(&mut records),
            )
            .map_err(refused_by_txn)?,
        (Some(_), Some(_)) => {
            return Err(Refused::with_message(
                ResponseError::InvalidRecord,
                "a transactional produce needs transactional batches",
            ));
        }
        (None, _) if transactional => {
            return Err(Refused::with_message(
                ResponseError::InvalidRecord,
                "a transactional batch needs a transactional id",
            ));
        }
        _ => partition.append(&mut records),
    };
    appended.map_err(|e| {
        // What was wrong with the client's batch is said; the broker's own storage failures
        // stay in its log.
        let message = match &e {
            AppendError::Io(_) => {
                tracing::error!(topic, partition = partition.index, "produce failed: {e}");
                "the broker could not store the batch".to_owned()
            }
            _ => {
                tracing::debug!(topic, partition = partition.index, "produce refused: {e}");
                e.to_string()
            }
        };
        let mut refused = Refused::with_message(e.kafka_error(), message);
        if let AppendError::Corrupt(BatchError::NoKey { indexes }) = e {
            refused.records = indexes;
        }
        refused
    })
}

/// Whether the batch of `header`, the first of its producer's transaction in `topic`-`index`,
/// belongs to the transaction `transactional_id`'s coordinator has ongoing, with that partition
/// added (KIP-890's verification). A coordinator that cannot be asked is retriable
/// (`NOT_ENOUGH_REPLICAS`, as Kafka answers); a batch outside the ongoing transaction is
/// `INVALID_TXN_STATE`.
fn verify_in_transaction(
    broker: &Broker,
    transactional_id: &str,
    header: &BatchHeader,
    (topic, index): (&str, i32),
) -> Result<(), Refused> {
    let producer = (transactional_id, header.producer_id, header.producer_epoch);
    let verified = if broker.txns.coordinates(transactional_id) {
        broker
            .txns
            .verify_partitions(
                transactional_id,
                header.producer_id,
                header.producer_epoch,
                &[(topic.to_owned(), index)],
            )
            .map(|found| found.first().copied().unwrap_or(false))
            .map_err(|e| e.to_kafka(false))
    } else if let Some(quorum) = &broker.quorum {
        let coordinator_partition =
            crate::internal_topic::partition_for(transactional_id, broker.txns.partitions());
        tokio::runtime::Handle::current().block_on(crate::replication::verify_in_transaction(
            quorum,
            coordinator_partition,
            producer,
            (topic, index),
        ))
    } else {
        Ok(true)
    };
    match verified {
        Ok(true) => Ok(()),
        Ok(false) | Err(ResponseError::InvalidTxnState) => Err(Refused::with_message(
            ResponseError::InvalidTxnState,
            "the partition is not in the producer's ongoing transaction (it ended, or the \
             partition was not added to it)",
        )),
        Err(ResponseError::InvalidProducerEpoch | ResponseError::ProducerFenced) => {
            Err(Refused::with_message(
                ResponseError::InvalidProducerEpoch,
                "the transaction's coordinator knows a newer epoch of this producer",
            ))
        }
        Err(ResponseError::InvalidProducerIdMapping) => Err(Refused::with_message(
            ResponseError::InvalidProducerIdMapping,
            "the transaction's coordinator does not know this producer",
        )),
        Err(other) => {
            tracing::debug!(
                transactional_id,
                "verifying a transactional batch: {other:?}"
            );
            Err(Refused::with_message(
                ResponseError::NotEnoughReplicas,
                "the transaction's coordinator could not check the batch yet; retry",
            ))
        }
    }
}

/// A transactional produce the coordinator refused, as Produce says it.
fn refused_by_txn(e: TxnError) -> Refused {
    let (error, message) = match e {
        // Produce has no PRODUCER_FENCED; clients take this one as fenced.
        TxnError::Fenced => (
            ResponseError::InvalidProducerEpoch,
            "the producer was fenced by a newer instance",
        ),
        TxnError::UnknownProducer => (
            ResponseError::InvalidProducerIdMapping,
            "the producer id is not the transactional id's",
        ),
        TxnError::InvalidState => (
            ResponseError::InvalidTxnState,
            "the partition is not in an ongoing transaction of this producer",
        ),
        TxnError::Storage => (
            ResponseError::KafkaStorageError,
            "the broker could not store the batch",
        ),
        TxnError::NotCoordinator => (
            ResponseError::NotCoordinator,
            "another node coordinates the transactional id",
        ),
    };
    Refused::with_message(error, message)
}
