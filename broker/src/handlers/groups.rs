//! Group membership APIs: FindCoordinator (also for transactions), JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups. The state machine itself lives in `crate::group`.

use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::group_offsets::not_coordinator;
use super::route::ClientContext;
use super::route::{code, str_bytes};
use crate::broker::Broker;
use crate::config::Advertised;
use crate::group::{GroupState, JoinRequest};
use crate::internal_topic::partition_for;
use crate::offset_store::OFFSETS_TOPIC;
use crate::txn::TRANSACTION_STATE_TOPIC;

use kafka_protocol::messages::ResponseKind;

use super::route::{Reply, Route, route};

/// The group coordinator lives in memory: these run on the async workers (join and sync wait
/// for the other members).
pub(super) static ROUTES: &[Route] = &[
    route!(FindCoordinator, 0..=4, async, |b, r, c| {
        Reply::send(ResponseKind::FindCoordinator(
            find_coordinator(&b, &c.ctx.advertised, r, c.version).await,
        ))
    }),
    route!(JoinGroup, 0..=9, async, |b, r, c| {
        Reply::send(ResponseKind::JoinGroup(
            join(&b, &c.ctx, &c.client_id, r, c.version).await,
        ))
    }),
    route!(SyncGroup, 0..=5, async, |b, r, _c| {
        Reply::send(ResponseKind::SyncGroup(sync(&b, r).await))
    }),
    route!(Heartbeat, 0..=4, async, |b, r, _c| {
        Reply::send(ResponseKind::Heartbeat(heartbeat(&b, r)))
    }),
    route!(LeaveGroup, 0..=4, async, |b, r, c| {
        Reply::send(ResponseKind::LeaveGroup(leave(&b, r, c.version)))
    }),
    route!(ListGroups, 0..=4, async, |b, r, _c| {
        Reply::send(ResponseKind::ListGroups(list(&b, r)))
    }),
    route!(DescribeGroups, 0..=5, async, |b, r, _c| {
        Reply::send(ResponseKind::DescribeGroups(describe(&b, r)))
    }),
];

/// A coordinator as FindCoordinator names it: node id, host, port.
type Found = (i32, StrBytes, i32);

/// The coordinator of a group or transactional id: this node on its own. In a cluster, as in
/// Kafka, the leader of the key's partition of `__consumer_offsets` (a group) or
/// `__transaction_state` (a transactional id), the topic created with the first such key.
async fn coordinator_of(
    broker: &Broker,
    advertised: &Advertised,
    key_type: i8,
    key: &str,
) -> Result<Found, ResponseError> {
    let me = (
        broker.node_id(),
        str_bytes(advertised.host.clone()),
        advertised.port,
    );
    let Some(quorum) = &broker.quorum else {
        return Ok(me);
    };
    let (topic, partitions) = if key_type == 0 {
        (OFFSETS_TOPIC, broker.offsets.partitions())
    } else {
        (TRANSACTION_STATE_TOPIC, broker.txns.partitions())
    };
    let mut image = quorum.image();
    if image.topic_id(topic).is_none() {
        crate::cluster::create_internal_topic(quorum, topic, partitions).await;
        image = quorum.image();
    }
    let index = partition_for(key, partitions);
    let chosen = image
        .topic_id(topic)
        .and_then(|id| image.topics[&id].partitions.get(&index))
        .map(|p| p.leader)
        .filter(|leader| *leader >= 0);
    let chosen = chosen.ok_or(ResponseError::CoordinatorNotAvailable)?;
    if chosen == me.0 {
        return Ok(me);
    }
    let node = image
        .brokers
        .get(&chosen)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    Ok((chosen, str_bytes(node.host.clone()), i32::from(node.port)))
}

pub async fn find_coordinator(
    broker: &Broker,
    advertised: &Advertised,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    // key_type 0 asks for a group coordinator, 1 for a transaction coordinator. Others (2,
    // share groups) this broker has not.
    let key_type = request.key_type;
    let find = async |key: &str| {
        if !matches!(key_type, 0 | 1) {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        coordinator_of(broker, advertised, key_type, key).await
    };
    if version >= 4 {
        let mut coordinators = Vec::new();
        for key in request.coordinator_keys {
            let answer = Coordinator::default();
            let answer = match find(key.as_str()).await {
                Ok((id, host, port)) => answer
                    .with_node_id(BrokerId(id))
                    .with_host(host)
                    .with_port(port),
                Err(e) => answer.with_node_id(BrokerId(-1)).with_error_code(e.code()),
            };
            coordinators.push(answer.with_key(key));
        }
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match find(request.key.as_str()).await {
        Ok((id, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(id))
            .with_host(host)
            .with_port(port),
        Err(e) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(-1))
            .with_error_code(e.code()),
    }
}

pub async fn join(
    broker: &Broker,
    ctx: &ClientContext,
    client_id: &str,
    request: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    if let Some(e) = not_coordinator(broker, request.group_id.as_str()) {
        return JoinGroupResponse::default()
            .with_error_code(e.code())
            .with_generation_id(-1)
            .with_member_id(request.member_id);
    }
    let session_timeout = Duration::from_millis(request.session_timeout_ms.max(0) as u64);
    // v0 has no rebalance timeout; Kafka uses the session timeout then.
    let rebalance_timeout = if version == 0 || request.rebalance_timeout_ms <= 0 {
        session_timeout
    } else {
        Duration::from_millis(request.rebalance_timeout_ms as u64)
    };
    let result = broker
        .groups
        .join(JoinRequest {
            group_id: request.group_id.as_str().to_string(),
            member_id: request.member_id.as_str().to_string(),
            group_instance_id: request.group_instance_id.map(|s| s.as_str().to_string()),
            client_id: client_id.to_string(),
            client_host: format!("/{}", ctx.peer.ip()),
            session_timeout,
            rebalance_timeout,
            protocol_type: request.protocol_type.as_str().to_string(),
            protocols: request
                .protocols
                .into_iter()
                .map(|p| (p.name.as_str().to_string(), p.metadata))
                .collect(),
            require_known_member_id: version >= 4,
        })
        .await;
    // The protocol name may only be null from v7 on; older versions get "" instead.
    let protocol_name = match result.protocol_name {
        None if version < 7 => Some(String::new()),
        name => name,
    };
    // Only v9 can tell a static leader to keep the assignment; older leaders compute one, which
    // a stable group ignores (SyncGroup answers the assignment it holds).
    JoinGroupResponse::default()
        .with_skip_assignment(version >= 9 && result.skip_assignment)
        .with_error_code(code(result.error))
        .with_generation_id(result.generation_id)
        .with_protocol_type(result.protocol_type.map(str_bytes))
        .with_protocol_name(protocol_name.map(str_bytes))
        .with_leader(str_bytes(result.leader))
        .with_member_id(str_bytes(result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(id))
                        .with_group_instance_id(instance.map(str_bytes))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}

pub async fn sync(broker: &Broker, request: SyncGroupRequest) -> SyncGroupResponse {
    if let Some(e) = not_coordinator(broker, request.group_id.as_str()) {
        return SyncGroupResponse::default().with_error_code(e.code());
    }
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.as_str().to_string(), a.assignment))
        .collect();
    let result = broker
        .groups
        .sync(
            request.group_id.as_str(),
            request.generation_id,
            request.member_id.as_str(),
            request.group_instance_id.as_deref(),
            assignments,
        )
        .await;
    SyncGroupResponse::default()
        .with_error_code(code(result.error))
        .with_protocol_type(result.protocol_type.map(str_bytes))
        .with_protocol_name(result.protocol_name.map(str_bytes))
        .with_assignment(result.assignment)
}

pub fn heartbeat(broker: &Broker, request: HeartbeatRequest) -> HeartbeatResponse {
    let error = not_coordinator(broker, request.group_id.as_str()).or_else(|| {
        broker.groups.heartbeat(
            request.group_id.as_str(),
            request.generation_id,
            request.member_id.as_str(),
            request.group_instance_id.as_deref(),
        )
    });
    HeartbeatResponse::default().with_error_code(code(error))
}

pub fn leave(broker: &Broker, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    if let Some(e) = not_coordinator(broker, request.group_id.as_str()) {
        return LeaveGroupResponse::default().with_error_code(e.code());
    }
    if version < 3 {
        let ids = [(request.member_id.as_str().to_string(), None)];
        let errors = broker.groups.leave(request.group_id.as_str(), &ids);
        return LeaveGroupResponse::default().with_error_code(code(errors[0]));
    }
    let ids: Vec<(String, Option<String>)> = request
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.as_str().to_string(),
                m.group_instance_id.as_deref().map(str::to_owned),
            )
        })
        .collect();
    let errors = broker.groups.leave(request.group_id.as_str(), &ids);
    let members = request
        .members
        .into_iter()
        .zip(errors)
        .map(|(m, e)| {
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(code(e))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

pub fn list(broker: &Broker, request: ListGroupsRequest) -> ListGroupsResponse {
    let mut groups: Vec<(String, GroupState, String)> = broker.groups.list();
    // Groups known only by their committed offsets are Empty consumer groups.
    for name in broker.offsets.groups() {
        if !groups.iter().any(|(g, _, _)| *g == name) {
            groups.push((name, GroupState::Empty, "consumer".to_string()));
        }
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let wanted = |state: GroupState| {
        request.states_filter.is_empty()
            || request
                .states_filter
                .iter()
                .any(|s| s.as_str().eq_ignore_ascii_case(state.as_str()))
    };
    let listed = groups
        .into_iter()
        .filter(|(_, state, _)| wanted(*state))
        .map(|(name, state, protocol_type)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(name)))
                .with_protocol_type(str_bytes(protocol_type))
                .with_group_state(str_bytes(state.as_str()))
                .with_group_type(str_bytes("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}

pub fn describe(broker: &Broker, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            let described = DescribedGroup::default()
                .with_group_id(group_id.clone())
                .with_authorized_operations(i32::MIN);
            if let Some(e) = not_coordinator(broker, group_id.as_str()) {
                return described.with_error_code(e.code());
            }
            match broker.groups.describe(group_id.as_str()) {
                Some(g) => described
                    .with_group_state(str_bytes(g.state.as_str()))
                    .with_protocol_type(str_bytes(g.protocol_type))
                    .with_protocol_data(str_bytes(g.protocol))
                    .with_members(
                        g.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(m.member_id))
                                    .with_group_instance_id(m.group_instance_id.map(str_bytes))
                                    .with_client_id(str_bytes(m.client_id))
                                    .with_client_host(str_bytes(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
                None if broker.offsets.has_group(group_id.as_str()) => described
                    .with_group_state(str_bytes("Empty"))
                    .with_protocol_type(str_bytes("consumer")),
                None => described.with_group_state(str_bytes("Dead")),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
