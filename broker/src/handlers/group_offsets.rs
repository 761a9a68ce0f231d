//! OffsetCommit, OffsetFetch, OffsetDelete and DeleteGroups, backed by the durable offset store.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};

use super::partitions::look_up;
use super::route::{code, str_bytes};
use crate::broker::Broker;
use crate::offset_store::Committed;

use kafka_protocol::messages::ResponseKind;

use super::route::{Reply, Route, route};

/// Both take the offset store's lock, which a commit holds across its fsync.
pub(super) static ROUTES: &[Route] = &[
    route!(OffsetCommit, 2..=8, disk, |b, r, _c| {
        Reply::send(ResponseKind::OffsetCommit(commit(b, r)))
    }),
    route!(OffsetFetch, 1..=8, disk, |b, r, c| {
        Reply::send(ResponseKind::OffsetFetch(fetch(b, r, c.version)))
    }),
    route!(OffsetDelete, 0..=0, disk, |b, r, _c| {
        Reply::send(ResponseKind::OffsetDelete(offset_delete(b, r)))
    }),
    route!(DeleteGroups, 0..=2, disk, |b, r, _c| {
        Reply::send(ResponseKind::DeleteGroups(delete_groups(b, r)))
    }),
];

/// Deletes groups that have no members, with their committed offsets.
pub fn delete_groups(broker: &Broker, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = request
        .groups_names
        .into_iter()
        .map(|group| {
            let name = group.as_str();
            let deleted = match not_coordinator(broker, name) {
                Some(e) => Err(e),
                None => broker.groups.delete_if_empty(name),
            };
            let error = match deleted {
                Err(e) => Some(e),
                Ok(known) if !known && !broker.offsets.has_group(name) => {
                    Some(ResponseError::GroupIdNotFound)
                }
                Ok(_) => broker.offsets.delete(name, None).err().map(|e| {
                    tracing::error!(group = name, "could not delete a group's offsets: {e}");
                    ResponseError::CoordinatorNotAvailable
                }),
            };
            DeletableGroupResult::default()
                .with_group_id(group)
                .with_error_code(code(error))
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}

/// Deletes committed offsets of a group, except for topics its members subscribe to.
pub fn offset_delete(broker: &Broker, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = request.group_id.as_str();
    if let Some(e) = not_coordinator(broker, group) {
        return OffsetDeleteResponse::default().with_error_code(e.code());
    }
    let subscribed = broker.groups.subscribed_topics(group);
    if subscribed.is_none() && !broker.offsets.has_group(group) {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupIdNotFound.code());
    }
    let in_use = |topic: &str| match &subscribed {
        None => false,
        Some(None) => true,
        Some(Some(topics)) => topics.iter().any(|t| t == topic),
    };
    let mut doomed = Vec::new();
    let mut topics = Vec::new();
    for t in request.topics {
        let busy = in_use(t.name.as_str());
        let partitions = look_up(broker, t.name.as_str(), t.partitions, |p| p.partition_index)
            .into_iter()
            .map(|(p, found)| {
                let error = match found {
                    Err(e) => Some(e),
                    Ok(_) if busy => Some(ResponseError::GroupSubscribedToTopic),
                    Ok(_) => {
                        doomed.push((t.name.as_str().to_string(), p.partition_index));
                        None
                    }
                };
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code(error))
            })
            .collect();
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    if let Err(e) = broker.offsets.delete(group, Some(&doomed)) {
        tracing::error!(group, "could not delete offsets: {e}");
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code());
    }
    OffsetDeleteResponse::default().with_topics(topics)
}

/// What a request asks to commit for one partition: its offset, leader epoch and metadata.
pub(super) fn committed(
    offset: i64,
    leader_epoch: i32,
    metadata: Option<&kafka_protocol::protocol::StrBytes>,
) -> Committed {
    Committed {
        offset,
        leader_epoch,
        metadata: metadata.map(|m| m.as_str().to_string()),
    }
}

/// NOT_COORDINATOR for a group this node does not coordinate: in a cluster, another node leads
/// its partition of `__consumer_offsets` (the client asks FindCoordinator again).
pub(super) fn not_coordinator(broker: &Broker, group: &str) -> Option<ResponseError> {
    (!broker.offsets.coordinates(group)).then_some(ResponseError::NotCoordinator)
}

/// Longest metadata string kept with a committed offset (Kafka's `offset.metadata.max.bytes`).
const MAX_METADATA_BYTES: usize = 4096;

/// Each topic's name and partitions, each partition with why it is refused, if it is.
pub(super) type Checked<P> = Vec<(TopicName, Vec<(P, Option<ResponseError>)>)>;

/// The partitions of `checked` that nothing refused, with their topic's name.
pub(super) fn accepted<P>(checked: &Checked<P>) -> impl Iterator<Item = (&TopicName, &P)> {
    checked.iter().flat_map(|(name, partitions)| {
        partitions
            .iter()
            .filter(|(_, refused)| refused.is_none())
            .map(move |(p, _)| (name, p))
    })
}

/// The partitions of an OffsetCommit or TxnOffsetCommit request, topic by topic, each with
/// what is wrong with committing to it whatever the group says: a partition that doesn't exist
/// is not stored (as in Kafka), and neither is oversized metadata. `topic` splits a topic
/// into its name and partitions, `metadata` reads a partition's.
pub(super) fn checked<T, P>(
    broker: &Broker,
    topics: Vec<T>,
    topic: impl Fn(T) -> (TopicName, Vec<P>),
    index: impl Fn(&P) -> i32,
    metadata: impl Fn(&P) -> Option<&str>,
) -> Checked<P> {
    topics
        .into_iter()
        .map(|t| {
            let (name, partitions) = topic(t);
            let partitions = look_up(broker, name.as_str(), partitions, &index)
                .into_iter()
                .map(|(p, found)| {
                    let refused = match found {
                        Err(e) => Some(e),
                        Ok(_) if metadata(&p).is_some_and(|m| m.len() > MAX_METADATA_BYTES) => {
                            Some(ResponseError::OffsetMetadataTooLarge)
                        }
                        Ok(_) => None,
                    };
                    (p, refused)
                })
                .collect();
            (name, partitions)
        })
        .collect()
}

pub fn commit(broker: &Broker, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = request.group_id.as_str();
    let mut error = not_coordinator(broker, group).or_else(|| {
        broker.groups.validate_commit(
            group,
            request.generation_id_or_member_epoch,
            request.member_id.as_str(),
            request.group_instance_id.as_deref(),
        )
    });
    let topics = checked(
        broker,
        request.topics,
        |t| (t.name, t.partitions),
        |p| p.partition_index,
        |p| p.committed_metadata.as_deref(),
    );
    if error.is_none() {
        let commits = accepted(&topics)
            .map(|(name, p)| {
                let committed = committed(
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.committed_metadata.as_ref(),
                );
                (name.as_str().to_string(), p.partition_index, committed)
            })
            .collect();
        if let Err(e) = broker.offsets.commit(group, commits) {
            tracing::error!(group, "offset commit failed: {e}");
            error = Some(ResponseError::CoordinatorNotAvailable);
        }
    }
    let topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(p, refused)| {
                    // An unknown partition is reported as such even when the group refuses
                    // the commit, as Kafka checks it first.
                    let error = match refused {
                        Some(ResponseError::UnknownTopicOrPartition) => refused,
                        _ => error.or(refused),
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code(error))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Per topic, each requested partition with its committed offset (if any), or the error.
type TopicOffsets = Vec<(String, Vec<(i32, Result<Option<Committed>, ResponseError>)>)>;

/// Committed offsets of one group: for the requested partitions, or all when `None`. With
/// `require_stable` (KIP-447, sent by read-committed consumers), a partition for which a
/// transaction not yet complete has staged an offset answers UNSTABLE_OFFSET_COMMIT: the new
/// owner of a partition after a rebalance must not start from an offset that transaction is
/// about to move, or it would process the same input again.
fn lookup(
    broker: &Broker,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> TopicOffsets {
    let wanted = wanted.unwrap_or_else(|| {
        let mut all: Vec<(String, Vec<i32>)> = Vec::new();
        for (t, p, _) in broker.offsets.group_offsets(group) {
            match all.last_mut() {
                Some((last, parts)) if *last == t => parts.push(p),
                _ => all.push((t, vec![p])),
            }
        }
        all
    });
    wanted
        .into_iter()
        .map(|(t, ps)| {
            let parts = ps
                .into_iter()
                .map(|p| {
                    // Checked before the offset is read: a transaction completing in between
                    // has applied its offsets by the time it stops being pending.
                    let unstable = broker.txns.has_unstable_offset(group, &t, p)
                        || broker.offsets.has_pending(group, &t, p);
                    if require_stable && unstable {
                        (p, Err(ResponseError::UnstableOffsetCommit))
                    } else {
                        (p, Ok(broker.offsets.fetch(group, &t, p)))
                    }
                })
                .collect();
            (t, parts)
        })
        .collect()
}

/// The found offsets as response topics: `$topic` and `$partition` are v8's types or the older
/// versions' (distinct types with the same fields).
macro_rules! response_topics {
    ($found:expr, $topic:ident, $partition:ident) => {
        $found
            .into_iter()
            .map(|(t, parts)| {
                $topic::default()
                    .with_name(TopicName(str_bytes(t)))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, c)| {
                                let (offset, epoch, metadata, error) = split(c);
                                $partition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(metadata)
                                    .with_error_code(error)
                            })
                            .collect(),
                    )
            })
            .collect()
    };
}

/// The requested partitions of each topic, `None` for all the group has.
fn wanted<T>(
    topics: Option<Vec<T>>,
    name_and_partitions: impl Fn(T) -> (String, Vec<i32>),
) -> Option<Vec<(String, Vec<i32>)>> {
    topics.map(|ts| ts.into_iter().map(name_and_partitions).collect())
}

pub fn fetch(broker: &Broker, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let stable = request.require_stable;
    if version >= 8 {
        // v8+: a batch of groups.
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                if let Some(e) = not_coordinator(broker, g.group_id.as_str()) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(e.code());
                }
                let wanted = wanted(g.topics, |t| {
                    (t.name.as_str().to_string(), t.partition_indexes)
                });
                let found = lookup(broker, g.group_id.as_str(), wanted, stable);
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(response_topics!(
                        found,
                        OffsetFetchResponseTopics,
                        OffsetFetchResponsePartitions
                    ))
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    if let Some(e) = not_coordinator(broker, request.group_id.as_str()) {
        return OffsetFetchResponse::default().with_error_code(e.code());
    }
    let wanted = wanted(request.topics, |t| {
        (t.name.as_str().to_string(), t.partition_indexes)
    });
    let found = lookup(broker, request.group_id.as_str(), wanted, stable);
    OffsetFetchResponse::default().with_topics(response_topics!(
        found,
        OffsetFetchResponseTopic,
        OffsetFetchResponsePartition
    ))
}

/// A partition's committed offset, leader epoch, metadata and error code, as OffsetFetch
/// answers them (-1 and no error for a partition without a committed offset).
fn split(
    c: Result<Option<Committed>, ResponseError>,
) -> (i64, i32, Option<kafka_protocol::protocol::StrBytes>, i16) {
    match c {
        Ok(Some(c)) => (
            c.offset,
            c.leader_epoch,
            Some(str_bytes(c.metadata.unwrap_or_default())),
            0,
        ),
        Ok(None) => (-1, -1, Some(str_bytes("")), 0),
        Err(e) => (-1, -1, Some(str_bytes("")), e.code()),
    }
}
