//! Admin APIs, in files by what they change: [`topics`] (CreateTopics, DeleteTopics,
//! CreatePartitions, DeleteRecords), [`configs`] (DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs), [`leaders`] (ElectLeaders), [`reassignments`]
//! (AlterPartitionReassignments, ListPartitionReassignments) and [`log_dirs`]
//! (DescribeLogDirs).

mod configs;
mod leaders;
mod log_dirs;
mod reassignments;
mod topics;

use kafka_protocol::messages::ResponseKind;

use super::route::{Reply, Route, route};
use configs::{alter_configs, describe_configs, incremental_alter_configs};
use leaders::elect_leaders;
use log_dirs::describe_log_dirs;
use reassignments::{alter_partition_reassignments, list_partition_reassignments};
use topics::{create_partitions, create_topics, delete_records, delete_topics};

/// Topic changes write to disk; DescribeConfigs takes the topics' lock, held across those writes.
pub(super) static ROUTES: &[Route] = &[
    route!(CreateTopics, 2..=7, disk, |b, r, c| {
        Reply::send(ResponseKind::CreateTopics(create_topics(b, r, c.version)))
    }),
    route!(DeleteTopics, 1..=6, disk, |b, r, _c| {
        Reply::send(ResponseKind::DeleteTopics(delete_topics(b, r)))
    }),
    route!(CreatePartitions, 0..=3, disk, |b, r, _c| {
        Reply::send(ResponseKind::CreatePartitions(create_partitions(b, r)))
    }),
    route!(DeleteRecords, 0..=2, disk, |b, r, _c| {
        Reply::send(ResponseKind::DeleteRecords(delete_records(b, r)))
    }),
    route!(AlterConfigs, 0..=2, disk, |b, r, _c| {
        Reply::send(ResponseKind::AlterConfigs(alter_configs(b, r)))
    }),
    route!(IncrementalAlterConfigs, 0..=1, disk, |b, r, _c| {
        Reply::send(ResponseKind::IncrementalAlterConfigs(
            incremental_alter_configs(b, r),
        ))
    }),
    route!(ElectLeaders, 0..=2, disk, |b, r, _c| {
        Reply::send(ResponseKind::ElectLeaders(elect_leaders(b, r)))
    }),
    route!(AlterPartitionReassignments, 0..=1, disk, |b, r, _c| {
        Reply::send(ResponseKind::AlterPartitionReassignments(
            alter_partition_reassignments(b, r),
        ))
    }),
    route!(ListPartitionReassignments, 0..=0, disk, |b, r, _c| {
        Reply::send(ResponseKind::ListPartitionReassignments(
            list_partition_reassignments(b, r),
        ))
    }),
    route!(DescribeLogDirs, 1..=4, disk, |b, r, _c| {
        Reply::send(ResponseKind::DescribeLogDirs(describe_log_dirs(b, r)))
    }),
    route!(DescribeConfigs, 1..=4, disk, |b, r, _c| {
        Reply::send(ResponseKind::DescribeConfigs(describe_configs(b, r)))
    }),
];
