//! Dead-letter topics' contract: the headers a dead-lettered record carries (the consumer runner
//! adds them) and the one a redriven record carries, and which consumer group processes a
//! redriven record ([`addressed_to`]). Listing and replaying DLQs is the lab's (its `dlq`
//! module): a service only writes to them and honours a redrive.
//!
//! A replay is a *redrive*, not a copy: each record goes back to its original topic with the
//! header [`header::REDRIVE_GROUP`] naming the one group that dead-lettered it (its
//! [`header::CONSUMER_GROUP`]); the consumer runner of every other group skips such a record
//! without applying or counting it (its `skipped` outcome), so only the group that failed
//! processes it again.

use rdkafka::Message;
use rdkafka::message::Headers;

/// Names of the headers added to a dead-lettered record, and to a redriven one.
pub mod header {
    pub const ORIGINAL_TOPIC: &str = "dlq_original_topic";
    pub const ORIGINAL_PARTITION: &str = "dlq_original_partition";
    pub const ORIGINAL_OFFSET: &str = "dlq_original_offset";
    /// The consumer group that dead-lettered the record: the one a replay sends it back to.
    pub const CONSUMER_GROUP: &str = "dlq_consumer_group";
    pub const ATTEMPTS: &str = "dlq_attempts";
    pub const ERROR: &str = "dlq_error";
    pub const TIME: &str = "dlq_time";
    /// On a record a replay put back on its original topic: the only consumer group that
    /// processes it; every other group skips it.
    pub const REDRIVE_GROUP: &str = "dlq_redrive_group";
    /// On a redriven record: the DLQ record it came from, `<dlq topic>/<partition>/<offset>`.
    pub const REDRIVE_FROM: &str = "dlq_redrive_from";
}

/// Whether `group` processes `msg`: every record except a redrive addressed to another group.
pub fn addressed_to<M: Message>(msg: &M, group: &str) -> bool {
    let Some(headers) = msg.headers() else {
        return true;
    };
    match headers.iter().find(|h| h.key == header::REDRIVE_GROUP) {
        Some(h) => h.value == Some(group.as_bytes()),
        None => true,
    }
}
