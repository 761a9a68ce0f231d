//! Request handlers, one module per API family, behind one dispatch function.

mod admin;
mod api_versions;
mod fetch;
mod group_offsets;
mod groups;
mod list_offsets;
mod metadata;
mod produce;
mod producer_id;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::codec::{Body, Request};
use crate::connection::ClientContext;

/// What to send back.
#[derive(Debug)]
pub enum Reply {
    Send(Box<ResponseKind>),
    /// Produce with acks=0: the client expects no answer.
    Nothing,
}

/// Handles one decoded request.
pub async fn handle(broker: &Broker, ctx: &ClientContext, request: Request) -> Reply {
    let v = request.version;
    let client_id = request
        .header
        .client_id
        .as_ref()
        .map(|c| c.as_str().to_string())
        .unwrap_or_default();
    let kind = match request.body {
        Body::ApiVersionsTooNew => {
            return Reply::Send(Box::new(ResponseKind::ApiVersions(api_versions::too_new())));
        }
        Body::Decoded(kind) => *kind,
    };
    let response = match kind {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::handle()),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(broker, r, v)),
        RequestKind::Produce(r) => match produce::handle(broker, r) {
            Some(response) => ResponseKind::Produce(response),
            None => return Reply::Nothing,
        },
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(broker, r).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::list_offsets(broker, r, v))
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(list_offsets::offset_for_leader_epoch(broker, r))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(producer_id::handle(broker, r))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(broker, r, v))
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(groups::join(broker, ctx, &client_id, r, v).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync(broker, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(broker, r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(groups::leave(broker, r, v)),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list(broker, r)),
        RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(groups::describe(broker, r)),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(group_offsets::commit(broker, r))
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(group_offsets::fetch(broker, r, v))
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(broker, r, v))
        }
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(admin::delete_topics(broker, r)),
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(admin::describe_configs(broker, r))
        }
        // The codec only admits the APIs listed in `apis`, all matched above.
        other => unreachable!("codec admitted an unserved request: {other:?}"),
    };
    Reply::Send(Box::new(response))
}

/// Error code of an optional error, 0 for none.
fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
