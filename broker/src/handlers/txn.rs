//! Transactions (KIP-98): AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and EndTxn, on
//! the transaction coordinator (`crate::txn`); DescribeTransactions, ListTransactions and
//! DescribeProducers (KIP-664) for admin tools. InitProducerId is in `producer_id`; transactional
//! Produce in `produce`; read-committed Fetch in `fetch`.

use std::collections::BTreeSet;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestPartition;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, ResponseKind, TopicName,
    TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse, describe_producers_response, describe_transactions_response,
    list_transactions_response, write_txn_markers_response,
};

use super::group_offsets::{Checked, accepted, checked, committed, not_coordinator};
use super::partitions::{Refused, answer_each, answer_each_led, look_up, partition_answer};
use super::route::{code, str_bytes};
use crate::broker::Broker;
use crate::storage::batch::Marker;
use crate::txn::{StagedOffset, TxnError};

use super::route::{Reply, Route, route};

/// Each writes the coordinator's state file; EndTxn also writes markers into partitions.
/// Versions: up to the last before KIP-890's implicit-epoch-bump protocol (EndTxn v5 and the
/// others' newer versions), and AddPartitionsToTxn v4's batched shape is served too.
pub(super) static ROUTES: &[Route] = &[
    route!(AddPartitionsToTxn, 0..=4, disk, |b, r, c| {
        Reply::send(ResponseKind::AddPartitionsToTxn(add_partitions(
            b, r, c.version,
        )))
    }),
    route!(AddOffsetsToTxn, 0..=3, disk, |b, r, c| {
        Reply::send(ResponseKind::AddOffsetsToTxn(add_offsets(b, r, c.version)))
    }),
    route!(TxnOffsetCommit, 0..=3, disk, |b, r, c| {
        Reply::send(ResponseKind::TxnOffsetCommit(txn_offset_commit(
            b, r, c.version,
        )))
    }),
    route!(EndTxn, 0..=3, disk, |b, r, c| {
        Reply::send(ResponseKind::EndTxn(end_txn(b, r, c.version)))
    }),
    // These take the transactional ids' locks, which EndTxn holds while it writes markers.
    route!(DescribeTransactions, 0..=0, disk, |b, r, _c| {
        Reply::send(ResponseKind::DescribeTransactions(describe_transactions(
            b, r,
        )))
    }),
    route!(ListTransactions, 0..=1, disk, |b, r, _c| {
        Reply::send(ResponseKind::ListTransactions(list_transactions(b, r)))
    }),
    route!(DescribeProducers, 0..=0, disk, |b, r, _c| {
        Reply::send(ResponseKind::DescribeProducers(describe_producers(b, r)))
    }),
    // From another node's transaction coordinator, in a cluster: markers for partitions this
    // node leads. Answered once their in-sync replicas have them.
    route!(WriteTxnMarkers, 0..=1, disk, |b, r, _c| {
        Reply::send(ResponseKind::WriteTxnMarkers(write_txn_markers(b, r)))
    }),
];

partition_answer!(
    write_txn_markers_response::WritableTxnMarkerPartitionResult,
    |index| {
        write_txn_markers_response::WritableTxnMarkerPartitionResult::default()
            .with_partition_index(index)
    }
);

/// Writes each marker into the partitions it names that this node leads
/// (NOT_LEADER_OR_FOLLOWER for the others).
pub fn write_txn_markers(
    broker: &Broker,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    use write_txn_markers_response::{WritableTxnMarkerResult, WritableTxnMarkerTopicResult};
    let markers = request
        .markers
        .into_iter()
        .map(|m| {
            let topics = m
                .topics
                .into_iter()
                .map(|t| {
                    let name = t.name.as_str();
                    let partitions = answer_each_led(
                        broker,
                        name,
                        t.partition_indexes,
                        |index| *index,
                        |_, partition, answer| {
                            broker
                                .write_marker_here(
                                    name,
                                    partition,
                                    m.producer_id.0,
                                    m.producer_epoch,
                                    Marker {
                                        commit: m.transaction_result,
                                        coordinator_epoch: m.coordinator_epoch,
                                    },
                                )
                                .map_err(|e| {
                                    tracing::warn!(
                                        topic = name,
                                        partition = partition.index,
                                        "could not write a marker: {e}"
                                    );
                                    Refused::from(e.kafka_error())
                                })?;
                            Ok(answer)
                        },
                    );
                    WritableTxnMarkerTopicResult::default()
                        .with_name(t.name)
                        .with_partitions(partitions)
                })
                .collect();
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics)
        })
        .collect();
    WriteTxnMarkersResponse::default().with_markers(markers)
}

partition_answer!(describe_producers_response::PartitionResponse, |index| {
    describe_producers_response::PartitionResponse::default().with_partition_index(index)
});

/// The producers each asked partition remembers: epoch, last sequence and timestamp, and where
/// their open transaction starts (what `kafka-transactions.sh describe-producers` shows, to
/// find a transaction that hangs a partition's last stable offset).
pub fn describe_producers(
    broker: &Broker,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = answer_each(
                broker,
                t.name.as_str(),
                t.partition_indexes,
                |index| *index,
                |_, partition, answer: describe_producers_response::PartitionResponse| {
                    let producers = partition
                        .log()
                        .active_producers()
                        .into_iter()
                        .map(|p| {
                            describe_producers_response::ProducerState::default()
                                .with_producer_id(ProducerId(p.producer_id))
                                .with_producer_epoch(i32::from(p.epoch))
                                .with_last_sequence(p.last_sequence)
                                .with_last_timestamp(p.last_timestamp)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(p.txn_start_offset)
                        })
                        .collect();
                    Ok(answer.with_active_producers(producers))
                },
            );
            describe_producers_response::TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

pub fn describe_transactions(
    broker: &Broker,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = request
        .transactional_ids
        .into_iter()
        .map(|id| {
            let state = describe_transactions_response::TransactionState::default()
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1);
            if !broker.txns.coordinates(id.as_str()) {
                return state
                    .with_transactional_id(id)
                    .with_error_code(ResponseError::NotCoordinator.code());
            }
            let Some(meta) = broker.txns.describe(id.as_str()) else {
                return state
                    .with_transactional_id(id)
                    .with_error_code(ResponseError::TransactionalIdNotFound.code());
            };
            let mut topics: Vec<describe_transactions_response::TopicData> = Vec::new();
            for (topic, partition) in &meta.partitions {
                match topics.last_mut() {
                    Some(t) if t.topic.as_str() == topic.as_str() => t.partitions.push(*partition),
                    _ => topics.push(
                        describe_transactions_response::TopicData::default()
                            .with_topic(TopicName(str_bytes(topic.clone())))
                            .with_partitions(vec![*partition]),
                    ),
                }
            }
            state
                .with_transactional_id(id)
                .with_transaction_state(str_bytes(meta.state.name()))
                .with_transaction_timeout_ms(meta.timeout_ms as i32)
                .with_transaction_start_time_ms(meta.started_ms)
                .with_producer_id(ProducerId(meta.producer_id))
                .with_producer_epoch(meta.producer_epoch)
                .with_topics(topics)
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

const STATES: &[&str] = &[
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
];

pub fn list_transactions(
    broker: &Broker,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let unknown: Vec<_> = request
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let now = crate::clock::now_ms();
    let states = broker
        .txns
        .snapshot()
        .into_iter()
        .filter(|m| {
            request.state_filters.is_empty()
                || request
                    .state_filters
                    .iter()
                    .any(|s| s.as_str() == m.state.name())
        })
        .filter(|m| {
            request.producer_id_filters.is_empty()
                || request
                    .producer_id_filters
                    .contains(&ProducerId(m.producer_id))
        })
        // v1: only transactions running longer than this (ongoing ones have a start time).
        .filter(|m| {
            request.duration_filter < 0
                || (m.state == crate::txn::TxnState::Ongoing
                    && now - m.started_ms > request.duration_filter)
        })
        .map(|m| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(str_bytes(m.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}

/// What AddPartitionsToTxn decided for one producer's partitions.
enum Outcome {
    /// One is unknown: as in Kafka nothing is added, and the others are "not attempted".
    NotAttempted,
    /// `verify_only`: the partitions not in the transaction, or why none could be checked.
    Verified(Result<BTreeSet<(String, i32)>, ResponseError>),
    /// Added, or the one error of all.
    Added(Option<ResponseError>),
}

/// Adds one producer's partitions (or, `verify_only`, checks they are in its transaction).
fn add_topics(
    broker: &Broker,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
    fenced_code: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let known: Vec<(&TopicName, Vec<(i32, bool)>)> = topics
        .iter()
        .map(|t| {
            let found = look_up(broker, t.name.as_str(), t.partitions.iter().copied(), |p| {
                *p
            });
            let found = found.into_iter().map(|(p, f)| (p, f.is_ok())).collect();
            (&t.name, found)
        })
        .collect();
    let wanted: Vec<(String, i32)> = known
        .iter()
        .flat_map(|(name, partitions)| {
            partitions
                .iter()
                .map(|(p, _)| (name.as_str().to_string(), *p))
        })
        .collect();
    let txns = &broker.txns;
    let added = if known.iter().any(|(_, ps)| ps.iter().any(|(_, k)| !k)) {
        Outcome::NotAttempted
    } else if verify_only {
        let found = txns.verify_partitions(transactional_id, producer_id, epoch, &wanted);
        Outcome::Verified(
            found
                .map(|found| {
                    wanted
                        .iter()
                        .zip(found)
                        .filter(|(_, f)| !f)
                        .map(|(w, _)| w.clone())
                        .collect()
                })
                .map_err(|e| e.to_kafka(fenced_code)),
        )
    } else {
        let added = txns.add_partitions(transactional_id, producer_id, epoch, wanted);
        Outcome::Added(added.err().map(|e| e.to_kafka(fenced_code)))
    };
    known
        .into_iter()
        .map(|(name, partitions)| {
            let results = partitions
                .into_iter()
                .map(|(p, known)| {
                    let error = match &added {
                        Outcome::NotAttempted if known => {
                            Some(ResponseError::OperationNotAttempted)
                        }
                        Outcome::NotAttempted => Some(ResponseError::UnknownTopicOrPartition),
                        Outcome::Verified(Ok(missing)) => missing
                            .contains(&(name.as_str().to_string(), p))
                            .then_some(ResponseError::InvalidTxnState),
                        Outcome::Verified(Err(e)) => Some(*e),
                        Outcome::Added(error) => *error,
                    };
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(p)
                        .with_partition_error_code(code(error))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(name.clone())
                .with_results_by_partition(results)
        })
        .collect()
}

pub fn add_partitions(
    broker: &Broker,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let fenced_code = version >= 2;
    if version <= 3 {
        let results = add_topics(
            broker,
            request.v3_and_below_transactional_id.as_str(),
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            &request.v3_and_below_topics,
            false,
            fenced_code,
        );
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    // v4+: several producers' transactions in one request (sent by brokers in Kafka).
    let results = request
        .transactions
        .iter()
        .map(|t| {
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(add_topics(
                    broker,
                    t.transactional_id.as_str(),
                    t.producer_id.0,
                    t.producer_epoch,
                    &t.topics,
                    t.verify_only,
                    fenced_code,
                ))
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

pub fn add_offsets(
    broker: &Broker,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let error = broker
        .txns
        .add_offsets(
            request.transactional_id.as_str(),
            request.producer_id.0,
            request.producer_epoch,
            request.group_id.as_str(),
        )
        .err()
        .map(|e| e.to_kafka(version >= 2));
    AddOffsetsToTxnResponse::default().with_error_code(code(error))
}

pub fn txn_offset_commit(
    broker: &Broker,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let group = request.group_id.as_str();
    // v3 names the consumer's generation (KIP-447); a stale member may not commit.
    let mut error = if version >= 3 && request.generation_id >= 0 {
        broker.groups.validate_commit(
            group,
            request.generation_id,
            request.member_id.as_str(),
            request.group_instance_id.as_deref(),
        )
    } else {
        None
    };
    let topics = checked(
        broker,
        request.topics,
        |t| (t.name, t.partitions),
        |p| p.partition_index,
        |p| p.committed_metadata.as_deref(),
    );
    if broker.offsets.is_replicated() {
        let producer = (request.producer_id.0, request.producer_epoch);
        error = error.or_else(|| stage_in_cluster(broker, group, &topics, producer));
    } else if error.is_none() {
        // Numbered as of now: a plain commit of the group after this one wins over it.
        let seq = broker.offsets.last_seq();
        let staged: Vec<StagedOffset> = accepted(&topics)
            .map(|(name, p)| StagedOffset {
                group: group.to_string(),
                topic: name.as_str().to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.as_str().to_string()),
                seq: Some(seq),
            })
            .collect();
        error = broker
            .txns
            .stage_offsets(
                request.transactional_id.as_str(),
                request.producer_id.0,
                request.producer_epoch,
                staged,
            )
            .err()
            .map(|e| e.to_kafka(version >= 3));
    }
    let topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(p, refused)| {
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code(refused.or(error)))
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// TxnOffsetCommit in a cluster, as Kafka: this node is the group's coordinator, and writes the
/// offsets to the group's partition of `__consumer_offsets` as records of the transaction.
fn stage_in_cluster(
    broker: &Broker,
    group: &str,
    topics: &Checked<TxnOffsetCommitRequestPartition>,
    producer: (i64, i16),
) -> Option<ResponseError> {
    if let Some(e) = not_coordinator(broker, group) {
        return Some(e);
    }
    let commits = accepted(topics)
        .map(|(name, p)| {
            let committed = committed(
                p.committed_offset,
                p.committed_leader_epoch,
                p.committed_metadata.as_ref(),
            );
            (name.as_str().to_string(), p.partition_index, committed)
        })
        .collect();
    let staged = broker.offsets.stage_transactional(group, producer, commits);
    staged.err().map(|e| {
        tracing::warn!(group, "could not stage a transaction's offsets: {e}");
        ResponseError::CoordinatorNotAvailable
    })
}

pub fn end_txn(broker: &Broker, request: EndTxnRequest, version: i16) -> EndTxnResponse {
    let error = broker
        .txns
        .end_txn(
            broker,
            request.transactional_id.as_str(),
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
        )
        .err()
        .map(|e: TxnError| e.to_kafka(version >= 2));
    EndTxnResponse::default().with_error_code(code(error))
}
