//! Request handlers, one module per API family, and the route registry they make up.
//!
//! Each module declares its routes with [`route!`]: the API key, the versions served, whether it
//! touches the disk, and the handler. [`ROUTES`] gathers them; ApiVersions (`crate::apis`), the
//! codec's admission and [`handle`] all read that one list, so the broker can never advertise an
//! API it does not serve. A route marked `disk` runs on tokio's blocking pool by construction: a
//! slow disk (fsync, dirty-page throttling) then never stalls the async workers that heartbeats
//! and other clients need.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
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
    /// Close the connection (a request the route cannot take; never expected).
    Close,
}

impl Reply {
    fn send(body: ResponseKind) -> Self {
        Reply::Send(Box::new(body))
    }
}

/// One request as a route receives it.
pub struct Call {
    pub version: i16,
    pub client_id: String,
    pub ctx: ClientContext,
}

type AsyncHandler =
    fn(Arc<Broker>, RequestKind, Call) -> Pin<Box<dyn Future<Output = Reply> + Send>>;
type DiskHandler = fn(&Broker, RequestKind, Call) -> Reply;

/// How a route runs.
pub enum Run {
    /// On the async workers: it may wait (long polls, group joins) and never blocks on the disk.
    Async(AsyncHandler),
    /// On the blocking pool: it touches the disk, or takes a lock that is held across an fsync.
    Disk(DiskHandler),
}

/// One served API.
pub struct Route {
    pub api: ApiKey,
    /// The versions served, as advertised (each also clipped to what the codec supports).
    pub versions: (i16, i16),
    pub run: Run,
}

impl Route {
    /// Whether it runs on the blocking pool.
    pub fn touches_disk(&self) -> bool {
        matches!(self.run, Run::Disk(_))
    }
}

/// Declares a route: `route!(Api, min..=max, disk|async, |broker, request, call| body)`. The API
/// key and the request type come from the one name `Api`, so a route always receives the
/// request of its own API (the codec decodes the body by that key).
macro_rules! route {
    ($api:ident, $min:literal ..= $max:literal, disk, |$b:ident, $r:ident, $c:ident| $body:expr) => {
        $crate::handlers::Route {
            api: kafka_protocol::messages::ApiKey::$api,
            versions: ($min, $max),
            run: $crate::handlers::Run::Disk(|$b, request, $c| match request {
                kafka_protocol::messages::RequestKind::$api($r) => $body,
                other => {
                    $crate::handlers::wrong_request(kafka_protocol::messages::ApiKey::$api, &other)
                }
            }),
        }
    };
    ($api:ident, $min:literal ..= $max:literal, async, |$b:ident, $r:ident, $c:ident| $body:expr) => {
        $crate::handlers::Route {
            api: kafka_protocol::messages::ApiKey::$api,
            versions: ($min, $max),
            run: $crate::handlers::Run::Async(|$b, request, $c| {
                Box::pin(async move {
                    match request {
                        kafka_protocol::messages::RequestKind::$api($r) => $body,
                        other => $crate::handlers::wrong_request(
                            kafka_protocol::messages::ApiKey::$api,
                            &other,
                        ),
                    }
                })
            }),
        }
    };
}

mod admin;
mod api_versions;
mod fetch;
mod group_offsets;
mod groups;
mod list_offsets;
mod metadata;
mod produce;
mod producer_id;
mod txn;

/// Every served API, module by module.
pub static ROUTES: &[&[Route]] = &[
    api_versions::ROUTES,
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

/// The route of `api`, if it is served.
pub fn route(api: ApiKey) -> Option<&'static Route> {
    ROUTES.iter().flat_map(|m| m.iter()).find(|r| r.api == api)
}

/// A request that does not belong to the route it reached (impossible with [`route!`]; kept as
/// a closed connection rather than a panic on a network path).
fn wrong_request(api: ApiKey, request: &RequestKind) -> Reply {
    tracing::error!(?api, request = ?std::mem::discriminant(request), "request reached another API's route; closing the connection");
    Reply::Close
}

/// Runs disk work (appends, reads, offset lookups) on the blocking pool.
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

/// Handles one decoded request through its route.
pub async fn handle(broker: &Arc<Broker>, ctx: &ClientContext, request: Request) -> Reply {
    let kind = match request.body {
        Body::ApiVersionsTooNew => {
            return Reply::send(ResponseKind::ApiVersions(api_versions::too_new()));
        }
        Body::Decoded(kind) => *kind,
    };
    // The codec admits only the keys of routes.
    let Some(route) = route(request.api_key) else {
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

/// Error code of an optional error, 0 for none.
fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
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
        let advertised: BTreeSet<(i16, i16, i16)> = api_versions::handle()
            .api_keys
            .iter()
            .map(|v| (v.api_key, v.min_version, v.max_version))
            .collect();
        let routed: BTreeSet<(i16, i16, i16)> = registered()
            .iter()
            .map(|r| {
                let (min, max) = crate::apis::advertised(r.api).unwrap();
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
            let routed = ApiKey::try_from(key).ok().and_then(route);
            let version = routed.map_or(0, |r| crate::apis::decodable(r.api).unwrap().1);
            let result = decode_request(frame(key, version));
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
