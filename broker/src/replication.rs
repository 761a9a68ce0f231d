//! Followers copy their leaders, as Kafka's replica fetchers do: for each node it follows, a
//! node runs one fetcher that sends that leader Fetch requests with its own id as
//! `replica_id`, from each partition's log end, and appends what comes back as it is (offsets,
//! leader epochs and all) with [`PartitionLog::append_replica`]. The leader learns each
//! follower's log end from the fetch offset, moves the high watermark up to the lowest log end
//! of the in-sync replicas, and answers it in every fetch; the follower keeps it too, so that
//! it knows where to cut back if it has to.
//!
//! [`PartitionLog::append_replica`]: crate::storage::PartitionLog::append_replica

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::broker::Broker;
use crate::metadata::{MetadataImage, NO_LEADER, NodeId};
use crate::quorum::Quorum;
use crate::topics::Partition;

/// The Fetch version a follower speaks (the highest this broker serves).
const FETCH_VERSION: i16 = 12;
/// How long a leader may hold a follower's fetch when it has nothing new.
const MAX_WAIT_MS: i32 = 500;
/// Pause after a failed fetch before the next try.
const BACKOFF: Duration = Duration::from_millis(200);

/// The partitions `me` follows whose leader is `leader`: topic name, id and index.
pub fn followed(image: &MetadataImage, me: NodeId, leader: NodeId) -> Vec<(String, Uuid, i32)> {
    let mut followed = Vec::new();
    for (id, topic) in &image.topics {
        for (index, p) in &topic.partitions {
            if p.leader == leader && leader != me && p.replicas.contains(&me) {
                followed.push((topic.name.clone(), *id, *index));
            }
        }
    }
    followed
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
        let request = fetch_request(me, &partitions);
        let answer = match (&mut connection, address) {
            (Some(c), _) => c.fetch(&request).await,
            (None, Some(address)) => match LeaderConnection::open(&address).await {
                Ok(c) => connection.insert(c).fetch(&request).await,
                Err(e) => Err(e),
            },
            (None, None) => Err(std::io::Error::other("the leader is not registered")),
        };
        let settled = match answer {
            Ok(response) => tokio::task::spawn_blocking(move || take(&partitions, response))
                .await
                .unwrap_or(false),
            Err(e) => {
                tracing::debug!(leader, error = %e, "fetch from the leader failed");
                connection = None;
                false
            }
        };
        if !settled {
            // Wait for the metadata to move (a new leader) or a moment.
            let _ = tokio::time::timeout(BACKOFF, images.changed()).await;
        }
    }
}

/// A followed partition: where it is in the request, and this node's copy.
struct Followed {
    name: String,
    index: i32,
    local: Arc<Partition>,
}

fn local_partitions(broker: &Broker, followed: &[(String, Uuid, i32)]) -> Vec<Followed> {
    followed
        .iter()
        .filter_map(|(name, id, index)| {
            let local = broker.topics.get_by_id(*id)?.partition(*index)?.clone();
            Some(Followed {
                name: name.clone(),
                index: *index,
                local,
            })
        })
        .collect()
}

fn fetch_request(me: NodeId, partitions: &[Followed]) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for p in partitions {
        let fetch = FetchPartition::default()
            .with_partition(p.index)
            .with_fetch_offset(p.local.log().next_offset())
            .with_current_leader_epoch(p.local.leader_epoch())
            .with_partition_max_bytes(1024 * 1024);
        match topics.iter_mut().find(|t| t.topic.as_str() == p.name) {
            Some(topic) => topic.partitions.push(fetch),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(p.name.clone())))
                    .with_partitions(vec![fetch]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(me))
        .with_max_wait_ms(MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(16 * 1024 * 1024)
        .with_topics(topics)
}

/// Appends what the leader sent and takes its high watermark. Returns false if a partition
/// needs the metadata to move first (the node asked no longer leads it).
fn take(partitions: &[Followed], response: FetchResponse) -> bool {
    let mut settled = true;
    for topic in &response.responses {
        for answer in &topic.partitions {
            let Some(p) = partitions
                .iter()
                .find(|p| p.name == topic.topic.as_str() && p.index == answer.partition_index)
            else {
                continue;
            };
            let error = ResponseError::try_from_code(answer.error_code);
            match error {
                None => {
                    let records = answer.records.clone().unwrap_or_default();
                    if let Err(e) = p.local.append_replica(&records) {
                        tracing::warn!(topic = p.name, partition = p.index, error = %e, "cannot append what the leader sent");
                        settled = false;
                    }
                    p.local.follow_high_watermark(answer.high_watermark);
                }
                Some(ResponseError::OffsetOutOfRange) => {
                    // Beyond the leader's log: what this node has past its high watermark is not
                    // the leader's.
                    tracing::warn!(
                        topic = p.name,
                        partition = p.index,
                        "out of the leader's range: cutting back to the high watermark"
                    );
                    if let Err(e) = p.local.truncate_to_high_watermark() {
                        tracing::warn!(error = %e, "cannot cut the log back");
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

    async fn fetch(&mut self, request: &FetchRequest) -> std::io::Result<FetchResponse> {
        let exchange = self.exchange(request);
        let limit = Duration::from_millis(MAX_WAIT_MS as u64) + Duration::from_secs(10);
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no fetch answer"))?
    }

    async fn exchange(&mut self, request: &FetchRequest) -> std::io::Result<FetchResponse> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(FetchRequest::KEY)
            .with_request_api_version(FETCH_VERSION)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("replica-fetcher")));
        let mut body = BytesMut::new();
        body.put_i32(0); // the length, filled below
        header
            .encode(&mut body, FetchRequest::header_version(FETCH_VERSION))
            .map_err(std::io::Error::other)?;
        request
            .encode(&mut body, FETCH_VERSION)
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
        let header = ResponseHeader::decode(
            &mut frame,
            ApiKey::Fetch.response_header_version(FETCH_VERSION),
        )
        .map_err(std::io::Error::other)?;
        if header.correlation_id != self.correlation {
            return Err(std::io::Error::other("an answer out of order"));
        }
        FetchResponse::decode(&mut frame, FETCH_VERSION).map_err(std::io::Error::other)
    }
}
