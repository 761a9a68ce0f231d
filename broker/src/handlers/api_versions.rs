//! ApiVersions: derived from the served-API table, never hand-maintained.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::api_versions_response::ApiVersion;

use crate::apis;

use kafka_protocol::messages::ResponseKind;

use super::{Reply, Route};

/// ApiVersions is answered from the registry itself.
pub(super) static ROUTES: &[Route] = &[route!(ApiVersions, 0..=3, async, |_b, _r, _c| {
    Reply::send(ResponseKind::ApiVersions(handle()))
})];

pub fn handle() -> ApiVersionsResponse {
    let api_keys = apis::all()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default().with_api_keys(api_keys)
}

/// The v0 answer to an ApiVersions request newer than we speak.
pub fn too_new() -> ApiVersionsResponse {
    handle().with_error_code(ResponseError::UnsupportedVersion.code())
}
