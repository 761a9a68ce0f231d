//! Property test: random and mutated frames never panic (or abort) the request decoder.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;

/// Valid frames of several APIs, the seeds that mutations start from.
fn seeds() -> Vec<Vec<u8>> {
    fn frame<R: Encodable>(key: ApiKey, version: i16, request: &R) -> Vec<u8> {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str("fuzz")));
        let mut b = BytesMut::new();
        header
            .encode(&mut b, key.request_header_version(version))
            .unwrap();
        request.encode(&mut b, version).unwrap();
        b.to_vec()
    }
    let topic = TopicName(StrBytes::from_static_str("t"));
    vec![
        frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
        frame(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic.clone())),
            ])),
        ),
        frame(
            ApiKey::Fetch,
            12,
            &FetchRequest::default().with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(topic.clone())
                    .with_partitions(vec![fetch_request::FetchPartition::default()]),
            ]),
        ),
        frame(
            ApiKey::Produce,
            9,
            &ProduceRequest::default().with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(topic.clone())
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_records(Some(Bytes::from_static(&[0; 70]))),
                    ]),
            ]),
        ),
        frame(
            ApiKey::JoinGroup,
            7,
            &JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()]),
        ),
        frame(
            ApiKey::OffsetFetch,
            8,
            &OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default(),
            ]),
        ),
        frame(
            ApiKey::CreateTopics,
            7,
            &CreateTopicsRequest::default().with_topics(vec![
                create_topics_request::CreatableTopic::default().with_name(topic),
            ]),
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = broker::codec::decode_request(Bytes::from(bytes), broker::handlers::decodable);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        seed in 0usize..7,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut frame = seeds()[seed].clone();
        for (at, value) in flips {
            let i = at.index(frame.len());
            frame[i] = value;
        }
        if truncate {
            frame.truncate(cut.index(frame.len() + 1));
        }
        let _ = broker::codec::decode_request(Bytes::from(frame), broker::handlers::decodable);
    }
}

#[test]
fn every_seed_decodes() {
    for frame in seeds() {
        broker::codec::decode_request(Bytes::from(frame), broker::handlers::decodable)
            .expect("a valid frame decodes");
    }
}

#[test]
fn a_forged_array_count_is_an_error_not_an_abort() {
    // Metadata v1 whose topic array claims 2^31-1 entries with no bytes behind it.
    let frame = vec![0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff];
    assert!(
        broker::codec::decode_request(Bytes::from(frame), broker::handlers::decodable).is_err()
    );
    // Same with a compact (flexible) array in Metadata v12: varint 0xffffffff.
    let frame = vec![
        0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x0f,
    ];
    assert!(
        broker::codec::decode_request(Bytes::from(frame), broker::handlers::decodable).is_err()
    );
}
