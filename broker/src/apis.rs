//! The APIs this broker serves and their version ranges, read from the route registry
//! ([`crate::handlers::ROUTES`]): the single source of truth for request admission, dispatch and
//! the ApiVersions answer, so the broker never advertises what it lacks.

use kafka_protocol::messages::ApiKey;

use crate::handlers::{self, ROUTES};

/// The advertised `(min, max)` of an API, or `None` if it isn't served. Each range is clipped to
/// what the codec crate supports (Produce keeps its v0, see its route).
pub fn advertised(api: ApiKey) -> Option<(i16, i16)> {
    handlers::route(api).map(|route| {
        let (min, max) = route.versions;
        let codec = api.valid_versions();
        let min = if api == ApiKey::Produce {
            min
        } else {
            min.max(codec.min)
        };
        (min, max.min(codec.max))
    })
}

/// The `(min, max)` the broker can actually decode and answer.
pub fn decodable(api: ApiKey) -> Option<(i16, i16)> {
    advertised(api).map(|(min, max)| (min.max(api.valid_versions().min), max))
}

/// Every served API with its advertised range, for ApiVersions.
pub fn all() -> impl Iterator<Item = (ApiKey, i16, i16)> {
    ROUTES
        .iter()
        .flat_map(|module| module.iter())
        .filter_map(|r| advertised(r.api).map(|(min, max)| (r.api, min, max)))
}
