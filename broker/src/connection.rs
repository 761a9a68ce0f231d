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
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::broker::Broker;
use crate::codec::{self, CodecError};
use crate::config::Advertised;
use crate::handlers::{self, ClientContext, Reply};
use crate::zero_copy::{self, Piece};

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
    // Whether another node opened this connection (a replica fetcher, transaction markers):
    // it closes when this node is cut off from the other nodes.
    let mut from_node = false;
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
        let request = match codec::decode_request(frame, handlers::decodable) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(%peer, "closing connection: {e}");
                break;
            }
        };
        from_node |= request.header.client_id.as_deref() == Some(crate::link::NODE_CLIENT_ID);
        if from_node && broker.link.nodes_cut() {
            break;
        }
        let (correlation_id, api_key, version) = (
            request.header.correlation_id,
            request.api_key,
            request.version,
        );
        let reply = tokio::select! {
            reply = handlers::handle(&broker, &ctx, request) => reply,
            _ = shutdown.changed() => break,
            _ = node_cut_off(&broker, from_node) => break,
        };
        let (body, files) = match reply {
            Reply::Send(body) => (body, Vec::new()),
            Reply::SendWithFiles(body, files) => (body, files),
            Reply::Nothing => continue,
            Reply::Close => break,
        };
        let pieces = match codec::encode_response(correlation_id, api_key, version, &body, &files) {
            Ok(pieces) => pieces,
            Err(e) => {
                tracing::error!(%peer, "closing connection: {e}");
                break;
            }
        };
        if let Err(e) = write_pieces(&mut writer, pieces).await {
            tracing::debug!(%peer, "closing connection: {e}");
            break;
        }
    }
}

/// Writes a response's pieces: encoded bytes through the buffer, file ranges from their files
/// straight to the socket (after what the buffer holds).
async fn write_pieces(
    writer: &mut BufWriter<OwnedWriteHalf>,
    pieces: Vec<Piece>,
) -> std::io::Result<()> {
    for piece in pieces {
        match piece {
            Piece::Bytes(bytes) => writer.write_all(&bytes).await?,
            Piece::File(range) => {
                writer.flush().await?;
                zero_copy::send_file(writer.get_ref().as_ref(), &range).await?;
            }
        }
    }
    writer.flush().await
}

/// Returns once this node is cut off from the other nodes, if `from_node`; never otherwise.
async fn node_cut_off(broker: &Broker, from_node: bool) {
    if from_node {
        broker.link.nodes_cut_off().await;
    } else {
        std::future::pending::<()>().await;
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
    match tokio::time::timeout(deadlines.idle, reader.fill_buf()).await {
        Err(_) => return Err(timed_out("idle", deadlines.idle)),
        Ok(Ok([])) => return Ok(None),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
    }
    let deadline = RequestDeadline {
        at: tokio::time::Instant::now() + deadlines.request,
        limit: deadlines.request,
    };
    let size = tokio::select! {
        size = reader.read_i32() => size?,
        e = deadline.passed() => return Err(e),
    };
    if size < 0 || size as usize > max {
        let e = CodecError::FrameTooLarge {
            size: i64::from(size),
            max,
        };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
    }
    read_body(reader, size as usize, deadline, budget)
        .await
        .map(Some)
}

fn timed_out(what: &str, limit: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} for {} ms", limit.as_millis()),
    )
}

/// When a request begun must have arrived whole.
#[derive(Debug, Clone, Copy)]
struct RequestDeadline {
    at: tokio::time::Instant,
    limit: Duration,
}

impl RequestDeadline {
    /// Resolves to the error once the deadline has passed.
    async fn passed(self) -> std::io::Error {
        tokio::time::sleep_until(self.at).await;
        timed_out("a request not sent whole", self.limit)
    }
}

/// Reads a request's `size` bytes, taking them from the budget chunk by chunk as they arrive.
async fn read_body<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    size: usize,
    mut deadline: RequestDeadline,
    budget: &RequestBudget,
) -> std::io::Result<(Bytes, OwnedSemaphorePermit)> {
    // One allocation of the whole size: its pages are only touched (and counted by the OS) as
    // the bytes arrive, so memory follows the budget, without regrowing copies.
    let mut buf = BytesMut::with_capacity(size);
    let mut permit: Option<OwnedSemaphorePermit> = None;
    while buf.len() < size {
        let chunk = (size - buf.len()).min(CHUNK);
        // Queueing for the first chunk holds nothing and is not counted; once a request holds
        // budget, waiting for more counts, so stalled requests that each hold a part and wait
        // for the rest time out and give it back.
        match &mut permit {
            Some(held) => {
                let more = tokio::select! {
                    more = budget.take(chunk) => more,
                    e = deadline.passed() => return Err(e),
                };
                held.merge(more);
            }
            None => {
                let asked = tokio::time::Instant::now();
                permit = Some(budget.take(chunk).await);
                deadline.at += asked.elapsed();
            }
        }
        // Read into the buffer's spare capacity: no zero-filling of a megabyte first.
        let end = buf.len() + chunk;
        let timer = deadline.passed();
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
    Ok((buf.freeze(), permit))
}
