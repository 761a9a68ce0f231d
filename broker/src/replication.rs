//! Followers copy their leaders, as Kafka's replica fetchers do: for each node it follows, a
//! node runs one fetcher that sends that leader Fetch requests with its own id as
//! `replica_id`, from each partition's log end, and appends what comes back as it is (offsets,
//! leader epochs and all) with [`PartitionLog::append_replica`]. The leader learns each
//! follower's log end from the fetch offset, moves the high watermark up to the lowest log end
//! of the in-sync replicas, and answers it in every fetch; the follower keeps it too.
//!
//! When a partition gets a new leader, its followers first ask it where their logs part
//! (OffsetForLeaderEpoch with the latest leader epoch each has, KIP-101) and cut their own log
//! there: what a follower has past that point was never acknowledged to `acks=all` and is not
//! the leader's, so it must not survive (nor be served should that follower lead later).
//!
//! [`PartitionLog::append_replica`]: crate::storage::PartitionLog::append_replica

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::broker::Broker;
use crate::metadata::{MetadataImage, NO_LEADER, NodeId};
use crate::quorum::Quorum;
use crate::storage::batch::Marker;
use crate::storage::log::AppendError;
use crate::topics::Partition;

/// The Fetch version a follower speaks (the highest this broker serves).
const FETCH_VERSION: i16 = 12;
/// The OffsetForLeaderEpoch version a follower speaks.
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// How long a leader may hold a follower's fetch when it has nothing new.
const MAX_WAIT_MS: i32 = 500;
/// Pause after a failed fetch before the next try.
const BACKOFF: Duration = Duration::from_millis(200);

/// The partitions `me` follows whose leader is `leader`: topic name, id and index.
pub fn followed(image: &MetadataImage, me: NodeId, leader: NodeId) -> Vec<FollowedAt> {
    let mut followed = Vec::new();
    for (id, topic) in &image.topics {
        for (index, p) in &topic.partitions {
            if p.leader == leader && leader != me && p.replicas.contains(&me) {
                followed.push(FollowedAt {
                    name: topic.name.clone(),
                    id: *id,
                    index: *index,
                    epoch: p.leader_epoch,
                });
            }
        }
    }
    followed
}

/// A partition the metadata says this node follows, at the leader epoch it says.
pub struct FollowedAt {
    name: String,
    id: Uuid,
    index: i32,
    epoch: i32,
}

/// The leaders `me` follows some partition of.
pub fn leaders_followed(image: &MetadataImage, me: NodeId) -> Vec<NodeId> {
    let mut leaders: Vec<NodeId> = image
        .topics
        .values()
        .flat_map(|t| t.partitions.values())
        .filter(|p| p.leader != me && p.leader != NO_LEADER && p.replicas.contains(&me))
        .map(|p| p.leader)
        .collect();
    leaders.sort_unstable();
    leaders.dedup();
    leaders
}

/// Copies from `leader` every partition this node follows there, until there are none.
pub async fn fetch_from(broker: Arc<Broker>, quorum: Arc<Quorum>, leader: NodeId) {
    let me = broker.node_id();
    let mut connection: Option<LeaderConnection> = None;
    let mut images = quorum.subscribe();
    loop {
        let image = images.borrow_and_update().clone();
        let followed = followed(&image, me, leader);
        if followed.is_empty() {
            return;
        }
        let address = image
            .brokers
            .get(&leader)
            .map(|b| format!("{}:{}", b.host, b.port));
        let partitions = local_partitions(&broker, &followed);
        if broker.link.nodes_cut() {
            connection = None;
        }
        let settled = match connect(&mut connection, address, &broker.link).await {
            Ok(leader_connection) => {
                match cut_short(&broker, one_round(leader_connection, me, partitions)).await {
                    Ok(settled) => settled,
                    Err(e) => {
                        tracing::debug!(leader, error = %e, "fetch from the leader failed");
                        connection = None;
                        false
                    }
                }
            }
            Err(e) => {
                tracing::debug!(leader, error = %e, "cannot reach the leader");
                false
            }
        };
        if !settled {
            // Wait for the metadata to move (a new leader) or a moment.
            let _ = tokio::time::timeout(BACKOFF, images.changed()).await;
        }
    }
}

/// The open connection to the leader at `address`, opened if there is none.
async fn connect<'a>(
    connection: &'a mut Option<LeaderConnection>,
    address: Option<String>,
    link: &crate::link::Link,
) -> std::io::Result<&'a mut LeaderConnection> {
    link.check()?;
    if connection.is_none() {
        let address =
            address.ok_or_else(|| std::io::Error::other("the leader is not registered"))?;
        *connection = Some(LeaderConnection::open(&address).await?);
    }
    Ok(connection.as_mut().expect("opened above"))
}

/// One exchange with the leader: the partitions that have not checked their log against the
/// leader's since it became leader do that (OffsetForLeaderEpoch, then cut); the others fetch.
/// Ok(false) when nothing could be done (wait a moment).
async fn one_round(
    connection: &mut LeaderConnection,
    me: NodeId,
    partitions: Vec<Followed>,
) -> std::io::Result<bool> {
    let (unchecked, ready): (Vec<Followed>, Vec<Followed>) =
        partitions.into_iter().partition(|p| p.local.unchecked());
    if !unchecked.is_empty() {
        let answer = connection
            .call(
                &epochs_request(me, &unchecked),
                OFFSET_FOR_LEADER_EPOCH_VERSION,
            )
            .await?;
        return Ok(
            tokio::task::spawn_blocking(move || part(&unchecked, answer))
                .await
                .unwrap_or(false),
        );
    }
    if ready.is_empty() {
        return Ok(false);
    }
    let answer = connection
        .call(&fetch_request(me, &ready), FETCH_VERSION)
        .await?;
    Ok(tokio::task::spawn_blocking(move || take(&ready, answer))
        .await
        .unwrap_or(false))
}

/// A followed partition: where it is in the request, and this node's copy.
struct Followed {
    name: String,
    index: i32,
    local: Arc<Partition>,
}

/// This node's copies of the `followed` partitions that follow their leader at the epoch the
/// metadata says. One still led here, or at another epoch, waits for the metadata to be
/// applied to it (as a follower, at a new epoch, it first checks its log against the leader's).
fn local_partitions(broker: &Broker, followed: &[FollowedAt]) -> Vec<Followed> {
    followed
        .iter()
        .filter_map(|f| {
            let local = broker.topics.get_by_id(f.id)?.partition(f.index)?.clone();
            if local.leads() || local.leader_epoch() != f.epoch {
                return None;
            }
            Some(Followed {
                name: f.name.clone(),
                index: f.index,
                local,
            })
        })
        .collect()
}

/// The followed partition an answer is about.
fn find<'a>(partitions: &'a [Followed], topic: &TopicName, index: i32) -> Option<&'a Followed> {
    partitions
        .iter()
        .find(|p| p.name == topic.as_str() && p.index == index)
}

/// `partitions` grouped by topic name, each made into a request's entry by `entry`.
fn by_topic<T>(
    partitions: &[Followed],
    entry: impl Fn(&Followed) -> T,
) -> Vec<(TopicName, Vec<T>)> {
    let mut topics: Vec<(TopicName, Vec<T>)> = Vec::new();
    for p in partitions {
        match topics.iter_mut().find(|(name, _)| name.as_str() == p.name) {
            Some((_, entries)) => entries.push(entry(p)),
            None => topics.push((
                TopicName(StrBytes::from_string(p.name.clone())),
                vec![entry(p)],
            )),
        }
    }
    topics
}

fn fetch_request(me: NodeId, partitions: &[Followed]) -> FetchRequest {
    let topics = by_topic(partitions, |p| {
        FetchPartition::default()
            .with_partition(p.index)
            .with_fetch_offset(p.local.log().next_offset())
            .with_current_leader_epoch(p.local.leader_epoch())
            .with_partition_max_bytes(1024 * 1024)
    });
    FetchRequest::default()
        .with_replica_id(BrokerId(me))
        .with_max_wait_ms(MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(16 * 1024 * 1024)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    FetchTopic::default()
                        .with_topic(name)
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

/// Asks the leader where each partition's log ended in the latest epoch this node has.
fn epochs_request(me: NodeId, partitions: &[Followed]) -> OffsetForLeaderEpochRequest {
    let topics = by_topic(partitions, |p| {
        OffsetForLeaderPartition::default()
            .with_partition(p.index)
            .with_current_leader_epoch(p.local.leader_epoch())
            .with_leader_epoch(p.local.log().latest_epoch())
    });
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(me))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(name)
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

/// Cuts each partition's log where it parts from the leader's. Returns false if one could not
/// be checked (the node asked no longer leads it: wait for the metadata).
fn part(partitions: &[Followed], answer: OffsetForLeaderEpochResponse) -> bool {
    let mut settled = true;
    for topic in &answer.topics {
        for result in &topic.partitions {
            let Some(p) = find(partitions, &topic.topic, result.partition) else {
                continue;
            };
            if result.error_code != 0 {
                settled = false;
                continue;
            }
            if let Err(e) = p
                .local
                .part_from_leader(result.leader_epoch, result.end_offset)
            {
                tracing::warn!(topic = p.name, partition = p.index, error = %e, "cannot cut the log back");
                settled = false;
            }
        }
    }
    settled
}

/// Appends what the leader sent and takes its high watermark. Returns false if a partition
/// needs the metadata to move first (the node asked no longer leads it).
fn take(partitions: &[Followed], response: FetchResponse) -> bool {
    let mut settled = true;
    for topic in &response.responses {
        for answer in &topic.partitions {
            let Some(p) = find(partitions, &topic.topic, answer.partition_index) else {
                continue;
            };
            let error = ResponseError::try_from_code(answer.error_code);
            match error {
                None => {
                    let records = answer.records.clone().unwrap_or_default();
                    match p.local.append_replica(&records) {
                        Ok(()) => p.local.follow_high_watermark(answer.high_watermark),
                        Err(e) => {
                            tracing::warn!(topic = p.name, partition = p.index, error = %e, "cannot append what the leader sent");
                            if matches!(e, AppendError::Misplaced { .. }) {
                                // The logs part somewhere: check where again.
                                p.local.recheck();
                            }
                            settled = false;
                        }
                    }
                }
                Some(ResponseError::OffsetOutOfRange) => {
                    let start = answer.log_start_offset;
                    let mut log = p.local.log();
                    if log.next_offset() < start {
                        // Before the leader's log start: what is missing is gone there too.
                        tracing::warn!(
                            topic = p.name,
                            partition = p.index,
                            start,
                            "behind the leader's log start: starting over there"
                        );
                        if let Err(e) = log.restart_at(start) {
                            tracing::warn!(topic = p.name, partition = p.index, error = %e, "cannot start the log over");
                        }
                    } else {
                        // Past the leader's log: check where the two part again.
                        tracing::warn!(
                            topic = p.name,
                            partition = p.index,
                            "out of the leader's range"
                        );
                        p.local.recheck();
                    }
                    settled = false;
                }
                Some(_) => settled = false,
            }
        }
    }
    settled
}

/// One connection to a leader, one request at a time.
/// `round`, unless this node's link is cut meanwhile (an error then).
async fn cut_short<T>(
    broker: &Broker,
    round: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::select! {
        result = round => result,
        _ = broker.link.nodes_cut_off() => Err(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "this node's network was cut",
        )),
    }
}

/// Writes `producer_id`'s transaction marker into a partition another node leads, as Kafka's
/// transaction coordinator does: WriteTxnMarkers to the partition's leader, which answers once
/// its in-sync replicas have the marker. An error leaves the transaction to be ended again,
/// except a fenced one (the partition has seen a newer producer or coordinator epoch).
pub async fn write_marker(
    quorum: &Quorum,
    (topic, index): (&str, i32),
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
) -> Result<(), AppendError> {
    use kafka_protocol::messages::WriteTxnMarkersRequest;
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    let (leader, address) = leader_of(quorum, (topic, index))
        .ok_or_else(|| std::io::Error::other(format!("{topic}-{index} has no leader")))?;
    let written = WritableTxnMarker::default()
        .with_producer_id(kafka_protocol::messages::ProducerId(producer_id))
        .with_producer_epoch(producer_epoch)
        .with_transaction_result(marker.commit)
        .with_coordinator_epoch(marker.coordinator_epoch)
        .with_topics(vec![
            WritableTxnMarkerTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_indexes(vec![index]),
        ]);
    let request = WriteTxnMarkersRequest::default().with_markers(vec![written]);
    let answer = ask(quorum, &address, &request, 1).await?;
    let code = answer
        .markers
        .iter()
        .flat_map(|m| &m.topics)
        .flat_map(|t| &t.partitions)
        .map(|p| p.error_code)
        .find(|c| *c != 0);
    match code {
        None => Ok(()),
        Some(code) => match ResponseError::try_from_code(code) {
            Some(
                fenced @ (ResponseError::InvalidProducerEpoch
                | ResponseError::TransactionCoordinatorFenced),
            ) => Err(AppendError::LeaderRefused(fenced)),
            _ => Err(AppendError::Io(std::io::Error::other(format!(
                "node {leader} did not write the marker into {topic}-{index}: error {code}"
            )))),
        },
    }
}

/// Asks the coordinator of `transactional_id`, the leader of `coordinator_partition` of
/// `__transaction_state`, whether `topic`-`index` is in the producer's ongoing transaction
/// (KIP-890: AddPartitionsToTxn v4 with `verify_only`, as Kafka's partition leaders ask before
/// a producer's first transactional batch). `Ok(false)`: it is not (the transaction ended, or
/// never added it); an error: the coordinator's own (a fenced epoch, say), or
/// `CoordinatorNotAvailable` when it could not be asked.
pub async fn verify_in_transaction(
    quorum: &Quorum,
    coordinator_partition: i32,
    (transactional_id, producer_id, producer_epoch): (&str, i64, i16),
    (topic, index): (&str, i32),
) -> Result<bool, ResponseError> {
    use kafka_protocol::messages::AddPartitionsToTxnRequest;
    use kafka_protocol::messages::add_partitions_to_txn_request::{
        AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
    };
    use kafka_protocol::messages::{ProducerId, TransactionalId};
    let state_partition = (crate::txn::TRANSACTION_STATE_TOPIC, coordinator_partition);
    let (_, address) =
        leader_of(quorum, state_partition).ok_or(ResponseError::CoordinatorNotAvailable)?;
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                transactional_id.to_owned(),
            )))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_verify_only(true)
            .with_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(vec![index]),
            ]),
    ]);
    let unavailable = |e: std::io::Error| {
        tracing::debug!(transactional_id, "verifying a transactional batch: {e}");
        ResponseError::CoordinatorNotAvailable
    };
    let answer = ask(quorum, &address, &request, 4)
        .await
        .map_err(unavailable)?;
    // The request's own error, else the one partition's.
    let partition_code = answer
        .results_by_transaction
        .iter()
        .flat_map(|t| &t.topic_results)
        .flat_map(|t| &t.results_by_partition)
        .map(|p| p.partition_error_code)
        .next();
    let code = match answer.error_code {
        0 => partition_code.unwrap_or(0),
        code => code,
    };
    match ResponseError::try_from_code(code) {
        None => Ok(true),
        Some(ResponseError::InvalidTxnState) => Ok(false),
        Some(other) => Err(other),
    }
}

/// The node that leads `topic`-`index` in the metadata, and its address.
fn leader_of(quorum: &Quorum, (topic, index): (&str, i32)) -> Option<(NodeId, String)> {
    let image = quorum.image();
    let leader = image
        .topic_id(topic)
        .and_then(|id| image.topics[&id].partitions.get(&index))
        .map_or(NO_LEADER, |p| p.leader);
    let node = image.brokers.get(&leader)?;
    Some((leader, format!("{}:{}", node.host, node.port)))
}

/// One request to another node, on a connection of its own, unless this node's link is cut.
async fn ask<R: Request>(
    quorum: &Quorum,
    address: &str,
    request: &R,
    version: i16,
) -> std::io::Result<R::Response> {
    quorum.link().check()?;
    LeaderConnection::open(address)
        .await?
        .call(request, version)
        .await
}

struct LeaderConnection {
    stream: TcpStream,
    correlation: i32,
}

impl LeaderConnection {
    async fn open(address: &str) -> std::io::Result<Self> {
        let stream =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address)).await??;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            correlation: 0,
        })
    }

    /// Sends `request` at `version` and waits (within the leader's longest hold and some
    /// room) for its answer.
    async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> std::io::Result<R::Response> {
        let limit = Duration::from_millis(MAX_WAIT_MS as u64) + Duration::from_secs(10);
        tokio::time::timeout(limit, self.exchange(request, version))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))?
    }

    async fn exchange<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> std::io::Result<R::Response> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(crate::link::NODE_CLIENT_ID)));
        let mut body = BytesMut::new();
        body.put_i32(0); // the length, filled below
        header
            .encode(&mut body, R::header_version(version))
            .map_err(std::io::Error::other)?;
        request
            .encode(&mut body, version)
            .map_err(std::io::Error::other)?;
        let length = (body.len() - 4) as i32;
        body[..4].copy_from_slice(&length.to_be_bytes());
        self.stream.write_all(&body).await?;
        let mut length = [0u8; 4];
        self.stream.read_exact(&mut length).await?;
        let length = i32::from_be_bytes(length).max(0) as usize;
        let mut frame = vec![0u8; length];
        self.stream.read_exact(&mut frame).await?;
        let mut frame = Bytes::from(frame);
        let api = ApiKey::try_from(R::KEY).map_err(|_| std::io::Error::other("an unknown API"))?;
        let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
            .map_err(std::io::Error::other)?;
        if header.correlation_id != self.correlation {
            return Err(std::io::Error::other("an answer out of order"));
        }
        R::Response::decode(&mut frame, version).map_err(std::io::Error::other)
    }
}
