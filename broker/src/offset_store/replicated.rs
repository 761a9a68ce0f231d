//! Committed offsets in a cluster: the internal topic `__consumer_offsets`, as Kafka keeps them
//! (see [`crate::internal_topic`]): a group's coordinator is the leader of the group's
//! partition, and a commit is a record batch the in-sync replicas have.
//!
//! Each record's key is `{"group","topic","partition"}` and its value the commit
//! (`{"offset","leader_epoch","metadata","seq"}`) or null for a deleted offset, both JSON, so
//! the explorer shows them as they are. (Kafka writes binary schemas of its own there.)

use kafka_protocol::records::Record;
use serde::{Deserialize, Serialize};

use super::line::Line;
use crate::internal_topic::KeyValue;

/// The internal topic's name, as in Kafka.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

#[derive(Serialize, Deserialize)]
struct Key {
    group: String,
    topic: String,
    partition: i32,
}

#[derive(Serialize, Deserialize)]
struct Value {
    offset: i64,
    leader_epoch: i32,
    metadata: Option<String>,
    seq: u64,
}

/// `lines` as records (key, value: null for a deleted offset).
pub(super) fn encode(lines: &[Line]) -> serde_json::Result<Vec<KeyValue>> {
    lines
        .iter()
        .map(|line| {
            let key = serde_json::to_vec(&Key {
                group: line.g.clone(),
                topic: line.t.clone(),
                partition: line.p,
            })?;
            let value = (line.o >= 0)
                .then(|| {
                    serde_json::to_vec(&Value {
                        offset: line.o,
                        leader_epoch: line.e,
                        metadata: line.m.clone(),
                        seq: line.s,
                    })
                })
                .transpose()?;
            Ok((key, value))
        })
        .collect()
}

/// The commit a record of `__consumer_offsets` holds (`None` for a record that is not one).
pub(super) fn decode(record: &Record) -> Option<Line> {
    let key: Key = serde_json::from_slice(record.key.as_ref()?).ok()?;
    let (o, e, m, s) = match &record.value {
        None => (-1, -1, None, 0),
        Some(value) => {
            let value: Value = serde_json::from_slice(value).ok()?;
            (value.offset, value.leader_epoch, value.metadata, value.seq)
        }
    };
    Some(Line {
        g: key.group,
        t: key.topic,
        p: key.partition,
        o,
        e,
        m,
        s,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::records::TimestampType;

    use super::*;

    fn record(key: Vec<u8>, value: Option<Vec<u8>>) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 0,
            key: Some(Bytes::from(key)),
            value: value.map(Bytes::from),
            headers: Default::default(),
        }
    }

    #[test]
    fn commits_and_tombstones_round_trip() {
        let line = |o| Line {
            g: "g".into(),
            t: "orders".into(),
            p: 2,
            o,
            e: 4,
            m: Some("m".into()),
            s: 9,
        };
        let decoded: Vec<Line> = encode(&[line(17), line(-1)])
            .unwrap()
            .into_iter()
            .filter_map(|(k, v)| decode(&record(k, v)))
            .collect();
        assert_eq!(decoded.len(), 2);
        assert_eq!((decoded[0].o, decoded[0].e, decoded[0].s), (17, 4, 9));
        assert_eq!(decoded[0].m.as_deref(), Some("m"));
        assert_eq!(decoded[1].o, -1);
        assert_eq!((decoded[1].g.as_str(), decoded[1].p), ("g", 2));
    }
}
