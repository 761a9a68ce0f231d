//! The cluster's metadata as Kafka's KRaft keeps it: a log of [`MetadataRecord`]s (brokers
//! registering and being fenced, topics, partitions with their replicas, leader, leader epoch and
//! in-sync replicas, configs, producer-id blocks) and the [`MetadataImage`] they build when
//! applied one by one, in log order. Every node applies the same log, so every node holds the
//! same image.
//!
//! The rules that keep the image consistent live here, as the controller's decisions
//! ([`MetadataImage::fence`], [`MetadataImage::unfence`], [`MetadataImage::assign`],
//! [`MetadataImage::change_isr`]) and as the checks [`MetadataImage::apply`] makes of any record:
//!
//! - a partition's ISR is a non-empty subset of its replicas;
//! - its leader is a member of its ISR, or there is none ([`NO_LEADER`]): the partition is
//!   offline until an ISR member comes back. A replica outside the ISR never becomes leader
//!   (`unclean.leader.election.enable=false`, Kafka's default), so an acknowledged `acks=all`
//!   record, which every ISR member holds, survives any leader change;
//! - a change of leader bumps the leader epoch, and every change bumps the partition epoch, so a
//!   request made against an older state can be told apart (`FENCED_LEADER_EPOCH`, KIP-101/320);
//! - a fenced broker (it stopped heartbeating) leads nothing and leaves every ISR it can leave;
//!   the last ISR member stays in the ISR, so that the partition comes back with it, cleanly.
//!
//! This module is the model only: the Raft quorum that orders the log, the brokers' registration
//! and heartbeats, and replication build on it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A node of the cluster (`node.id`, `--node-id`).
pub type NodeId = i32;

/// The leader of a partition that has none (all of its ISR is fenced).
pub const NO_LEADER: NodeId = -1;

/// One change to the cluster's metadata, as the metadata log holds it (after Kafka's KRaft
/// records of the same names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker (re)starts: its address, and its epoch (a new one at each start). It starts
    /// fenced until it says it caught up.
    RegisterBroker {
        id: NodeId,
        epoch: i64,
        host: String,
        port: u16,
    },
    /// The broker stopped heartbeating (or shut down): it serves nothing.
    FenceBroker {
        id: NodeId,
        epoch: i64,
    },
    /// The broker heartbeats again and has caught up with the metadata log.
    UnfenceBroker {
        id: NodeId,
        epoch: i64,
    },
    Topic {
        name: String,
        id: Uuid,
    },
    RemoveTopic {
        id: Uuid,
    },
    /// A new partition of `topic`.
    Partition {
        topic: Uuid,
        partition: i32,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        leader: NodeId,
    },
    /// A partition's ISR or leader changed; the epochs follow from the change.
    PartitionChange {
        topic: Uuid,
        partition: i32,
        isr: Vec<NodeId>,
        leader: NodeId,
    },
    /// A partition's replicas change (AlterPartitionReassignments, KIP-455), with its ISR and
    /// leader; the epochs follow as for [`MetadataRecord::PartitionChange`].
    Reassignment {
        topic: Uuid,
        partition: i32,
        set: ReplicaSet,
    },
    /// A topic config set (`Some`) or removed (`None`).
    Config {
        topic: String,
        name: String,
        value: Option<String>,
    },
    /// The producer ids below `end` are handed out; the next block starts there.
    ProducerIds {
        broker: NodeId,
        end: i64,
    },
}

/// A broker as the metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub epoch: i64,
    pub host: String,
    pub port: u16,
    pub fenced: bool,
}

/// A partition's replicas and who leads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// While replicas move: the target's new replicas, copying the log to join the ISR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<NodeId>,
    /// While replicas move: the old replicas the target leaves out, dropped once every adding
    /// replica is in sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<NodeId>,
}

impl PartitionState {
    /// Whether replicas are moving (a reassignment is under way).
    pub fn moving(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }
}

/// A partition's replicas, ISR and leader, and the replicas a reassignment adds and removes.
/// While replicas move, `replicas` is the target's followed by the old ones it leaves out, as
/// in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSet {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub leader: NodeId,
    pub adding: Vec<NodeId>,
    pub removing: Vec<NodeId>,
}

/// A topic: its name, and its partitions by index.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TopicState {
    pub name: String,
    pub partitions: BTreeMap<i32, PartitionState>,
    pub configs: BTreeMap<String, String>,
}

/// Why a record or a decision does not apply to the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MetadataError {
    #[error("no broker {0}")]
    NoBroker(NodeId),
    #[error("broker {id} is at epoch {current}, not {asked}")]
    StaleBrokerEpoch {
        id: NodeId,
        current: i64,
        asked: i64,
    },
    #[error("no topic {0}")]
    NoTopic(String),
    #[error("a topic named {0:?} exists")]
    TopicExists(String),
    #[error("no partition {partition} of topic {topic}")]
    NoPartition { topic: Uuid, partition: i32 },
    #[error("partition {partition} of topic {topic} exists")]
    PartitionExists { topic: Uuid, partition: i32 },
    #[error("topic {name} has {current} partitions; it can only grow, not to {asked}")]
    CannotShrink {
        name: String,
        current: i32,
        asked: i32,
    },
    #[error("replication factor {asked} is more than the {live} brokers that are up")]
    NotEnoughBrokers { asked: usize, live: usize },
    #[error("replicas {0:?} name a broker twice or are empty")]
    BadReplicas(Vec<NodeId>),
    #[error("ISR {isr:?} is empty or not a subset of the replicas {replicas:?}")]
    BadIsr {
        isr: Vec<NodeId>,
        replicas: Vec<NodeId>,
    },
    #[error("leader {leader} is not in the ISR {isr:?}")]
    LeaderNotInIsr { leader: NodeId, isr: Vec<NodeId> },
    #[error("broker {asked} does not lead the partition (its leader: {leader})")]
    NotLeader { asked: NodeId, leader: NodeId },
    #[error("the partition is at epoch {current}, not {asked}")]
    StalePartitionEpoch { current: i32, asked: i32 },
    #[error("partition {partition} of topic {topic} is led by its preferred replica already")]
    ElectionNotNeeded { topic: Uuid, partition: i32 },
    #[error("the preferred replica {preferred} is not live and in sync")]
    PreferredLeaderNotAvailable { preferred: NodeId },
    #[error("no reassignment of partition {partition} of topic {topic} is under way")]
    NoReassignment { topic: Uuid, partition: i32 },
    #[error("replicas {replicas:?} name broker {broker}, which is not registered")]
    UnknownReplica {
        replicas: Vec<NodeId>,
        broker: NodeId,
    },
    #[error("replicas {replicas:?}: {asked} of them, where the topic's partitions have {wanted}")]
    ReplicaCountDiffers {
        replicas: Vec<NodeId>,
        asked: usize,
        wanted: usize,
    },
    #[error("cannot go back to replicas {original:?}: none of them is in the ISR {isr:?}")]
    CannotRevert {
        original: Vec<NodeId>,
        isr: Vec<NodeId>,
    },
    #[error("every broker of replicas {0:?} is fenced")]
    AllReplicasFenced(Vec<NodeId>),
    #[error("producer ids must grow: {end} is not above {next}")]
    ProducerIdsBackwards { end: i64, next: i64 },
}

/// The cluster's metadata: what applying the log so far built.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetadataImage {
    pub brokers: BTreeMap<NodeId, BrokerInfo>,
    pub topics: BTreeMap<Uuid, TopicState>,
    /// The first producer id not handed out yet.
    pub next_producer_id: i64,
}

impl MetadataImage {
    /// Applies `records` in order, all or none: the first that does not apply leaves the image
    /// as it was before the first.
    pub fn apply_all(&mut self, records: &[MetadataRecord]) -> Result<(), MetadataError> {
        let mut next = self.clone();
        for record in records {
            next.apply(record)?;
        }
        *self = next;
        Ok(())
    }

    /// Applies `record`, or says why it does not apply (and changes nothing).
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), MetadataError> {
        match record {
            MetadataRecord::RegisterBroker {
                id,
                epoch,
                host,
                port,
            } => {
                self.brokers.insert(
                    *id,
                    BrokerInfo {
                        epoch: *epoch,
                        host: host.clone(),
                        port: *port,
                        fenced: true,
                    },
                );
            }
            MetadataRecord::FenceBroker { id, epoch } => {
                self.broker_mut(*id, *epoch)?.fenced = true
            }
            MetadataRecord::UnfenceBroker { id, epoch } => {
                self.broker_mut(*id, *epoch)?.fenced = false;
            }
            MetadataRecord::Topic { name, id } => {
                if self.topic_id(name).is_some() || self.topics.contains_key(id) {
                    return Err(MetadataError::TopicExists(name.clone()));
                }
                let topic = TopicState {
                    name: name.clone(),
                    ..TopicState::default()
                };
                self.topics.insert(*id, topic);
            }
            MetadataRecord::RemoveTopic { id } => {
                self.topics
                    .remove(id)
                    .ok_or_else(|| MetadataError::NoTopic(id.to_string()))?;
            }
            MetadataRecord::Partition {
                topic,
                partition,
                replicas,
                isr,
                leader,
            } => self.add_partition(*topic, *partition, replicas, isr, *leader)?,
            MetadataRecord::PartitionChange {
                topic,
                partition,
                isr,
                leader,
            } => self.change_partition(*topic, *partition, isr, *leader)?,
            MetadataRecord::Reassignment {
                topic,
                partition,
                set,
            } => self.move_replicas(*topic, *partition, set)?,
            MetadataRecord::Config { topic, name, value } => {
                self.set_config(topic, name, value.as_deref())?;
            }
            MetadataRecord::ProducerIds { end, .. } => {
                if *end <= self.next_producer_id {
                    return Err(MetadataError::ProducerIdsBackwards {
                        end: *end,
                        next: self.next_producer_id,
                    });
                }
                self.next_producer_id = *end;
            }
        }
        Ok(())
    }

    /// A partition's new ISR and leader: the leader epoch moves if the leader does, the
    /// partition epoch always.
    fn change_partition(
        &mut self,
        topic: Uuid,
        partition: i32,
        isr: &[NodeId],
        leader: NodeId,
    ) -> Result<(), MetadataError> {
        let state = self.partition_mut(topic, partition)?;
        check_partition(&state.replicas, isr, leader)?;
        if leader != state.leader {
            state.leader_epoch += 1;
        }
        state.isr = isr.to_vec();
        state.leader = leader;
        state.partition_epoch += 1;
        Ok(())
    }

    /// A partition's new replica set (a reassignment starts, ends or is cancelled).
    fn move_replicas(
        &mut self,
        topic: Uuid,
        partition: i32,
        set: &ReplicaSet,
    ) -> Result<(), MetadataError> {
        check_replicas(&set.replicas)?;
        let within = |part: &[NodeId]| part.iter().all(|n| set.replicas.contains(n));
        let both = set.adding.iter().any(|n| set.removing.contains(n));
        if !within(&set.adding) || !within(&set.removing) || both {
            return Err(MetadataError::BadReplicas(set.replicas.clone()));
        }
        check_partition(&set.replicas, &set.isr, set.leader)?;
        let state = self.partition_mut(topic, partition)?;
        if set.leader != state.leader {
            state.leader_epoch += 1;
        }
        state.replicas = set.replicas.clone();
        state.isr = set.isr.clone();
        state.leader = set.leader;
        state.adding = set.adding.clone();
        state.removing = set.removing.clone();
        state.partition_epoch += 1;
        Ok(())
    }

    fn set_config(
        &mut self,
        topic: &str,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), MetadataError> {
        let id = self
            .topic_id(topic)
            .ok_or_else(|| MetadataError::NoTopic(topic.to_owned()))?;
        let configs = &mut self.topics.get_mut(&id).expect("found by name").configs;
        match value {
            Some(v) => configs.insert(name.to_owned(), v.to_owned()),
            None => configs.remove(name),
        };
        Ok(())
    }

    /// The id of the topic named `name`.
    pub fn topic_id(&self, name: &str) -> Option<Uuid> {
        self.topics
            .iter()
            .find(|(_, t)| t.name == name)
            .map(|(id, _)| *id)
    }

    pub fn partition(&self, topic: Uuid, partition: i32) -> Option<&PartitionState> {
        self.topics.get(&topic)?.partitions.get(&partition)
    }

    /// The brokers that serve: registered and not fenced, in id order.
    pub fn live_brokers(&self) -> Vec<NodeId> {
        self.brokers
            .iter()
            .filter(|(_, b)| !b.fenced)
            .map(|(id, _)| *id)
            .collect()
    }

    fn is_live(&self, id: NodeId) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    fn broker_mut(&mut self, id: NodeId, epoch: i64) -> Result<&mut BrokerInfo, MetadataError> {
        let broker = self
            .brokers
            .get_mut(&id)
            .ok_or(MetadataError::NoBroker(id))?;
        if broker.epoch != epoch {
            return Err(MetadataError::StaleBrokerEpoch {
                id,
                current: broker.epoch,
                asked: epoch,
            });
        }
        Ok(broker)
    }

    fn partition_mut(
        &mut self,
        topic: Uuid,
        partition: i32,
    ) -> Result<&mut PartitionState, MetadataError> {
        self.topics
            .get_mut(&topic)
            .and_then(|t| t.partitions.get_mut(&partition))
            .ok_or(MetadataError::NoPartition { topic, partition })
    }

    fn add_partition(
        &mut self,
        topic: Uuid,
        partition: i32,
        replicas: &[NodeId],
        isr: &[NodeId],
        leader: NodeId,
    ) -> Result<(), MetadataError> {
        check_replicas(replicas)?;
        check_partition(replicas, isr, leader)?;
        let partitions = &mut self
            .topics
            .get_mut(&topic)
            .ok_or_else(|| MetadataError::NoTopic(topic.to_string()))?
            .partitions;
        if partitions.contains_key(&partition) {
            return Err(MetadataError::PartitionExists { topic, partition });
        }
        partitions.insert(
            partition,
            PartitionState {
                replicas: replicas.to_vec(),
                isr: isr.to_vec(),
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
                adding: Vec::new(),
                removing: Vec::new(),
            },
        );
        Ok(())
    }

    /// The records that create topic `name` with `partitions` partitions of `replication`
    /// replicas each on the live brokers: replicas spread round-robin, each partition's first
    /// replica its leader (its preferred leader), every replica in the ISR.
    pub fn assign(
        &self,
        name: &str,
        id: Uuid,
        partitions: i32,
        replication: usize,
    ) -> Result<Vec<MetadataRecord>, MetadataError> {
        if self.topic_id(name).is_some() {
            return Err(MetadataError::TopicExists(name.to_owned()));
        }
        let live = self.live_brokers();
        if replication == 0 || replication > live.len() {
            return Err(MetadataError::NotEnoughBrokers {
                asked: replication,
                live: live.len(),
            });
        }
        let mut records = vec![MetadataRecord::Topic {
            name: name.to_owned(),
            id,
        }];
        records.extend((0..partitions).map(|p| spread(id, p, replication, &live)));
        Ok(records)
    }

    /// The records that make `configs` topic `name`'s overrides (AlterConfigs and
    /// IncrementalAlterConfigs in a cluster): each one set or changed, each one gone removed.
    pub fn configure(
        &self,
        name: &str,
        configs: &BTreeMap<String, String>,
    ) -> Result<Vec<MetadataRecord>, MetadataError> {
        let id = self
            .topic_id(name)
            .ok_or_else(|| MetadataError::NoTopic(name.to_owned()))?;
        let current = &self.topics[&id].configs;
        let record = |key: &String, value: Option<&String>| MetadataRecord::Config {
            topic: name.to_owned(),
            name: key.clone(),
            value: value.cloned(),
        };
        let set = configs
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(*v))
            .map(|(k, v)| record(k, Some(v)));
        let removed = current
            .keys()
            .filter(|k| !configs.contains_key(*k))
            .map(|k| record(k, None));
        Ok(set.chain(removed).collect())
    }

    /// The records that grow topic `name` to `count` partitions (CreatePartitions): each new
    /// one on as many live brokers as the topic's partitions have replicas, spread as
    /// [`Self::assign`] spreads them.
    pub fn grow(&self, name: &str, count: i32) -> Result<Vec<MetadataRecord>, MetadataError> {
        let id = self
            .topic_id(name)
            .ok_or_else(|| MetadataError::NoTopic(name.to_owned()))?;
        let topic = &self.topics[&id];
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(MetadataError::CannotShrink {
                name: name.to_owned(),
                current,
                asked: count,
            });
        }
        let replication = topic.partitions.values().map(|p| p.replicas.len()).max();
        let replication = replication.unwrap_or(1);
        let live = self.live_brokers();
        if replication > live.len() {
            return Err(MetadataError::NotEnoughBrokers {
                asked: replication,
                live: live.len(),
            });
        }
        Ok((current..count)
            .map(|p| spread(id, p, replication, &live))
            .collect())
    }

    /// The records that fence broker `id`: it leaves every ISR that keeps another member, and
    /// each partition it led gets the first live replica (in replica order) of its new ISR as
    /// leader, or none when no ISR member is live.
    pub fn fence(&self, id: NodeId) -> Result<Vec<MetadataRecord>, MetadataError> {
        let broker = self.brokers.get(&id).ok_or(MetadataError::NoBroker(id))?;
        let mut records = vec![MetadataRecord::FenceBroker {
            id,
            epoch: broker.epoch,
        }];
        let is_live = |n: NodeId| n != id && self.is_live(n);
        for (topic, partition, state) in self.partitions() {
            if !state.isr.contains(&id) && state.leader != id {
                continue;
            }
            let isr: Vec<NodeId> = if state.isr.len() > 1 {
                state.isr.iter().copied().filter(|n| *n != id).collect()
            } else {
                state.isr.clone()
            };
            let leader = if state.leader == id || state.leader == NO_LEADER {
                first_in(&state.replicas, &isr, is_live)
            } else {
                state.leader
            };
            if isr != state.isr || leader != state.leader {
                records.push(MetadataRecord::PartitionChange {
                    topic,
                    partition,
                    isr,
                    leader,
                });
            }
        }
        Ok(records)
    }

    /// The records that unfence broker `id`: each partition without a leader whose ISR holds
    /// it gets it as leader.
    pub fn unfence(&self, id: NodeId) -> Result<Vec<MetadataRecord>, MetadataError> {
        let broker = self.brokers.get(&id).ok_or(MetadataError::NoBroker(id))?;
        let mut records = vec![MetadataRecord::UnfenceBroker {
            id,
            epoch: broker.epoch,
        }];
        for (topic, partition, state) in self.partitions() {
            if state.leader == NO_LEADER && state.isr.contains(&id) {
                records.push(MetadataRecord::PartitionChange {
                    topic,
                    partition,
                    isr: state.isr.clone(),
                    leader: id,
                });
            }
        }
        Ok(records)
    }

    /// The record that a partition's leader asks for when its ISR changes (Kafka's
    /// AlterPartition): refused if the leader is not the partition's, or asks against an older
    /// partition epoch, or names a fenced broker as joining the ISR.
    pub fn change_isr(
        &self,
        topic: Uuid,
        partition: i32,
        leader: NodeId,
        partition_epoch: i32,
        isr: Vec<NodeId>,
    ) -> Result<MetadataRecord, MetadataError> {
        let state = self
            .partition(topic, partition)
            .ok_or(MetadataError::NoPartition { topic, partition })?;
        if state.partition_epoch != partition_epoch {
            return Err(MetadataError::StalePartitionEpoch {
                current: state.partition_epoch,
                asked: partition_epoch,
            });
        }
        if leader == NO_LEADER || state.leader != leader {
            return Err(MetadataError::NotLeader {
                asked: leader,
                leader: state.leader,
            });
        }
        if let Some(joining) = isr
            .iter()
            .find(|n| !state.isr.contains(n) && !self.is_live(**n))
        {
            return Err(MetadataError::NoBroker(*joining));
        }
        check_partition(&state.replicas, &isr, leader)?;
        if state.moving() {
            let set = ReplicaSet {
                replicas: state.replicas.clone(),
                isr,
                leader,
                adding: state.adding.clone(),
                removing: state.removing.clone(),
            };
            return Ok(self.settle(topic, partition, set));
        }
        Ok(MetadataRecord::PartitionChange {
            topic,
            partition,
            isr,
            leader,
        })
    }

    /// The record that starts moving a partition's replicas to `target`, or with `None`
    /// cancels the move under way (back to the original replicas, if one of them is in sync).
    /// New replicas are added first; every replica the target leaves out stays, in the ISR,
    /// until every new one is in sync; then the target alone remains, led by its first
    /// in-sync replica if the leader is not in it. A new target replaces a move under way: the
    /// replicas that move added and the new target leaves out are removed like the others, so
    /// nothing in sync goes before the new target is. A target's brokers must be registered
    /// (fenced ones catch up once back).
    pub fn reassign(
        &self,
        topic: Uuid,
        partition: i32,
        target: Option<&[NodeId]>,
    ) -> Result<MetadataRecord, MetadataError> {
        let state = self
            .partition(topic, partition)
            .ok_or(MetadataError::NoPartition { topic, partition })?;
        let original: Vec<NodeId> = except(&state.replicas, &state.adding);
        let Some(target) = target else {
            if !state.moving() {
                return Err(MetadataError::NoReassignment { topic, partition });
            }
            return self.revert(topic, partition, state, original);
        };
        self.check_brokers(target)?;
        let removing = except(&state.replicas, target);
        let mut replicas = target.to_vec();
        replicas.extend(&removing);
        let set = ReplicaSet {
            replicas,
            isr: state.isr.clone(),
            leader: state.leader,
            adding: except(target, &original),
            removing,
        };
        Ok(self.settle(topic, partition, set))
    }

    /// The record that cancels a move: the original replicas, those of them in sync, the
    /// leader if it is one of them (else their first live in-sync one).
    fn revert(
        &self,
        topic: Uuid,
        partition: i32,
        state: &PartitionState,
        original: Vec<NodeId>,
    ) -> Result<MetadataRecord, MetadataError> {
        let Some(set) = self.narrowed(original.clone(), &state.isr, state.leader) else {
            return Err(MetadataError::CannotRevert {
                original,
                isr: state.isr.clone(),
            });
        };
        Ok(MetadataRecord::Reassignment {
            topic,
            partition,
            set,
        })
    }

    /// The record of replica set `set`: the target alone if every replica it adds is in sync
    /// (its leader the current one if the target keeps it, else the target's first live
    /// in-sync replica), else `set` as it is.
    fn settle(&self, topic: Uuid, partition: i32, set: ReplicaSet) -> MetadataRecord {
        let done = set.adding.iter().all(|n| set.isr.contains(n));
        let target = except(&set.replicas, &set.removing);
        let set = match done.then(|| self.narrowed(target, &set.isr, set.leader)) {
            Some(Some(target)) => target,
            _ => set,
        };
        MetadataRecord::Reassignment {
            topic,
            partition,
            set,
        }
    }

    /// `replicas` alone, no move under way: the members of `isr` among them in sync, `leader`
    /// kept if it is one of those, else their first live one; `None` if none is in sync.
    fn narrowed(
        &self,
        replicas: Vec<NodeId>,
        isr: &[NodeId],
        leader: NodeId,
    ) -> Option<ReplicaSet> {
        let isr: Vec<NodeId> = isr
            .iter()
            .copied()
            .filter(|n| replicas.contains(n))
            .collect();
        if isr.is_empty() {
            return None;
        }
        let leader = if isr.contains(&leader) {
            leader
        } else {
            first_in(&replicas, &isr, |n| self.is_live(n))
        };
        Some(ReplicaSet {
            replicas,
            isr,
            leader,
            adding: Vec::new(),
            removing: Vec::new(),
        })
    }

    /// Replicas asked for by a client: distinct, not empty, every one a registered broker.
    fn check_brokers(&self, replicas: &[NodeId]) -> Result<(), MetadataError> {
        check_replicas(replicas)?;
        match replicas.iter().find(|n| !self.brokers.contains_key(n)) {
            Some(broker) => Err(MetadataError::UnknownReplica {
                replicas: replicas.to_vec(),
                broker: *broker,
            }),
            None => Ok(()),
        }
    }

    /// The records that create topic `name` with the replicas `assignments` gives each of its
    /// partitions (CreateTopics with explicit assignments): as many for each, registered
    /// brokers; each partition's ISR is its unfenced replicas, led by the first of them.
    pub fn assign_explicitly(
        &self,
        name: &str,
        id: Uuid,
        assignments: &[Vec<NodeId>],
    ) -> Result<Vec<MetadataRecord>, MetadataError> {
        if self.topic_id(name).is_some() {
            return Err(MetadataError::TopicExists(name.to_owned()));
        }
        let mut records = vec![MetadataRecord::Topic {
            name: name.to_owned(),
            id,
        }];
        let wanted = assignments.first().map_or(0, Vec::len);
        for (partition, replicas) in (0..).zip(assignments) {
            self.check_brokers(replicas)?;
            if replicas.len() != wanted {
                return Err(MetadataError::ReplicaCountDiffers {
                    replicas: replicas.clone(),
                    asked: replicas.len(),
                    wanted,
                });
            }
            let isr: Vec<NodeId> = replicas
                .iter()
                .copied()
                .filter(|n| self.is_live(*n))
                .collect();
            let Some(leader) = isr.first().copied() else {
                return Err(MetadataError::AllReplicasFenced(replicas.clone()));
            };
            records.push(MetadataRecord::Partition {
                topic: id,
                partition,
                replicas: replicas.clone(),
                isr,
                leader,
            });
        }
        Ok(records)
    }

    /// The record that gives a partition back to its preferred leader (its first replica), if
    /// that replica is live and in sync and does not lead it already (ElectLeaders, preferred).
    pub fn elect_preferred(
        &self,
        topic: Uuid,
        partition: i32,
    ) -> Result<MetadataRecord, MetadataError> {
        let state = self
            .partition(topic, partition)
            .ok_or(MetadataError::NoPartition { topic, partition })?;
        let preferred = state.replicas[0];
        if state.leader == preferred {
            return Err(MetadataError::ElectionNotNeeded { topic, partition });
        }
        if !state.isr.contains(&preferred) || !self.is_live(preferred) {
            return Err(MetadataError::PreferredLeaderNotAvailable { preferred });
        }
        Ok(MetadataRecord::PartitionChange {
            topic,
            partition,
            isr: state.isr.clone(),
            leader: preferred,
        })
    }

    /// Every partition: its topic id, index and state.
    fn partitions(&self) -> impl Iterator<Item = (Uuid, i32, &PartitionState)> {
        self.topics.iter().flat_map(|(id, t)| {
            t.partitions
                .iter()
                .map(move |(index, state)| (*id, *index, state))
        })
    }
}

/// The first of `replicas` that is in `isr` and passes `is_live`, or [`NO_LEADER`].
fn first_in(replicas: &[NodeId], isr: &[NodeId], is_live: impl Fn(NodeId) -> bool) -> NodeId {
    replicas
        .iter()
        .copied()
        .find(|n| isr.contains(n) && is_live(*n))
        .unwrap_or(NO_LEADER)
}

/// The members of `nodes` not in `left_out`, in order.
fn except(nodes: &[NodeId], left_out: &[NodeId]) -> Vec<NodeId> {
    nodes
        .iter()
        .copied()
        .filter(|n| !left_out.contains(n))
        .collect()
}

/// Replicas are not empty and name no broker twice.
fn check_replicas(replicas: &[NodeId]) -> Result<(), MetadataError> {
    let mut distinct = replicas.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if replicas.is_empty() || distinct.len() != replicas.len() {
        return Err(MetadataError::BadReplicas(replicas.to_vec()));
    }
    Ok(())
}

/// The ISR is a non-empty subset of the replicas, and the leader is in it (or there is none).
fn check_partition(
    replicas: &[NodeId],
    isr: &[NodeId],
    leader: NodeId,
) -> Result<(), MetadataError> {
    if isr.is_empty() || isr.iter().any(|n| !replicas.contains(n)) {
        return Err(MetadataError::BadIsr {
            isr: isr.to_vec(),
            replicas: replicas.to_vec(),
        });
    }
    if leader != NO_LEADER && !isr.contains(&leader) {
        return Err(MetadataError::LeaderNotInIsr {
            leader,
            isr: isr.to_vec(),
        });
    }
    Ok(())
}

/// Partition `partition` of topic `id` on `replication` of the `live` brokers, starting one
/// further along for each partition so that the leaders spread; all of them in sync.
fn spread(id: Uuid, partition: i32, replication: usize, live: &[NodeId]) -> MetadataRecord {
    let first = partition as usize;
    let replicas: Vec<NodeId> = (0..replication)
        .map(|i| live[(first + i) % live.len()])
        .collect();
    MetadataRecord::Partition {
        topic: id,
        partition,
        leader: replicas[0],
        isr: replicas.clone(),
        replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn cluster(nodes: NodeId) -> MetadataImage {
        let mut image = MetadataImage::default();
        for id in 1..=nodes {
            let register = MetadataRecord::RegisterBroker {
                id,
                epoch: 1,
                host: "127.0.0.1".into(),
                port: 9090 + id as u16,
            };
            image.apply(&register).unwrap();
            let records = image.unfence(id).unwrap();
            apply_all(&mut image, &records);
        }
        image
    }

    fn apply_all(image: &mut MetadataImage, records: &[MetadataRecord]) {
        for r in records {
            image.apply(r).unwrap();
        }
    }

    #[test]
    fn a_topic_is_spread_over_the_live_brokers_each_partition_led_by_its_first_replica() {
        let mut image = cluster(3);
        let id = Uuid::from_u128(7);
        let records = image.assign("orders", id, 3, 3).unwrap();
        apply_all(&mut image, &records);
        let leaders: Vec<NodeId> = (0..3)
            .map(|p| image.partition(id, p).unwrap().leader)
            .collect();
        assert_eq!(leaders, [1, 2, 3]);
        let p1 = image.partition(id, 1).unwrap();
        assert_eq!(
            (p1.replicas.clone(), p1.isr.clone()),
            (vec![2, 3, 1], vec![2, 3, 1])
        );
        assert_eq!(
            image.assign("more", Uuid::from_u128(8), 1, 4),
            Err(MetadataError::NotEnoughBrokers { asked: 4, live: 3 })
        );
        assert!(matches!(
            image.assign("orders", Uuid::from_u128(9), 1, 1),
            Err(MetadataError::TopicExists(_))
        ));
    }

    #[test]
    fn a_fenced_leader_hands_over_to_the_isr_and_the_last_member_keeps_the_partition() {
        let mut image = cluster(3);
        let id = Uuid::from_u128(1);
        let records = image.assign("t", id, 1, 2).unwrap();
        apply_all(&mut image, &records);
        // Replicas [1, 2]: 1 leads. Fencing 1 makes 2 the leader, with a new leader epoch.
        let records = image.fence(1).unwrap();
        apply_all(&mut image, &records);
        let p = image.partition(id, 0).unwrap().clone();
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (2, vec![2], 1));
        // 2 is the last ISR member: fencing it leaves the partition without a leader, never
        // with 1 (it left the ISR: it may lack acknowledged records).
        let records = image.fence(2).unwrap();
        apply_all(&mut image, &records);
        let p = image.partition(id, 0).unwrap().clone();
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch),
            (NO_LEADER, vec![2], 2)
        );
        let records = image.unfence(1).unwrap();
        apply_all(&mut image, &records);
        assert_eq!(image.partition(id, 0).unwrap().leader, NO_LEADER);
        // 2 comes back: it leads again.
        let records = image.unfence(2).unwrap();
        apply_all(&mut image, &records);
        let p = image.partition(id, 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 3, 3));
    }

    #[test]
    fn an_isr_change_is_refused_from_an_old_epoch_a_non_leader_or_for_a_fenced_broker() {
        let mut image = cluster(3);
        let id = Uuid::from_u128(1);
        let records = image.assign("t", id, 1, 3).unwrap();
        apply_all(&mut image, &records);
        // The leader (1) shrinks the ISR to [1, 2] at partition epoch 0.
        let shrink = image.change_isr(id, 0, 1, 0, vec![1, 2]).unwrap();
        image.apply(&shrink).unwrap();
        assert_eq!(image.partition(id, 0).unwrap().partition_epoch, 1);
        assert_eq!(
            image.change_isr(id, 0, 1, 0, vec![1, 2, 3]),
            Err(MetadataError::StalePartitionEpoch {
                current: 1,
                asked: 0
            })
        );
        assert!(image.change_isr(id, 0, 2, 1, vec![1, 2, 3]).is_err());
        let records = image.fence(3).unwrap();
        apply_all(&mut image, &records);
        assert_eq!(
            image.change_isr(id, 0, 1, 1, vec![1, 2, 3]),
            Err(MetadataError::NoBroker(3))
        );
        assert!(matches!(
            image.change_isr(id, 0, 1, 1, vec![2]),
            Err(MetadataError::LeaderNotInIsr { .. })
        ));
    }

    /// Replicas [1, 2] moved to [3, 2]: 3 is added (out of sync), 1 stays in the ISR and leads
    /// until 3 joins; then [3, 2] alone, led by 3 (the target's first in-sync replica) at a new
    /// leader epoch. A cancel goes back to the original replicas; a new target replaces one
    /// under way from the original.
    #[test]
    fn a_reassignment_adds_first_and_removes_once_the_new_replicas_are_in_sync() {
        let mut image = cluster(3);
        let id = Uuid::from_u128(1);
        let records = image.assign("t", id, 1, 2).unwrap();
        apply_all(&mut image, &records);
        let start = image.reassign(id, 0, Some(&[3, 2])).unwrap();
        image.apply(&start).unwrap();
        let p = image.partition(id, 0).unwrap().clone();
        assert_eq!(
            (
                &p.replicas[..],
                &p.isr[..],
                p.leader,
                &p.adding[..],
                &p.removing[..]
            ),
            (&[3, 2, 1][..], &[1, 2][..], 1, &[3][..], &[1][..])
        );
        // 3 caught up: the leader asks for it in the ISR, and the move ends with that.
        let joined = image.change_isr(id, 0, 1, p.partition_epoch, vec![1, 2, 3]);
        image.apply(&joined.unwrap()).unwrap();
        let q = image.partition(id, 0).unwrap();
        assert_eq!(
            (&q.replicas[..], &q.isr[..], q.leader, q.moving()),
            (&[3, 2][..], &[2, 3][..], 3, false)
        );
        assert_eq!(q.leader_epoch, p.leader_epoch + 1);
        assert_eq!(
            image.reassign(id, 0, None),
            Err(MetadataError::NoReassignment {
                topic: id,
                partition: 0
            })
        );

        // Moving to [1, 2] again, then to [1, 3] instead, then cancelled: back to [3, 2].
        let r = image.reassign(id, 0, Some(&[1, 2])).unwrap();
        image.apply(&r).unwrap();
        let r = image.reassign(id, 0, Some(&[1, 3])).unwrap();
        image.apply(&r).unwrap();
        let p = image.partition(id, 0).unwrap();
        assert_eq!((&p.adding[..], &p.removing[..]), (&[1][..], &[2][..]));
        assert_eq!(&p.replicas[..], &[1, 3, 2]);
        let r = image.reassign(id, 0, None).unwrap();
        image.apply(&r).unwrap();
        let p = image.partition(id, 0).unwrap();
        assert_eq!(
            (&p.replicas[..], p.leader, p.moving()),
            (&[3, 2][..], 3, false)
        );

        // Dropping a replica needs no copy: done at once.
        let r = image.reassign(id, 0, Some(&[2])).unwrap();
        image.apply(&r).unwrap();
        let p = image.partition(id, 0).unwrap();
        assert_eq!(
            (&p.replicas[..], &p.isr[..], p.leader),
            (&[2][..], &[2][..], 2)
        );
        assert!(matches!(
            image.reassign(id, 0, Some(&[2, 9])),
            Err(MetadataError::UnknownReplica { broker: 9, .. })
        ));
        assert!(matches!(
            image.reassign(id, 0, Some(&[2, 2])),
            Err(MetadataError::BadReplicas(_))
        ));
    }

    /// CreateTopics with explicit assignments: the replicas as given, the unfenced ones in
    /// sync, led by the first of them; the same count for every partition.
    #[test]
    fn explicit_assignments_place_replicas_as_given() {
        let mut image = cluster(3);
        let fence = image.fence(1).unwrap();
        apply_all(&mut image, &fence);
        let id = Uuid::from_u128(2);
        let records = image
            .assign_explicitly("t", id, &[vec![1, 3], vec![2, 1]])
            .unwrap();
        apply_all(&mut image, &records);
        let p0 = image.partition(id, 0).unwrap();
        assert_eq!(
            (&p0.replicas[..], &p0.isr[..], p0.leader),
            (&[1, 3][..], &[3][..], 3)
        );
        let p1 = image.partition(id, 1).unwrap();
        assert_eq!(
            (&p1.replicas[..], &p1.isr[..], p1.leader),
            (&[2, 1][..], &[2][..], 2)
        );
        let other = Uuid::from_u128(3);
        assert!(matches!(
            image.assign_explicitly("u", other, &[vec![1, 3], vec![2]]),
            Err(MetadataError::ReplicaCountDiffers {
                asked: 1,
                wanted: 2,
                ..
            })
        ));
        assert!(matches!(
            image.assign_explicitly("u", other, &[vec![1]]),
            Err(MetadataError::AllReplicasFenced(_))
        ));
        assert!(matches!(
            image.assign_explicitly("u", other, &[vec![4]]),
            Err(MetadataError::UnknownReplica { broker: 4, .. })
        ));
    }

    #[test]
    fn records_that_break_a_rule_change_nothing() {
        let mut image = cluster(2);
        let id = Uuid::from_u128(1);
        let records = image.assign("t", id, 1, 2).unwrap();
        apply_all(&mut image, &records);
        let before = image.clone();
        let bad = [
            MetadataRecord::PartitionChange {
                topic: id,
                partition: 0,
                isr: vec![],
                leader: NO_LEADER,
            },
            MetadataRecord::PartitionChange {
                topic: id,
                partition: 0,
                isr: vec![1, 5],
                leader: 1,
            },
            MetadataRecord::PartitionChange {
                topic: id,
                partition: 0,
                isr: vec![2],
                leader: 1,
            },
            MetadataRecord::FenceBroker { id: 1, epoch: 9 },
            MetadataRecord::ProducerIds { broker: 1, end: 0 },
        ];
        for record in &bad {
            assert!(image.apply(record).is_err(), "{record:?}");
        }
        assert_eq!(image, before);
    }

    #[test]
    fn records_round_trip_as_json() {
        let record = MetadataRecord::Partition {
            topic: Uuid::from_u128(3),
            partition: 2,
            replicas: vec![1, 2, 3],
            isr: vec![1, 3],
            leader: 3,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            serde_json::from_str::<MetadataRecord>(&json).unwrap(),
            record
        );
    }

    /// A step of the random walk: fence or unfence a broker, or ask to shrink or grow an ISR.
    #[derive(Debug, Clone)]
    enum Step {
        Fence(NodeId),
        Unfence(NodeId),
        ChangeIsr { partition: i32, keep: Vec<bool> },
        Reassign { partition: i32, target: Vec<NodeId> },
        Cancel(i32),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1..=3).prop_map(Step::Fence),
            (1..=3).prop_map(Step::Unfence),
            (0..4, prop::collection::vec(any::<bool>(), 4))
                .prop_map(|(partition, keep)| Step::ChangeIsr { partition, keep }),
            (0..4, Just(vec![1, 2, 3, 4]).prop_shuffle(), 1..=3usize).prop_map(
                |(partition, mut target, len)| {
                    target.truncate(len);
                    Step::Reassign { partition, target }
                }
            ),
            (0..4).prop_map(Step::Cancel),
        ]
    }

    proptest! {
        /// Whatever brokers fail and come back, whatever ISR changes leaders ask for and
        /// whatever replicas are moved, every record the controller makes applies, and the
        /// rules hold after each: the leader is live and in the ISR (or there is none), the ISR
        /// is a non-empty subset of the replicas, the replicas being added and removed are
        /// replicas, and a new leader always comes from the ISR (the one it had before, or for
        /// a move that ends, the one that ends it).
        #[test]
        fn the_rules_hold_through_any_failures(steps in prop::collection::vec(step(), 1..60)) {
            let mut image = cluster(4);
            let id = Uuid::from_u128(1);
            let records = image.assign("t", id, 4, 3).unwrap();
            apply_all(&mut image, &records);
            for step in steps {
                let before = image.clone();
                let records = match step {
                    Step::Fence(n) => image.fence(n).unwrap(),
                    Step::Unfence(n) => image.unfence(n).unwrap(),
                    Step::ChangeIsr { partition, keep } => {
                        let p = image.partition(id, partition).unwrap();
                        let isr: Vec<NodeId> = p.replicas.iter().zip(&keep)
                            .filter(|(n, k)| **k || **n == p.leader)
                            .map(|(n, _)| *n)
                            .collect();
                        match image.change_isr(id, partition, p.leader, p.partition_epoch, isr) {
                            Ok(record) => vec![record],
                            Err(_) => vec![],
                        }
                    }
                    Step::Reassign { partition, target } => {
                        image.reassign(id, partition, Some(&target)).into_iter().collect()
                    }
                    Step::Cancel(partition) => {
                        image.reassign(id, partition, None).into_iter().collect()
                    }
                };
                apply_all(&mut image, &records);
                for (partition, p) in &image.topics[&id].partitions {
                    prop_assert!(!p.isr.is_empty());
                    prop_assert!(p.isr.iter().all(|n| p.replicas.contains(n)));
                    prop_assert!(p.adding.iter().all(|n| p.replicas.contains(n)));
                    prop_assert!(p.removing.iter().all(|n| p.replicas.contains(n)));
                    if p.leader != NO_LEADER {
                        prop_assert!(p.isr.contains(&p.leader));
                        prop_assert!(image.is_live(p.leader), "leader {} is fenced", p.leader);
                        let old = before.partition(id, *partition).unwrap();
                        if old.leader != p.leader {
                            let ended_move = old.moving() && !p.moving();
                            prop_assert!(
                                old.isr.contains(&p.leader) || ended_move,
                                "unclean election"
                            );
                            prop_assert!(p.leader_epoch > old.leader_epoch);
                        }
                    }
                }
            }
        }
    }
}
