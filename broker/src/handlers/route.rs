//! What every handler module builds on: a route (an API key, its versions, how it runs, its
//! handler), the [`route!`] macro that declares one, what a handler is given ([`Call`]) and
//! what it answers ([`Reply`]), and the helpers all of them use.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::config::Advertised;
use crate::zero_copy::FileRange;

/// Who is on the other end, for group member descriptions and logs.
#[derive(Debug, Clone)]
pub struct ClientContext {
    pub peer: SocketAddr,
    /// The address of the listener this client came in on, which metadata hands back.
    pub advertised: Arc<Advertised>,
}

/// What to send back.
#[derive(Debug)]
pub enum Reply {
    Send(Box<ResponseKind>),
    /// A Fetch answer whose records are (partly) placeholders for ranges of segment files,
    /// sent from the files ([`crate::zero_copy`]): placeholder index and range.
    SendWithFiles(Box<ResponseKind>, Vec<(usize, FileRange)>),
    /// Produce with acks=0: the client expects no answer.
    Nothing,
    /// Close the connection (a request the route cannot take; never expected).
    Close,
}

impl Reply {
    pub fn send(body: ResponseKind) -> Self {
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
        $crate::handlers::route::Route {
            api: kafka_protocol::messages::ApiKey::$api,
            versions: ($min, $max),
            run: $crate::handlers::route::Run::Disk(|$b, request, $c| match request {
                kafka_protocol::messages::RequestKind::$api($r) => $body,
                other => $crate::handlers::route::wrong_request(
                    kafka_protocol::messages::ApiKey::$api,
                    &other,
                ),
            }),
        }
    };
    ($api:ident, $min:literal ..= $max:literal, async, |$b:ident, $r:ident, $c:ident| $body:expr) => {
        $crate::handlers::route::Route {
            api: kafka_protocol::messages::ApiKey::$api,
            versions: ($min, $max),
            run: $crate::handlers::route::Run::Async(|$b, request, $c| {
                Box::pin(async move {
                    match request {
                        kafka_protocol::messages::RequestKind::$api($r) => $body,
                        other => $crate::handlers::route::wrong_request(
                            kafka_protocol::messages::ApiKey::$api,
                            &other,
                        ),
                    }
                })
            }),
        }
    };
}

pub(crate) use route;

/// A request that does not belong to the route it reached (impossible with [`route!`]; kept as
/// a closed connection rather than a panic on a network path).
pub fn wrong_request(api: ApiKey, request: &RequestKind) -> Reply {
    tracing::error!(?api, request = ?std::mem::discriminant(request), "request reached another API's route; closing the connection");
    Reply::Close
}

/// Runs disk work (appends, reads, offset lookups) on the blocking pool.
pub async fn on_disk<T: Send + 'static>(
    broker: &Arc<Broker>,
    work: impl FnOnce(&Broker) -> T + Send + 'static,
) -> T {
    let broker = broker.clone();
    match tokio::task::spawn_blocking(move || work(&broker)).await {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Error code of an optional error, 0 for none.
pub fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
