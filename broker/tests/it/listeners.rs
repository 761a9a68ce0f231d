//! Several listeners, each advertising its own address (the compose network and the host).

use crate::common;

use common::raw::RawClient;
use kafka_protocol::messages::{FindCoordinatorRequest, MetadataRequest};
use kafka_protocol::protocol::StrBytes;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_advertises_its_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let inside = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outside = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (inside_addr, outside_addr) = (inside.local_addr().unwrap(), outside.local_addr().unwrap());
    let handle = broker::spawn_listeners(
        vec![
            broker::Listener {
                listener: inside,
                advertised: Some("broker:9092".into()),
            },
            broker::Listener {
                listener: outside,
                advertised: None,
            },
        ],
        common::test_config(&dir),
    )
    .await
    .unwrap();
    assert_eq!(
        handle.bootstrap(),
        "broker:9092",
        "the first listener is the main one"
    );

    let mut raw = RawClient::connect(&inside_addr.to_string()).await;
    let m = raw.call(&MetadataRequest::default(), 1).await;
    assert_eq!(
        (m.brokers[0].host.as_str(), m.brokers[0].port),
        ("broker", 9092)
    );

    let mut raw = RawClient::connect(&outside_addr.to_string()).await;
    let m = raw.call(&MetadataRequest::default(), 1).await;
    assert_eq!(
        (m.brokers[0].host.as_str(), m.brokers[0].port),
        ("127.0.0.1", i32::from(outside_addr.port()))
    );
    let c = raw
        .call(
            &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g")),
            2,
        )
        .await;
    assert_eq!(c.port, i32::from(outside_addr.port()), "coordinator too");

    // A real client on the outside listener works end to end.
    let bootstrap = outside_addr.to_string();
    let p = common::producer(&bootstrap, &[]);
    p.send(
        rdkafka::producer::FutureRecord::<(), _>::to("via-outside").payload("x"),
        std::time::Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
    handle.shutdown().await;
}
