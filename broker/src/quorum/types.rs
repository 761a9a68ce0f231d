//! The quorum's types: what its log holds ([`Proposal`]), what applying an entry comes to,
//! openraft's type configuration, and what brokers ask of the active controller.

use std::collections::BTreeMap;
use std::io::Cursor;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::metadata::{MetadataError, MetadataRecord, NodeId};

/// One entry of the metadata log: records applied together, all or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub records: Vec<MetadataRecord>,
}

/// What applying a [`Proposal`] came to.
pub type Applied = Result<(), MetadataError>;

openraft::declare_raft_types!(
    /// The metadata quorum's types for openraft.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// What a broker asks of the active controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// A broker starts: it is registered with a new epoch, fenced until its first heartbeat.
    Register {
        id: NodeId,
        host: String,
        port: u16,
    },
    /// The broker at this epoch is alive (and unfenced if it was fenced).
    Heartbeat {
        id: NodeId,
        epoch: i64,
    },
    /// The broker stops: fence it now, so that its partitions move before its session ends.
    Shutdown {
        id: NodeId,
        epoch: i64,
    },
    /// A topic of `partitions` partitions, each on `replication` live brokers, or on the
    /// replicas `assignments` gives each partition, if any.
    CreateTopic {
        name: String,
        partitions: i32,
        replication: usize,
        configs: BTreeMap<String, String>,
        #[serde(default)]
        assignments: Vec<Vec<NodeId>>,
    },
    DeleteTopic {
        name: String,
    },
    /// Make `configs` topic `name`'s overrides (AlterConfigs, IncrementalAlterConfigs).
    AlterConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Grow topic `name` to `count` partitions (CreatePartitions).
    CreatePartitions {
        name: String,
        count: i32,
    },
    /// Give these partitions back to their preferred leaders (ElectLeaders).
    ElectPreferred {
        partitions: Vec<(Uuid, i32)>,
    },
    /// Move these partitions' replicas to the targets given (`None`: cancel the move under
    /// way), AlterPartitionReassignments.
    Reassign {
        partitions: Vec<(Uuid, i32, Option<Vec<NodeId>>)>,
    },
    /// A broker needs producer ids: the next block, reserved for it in the metadata so that no
    /// two nodes ever hand out the same id.
    AllocateProducerIds {
        id: NodeId,
    },
    /// A partition's leader asks for a new ISR (Kafka's AlterPartition), against the partition
    /// epoch it knows.
    AlterPartition {
        topic: Uuid,
        partition: i32,
        leader: NodeId,
        partition_epoch: i32,
        isr: Vec<NodeId>,
    },
}

/// The active controller's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerReply {
    Registered {
        epoch: i64,
    },
    /// The topic was created with this id.
    Created {
        id: Uuid,
    },
    /// Producer ids `start..end` are this broker's to hand out.
    ProducerIds {
        start: i64,
        end: i64,
    },
    /// Each partition of an election or a reassignment, in the order asked: done (or begun),
    /// or why not.
    Outcomes(Vec<Result<(), MetadataError>>),
    Done,
    /// The request does not apply (a stale epoch: the broker registers again).
    Refused(MetadataError),
    /// This node is not the active controller (the one it knows of, if any).
    NotController {
        leader: Option<NodeId>,
    },
    /// The log could not be written (e.g. the quorum lost its majority meanwhile).
    Failed(String),
}
