//! Offset lookups: ListOffsets (earliest, latest, by timestamp) and OffsetForLeaderEpoch.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};

use super::partitions::{Refused, answer_each_led, partition_answer};
use crate::broker::Broker;

use kafka_protocol::messages::ResponseKind;

use super::route::{Reply, Route, route};

pub(super) static ROUTES: &[Route] = &[
    route!(ListOffsets, 1..=7, disk, |b, r, c| {
        Reply::send(ResponseKind::ListOffsets(list_offsets(b, r, c.version)))
    }),
    route!(OffsetForLeaderEpoch, 2..=4, disk, |b, r, _c| {
        Reply::send(ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch(
            b, r,
        )))
    }),
];

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

partition_answer!(ListOffsetsPartitionResponse, |index| {
    ListOffsetsPartitionResponse::default()
        .with_partition_index(index)
        .with_timestamp(-1)
        .with_offset(-1)
});

partition_answer!(EpochEndOffset, |index| {
    EpochEndOffset::default()
        .with_partition(index)
        .with_leader_epoch(-1)
        .with_end_offset(-1)
});

pub fn list_offsets(
    broker: &Broker,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let read_committed = version >= 2 && request.isolation_level == 1;
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = answer_each_led(
                broker,
                t.name.as_str(),
                t.partitions,
                |p| p.partition_index,
                |p, partition, answer: ListOffsetsPartitionResponse| {
                    // The leader epoch field exists from v4 on.
                    let epoch = if version >= 4 {
                        partition.leader_epoch()
                    } else {
                        -1
                    };
                    let answer = answer.with_leader_epoch(epoch);
                    let log = partition.log();
                    let found = match p.timestamp {
                        // Read-committed clients see the end at the last stable offset.
                        LATEST | LATEST_TIERED if read_committed => {
                            Ok(Some((log.last_stable_offset(), -1)))
                        }
                        LATEST | LATEST_TIERED => Ok(Some((log.next_offset(), -1))),
                        EARLIEST | EARLIEST_LOCAL => Ok(Some((log.log_start_offset(), -1))),
                        MAX_TIMESTAMP => log.max_timestamp(),
                        ts => log.offset_for_timestamp(ts),
                    };
                    match found {
                        Ok(Some((offset, timestamp))) => {
                            Ok(answer.with_offset(offset).with_timestamp(timestamp))
                        }
                        Ok(None) => Ok(answer),
                        Err(e) => {
                            tracing::error!("offset lookup failed: {e}");
                            Err(ResponseError::KafkaStorageError.into())
                        }
                    }
                },
            );
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// The leader epoch never changes (it is always 0), so the end of epoch 0 is the log end.
pub fn offset_for_leader_epoch(
    broker: &Broker,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = answer_each_led(
                broker,
                t.topic.as_str(),
                t.partitions,
                |p| p.partition,
                |p, partition, answer: EpochEndOffset| {
                    let current = partition.leader_epoch();
                    if p.current_leader_epoch > current {
                        return Err(Refused::from(ResponseError::UnknownLeaderEpoch));
                    }
                    if p.current_leader_epoch >= 0 && p.current_leader_epoch < current {
                        return Err(Refused::from(ResponseError::FencedLeaderEpoch));
                    }
                    if p.leader_epoch > current || p.leader_epoch < 0 {
                        return Ok(answer);
                    }
                    let (epoch, end) = partition.log().end_offset_for_epoch(p.leader_epoch);
                    Ok(answer.with_leader_epoch(epoch).with_end_offset(end))
                },
            );
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
