//! Hostile input over TCP: malformed, truncated, oversized and unknown frames close only the
//! offending connection; everyone else keeps being served.

use crate::common;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use common::raw::RawClient;
use common::{LONG, TestBroker, consumer, producer, recv_n};
use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

/// Sends `frame` (already length-prefixed if `raw`) and asserts the broker closes the connection.
async fn expect_closed(addr: &str, bytes: &[u8]) {
    let mut c = RawClient::connect(addr).await;
    use tokio::io::AsyncWriteExt;
    c.stream.write_all(bytes).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), c.read_frame()).await;
    assert!(
        matches!(closed, Ok(None)),
        "connection closed for {:?}",
        &bytes[..bytes.len().min(16)]
    );
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i32(body.len() as i32);
    b.put_slice(body);
    b.to_vec()
}

async fn still_serving(b: &TestBroker) {
    let mut raw = RawClient::connect(&b.bootstrap).await;
    let versions = raw.call(&ApiVersionsRequest::default(), 0).await;
    assert_eq!(versions.error_code, 0);
    let metadata = raw.call(&MetadataRequest::default(), 1).await;
    assert_eq!(metadata.brokers.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_one_connection_and_the_broker_keeps_serving() {
    let b = TestBroker::start_with(|c| c.max_request_bytes = 1 << 20).await;
    // A healthy client keeps working throughout.
    let p = producer(&b.bootstrap, &[]);
    let c = consumer(&b.bootstrap, "unused", &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("survivor", 0, Offset::Beginning)
        .unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("negative length", (-5i32).to_be_bytes().to_vec()),
        (
            "oversized length",
            (100 * 1024 * 1024i32).to_be_bytes().to_vec(),
        ),
        (
            "unknown api key",
            framed(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff]),
        ),
        (
            "unsupported version",
            framed(&[0, 1, 0x10, 0, 0, 0, 0, 1, 0xff, 0xff]),
        ),
        ("header cut short", framed(&[0, 3, 0, 1])),
        (
            "metadata body garbage",
            framed(&[0, 3, 0, 1, 0, 0, 0, 7, 0, 0, 0x7f, 0xff, 0xff, 0xff, 1]),
        ),
        (
            "produce with a huge array count",
            framed(&[
                0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ]),
        ),
        (
            "fetch with a forged length",
            framed(&[
                0, 1, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xf0,
            ]),
        ),
        (
            "random bytes",
            framed(&[0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, 0x05]),
        ),
    ];
    for (name, bytes) in cases {
        eprintln!("case: {name}");
        expect_closed(&b.bootstrap, &bytes).await;
        still_serving(&b).await;
    }
    // A frame that stops halfway: the broker waits, then the client leaves; nothing breaks.
    {
        let mut half = RawClient::connect(&b.bootstrap).await;
        use tokio::io::AsyncWriteExt;
        half.stream.write_all(&1000i32.to_be_bytes()).await.unwrap();
        half.stream.write_all(&[0, 18, 0, 0]).await.unwrap();
    }
    still_serving(&b).await;

    p.send(
        FutureRecord::<(), _>::to("survivor").payload("ok"),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
    c.assign(&tpl).unwrap();
    assert_eq!(
        recv_n(&c, 1, LONG).await[0].value.as_deref(),
        Some(&b"ok"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_new_api_versions_request_gets_a_v0_error_with_the_supported_list() {
    let b = TestBroker::start().await;
    let mut raw = RawClient::connect(&b.bootstrap).await;
    // ApiVersions v99, correlation id 7, then whatever a future client might send.
    raw.send_frame(&[
        0, 18, 0, 99, 0, 0, 0, 7, 0, 4, b't', b'e', b's', b't', 0, 1, 2, 3,
    ])
    .await;
    let mut frame = raw
        .read_frame()
        .await
        .expect("an answer, not a closed connection");
    use bytes::Buf;
    assert_eq!(
        frame.get_i32(),
        7,
        "v0 response header: just the correlation id"
    );
    use kafka_protocol::protocol::Decodable;
    let body = kafka_protocol::messages::ApiVersionsResponse::decode(&mut frame, 0).unwrap();
    assert_eq!(body.error_code, 35, "UNSUPPORTED_VERSION");
    let produce = body
        .api_keys
        .iter()
        .find(|k| k.api_key == 0)
        .expect("Produce listed");
    assert_eq!(produce.min_version, 0, "Produce advertised from v0");
    let fetch = body.api_keys.iter().find(|k| k.api_key == 1).unwrap();
    assert!(fetch.max_version >= 4);
    // Transactions are served (AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit).
    for served in [24, 25, 26, 28] {
        assert!(
            body.api_keys.iter().any(|k| k.api_key == served),
            "api {served} advertised"
        );
    }
    // Never advertise what isn't served: no SASL.
    for unserved in [17, 36] {
        assert!(
            body.api_keys.iter().all(|k| k.api_key != unserved),
            "api {unserved} not advertised"
        );
    }
    still_serving(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_gets_no_response_but_is_stored() {
    let b = TestBroker::start().await;
    let _ = b.state().topics.get_or_create("silent-acks").unwrap();
    let mut raw = RawClient::connect(&b.bootstrap).await;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let batch = common::one_record_batch(-1, -1, -1, b"v");
    let request = ProduceRequest::default()
        .with_acks(0)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("silent-acks")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch)),
                ]),
        ]);
    let header = kafka_protocol::messages::RequestHeader::default()
        .with_request_api_key(0)
        .with_request_api_version(7)
        .with_correlation_id(1);
    let mut body = BytesMut::new();
    header.encode(&mut body, 1).unwrap();
    request.encode(&mut body, 7).unwrap();
    raw.send_frame(&body).await;
    // The next answer on this connection belongs to the next request: acks=0 got none.
    let versions = raw.call(&ApiVersionsRequest::default(), 0).await;
    assert_eq!(versions.error_code, 0);
    let end = b
        .state()
        .topics
        .get("silent-acks")
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .next_offset();
    assert_eq!(end, 1);
}
