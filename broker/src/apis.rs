//! The APIs this broker serves and their version ranges: the single source of truth for both
//! request admission and the ApiVersions answer, so the broker never advertises what it lacks.

use kafka_protocol::messages::ApiKey;

/// `(api, min, max)` as served. Each range is also clipped to what the codec crate supports.
const SERVED: &[(ApiKey, i16, i16)] = &[
    // Advertised from v0 because librdkafka turns compression off when Produce v0 is missing;
    // v0-v2 (message format v0/v1) requests themselves are refused by closing the connection.
    (ApiKey::Produce, 0, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
];

/// The advertised `(min, max)` of an API, or `None` if it isn't served.
pub fn advertised(api: ApiKey) -> Option<(i16, i16)> {
    SERVED
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|&(_, min, max)| {
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
    SERVED
        .iter()
        .filter_map(|(k, _, _)| advertised(*k).map(|(min, max)| (*k, min, max)))
}
