//! A bare Kafka protocol client over TCP, for tests that need exact control of the bytes
//! (retried batches, malformed frames, silent group members).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawClient {
    pub stream: TcpStream,
    correlation: i32,
}

impl RawClient {
    pub async fn connect(addr: &str) -> Self {
        Self::try_connect(addr).await.unwrap()
    }

    /// A connection to `addr`, or why there is none (a node cut off a moment ago may still be
    /// unreachable: `EHOSTUNREACH` until its neighbour entry is resolved again).
    pub async fn try_connect(addr: &str) -> std::io::Result<Self> {
        Ok(Self {
            stream: TcpStream::connect(addr).await?,
            correlation: 0,
        })
    }

    /// Sends a typed request and decodes its response.
    pub async fn call<R: Request>(&mut self, request: &R, version: i16) -> R::Response {
        self.try_call(request, version).await.expect("a response")
    }

    /// [`RawClient::call`], or `None` when the connection fails before the response.
    pub async fn try_call<R: Request>(&mut self, request: &R, version: i16) -> Option<R::Response> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("raw-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        let mut framed = BytesMut::with_capacity(body.len() + 4);
        framed.put_i32(body.len() as i32);
        framed.put_slice(&body);
        self.stream.write_all(&framed).await.ok()?;
        let mut frame = self.read_frame().await?;
        let api = ApiKey::try_from(R::KEY).unwrap();
        let header =
            ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation);
        Some(R::Response::decode(&mut frame, version).unwrap())
    }

    pub async fn send_frame(&mut self, body: &[u8]) {
        let mut buf = BytesMut::with_capacity(body.len() + 4);
        buf.put_i32(body.len() as i32);
        buf.put_slice(body);
        self.stream.write_all(&buf).await.unwrap();
    }

    /// Reads one response frame; `None` when the broker closed the connection.
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.ok()?;
        let len = (&len[..]).get_i32() as usize;
        let mut buf = vec![0u8; len];
        self.stream.read_exact(&mut buf).await.ok()?;
        Some(Bytes::from(buf))
    }
}
