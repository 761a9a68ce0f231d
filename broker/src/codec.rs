//! Wire codec glue: length-prefixed frames to typed requests, typed responses to frames.
//!
//! The message structs and their encodings come from the `kafka-protocol` crate; this module
//! admits the (api, version) pairs its caller serves (the route registry's, given as a
//! [`Served`] function) and turns every decoding problem into a [`CodecError`], which closes
//! only the offending connection.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use thiserror::Error;

use crate::zero_copy::{FileRange, Piece, Spliced};

/// Why a frame could not become a request.
#[derive(Debug, Error)]
pub enum CodecError {
    #[error("frame of {size} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { size: i64, max: usize },
    #[error("frame is shorter than a request header")]
    Truncated,
    #[error("unknown or unserved API key {0}")]
    UnknownApiKey(i16),
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("could not encode {api:?} v{version} response: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: Body,
}

#[derive(Debug)]
pub enum Body {
    Decoded(Box<RequestKind>),
    /// An ApiVersions request newer than we know: answered in v0 with UNSUPPORTED_VERSION and
    /// the supported list, so the client can retry with a version we speak.
    ApiVersionsTooNew,
}

/// The `(min, max)` versions of an API that can be decoded and answered, `None` if the API is
/// not served.
pub type Served = fn(ApiKey) -> Option<(i16, i16)>;

/// Decodes one request frame (without its 4-byte length prefix), admitting what `served` names.
pub fn decode_request(mut frame: Bytes, served: Served) -> Result<Request, CodecError> {
    if frame.len() < 8 {
        return Err(CodecError::Truncated);
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(key).map_err(|_| CodecError::UnknownApiKey(key))?;
    let (min, max) = served(api_key).ok_or(CodecError::UnknownApiKey(key))?;
    if api_key == ApiKey::ApiVersions && version > max {
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let header = RequestHeader::default()
            .with_request_api_key(key)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id);
        return Ok(Request {
            api_key,
            // Answered in v0, the version every client can read.
            version: 0,
            header,
            body: Body::ApiVersionsTooNew,
        });
    }
    if version < min || version > max {
        return Err(CodecError::UnsupportedVersion {
            api: api_key,
            version,
        });
    }
    let malformed = |e: anyhow::Error| CodecError::Malformed {
        api: api_key,
        version,
        reason: format!("{e:#}"),
    };
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(malformed)?;
    let body = RequestKind::decode(api_key, &mut frame, version).map_err(malformed)?;
    Ok(Request {
        api_key,
        version,
        header,
        body: Body::Decoded(Box::new(body)),
    })
}

/// Encodes a response frame, length prefix included, as pieces to write in order: encoded bytes
/// and, for a Fetch answer, the file ranges whose placeholders its records are (`files`:
/// placeholder index and range, see [`crate::zero_copy`]).
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseKind,
    files: &[(usize, FileRange)],
) -> Result<Vec<Piece>, CodecError> {
    let failed = |e: anyhow::Error| CodecError::Encode {
        api: api_key,
        version,
        reason: format!("{e:#}"),
    };
    // The ApiVersions response header is always v0, whatever the request version.
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    if let ResponseKind::Fetch(fetch) = body {
        let mut buf = Spliced::new(files);
        buf.put_i32(0);
        header.encode(&mut buf, header_version).map_err(failed)?;
        fetch.encode(&mut buf, version).map_err(failed)?;
        let len = (buf.len() - 4) as i32;
        buf.patch(0, &len.to_be_bytes());
        return buf.finish().map_err(|e| failed(e.into()));
    }
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    header.encode(&mut buf, header_version).map_err(failed)?;
    body.encode(&mut buf, version).map_err(failed)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(vec![Piece::Bytes(buf.freeze())])
}
