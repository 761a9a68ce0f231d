//! A bare Kafka protocol client: one blocking TCP connection, a typed request in and its typed
//! response out, with no client library in between to retry, batch or pick versions. For the
//! tools that must control the bytes a broker receives (the stall benchmark, the lab's
//! demonstration of a retried batch); the broker itself never uses it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

/// One connection to one broker.
pub struct BareClient {
    stream: TcpStream,
    correlation: i32,
    client_id: &'static str,
}

impl BareClient {
    /// Connects to `address`; each answer must come within `timeout` (`None`: wait forever).
    pub fn connect(
        address: &str,
        client_id: &'static str,
        timeout: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let stream =
            TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(timeout)?;
        Ok(Self {
            stream,
            correlation: 0,
            client_id,
        })
    }

    /// Sends `request` at `version` and reads its response.
    pub fn call<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<R::Response> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version))?;
        request.encode(&mut body, version)?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(i32::try_from(body.len())?);
        frame.put_slice(&body);
        self.stream.write_all(&frame)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut answer = vec![0u8; usize::try_from(i32::from_be_bytes(len))?];
        self.stream.read_exact(&mut answer)?;
        let mut answer = Bytes::from(answer);
        let api = ApiKey::try_from(R::KEY).map_err(|()| anyhow::anyhow!("unknown API key"))?;
        let header = ResponseHeader::decode(&mut answer, api.response_header_version(version))?;
        if header.correlation_id != self.correlation {
            bail!("the broker answered another request");
        }
        let response = R::Response::decode(&mut answer, version)?;
        if answer.has_remaining() {
            bail!("the broker's answer was longer than its response");
        }
        Ok(response)
    }
}
