//! The saga on the embedded broker run as a three-node cluster (`lab --nodes 3`): every topic
//! on three replicas. A node stopped mid-run hands its partitions' leadership to the others;
//! every order still ends, each charged at most once, money and stock conserved; the node comes
//! back and the saga goes on.

use crate::helpers::*;

/// Wallets plus captured payments: what was seeded, whatever happened.
async fn money(t: &TestLab) -> i64 {
    let (wallets, captured) = wallets_and_captured(&t.lab).await;
    wallets + captured
}

/// [`money`] of a lab behind its dashboard.
async fn money_behind(d: &DashboardLab) -> i64 {
    let guard = d.shared.lock().await;
    let (wallets, captured) = wallets_and_captured(guard.as_ref().unwrap()).await;
    wallets + captured
}

/// Stock on the shelf plus reserved for orders, over every product.
async fn stock(client: &lab::LabClient) -> i64 {
    let products = client.products().await.unwrap();
    products.iter().map(|p| p.stock + p.reserved).sum()
}

/// How many replicas each partition of `topic` has.
fn replicas(brokers: &str, topic: &str) -> Vec<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let metadata = client
        .fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.replicas().len())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_carries_on_when_a_node_stops_mid_run() {
    let mut t = spawn_lab_with(|c| c.nodes = 3).await;
    assert_eq!(t.lab.running_nodes(), vec![1, 2, 3]);
    assert_eq!(replicas(t.lab.brokers(), "order.created"), vec![3; 3]);
    let (money_before, stock_before) = (money(&t).await, stock(&t.client).await);
    let customers = ["alice", "bob", "carol"];
    let mut ids = Vec::new();
    for i in 0..24 {
        if i == 8 {
            t.lab.stop_node(1).await.unwrap();
            assert_eq!(t.lab.running_nodes(), vec![2, 3]);
        }
        let order = t
            .client
            .place_order(customers[i % 3], &[("LATTE", 1, 5000)])
            .await
            .unwrap();
        ids.push(order.id);
    }
    for id in &ids {
        t.client.wait_terminal(*id, SAGA_TIMEOUT).await.unwrap();
        assert!(
            t.client.payments(*id).await.unwrap().len() <= 1,
            "charged once at most"
        );
    }
    assert_eq!(money(&t).await, money_before);
    assert_eq!(stock(&t.client).await, stock_before);

    t.lab.start_node(1).await.unwrap();
    let order = t
        .client
        .place_order("alice", &[("AMERICANO", 1, 4000)])
        .await
        .unwrap();
    t.client
        .wait_terminal(order.id, SAGA_TIMEOUT)
        .await
        .unwrap();
    t.stop().await;
}

/// The dashboard's nodes API (what `lab node` and the Brokers view read): three nodes, one
/// controller, every partition on three replicas. Stopping a node there moves the leadership of
/// its partitions and takes it out of every ISR; starting it again brings it back into them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_api_stops_and_starts_a_node() {
    use lab::dashboard::api::Nodes;
    let d = spawn_lab_with(|c| c.nodes = 3).await.with_dashboard().await;
    let get = || get_nodes(&d);
    let first = get().await;
    assert_eq!(first.nodes.len(), 3);
    assert!(first.nodes.iter().all(|n| n.running && n.live));
    assert_eq!(first.nodes.iter().filter(|n| n.controller).count(), 1);
    assert!(first.partitions.iter().all(|p| p.replicas.len() == 3));

    let post = |action: &'static str| post_node(&d, action.to_owned());
    let stopped: Nodes = post("2/stop").await.json().await.unwrap();
    assert!(!stopped.nodes[1].running);
    let moved = wait_for_nodes(&get, |n| {
        !n.nodes[1].live
            && n.partitions
                .iter()
                .all(|p| p.leader != 2 && !p.isr.contains(&2))
    })
    .await;
    assert_eq!(moved.nodes[1].leads, 0);

    assert_eq!(post("7/stop").await.status(), 404);
    post("2/start").await.error_for_status().unwrap();
    wait_for_nodes(&get, |n| {
        n.nodes[1].live && n.partitions.iter().all(|p| p.isr.len() == p.replicas.len())
    })
    .await;
    d.stop().await;
}

/// A network partition (`lab node isolate`): the controller, cut off from the other nodes and
/// from every client while it keeps running, is fenced by the two others, which elect a new
/// controller and lead its partitions; the saga goes on meanwhile. Reconnected, it catches up
/// and rejoins every ISR; money and stock are conserved, no order charged twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_controller_is_fenced_and_rejoins_when_reconnected() {
    use lab::dashboard::api::Nodes;
    let d = spawn_lab_with(|c| c.nodes = 3).await.with_dashboard().await;
    let get = || get_nodes(&d);
    let post = |action: String| post_node(&d, action);
    let (money_before, stock_before) = (money_behind(&d).await, stock(&d.client).await);
    let first = wait_for_nodes(&get, |n| n.controller.is_some()).await;
    let victim = first.controller.unwrap();
    let i = (victim - 1) as usize;
    let isolated: Nodes = post(format!("{victim}/isolate"))
        .await
        .json()
        .await
        .unwrap();
    assert!(isolated.nodes[i].isolated && isolated.nodes[i].running);
    assert_eq!(post("7/isolate".into()).await.status(), 404);

    let customers = ["alice", "bob", "carol"];
    let mut ids = Vec::new();
    for n in 0..12 {
        let order = d
            .client
            .place_order(customers[n % 3], &[("LATTE", 1, 5000)])
            .await
            .unwrap();
        ids.push(order.id);
    }
    let fenced = wait_for_nodes(&get, |n| {
        !n.nodes[i].live
            && n.controller.is_some_and(|c| c != victim)
            && n.partitions
                .iter()
                .all(|p| p.leader != victim && !p.isr.contains(&victim))
    })
    .await;
    assert!(fenced.nodes[i].isolated);
    for id in &ids {
        d.client.wait_terminal(*id, SAGA_TIMEOUT).await.unwrap();
        assert!(d.client.payments(*id).await.unwrap().len() <= 1);
    }

    let back: Nodes = post(format!("{victim}/reconnect"))
        .await
        .json()
        .await
        .unwrap();
    assert!(!back.nodes[i].isolated);
    wait_for_nodes(&get, |n| {
        n.nodes[i].live && n.partitions.iter().all(|p| p.isr.len() == p.replicas.len())
    })
    .await;
    let order = d
        .client
        .place_order("alice", &[("AMERICANO", 1, 4000)])
        .await
        .unwrap();
    d.client
        .wait_terminal(order.id, SAGA_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(money_behind(&d).await, money_before);
    assert_eq!(stock(&d.client).await, stock_before);
    d.stop().await;
}

/// The dashboard's nodes API: `GET /api/nodes`.
async fn get_nodes(d: &DashboardLab) -> lab::dashboard::api::Nodes {
    d.client
        .http()
        .get(format!("{}/api/nodes", d.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `POST /api/nodes/{action}` (`2/stop`, `1/isolate`, ...).
async fn post_node(d: &DashboardLab, action: String) -> reqwest::Response {
    d.client
        .http()
        .post(format!("{}/api/nodes/{action}", d.url))
        .send()
        .await
        .unwrap()
}

/// Polls the nodes API until `ok` holds, for at most a minute.
async fn wait_for_nodes<F, Fut>(
    get: &F,
    ok: impl Fn(&lab::dashboard::api::Nodes) -> bool,
) -> lab::dashboard::api::Nodes
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = lab::dashboard::api::Nodes>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let nodes = get().await;
        if ok(&nodes) {
            return nodes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes never became as expected: {nodes:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The dashboard's Brokers view in a real browser: three nodes up, one the controller; its Stop
/// button takes node 2 down and the partitions it led get other leaders; Start brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brokers_view_shows_a_failover() {
    use lab::browser::Browser;
    let d = spawn_lab_with(|c| c.nodes = 3).await.with_dashboard().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/#/brokers", d.url)).await;
    let count = |script: &'static str| {
        let browser = &browser;
        async move {
            browser
                .execute(script, serde_json::json!([]))
                .await
                .as_u64()
                .unwrap_or(0)
        }
    };
    let up = "return document.querySelectorAll('#nodes tr[data-state=\"up\"]').length";
    lab::client::eventually(
        "three nodes up",
        std::time::Duration::from_secs(60),
        || async { (count(up).await == 3).then_some(()) },
    )
    .await
    .unwrap();
    browser
        .wait_text("#nodes", |t| t.contains("controller"))
        .await;
    let led_by_2 = "return [...document.querySelectorAll('#placements td.leader')]\
                    .filter((td) => td.textContent === '2').length";
    assert!(count(led_by_2).await > 0, "node 2 leads some partitions");

    browser
        .wait_for("[data-node-action=\"stop-2\"]")
        .await
        .click()
        .await;
    browser
        .wait_text("#nodes tr[data-node=\"2\"]", |t| t.contains("down"))
        .await;
    lab::client::eventually(
        "node 2 leads nothing",
        std::time::Duration::from_secs(60),
        || async { (count(led_by_2).await == 0).then_some(()) },
    )
    .await
    .unwrap();

    browser
        .wait_for("[data-node-action=\"start-2\"]")
        .await
        .click()
        .await;
    browser
        .wait_text("#nodes tr[data-node=\"2\"]", |t| t.contains("up"))
        .await;
    browser.close().await;
    d.stop().await;
}
