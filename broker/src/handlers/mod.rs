//! Request handlers, one module per API family, and the route registry they make up.
//!
//! Each module declares its routes with `route!` (`route.rs`): the API key, the versions served,
//! whether it touches the disk, and the handler. [`ROUTES`] gathers them; the ApiVersions
//! answer ([`advertised`]), the codec's admission ([`decodable`]) and [`handle`] all read that
//! one list, so the broker can never advertise an API it does not serve. A route marked `disk` runs on tokio's blocking pool by construction: a
//! slow disk (fsync, dirty-page throttling) then never stalls the async workers that heartbeats
//! and other clients need.

use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, ResponseKind};

use crate::broker::Broker;
use crate::codec::{Body, Request};

mod route;
pub use route::{Call, ClientContext, Reply, Route, Run};
use route::{on_disk, route};

mod admin;
mod api_versions;
mod fetch;
mod group_offsets;
mod groups;
mod list_offsets;
mod metadata;
mod partitions;
mod produce;
mod producer_id;
mod txn;

/// Every served API, module by module.
pub static ROUTES: &[&[Route]] = &[
    API_VERSIONS,
    metadata::ROUTES,
    produce::ROUTES,
    fetch::ROUTES,
    list_offsets::ROUTES,
    producer_id::ROUTES,
    txn::ROUTES,
    groups::ROUTES,
    group_offsets::ROUTES,
    admin::ROUTES,
];

/// ApiVersions is answered by the registry itself, from [`ROUTES`].
static API_VERSIONS: &[Route] = &[route!(ApiVersions, 0..=3, async, |_b, _r, _c| {
    Reply::send(ResponseKind::ApiVersions(api_versions::answer(served())))
})];

/// The route of `api`, if it is served.
pub fn route_of(api: ApiKey) -> Option<&'static Route> {
    ROUTES.iter().flat_map(|m| m.iter()).find(|r| r.api == api)
}

/// The advertised `(min, max)` of an API, or `None` if it isn't served. Each range is clipped to
/// what the codec crate supports (Produce keeps its v0, see its route).
pub fn advertised(api: ApiKey) -> Option<(i16, i16)> {
    route_of(api).map(|route| {
        let (min, max) = route.versions;
        let codec = api.valid_versions();
        let min = if api == ApiKey::Produce {
            min
        } else {
            min.max(codec.min)
        };
        (min, max.min(codec.max))
    })
}

/// The `(min, max)` the broker can actually decode and answer: what the codec admits.
pub fn decodable(api: ApiKey) -> Option<(i16, i16)> {
    advertised(api).map(|(min, max)| (min.max(api.valid_versions().min), max))
}

/// Every served API with its advertised range, for ApiVersions.
pub fn served() -> impl Iterator<Item = (ApiKey, i16, i16)> {
    ROUTES
        .iter()
        .flat_map(|module| module.iter())
        .filter_map(|r| advertised(r.api).map(|(min, max)| (r.api, min, max)))
}

/// Handles one decoded request through its route.
pub async fn handle(broker: &Arc<Broker>, ctx: &ClientContext, request: Request) -> Reply {
    let kind = match request.body {
        Body::ApiVersionsTooNew => {
            return Reply::send(ResponseKind::ApiVersions(api_versions::too_new(served())));
        }
        Body::Decoded(kind) => *kind,
    };
    // The codec admits only the keys of routes.
    let Some(route) = route_of(request.api_key) else {
        return Reply::Close;
    };
    let call = Call {
        version: request.version,
        client_id: request
            .header
            .client_id
            .as_ref()
            .map(|c| c.as_str().to_string())
            .unwrap_or_default(),
        ctx: ctx.clone(),
    };
    match route.run {
        Run::Async(handler) => handler(broker.clone(), kind, call).await,
        Run::Disk(handler) => on_disk(broker, move |b| handler(b, kind, call)).await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use bytes::{BufMut, BytesMut};

    use super::*;
    use crate::codec::{CodecError, decode_request};

    fn registered() -> Vec<&'static Route> {
        ROUTES.iter().flat_map(|m| m.iter()).collect()
    }

    #[test]
    fn each_api_has_one_route() {
        let keys: BTreeSet<i16> = registered().iter().map(|r| r.api as i16).collect();
        assert_eq!(keys.len(), registered().len(), "an API key routed twice");
    }

    #[test]
    fn api_versions_advertises_exactly_the_routes() {
        let advertised: BTreeSet<(i16, i16, i16)> = api_versions::answer(served())
            .api_keys
            .iter()
            .map(|v| (v.api_key, v.min_version, v.max_version))
            .collect();
        let routed: BTreeSet<(i16, i16, i16)> = registered()
            .iter()
            .map(|r| {
                let (min, max) = super::advertised(r.api).unwrap();
                (r.api as i16, min, max)
            })
            .collect();
        assert_eq!(advertised, routed);
        for (key, min, max) in advertised {
            assert!(min <= max, "API {key}: empty range {min}..={max}");
        }
    }

    /// A frame with just a request header's first fields: enough for admission.
    fn frame(key: i16, version: i16) -> bytes::Bytes {
        let mut b = BytesMut::new();
        b.put_i16(key);
        b.put_i16(version);
        b.put_i32(7);
        b.put_i16(-1);
        b.freeze()
    }

    #[test]
    fn the_codec_admits_exactly_the_routed_apis() {
        for key in -1..100i16 {
            let routed = ApiKey::try_from(key).ok().and_then(route_of);
            let version = routed.map_or(0, |r| decodable(r.api).unwrap().1);
            let result = decode_request(frame(key, version), decodable);
            let refused = matches!(result, Err(CodecError::UnknownApiKey(_)));
            assert_eq!(
                refused,
                routed.is_none(),
                "API key {key}: routed {}, codec {result:?}",
                routed.is_some()
            );
        }
    }

    #[test]
    fn disk_routes_are_the_ones_that_touch_the_disk() {
        let disk: Vec<ApiKey> = registered()
            .iter()
            .filter(|r| r.touches_disk())
            .map(|r| r.api)
            .collect();
        for api in [
            ApiKey::Produce,
            ApiKey::ListOffsets,
            ApiKey::OffsetCommit,
            ApiKey::OffsetFetch,
            ApiKey::CreateTopics,
            ApiKey::DeleteTopics,
            ApiKey::InitProducerId,
            ApiKey::AddPartitionsToTxn,
            ApiKey::AddOffsetsToTxn,
            ApiKey::TxnOffsetCommit,
            ApiKey::EndTxn,
        ] {
            assert!(disk.contains(&api), "{api:?} runs on the blocking pool");
        }
        for api in [
            ApiKey::Fetch,
            ApiKey::JoinGroup,
            ApiKey::SyncGroup,
            ApiKey::Heartbeat,
        ] {
            assert!(!disk.contains(&api), "{api:?} waits on the async workers");
        }
    }
}
