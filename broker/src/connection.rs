//! One client connection: read a frame, handle it, write the answer, in order.
//!
//! Like Kafka, a connection handles one request at a time, so answers keep request order.
//! Anything malformed ends this connection only; other clients never notice. No client can hold
//! more than its share: a connection idle for `connections_max_idle` is closed, a request must
//! arrive whole within `request_read_timeout` of its first byte, and the bytes of requests being
//! read or handled across all connections are bounded by [`RequestBudget`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::broker::Broker;
use crate::codec::{self, CodecError};
use crate::handlers::{self, Reply};
use crate::server::Advertised;

/// The bytes of requests in memory across all connections (`queued.max.request.bytes`). A
/// request takes its bytes as they arrive, in chunks, and gives them back once its answer is
/// written; a connection whose next chunk does not fit waits (and stops reading its socket). A
/// client that declares a 100 MiB request and sends one byte holds one chunk, not 100 MiB, and
/// only until its request's read deadline.
#[derive(Debug, Clone)]
pub struct RequestBudget(Arc<Semaphore>);

/// How much of a request is read (and taken from the budget) at a time: a produce request of up
/// to 1 MiB, the usual, is one allocation of its exact size.
const CHUNK: usize = 1024 * 1024;

impl RequestBudget {
    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))))
    }

    async fn take(&self, bytes: usize) -> OwnedSemaphorePermit {
        self.0
            .clone()
            .acquire_many_owned(bytes as u32)
            .await
            .expect("the budget is never closed")
    }
}

/// The time limits of one connection (from the broker's config).
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    idle: Duration,
    request: Duration,
}

/// Who is on the other end, for group member descriptions and logs.
#[derive(Debug, Clone)]
pub struct ClientContext {
    pub peer: SocketAddr,
    /// The address of the listener this client came in on, which metadata hands back.
    pub advertised: Arc<Advertised>,
}

/// Serves one connection until the client leaves, sends garbage, or the broker shuts down.
pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    advertised: Arc<Advertised>,
    budget: RequestBudget,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut writer = BufWriter::with_capacity(64 * 1024, write);
    let ctx = ClientContext { peer, advertised };
    let deadlines = Deadlines {
        idle: broker.config.connections_max_idle,
        request: broker.config.request_read_timeout,
    };
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader, broker.config.max_request_bytes, deadlines, &budget) => frame,
            _ = shutdown.changed() => break,
        };
        // Held until the answer is written: the request's bytes stay counted while handled.
        let (frame, _permit) = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, "closing connection: {e}");
                break;
            }
        };
        let request = match codec::decode_request(frame) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(%peer, "closing connection: {e}");
                break;
            }
        };
        let (correlation_id, api_key, version) = (
            request.header.correlation_id,
            request.api_key,
            request.version,
        );
        let reply = tokio::select! {
            reply = handlers::handle(&broker, &ctx, request) => reply,
            _ = shutdown.changed() => break,
        };
        let body = match reply {
            Reply::Send(body) => body,
            Reply::Nothing => continue,
            Reply::Close => break,
        };
        let bytes = match codec::encode_response(correlation_id, api_key, version, &body) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(%peer, "closing connection: {e}");
                break;
            }
        };
        if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
            break;
        }
    }
}

/// Reads one length-prefixed frame and the budget its bytes took; `None` on a clean end of
/// stream. Fails when the connection stays idle past `deadlines.idle`, or when a request, once
/// begun, does not arrive whole within `deadlines.request` (not counting the wait for its first
/// chunk of budget).
async fn read_frame<R: AsyncReadExt + AsyncBufReadExt + Unpin>(
    reader: &mut R,
    max: usize,
    deadlines: Deadlines,
    budget: &RequestBudget,
) -> std::io::Result<Option<(Bytes, OwnedSemaphorePermit)>> {
    let timed_out = |what: &str, limit: Duration| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} for {} ms", limit.as_millis()),
        )
    };
    match tokio::time::timeout(deadlines.idle, reader.fill_buf()).await {
        Err(_) => return Err(timed_out("idle", deadlines.idle)),
        Ok(Ok([])) => return Ok(None),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
    }
    let started = tokio::time::Instant::now();
    let deadline = started + deadlines.request;
    let within = |deadline| async move {
        tokio::time::sleep_until(deadline).await;
        timed_out("a request not sent whole", deadlines.request)
    };
    let size = tokio::select! {
        size = reader.read_i32() => size?,
        e = within(deadline) => return Err(e),
    };
    if size < 0 || size as usize > max {
        let e = CodecError::FrameTooLarge {
            size: i64::from(size),
            max,
        };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
    }
    let size = size as usize;
    // One allocation of the whole size: its pages are only touched (and counted by the OS) as
    // the bytes arrive, so memory follows the budget, without regrowing copies.
    let mut buf = BytesMut::with_capacity(size);
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut deadline = deadline;
    while buf.len() < size {
        let chunk = (size - buf.len()).min(CHUNK);
        // Queueing for the first chunk holds nothing and is not counted; once a request holds
        // budget, waiting for more counts, so stalled requests that each hold a part and wait
        // for the rest time out and give it back.
        match &mut permit {
            Some(held) => {
                let more = tokio::select! {
                    more = budget.take(chunk) => more,
                    e = within(deadline) => return Err(e),
                };
                held.merge(more);
            }
            None => {
                let asked = tokio::time::Instant::now();
                permit = Some(budget.take(chunk).await);
                deadline += asked.elapsed();
            }
        }
        // Read into the buffer's spare capacity: no zero-filling of a megabyte first.
        let end = buf.len() + chunk;
        let timer = within(deadline);
        tokio::pin!(timer);
        while buf.len() < end {
            let want = end - buf.len();
            let mut spare = (&mut buf).limit(want);
            tokio::select! {
                read = reader.read_buf(&mut spare) => {
                    if read? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                e = &mut timer => return Err(e),
            }
        }
    }
    let permit = match permit {
        Some(permit) => permit,
        // An empty frame (the codec refuses it) takes nothing.
        None => budget.take(0).await,
    };
    Ok(Some((buf.freeze(), permit)))
}
