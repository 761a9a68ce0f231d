//! ApiVersions: the answer built from the served-API table (the registry's), never
//! hand-maintained.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// The answer listing `served`: each API with its `(min, max)` versions.
pub fn answer(served: impl Iterator<Item = (ApiKey, i16, i16)>) -> ApiVersionsResponse {
    let api_keys = served
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
pub fn too_new(served: impl Iterator<Item = (ApiKey, i16, i16)>) -> ApiVersionsResponse {
    answer(served).with_error_code(ResponseError::UnsupportedVersion.code())
}
