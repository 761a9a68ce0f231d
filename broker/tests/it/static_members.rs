//! Static group membership (KIP-345, `group.instance.id`): a member that restarts within its
//! session timeout takes its own place back, under a new member id, with its assignment and
//! without a rebalance of the others; its previous incarnation is fenced. Raw requests, so
//! each step (who waits, which generation, which error) is seen exactly.

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::TestBroker;
use common::raw::RawClient;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    OffsetCommitRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const GROUP: &str = "statics";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn join_request(member_id: &str, instance: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member_id))
        .with_group_instance_id(Some(s(instance)))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"subscription")),
        ])
}

/// Joins as a new member with a static instance id (taking a MEMBER_ID_REQUIRED round trip
/// if the broker asks for one).
async fn join(c: &mut RawClient, instance: &str) -> JoinGroupResponse {
    let r = c.call(&join_request("", instance), 9).await;
    if r.error_code == ResponseError::MemberIdRequired.code() {
        return c.call(&join_request(&r.member_id, instance), 9).await;
    }
    r
}

async fn sync(
    c: &mut RawClient,
    generation: i32,
    member: &str,
    instance: &str,
    assignments: Vec<(&str, &'static [u8])>,
) -> (i16, Bytes) {
    let request = SyncGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_group_instance_id(Some(s(instance)))
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(
            assignments
                .into_iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::from_static(a))
                })
                .collect(),
        );
    let r = c.call(&request, 5).await;
    (r.error_code, r.assignment)
}

async fn heartbeat(c: &mut RawClient, generation: i32, member: &str, instance: &str) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_group_instance_id(Some(s(instance)));
    c.call(&request, 4).await.error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_static_member_takes_its_place_back_without_a_rebalance() {
    let b = TestBroker::start().await;
    // The topic a zombie commits to below.
    common::create_topic(&b.bootstrap, "t", 1, &[]).await;
    let (mut a, mut other) = (
        RawClient::connect(&b.bootstrap).await,
        RawClient::connect(&b.bootstrap).await,
    );
    // Both join within the new group's initial delay: one generation, one leader.
    let (ja, jb) = tokio::join!(join(&mut a, "instance-a"), join(&mut other, "instance-b"));
    assert_eq!((ja.error_code, jb.error_code), (0, 0));
    assert_eq!(ja.generation_id, jb.generation_id);
    let generation = ja.generation_id;
    let (a_id, b_id) = (ja.member_id.to_string(), jb.member_id.to_string());
    let assignments = vec![
        (a_id.as_str(), &b"for-a"[..]),
        (b_id.as_str(), &b"for-b"[..]),
    ];
    let (leader, follower) = if ja.leader == ja.member_id {
        (
            (&mut a, &a_id, "instance-a"),
            (&mut other, &b_id, "instance-b"),
        )
    } else {
        (
            (&mut other, &b_id, "instance-b"),
            (&mut a, &a_id, "instance-a"),
        )
    };
    let (sl, sf) = tokio::join!(
        sync(leader.0, generation, leader.1, leader.2, assignments),
        sync(follower.0, generation, follower.1, follower.2, vec![])
    );
    assert_eq!((sl.0, sf.0), (0, 0));
    let a_was_leader = ja.leader == ja.member_id;

    // a's process restarts: a new connection, no member id, the same instance id. It is
    // answered at once (nobody else has to rejoin), in the same generation, under a new id.
    drop(a);
    let mut restarted = RawClient::connect(&b.bootstrap).await;
    let rejoined = tokio::time::timeout(Duration::from_secs(5), join(&mut restarted, "instance-a"))
        .await
        .expect("a restarted static member is answered without waiting for a rebalance");
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(rejoined.generation_id, generation, "no new generation");
    assert_ne!(rejoined.member_id.as_str(), a_id, "a new member id");
    let new_id = rejoined.member_id.to_string();
    if a_was_leader {
        assert_eq!(rejoined.leader.as_str(), new_id, "it stays the leader");
        assert!(rejoined.skip_assignment, "the leader keeps the assignment");
    }
    // Its sync gets its old assignment; the other member's heartbeat sees no rebalance.
    let (code, assignment) = sync(&mut restarted, generation, &new_id, "instance-a", vec![]).await;
    assert_eq!((code, &assignment[..]), (0, &b"for-a"[..]));
    assert_eq!(
        heartbeat(&mut other, generation, &b_id, "instance-b").await,
        0
    );

    // The previous incarnation is fenced wherever it shows up.
    let mut zombie = RawClient::connect(&b.bootstrap).await;
    assert_eq!(
        heartbeat(&mut zombie, generation, &a_id, "instance-a").await,
        ResponseError::FencedInstanceId.code()
    );
    let zombie_join = zombie.call(&join_request(&a_id, "instance-a"), 9).await;
    assert_eq!(
        zombie_join.error_code,
        ResponseError::FencedInstanceId.code()
    );
    // Its offset commit too (fatal for it: UNKNOWN_MEMBER_ID would make it rejoin with an empty
    // member id and take the live incarnation's place back).
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(&a_id))
        .with_group_instance_id(Some(s("instance-a")))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1),
                ]),
        ]);
    let committed = zombie.call(&commit, 8).await;
    assert_eq!(
        committed.topics[0].partitions[0].error_code,
        ResponseError::FencedInstanceId.code()
    );

    // Leaving by instance id alone (as Admin.removeMembersFromConsumerGroup does) removes it;
    // now the other member has to rebalance.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_members(vec![
            MemberIdentity::default()
                .with_member_id(s(""))
                .with_group_instance_id(Some(s("instance-a"))),
        ]);
    let left = zombie.call(&leave, 4).await;
    assert_eq!(left.members[0].error_code, 0);
    assert_eq!(
        heartbeat(&mut other, generation, &b_id, "instance-b").await,
        ResponseError::RebalanceInProgress.code()
    );
}
