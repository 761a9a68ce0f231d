//! `lab groups`: who is in each consumer group and which partitions each member owns, as the
//! broker's group coordinator sees it (DescribeGroups).

use std::fmt;
use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// One consumer group.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Group {
    pub name: String,
    pub state: String,
    pub members: Vec<Member>,
}

/// One member of a group.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub client_id: String,
    pub client_host: String,
    /// `(topic, partitions)` this member was assigned.
    pub assignment: Vec<(String, Vec<i32>)>,
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}, {} member(s)",
            self.name,
            self.state,
            self.members.len()
        )?;
        for m in &self.members {
            let owned: Vec<String> = m
                .assignment
                .iter()
                .map(|(t, ps)| format!("{t}{ps:?}"))
                .collect();
            let owned = if owned.is_empty() {
                "idle, no partition".to_owned()
            } else {
                owned.join(" ")
            };
            write!(f, "\n  {} ({}): {owned}", m.client_id, m.client_host)?;
        }
        Ok(())
    }
}

/// The member's assignment, in the consumer protocol's encoding (a version, then the body).
fn decode_assignment(raw: &[u8]) -> Vec<(String, Vec<i32>)> {
    let mut buf = Bytes::copy_from_slice(raw);
    if buf.remaining() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16().clamp(0, 3);
    ConsumerProtocolAssignment::decode(&mut buf, version)
        .map(|a| {
            a.assigned_partitions
                .into_iter()
                .map(|tp| (tp.topic.0.to_string(), tp.partitions))
                .collect()
        })
        .unwrap_or_default()
}

/// Describes `group`, or every group, on the broker at `brokers`.
pub async fn describe(brokers: &str, group: Option<&str>) -> anyhow::Result<Vec<Group>> {
    let brokers = brokers.to_owned();
    let group = group.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = saga_shared::kafka::client_config(&brokers).create()?;
        let list = client.fetch_group_list(group.as_deref(), Duration::from_secs(10))?;
        let mut groups: Vec<Group> = list
            .groups()
            .iter()
            .map(|g| Group {
                name: g.name().to_owned(),
                state: g.state().to_owned(),
                members: g
                    .members()
                    .iter()
                    .map(|m| Member {
                        client_id: m.client_id().to_owned(),
                        client_host: m.client_host().to_owned(),
                        assignment: m.assignment().map(decode_assignment).unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(groups)
    })
    .await?
}
