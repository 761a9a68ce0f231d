//! One client connection: read a frame, handle it, write the answer, in order.
//!
//! Like Kafka, a connection handles one request at a time, so answers keep request order.
//! Anything malformed ends this connection only; other clients never notice.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::codec::{self, CodecError};
use crate::handlers::{self, Reply};
use crate::server::Advertised;

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
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut writer = BufWriter::with_capacity(64 * 1024, write);
    let ctx = ClientContext { peer, advertised };
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader, broker.config.max_request_bytes) => frame,
            _ = shutdown.changed() => break,
        };
        let frame = match frame {
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

/// Reads one length-prefixed frame; `None` on a clean end of stream.
async fn read_frame<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<Bytes>> {
    let size = match reader.read_i32().await {
        Ok(size) => size,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    if size < 0 || size as usize > max {
        let e = CodecError::FrameTooLarge {
            size: i64::from(size),
            max,
        };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
    }
    let mut buf = BytesMut::zeroed(size as usize);
    reader.read_exact(&mut buf).await?;
    Ok(Some(buf.freeze()))
}
