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

use std::sync::Arc;

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

/// Runs disk work (appends, reads, offset lookups) on the blocking pool, so a slow disk (fsync,
/// dirty-page throttling) never stalls the async workers that heartbeats and other clients need.
async fn on_disk<T: Send + 'static>(
    broker: &Arc<Broker>,
    work: impl FnOnce(&Broker) -> T + Send + 'static,
) -> T {
    let broker = broker.clone();
    match tokio::task::spawn_blocking(move || work(&broker)).await {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Handles one decoded request.
pub async fn handle(broker: &Arc<Broker>, ctx: &ClientContext, request: Request) -> Reply {
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
        RequestKind::Metadata(r) => {
            let advertised = ctx.advertised.clone();
            ResponseKind::Metadata(
                on_disk(broker, move |b| metadata::handle(b, &advertised, r, v)).await,
            )
        }
        RequestKind::Produce(r) => match on_disk(broker, move |b| produce::handle(b, r)).await {
            Some(response) => ResponseKind::Produce(response),
            None => return Reply::Nothing,
        },
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(broker, r).await),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(
            on_disk(broker, move |b| list_offsets::list_offsets(b, r, v)).await,
        ),
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(list_offsets::offset_for_leader_epoch(broker, r))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(on_disk(broker, move |b| producer_id::handle(b, r)).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(&ctx.advertised, r, v))
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
            ResponseKind::OffsetCommit(on_disk(broker, move |b| group_offsets::commit(b, r)).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(group_offsets::fetch(broker, r, v))
        }
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(
            on_disk(broker, move |b| admin::create_topics(b, r, v)).await,
        ),
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(on_disk(broker, move |b| admin::delete_topics(b, r)).await)
        }
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
