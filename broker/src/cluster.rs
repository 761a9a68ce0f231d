//! A node of a cluster keeps its topics as the metadata says: it follows the image, creating
//! each topic the metadata holds (with the metadata's topic id), deleting the ones it removes,
//! and marking each partition led or not by this node at its leader epoch
//! ([`crate::topics::Partition::leads`]), which produce and fetch check. Topics are created and
//! deleted by asking the active controller; a node then waits until its own image has the
//! change.
//!
//! Every node keeps a log for every partition of every topic; only the replicas' logs fill:
//! a follower copies its leader ([`crate::replication`]), a leader keeps its in-sync replicas
//! ([`maintain_isr`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::broker::Broker;
use crate::metadata::{MetadataError, MetadataImage, NodeId, TopicState};
use crate::offset_store::OFFSETS_TOPIC;
use crate::quorum::{ControllerReply, ControllerRequest, Quorum};
use crate::replication;
use crate::topics::{Partition, Topic, TopicError};
use crate::txn::TRANSACTION_STATE_TOPIC;

/// How long a node waits for its image to show a change the controller made.
const CHANGE_VISIBLE: Duration = Duration::from_secs(10);

/// Follows the metadata until `stop`: each new image is applied to the local topics, and a
/// fetcher runs for each leader this node follows.
pub async fn follow(broker: Arc<Broker>, quorum: Arc<Quorum>, mut stop: watch::Receiver<bool>) {
    let mut images = quorum.subscribe();
    let mut known = HashSet::new();
    let mut fetchers: HashMap<NodeId, JoinHandle<()>> = HashMap::new();
    loop {
        // Read before the image: the image is at least this far along.
        let index = quorum.applied_index();
        let image = images.borrow_and_update().clone();
        for leader in replication::leaders_followed(&image, broker.node_id()) {
            if fetchers.get(&leader).is_none_or(|f| f.is_finished()) {
                let task = replication::fetch_from(broker.clone(), quorum.clone(), leader);
                fetchers.insert(leader, tokio::spawn(task));
            }
        }
        let on = broker.clone();
        known = match tokio::task::spawn_blocking(move || {
            reconcile(&on, &image, &mut known);
            known
        })
        .await
        {
            Ok(known) => known,
            Err(e) => {
                tracing::error!(error = %e, "following the metadata failed");
                return;
            }
        };
        quorum.mark_reconciled(index);
        tokio::select! {
            changed = images.changed() => if changed.is_err() { break },
            _ = stop.changed() => break,
        }
    }
    for fetcher in fetchers.into_values() {
        fetcher.abort();
    }
}

/// The leaders' side of the ISR (Kafka's ISR maintenance): every half second, each partition
/// this node leads whose in-sync replicas should change (a follower fell behind for
/// `replica.lag.time.max.ms`, or caught up) asks the active controller for the change
/// (AlterPartition). The new ISR counts once the metadata has it.
pub async fn maintain_isr(
    broker: Arc<Broker>,
    quorum: Arc<Quorum>,
    lag: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        for topic in broker.topics.list() {
            for partition in &topic.partitions {
                let Some((isr, partition_epoch)) = partition.wanted_isr(lag) else {
                    continue;
                };
                let request = ControllerRequest::AlterPartition {
                    topic: topic.id,
                    partition: partition.index,
                    leader: broker.node_id(),
                    partition_epoch,
                    isr: isr.clone(),
                };
                // From now on the controller may count the new members in sync: so does the
                // high watermark (an acks=all write then waits for them too).
                partition.asking_for_isr(&isr, partition_epoch);
                match quorum.request(request).await {
                    ControllerReply::Done => {
                        tracing::info!(
                            topic = topic.name,
                            partition = partition.index,
                            ?isr,
                            "in-sync replicas changed"
                        );
                    }
                    ControllerReply::Refused(e) => {
                        partition.isr_change_refused();
                        tracing::debug!(topic = topic.name, error = %e, "ISR change refused");
                    }
                    other => tracing::debug!(topic = topic.name, ?other, "ISR change not made"),
                }
            }
        }
    }
}

/// Makes the local topics what `image` says. `known`: the topics this node saw in the
/// metadata; one that leaves it was deleted, while a local topic the metadata never had (left
/// from before, or not applied yet after a restart) is kept, unled.
fn reconcile(broker: &Broker, image: &MetadataImage, known: &mut HashSet<Uuid>) {
    let me = broker.node_id();
    for (id, state) in &image.topics {
        let Some(topic) = local_topic(broker, *id, state) else {
            continue;
        };
        known.insert(*id);
        if topic.configs != state.configs {
            // Altered in the metadata (AlterConfigs through any node): this copy follows.
            if let Err(e) = broker
                .topics
                .alter_configs(&state.name, state.configs.clone(), false)
            {
                tracing::warn!(topic = state.name, error = %e, "cannot take the metadata's configs");
            }
        }
        for (index, p) in &state.partitions {
            let Some(local) = topic.partition(*index) else {
                continue;
            };
            if p.leader == me {
                local.become_leader(me, p.leader_epoch, p.partition_epoch, &p.replicas, &p.isr);
            } else {
                local.become_follower(p.leader_epoch);
                if !p.replicas.contains(&me) {
                    // Not a replica (or no longer, after a reassignment): if it becomes one
                    // again, its log is checked against the leader's before it fetches.
                    local.recheck();
                }
            }
        }
    }
    for topic in broker.topics.list() {
        if image.topics.contains_key(&topic.id) {
            continue;
        }
        if known.remove(&topic.id) {
            match broker.topics.delete(&topic.name) {
                Ok(_) => tracing::info!(topic = topic.name, "deleted, as the metadata says"),
                Err(e) => tracing::warn!(topic = topic.name, error = %e, "cannot delete"),
            }
            if let Err(e) = broker.offsets.delete_topic(&topic.name) {
                tracing::warn!(topic = topic.name, error = %e, "could not drop committed offsets");
            }
        } else {
            for partition in &topic.partitions {
                partition.set_leader(false, partition.leader_epoch());
            }
        }
    }
    follow_coordinators(broker, image);
}

/// The coordinators follow the leaders of their internal topics: this node loads the groups
/// (`__consumer_offsets`) and transactional ids (`__transaction_state`) of each partition it
/// has come to lead, and drops those of each one it no longer leads (their new coordinator
/// loads them). Transactions a lost coordinator left half-ended are finished at once.
fn follow_coordinators(broker: &Broker, image: &MetadataImage) {
    let groups = Coordinator {
        topic: OFFSETS_TOPIC,
        loaded: broker.offsets.loaded(),
        load: &|index, partition, min_insync| broker.offsets.load(index, partition, min_insync),
        unload: &|index| {
            let unloaded = broker.offsets.unload(index);
            if unloaded {
                let offsets = &broker.offsets;
                broker
                    .groups
                    .forget(|group| offsets.partition_of(group) == index);
            }
            unloaded
        },
    };
    let transactions = Coordinator {
        topic: TRANSACTION_STATE_TOPIC,
        loaded: broker.txns.loaded(),
        load: &|index, partition, min_insync| broker.txns.load(index, partition, min_insync),
        unload: &|index| broker.txns.unload(index),
    };
    if follow_topic(broker, image, &groups) | follow_topic(broker, image, &transactions) {
        broker.txns.recover(broker);
    }
}

/// One coordinator's side of following its internal topic.
struct Coordinator<'a> {
    topic: &'static str,
    loaded: Vec<i32>,
    load: &'a dyn Fn(i32, Arc<Partition>, usize) -> std::io::Result<usize>,
    unload: &'a dyn Fn(i32) -> bool,
}

/// Loads and unloads `coordinator`'s partitions as `image` says; whether it loaded any.
fn follow_topic(broker: &Broker, image: &MetadataImage, coordinator: &Coordinator) -> bool {
    let me = broker.node_id();
    let name = coordinator.topic;
    let state = image.topic_id(name).and_then(|id| image.topics.get(&id));
    let leads = |index: i32| {
        state
            .and_then(|s| s.partitions.get(&index))
            .is_some_and(|p| p.leader == me)
    };
    for index in coordinator.loaded.iter().copied().filter(|i| !leads(*i)) {
        if (coordinator.unload)(index) {
            tracing::info!(
                partition = index,
                "no longer the coordinator of {name}'s keys"
            );
        }
    }
    let (Some(state), Some(topic)) = (state, broker.topics.get(name)) else {
        return false;
    };
    let min_insync = broker
        .config
        .cluster
        .as_ref()
        .map_or(1, |c| c.min_insync_replicas);
    let mut loaded_any = false;
    for (index, p) in &state.partitions {
        if p.leader != me || coordinator.loaded.contains(index) {
            continue;
        }
        let Some(local) = topic.partition(*index) else {
            continue;
        };
        let needed = min_insync.min(p.replicas.len());
        match (coordinator.load)(*index, local.clone(), needed) {
            Ok(count) => {
                loaded_any = true;
                tracing::info!(partition = index, count, "coordinating the keys of {name}");
            }
            Err(e) => tracing::error!(partition = index, error = %e, "cannot load {name}"),
        }
    }
    loaded_any
}

/// The local topic of metadata topic `id`, created if missing.
fn local_topic(broker: &Broker, id: Uuid, state: &TopicState) -> Option<Arc<Topic>> {
    let partitions = i32::try_from(state.partitions.len()).ok()?;
    if let Some(topic) = broker.topics.get_by_id(id) {
        if topic.partitions.len() >= state.partitions.len() {
            return Some(topic);
        }
        // Grown in the metadata (CreatePartitions): this node's copy grows too.
        return match broker.topics.add_partitions(&state.name, partitions, false) {
            Ok(topic) => Some(topic),
            Err(TopicError::CannotShrink { .. }) => broker.topics.get_by_id(id),
            Err(e) => {
                tracing::warn!(topic = state.name, error = %e, "cannot add the metadata's partitions");
                None
            }
        };
    }
    let created =
        broker
            .topics
            .create_with_id(&state.name, id, Some(partitions), state.configs.clone());
    match created {
        Ok(topic) => Some(topic),
        // Created meanwhile by the other path (a create request waiting for it).
        Err(TopicError::AlreadyExists(_)) => broker.topics.get_by_id(id),
        Err(e) => {
            tracing::warn!(topic = state.name, error = %e, "cannot create the metadata's topic");
            None
        }
    }
}

/// Why the controller refused or could not do a change, as Kafka's error and a message.
pub type Refusal = (ResponseError, String);

/// A decision the metadata refuses (by the controller, or checked beforehand against this
/// node's image), as Kafka's error and a message.
pub fn refused(e: &MetadataError) -> Refusal {
    let error = match e {
        MetadataError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        MetadataError::NotEnoughBrokers { .. } => ResponseError::InvalidReplicationFactor,
        MetadataError::NoTopic(_) => ResponseError::UnknownTopicOrPartition,
        MetadataError::CannotShrink { .. } => ResponseError::InvalidPartitions,
        MetadataError::NoPartition { .. } => ResponseError::UnknownTopicOrPartition,
        MetadataError::BadReplicas(_)
        | MetadataError::UnknownReplica { .. }
        | MetadataError::ReplicaCountDiffers { .. }
        | MetadataError::AllReplicasFenced(_)
        | MetadataError::CannotRevert { .. } => ResponseError::InvalidReplicaAssignment,
        MetadataError::NoReassignment { .. } => ResponseError::NoReassignmentInProgress,
        _ => ResponseError::InvalidRequest,
    };
    (error, e.to_string())
}

fn refusal(reply: ControllerReply) -> Refusal {
    match reply {
        ControllerReply::Refused(e) => refused(&e),
        ControllerReply::NotController { .. } => (
            ResponseError::NotController,
            "no active controller at the moment; try again".into(),
        ),
        _ => (
            ResponseError::RequestTimedOut,
            "the cluster could not make the change in time; try again".into(),
        ),
    }
}

/// Runs `future` to its end from a handler on the blocking pool.
fn wait<F: Future>(future: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(future)
}

/// Where a new topic's partitions go: `partitions` of them spread over the live nodes,
/// `replication` replicas each, or (when not empty) the replicas `assignments` names for each.
pub struct Placement {
    pub partitions: i32,
    pub replication: usize,
    pub assignments: Vec<Vec<NodeId>>,
}

/// Asks the active controller for a topic and waits until this node has it. From a handler on
/// the blocking pool.
pub fn create_topic(
    broker: &Broker,
    quorum: &Quorum,
    name: &str,
    placement: Placement,
    configs: BTreeMap<String, String>,
) -> Result<Arc<Topic>, Refusal> {
    let request = ControllerRequest::CreateTopic {
        name: name.to_owned(),
        partitions: placement.partitions,
        replication: placement.replication,
        configs,
        assignments: placement.assignments,
    };
    let id = match wait(quorum.request(request)) {
        ControllerReply::Created { id } => id,
        other => return Err(refusal(other)),
    };
    let image = wait(visible(quorum, |image| image.topics.contains_key(&id)))
        .ok_or_else(|| refusal(ControllerReply::Failed("not visible".into())))?;
    local_topic(broker, id, &image.topics[&id]).ok_or_else(|| {
        (
            ResponseError::KafkaStorageError,
            "cannot create the topic's logs".into(),
        )
    })
}

/// Asks the active controller to delete topic `name` and waits until this node's image no
/// longer has it. From a handler on the blocking pool.
pub fn delete_topic(quorum: &Quorum, name: &str) -> Result<(), Refusal> {
    let request = ControllerRequest::DeleteTopic {
        name: name.to_owned(),
    };
    match wait(quorum.request(request)) {
        ControllerReply::Done => {}
        other => return Err(refusal(other)),
    }
    wait(visible(quorum, |image| image.topic_id(name).is_none()))
        .map(|_| ())
        .ok_or_else(|| refusal(ControllerReply::Failed("not visible".into())))
}

/// Asks the active controller to give `partitions` back to their preferred leaders: each one's
/// outcome, in order. From a handler on the blocking pool.
pub fn elect_preferred(
    quorum: &Quorum,
    partitions: Vec<(Uuid, i32)>,
) -> Result<Vec<Result<(), MetadataError>>, Refusal> {
    match wait(quorum.request(ControllerRequest::ElectPreferred { partitions })) {
        ControllerReply::Outcomes(outcomes) => Ok(outcomes),
        other => Err(refusal(other)),
    }
}

/// Asks the active controller to move `partitions`' replicas to the targets given (`None`:
/// cancel the move under way): each one's outcome, in order. The moves go on after the answer
/// (ListPartitionReassignments shows them). From a handler on the blocking pool.
pub fn reassign(
    quorum: &Quorum,
    partitions: Vec<(Uuid, i32, Option<Vec<NodeId>>)>,
) -> Result<Vec<Result<(), MetadataError>>, Refusal> {
    match wait(quorum.request(ControllerRequest::Reassign { partitions })) {
        ControllerReply::Outcomes(outcomes) => Ok(outcomes),
        other => Err(refusal(other)),
    }
}

/// Asks the active controller to make `configs` topic `name`'s overrides and waits until this
/// node's image has them (each node then applies them to its copy). From a handler on the
/// blocking pool.
pub fn alter_configs(
    quorum: &Quorum,
    name: &str,
    configs: BTreeMap<String, String>,
) -> Result<(), Refusal> {
    let request = ControllerRequest::AlterConfigs {
        name: name.to_owned(),
        configs: configs.clone(),
    };
    match wait(quorum.request(request)) {
        ControllerReply::Done => {}
        other => return Err(refusal(other)),
    }
    let applied = |image: &MetadataImage| {
        let id = image.topic_id(name);
        id.is_some_and(|id| image.topics[&id].configs == configs)
    };
    wait(visible(quorum, applied))
        .map(|_| ())
        .ok_or_else(|| refusal(ControllerReply::Failed("not visible".into())))
}

/// Asks the active controller to grow topic `name` to `count` partitions and waits until this
/// node has them (the other nodes add theirs as they apply the metadata). From a handler on the
/// blocking pool.
pub fn create_partitions(
    broker: &Broker,
    quorum: &Quorum,
    name: &str,
    count: i32,
) -> Result<(), Refusal> {
    let request = ControllerRequest::CreatePartitions {
        name: name.to_owned(),
        count,
    };
    match wait(quorum.request(request)) {
        ControllerReply::Done => {}
        other => return Err(refusal(other)),
    }
    let grown = |image: &MetadataImage| {
        let id = image.topic_id(name);
        id.is_some_and(|id| image.topics[&id].partitions.len() >= count as usize)
    };
    let image = wait(visible(quorum, grown))
        .ok_or_else(|| refusal(ControllerReply::Failed("not visible".into())))?;
    let id = image.topic_id(name).expect("visible above");
    local_topic(broker, id, &image.topics[&id])
        .filter(|t| t.partitions.len() >= count as usize)
        .map(|_| ())
        .ok_or_else(|| {
            (
                ResponseError::KafkaStorageError,
                "cannot create the partitions' logs".into(),
            )
        })
}

/// Creates an internal topic, `__consumer_offsets` or `__transaction_state`, as Kafka does
/// with the first group or transactional producer: `partitions` partitions, three replicas or
/// as many nodes as are live, compacted (each key's latest record is the state a new
/// coordinator loads). Returns once this node's image has it, or after 10 s; a concurrent
/// creation by another node counts.
pub async fn create_internal_topic(quorum: &Quorum, name: &str, partitions: i32) {
    let live = quorum.image().live_brokers().len();
    let request = ControllerRequest::CreateTopic {
        name: name.to_owned(),
        partitions,
        replication: live.clamp(1, 3),
        configs: BTreeMap::from([("cleanup.policy".to_owned(), "compact".to_owned())]),
        assignments: Vec::new(),
    };
    match quorum.request(request).await {
        ControllerReply::Created { id } => tracing::info!(%id, "created {name}"),
        other => tracing::debug!(?other, "{name} not created here"),
    }
    visible(quorum, |image| image.topic_id(name).is_some()).await;
}

/// This node's image once `ready` holds of it, or `None` after [`CHANGE_VISIBLE`].
async fn visible(
    quorum: &Quorum,
    ready: impl Fn(&MetadataImage) -> bool,
) -> Option<Arc<MetadataImage>> {
    let mut images = quorum.subscribe();
    let seen = tokio::time::timeout(CHANGE_VISIBLE, images.wait_for(|image| ready(image))).await;
    seen.ok()?.ok().map(|image| image.clone())
}
