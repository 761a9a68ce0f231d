//! The active controller (the quorum's Raft leader): it decides the metadata's changes and
//! writes them to the log. The brokers ask it to register them and tell it they are alive
//! ([`ControllerRequest`]); a broker it has not heard from for the session timeout is fenced
//! (KRaft's `broker.session.timeout.ms`), which hands its partitions to other replicas.
//!
//! One decision at a time: each is computed from the image after every earlier one was
//! applied (a turn held while it is written), so two decisions never rest on the same old
//! image. A new controller gives every broker a full session before fencing it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Producer ids a broker reserves at a time (Kafka's controller hands out blocks of 1000).
const PRODUCER_ID_BLOCK: i64 = 1000;

use std::sync::{Arc, Mutex};

use openraft::Raft;
use tokio::sync::watch;

use super::types::{ControllerReply, ControllerRequest, Proposal, TypeConfig};
use crate::metadata::{MetadataError, MetadataImage, MetadataRecord, NodeId};

/// The decisions of this node while it is the active controller.
pub struct Controller {
    id: NodeId,
    raft: Raft<TypeConfig>,
    image: watch::Receiver<Arc<MetadataImage>>,
    session_timeout: Duration,
    /// Held while a decision is made and written.
    turn: tokio::sync::Mutex<()>,
    liveness: Mutex<Liveness>,
}

/// What the active controller remembers outside the log: when it last heard from each broker.
#[derive(Debug, Default)]
struct Liveness {
    /// The Raft term this node led in when it started counting.
    term: Option<u64>,
    seen: HashMap<NodeId, Instant>,
}

impl Liveness {
    /// Starts counting afresh in `term` if it is a new one: every known broker gets a session.
    fn begin(&mut self, term: u64, image: &MetadataImage) {
        if self.term != Some(term) {
            self.term = Some(term);
            let now = Instant::now();
            self.seen = image.brokers.keys().map(|id| (*id, now)).collect();
        }
    }

    fn saw(&mut self, id: NodeId) {
        self.seen.insert(id, Instant::now());
    }

    /// Live brokers not heard from for `timeout`.
    fn expired(&self, image: &MetadataImage, timeout: Duration) -> Vec<NodeId> {
        image
            .live_brokers()
            .into_iter()
            .filter(|id| self.seen.get(id).is_none_or(|t| t.elapsed() > timeout))
            .collect()
    }
}

impl Controller {
    pub fn new(
        id: NodeId,
        raft: Raft<TypeConfig>,
        image: watch::Receiver<Arc<MetadataImage>>,
        session_timeout: Duration,
    ) -> Self {
        Self {
            id,
            raft,
            image,
            session_timeout,
            turn: tokio::sync::Mutex::new(()),
            liveness: Mutex::new(Liveness::default()),
        }
    }

    fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// The active controller, as this node knows it.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .map(|id| id as NodeId)
    }

    /// Answers `request`, which it does only as the active controller.
    pub async fn handle(&self, request: ControllerRequest) -> ControllerReply {
        match self.quick_heartbeat(&request) {
            Some(reply) => reply,
            None => self.decide(request).await,
        }
    }

    /// Handles `request` if this node is the active controller.
    async fn decide(&self, request: ControllerRequest) -> ControllerReply {
        let _turn = self.turn.lock().await;
        let Some(image) = self.settled_image().await else {
            return ControllerReply::NotController {
                leader: self.current_leader(),
            };
        };
        match request {
            ControllerRequest::Register { id, host, port } => {
                let epoch = image.brokers.get(&id).map_or(1, |b| b.epoch + 1);
                let record = MetadataRecord::RegisterBroker {
                    id,
                    epoch,
                    host,
                    port,
                };
                self.liveness.lock().unwrap().saw(id);
                match self.write(vec![record]).await {
                    ControllerReply::Done => ControllerReply::Registered { epoch },
                    other => other,
                }
            }
            ControllerRequest::Heartbeat { id, epoch } => {
                if let Err(e) = check_epoch(&image, id, epoch) {
                    return ControllerReply::Refused(e);
                }
                self.liveness.lock().unwrap().saw(id);
                if !image.brokers[&id].fenced {
                    return ControllerReply::Done;
                }
                self.write_decision(image.unfence(id)).await
            }
            ControllerRequest::Shutdown { id, epoch } => {
                if let Err(e) = check_epoch(&image, id, epoch) {
                    return ControllerReply::Refused(e);
                }
                if image.brokers[&id].fenced {
                    return ControllerReply::Done;
                }
                self.write_decision(image.fence(id)).await
            }
            ControllerRequest::AllocateProducerIds { id } => {
                let start = image.next_producer_id;
                let end = start + PRODUCER_ID_BLOCK;
                let record = MetadataRecord::ProducerIds { broker: id, end };
                match self.write(vec![record]).await {
                    ControllerReply::Done => ControllerReply::ProducerIds { start, end },
                    other => other,
                }
            }
            other => self.decide_topics(&image, other).await,
        }
    }

    /// The decisions about topics and partitions.
    async fn decide_topics(
        &self,
        image: &MetadataImage,
        request: ControllerRequest,
    ) -> ControllerReply {
        match request {
            ControllerRequest::CreateTopic {
                name,
                partitions,
                replication,
                configs,
                assignments,
            } => {
                let id = uuid::Uuid::new_v4();
                let placed = if assignments.is_empty() {
                    image.assign(&name, id, partitions, replication)
                } else {
                    image.assign_explicitly(&name, id, &assignments)
                };
                let decision = placed.map(|records| with_configs(records, &name, configs));
                match self.write_decision(decision).await {
                    ControllerReply::Done => ControllerReply::Created { id },
                    other => other,
                }
            }
            ControllerRequest::AlterPartition {
                topic,
                partition,
                leader,
                partition_epoch,
                isr,
            } => {
                let decision = image
                    .change_isr(topic, partition, leader, partition_epoch, isr)
                    .map(|record| vec![record]);
                self.write_decision(decision).await
            }
            ControllerRequest::ElectPreferred { partitions } => {
                let decisions = partitions
                    .iter()
                    .map(|(topic, partition)| image.elect_preferred(*topic, *partition));
                self.write_each(decisions.collect()).await
            }
            ControllerRequest::Reassign { partitions } => {
                let decisions = partitions.iter().map(|(topic, partition, target)| {
                    image.reassign(*topic, *partition, target.as_deref())
                });
                self.write_each(decisions.collect()).await
            }
            ControllerRequest::AlterConfigs { name, configs } => {
                match image.configure(&name, &configs) {
                    Ok(records) if records.is_empty() => ControllerReply::Done,
                    decision => self.write_decision(decision).await,
                }
            }
            ControllerRequest::CreatePartitions { name, count } => {
                self.write_decision(image.grow(&name, count)).await
            }
            ControllerRequest::DeleteTopic { name } => match image.topic_id(&name) {
                Some(id) => self.write(vec![MetadataRecord::RemoveTopic { id }]).await,
                None => ControllerReply::Refused(MetadataError::NoTopic(name)),
            },
            broker_request => {
                tracing::warn!(?broker_request, "not a topic request");
                ControllerReply::Failed("not a topic request".into())
            }
        }
    }

    /// A heartbeat from a live broker needs no turn and no write: only the liveness table.
    fn quick_heartbeat(&self, request: &ControllerRequest) -> Option<ControllerReply> {
        let ControllerRequest::Heartbeat { id, epoch } = request else {
            return None;
        };
        if self.raft.metrics().borrow().state != openraft::ServerState::Leader {
            return None;
        }
        let image = self.image();
        let live = image
            .brokers
            .get(id)
            .is_some_and(|b| b.epoch == *epoch && !b.fenced);
        live.then(|| {
            self.liveness.lock().unwrap().saw(*id);
            ControllerReply::Done
        })
    }

    /// The image with every entry committed so far applied, if this node is the active
    /// controller: what its next decision rests on.
    async fn settled_image(&self) -> Option<Arc<MetadataImage>> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Some(self.image()),
            Err(e) => {
                tracing::debug!(error = %e, "not the active controller");
                None
            }
        }
    }

    async fn write_decision(
        &self,
        decision: Result<Vec<MetadataRecord>, MetadataError>,
    ) -> ControllerReply {
        match decision {
            Ok(records) => self.write(records).await,
            Err(e) => ControllerReply::Refused(e),
        }
    }

    /// Writes the records of the `decisions` that could be made, as one entry, and answers
    /// each decision's outcome in order.
    async fn write_each(
        &self,
        decisions: Vec<Result<MetadataRecord, MetadataError>>,
    ) -> ControllerReply {
        let records: Vec<MetadataRecord> =
            decisions.iter().filter_map(|d| d.clone().ok()).collect();
        if !records.is_empty()
            && let reply @ (ControllerReply::Refused(_)
            | ControllerReply::NotController { .. }
            | ControllerReply::Failed(_)) = self.write(records).await
        {
            return reply;
        }
        ControllerReply::Outcomes(decisions.into_iter().map(|d| d.map(|_| ())).collect())
    }

    /// Writes `records` to the log as one entry and waits until it is applied.
    async fn write(&self, records: Vec<MetadataRecord>) -> ControllerReply {
        match self.raft.client_write(Proposal { records }).await {
            Ok(written) => match written.data {
                Ok(()) => ControllerReply::Done,
                Err(e) => ControllerReply::Refused(e),
            },
            Err(e) => match e.forward_to_leader() {
                Some(forward) => ControllerReply::NotController {
                    leader: forward.leader_id.map(|id| id as NodeId),
                },
                None => ControllerReply::Failed(e.to_string()),
            },
        }
    }

    /// One round of the session check: fences the brokers whose session ran out, if this node
    /// is the active controller.
    pub async fn fence_expired(&self) {
        let term = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            if metrics.current_leader != Some(self.id as u64) {
                return;
            }
            metrics.current_term
        };
        let expired = {
            let image = self.image();
            let mut liveness = self.liveness.lock().unwrap();
            liveness.begin(term, &image);
            liveness.expired(&image, self.session_timeout)
        };
        for id in expired {
            let _turn = self.turn.lock().await;
            let Some(image) = self.settled_image().await else {
                return;
            };
            if !image.live_brokers().contains(&id) {
                continue;
            }
            tracing::info!(broker = id, "session expired: fencing the broker");
            if let ControllerReply::Failed(e) = self.write_decision(image.fence(id)).await {
                tracing::warn!(broker = id, error = %e, "could not fence the broker");
            }
        }
    }
}

/// The records that create topic `name`: its partitions placed, then its configs.
fn with_configs(
    mut records: Vec<MetadataRecord>,
    name: &str,
    configs: std::collections::BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    records.extend(
        configs
            .into_iter()
            .map(|(key, value)| MetadataRecord::Config {
                topic: name.to_owned(),
                name: key,
                value: Some(value),
            }),
    );
    records
}

fn check_epoch(image: &MetadataImage, id: NodeId, epoch: i64) -> Result<(), MetadataError> {
    let broker = image.brokers.get(&id).ok_or(MetadataError::NoBroker(id))?;
    if broker.epoch != epoch {
        return Err(MetadataError::StaleBrokerEpoch {
            id,
            current: broker.epoch,
            asked: epoch,
        });
    }
    Ok(())
}
