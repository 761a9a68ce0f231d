//! The walk most requests make: for each named topic, each named partition, looked up once.
//! A partition that does not exist is answered `UNKNOWN_TOPIC_OR_PARTITION` here, so a handler
//! states only its own work on the partitions that do.

use std::sync::Arc;

use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::topics::{Partition, Topic};

/// Why one partition of a request is refused: Kafka's error, and for responses that carry one,
/// the message the client reads (never internal error text).
#[derive(Debug, Clone)]
pub struct Refused {
    pub error: ResponseError,
    pub message: Option<String>,
    /// The records of a produced batch that caused the refusal, by their index in the batch
    /// (KIP-467: the client fails those with the error and the batch's others as innocent).
    pub records: Vec<i64>,
}

impl Refused {
    pub fn with_message(error: ResponseError, message: impl Into<String>) -> Self {
        Self {
            error,
            message: Some(message.into()),
            records: Vec::new(),
        }
    }
}

impl From<ResponseError> for Refused {
    fn from(error: ResponseError) -> Self {
        Self {
            error,
            message: None,
            records: Vec::new(),
        }
    }
}

/// A per-partition answer: what it says before anything is known (its "nothing" values:
/// offsets of -1, no records, ...) and how it says a refusal. Each response type says it once
/// ([`partition_answer!`] for the usual shape).
pub trait PartitionAnswer: Sized {
    fn empty(index: i32) -> Self;
    fn with_refusal(self, refused: Refused) -> Self;
}

/// Declares the [`PartitionAnswer`] of a response type with an `error_code` field:
/// `partition_answer!(Type, |index| empty answer)`.
macro_rules! partition_answer {
    ($ty:ty, |$index:ident| $empty:expr) => {
        impl $crate::handlers::partitions::PartitionAnswer for $ty {
            fn empty($index: i32) -> Self {
                $empty
            }
            fn with_refusal(self, refused: $crate::handlers::partitions::Refused) -> Self {
                self.with_error_code(refused.error.code())
            }
        }
    };
}
pub(crate) use partition_answer;

/// Each entry of `requested` (the partitions a request names in topic `topic`) with its
/// partition, or `Err(UNKNOWN_TOPIC_OR_PARTITION)`; `index` reads an entry's partition index.
/// For handlers that decide about all the partitions before answering any (commits, adding
/// partitions to a transaction).
pub fn look_up<P>(
    broker: &Broker,
    topic: &str,
    requested: impl IntoIterator<Item = P>,
    index: impl Fn(&P) -> i32,
) -> Vec<(P, Result<Arc<Partition>, ResponseError>)> {
    look_up_in(broker.topics.get(topic).as_deref(), requested, index)
}

/// [`look_up`] in a topic already found (`None`: it does not exist).
pub fn look_up_in<P>(
    found: Option<&Topic>,
    requested: impl IntoIterator<Item = P>,
    index: impl Fn(&P) -> i32,
) -> Vec<(P, Result<Arc<Partition>, ResponseError>)> {
    requested
        .into_iter()
        .map(|entry| {
            let partition = found
                .and_then(|t| t.partition(index(&entry)))
                .cloned()
                .ok_or(ResponseError::UnknownTopicOrPartition);
            (entry, partition)
        })
        .collect()
}

/// The answer to each entry of `requested` in topic `topic`: for a partition that exists,
/// `answer` fills in the empty answer it is given; one that does not, and each `answer`
/// refuses, gets the empty answer with the refusal.
pub fn answer_each<P, A: PartitionAnswer>(
    broker: &Broker,
    topic: &str,
    requested: impl IntoIterator<Item = P>,
    index: impl Fn(&P) -> i32,
    answer: impl FnMut(P, &Partition, A) -> Result<A, Refused>,
) -> Vec<A> {
    answer_each_in(
        broker.topics.get(topic).as_deref(),
        requested,
        index,
        answer,
    )
}

/// [`answer_each`] in a topic already found (`None`: it does not exist).
pub fn answer_each_in<P, A: PartitionAnswer>(
    found: Option<&Topic>,
    requested: impl IntoIterator<Item = P>,
    index: impl Fn(&P) -> i32,
    mut answer: impl FnMut(P, &Partition, A) -> Result<A, Refused>,
) -> Vec<A> {
    look_up_in(found, requested, &index)
        .into_iter()
        .map(|(entry, partition)| {
            let at = index(&entry);
            partition
                .map_err(Refused::from)
                .and_then(|p| answer(entry, &p, A::empty(at)))
                .unwrap_or_else(|refused| A::empty(at).with_refusal(refused))
        })
        .collect()
}

/// A partition this node does not lead (in a cluster) is refused `NOT_LEADER_OR_FOLLOWER`: the
/// client asks the metadata again and goes to the leader.
fn led(partition: &Partition) -> Result<(), Refused> {
    if partition.leads() {
        Ok(())
    } else {
        Err(ResponseError::NotLeaderOrFollower.into())
    }
}

/// [`answer_each`] for what only a partition's leader serves (produce, offsets, deleting
/// records): a partition this node does not lead is refused. In a cluster, a request that
/// names a partition this node does not lead (or know) yet first gives it a moment to follow
/// the metadata it has ([`Broker::follow_metadata_briefly`]).
pub fn answer_each_led<P, A: PartitionAnswer>(
    broker: &Broker,
    topic: &str,
    requested: impl IntoIterator<Item = P>,
    index: impl Fn(&P) -> i32,
    mut answer: impl FnMut(P, &Partition, A) -> Result<A, Refused>,
) -> Vec<A> {
    let led_answer = move |entry: P, partition: &Partition, empty: A| {
        led(partition)?;
        answer(entry, partition, empty)
    };
    if broker.quorum.is_none() {
        return answer_each(broker, topic, requested, index, led_answer);
    }
    let requested: Vec<P> = requested.into_iter().collect();
    let all_led = broker.topics.get(topic).is_some_and(|t| {
        requested
            .iter()
            .all(|p| t.partition(index(p)).is_some_and(|p| p.leads()))
    });
    if !all_led {
        broker.follow_metadata_briefly();
    }
    answer_each(broker, topic, requested, index, led_answer)
}

/// [`answer_each_in`] for what only a partition's leader serves (fetch).
pub fn answer_each_led_in<P, A: PartitionAnswer>(
    found: Option<&Topic>,
    requested: impl IntoIterator<Item = P>,
    index: impl Fn(&P) -> i32,
    mut answer: impl FnMut(P, &Partition, A) -> Result<A, Refused>,
) -> Vec<A> {
    answer_each_in(found, requested, index, |entry, partition, empty| {
        led(partition)?;
        answer(entry, partition, empty)
    })
}
