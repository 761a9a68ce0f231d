//! The dashboard in a real browser (headless Chromium over WebDriver), on a real lab: the live
//! chain and an order's saga, the Kafka explorer, resetting a consumer group's offsets, lag while
//! a service is stopped, and the DLQ's replay.

use std::sync::atomic::Ordering;

use lab::Service;
use lab::browser::Browser;
use saga_shared::events::topics;
use serde_json::{Value, json};

use crate::helpers::{
    OrderStatus, SAGA_TIMEOUT, eventually_metric, get_json, metric_sum, spawn_lab, spawn_lab_with,
};

/// Sets the Messages panel's choices with `script` (given `args`) and presses Load.
async fn load_messages(browser: &Browser, script: &str, args: Value) {
    browser.execute(script, args).await;
    browser
        .find("form button[type=submit]")
        .await
        .unwrap()
        .click()
        .await;
}

/// Marks the page, so a test can tell it was never reloaded (a reload forgets the mark).
async fn mark(browser: &Browser) {
    browser
        .execute("window.__notReloaded = true;", json!([]))
        .await;
}

async fn still_marked(browser: &Browser) -> bool {
    browser
        .execute("return window.__notReloaded === true;", json!([]))
        .await
        .as_bool()
        .unwrap_or(false)
}

/// The lag the page shows for `service` in the chain (`lag N`).
async fn lag_on_page(browser: &Browser, service: &str) -> Option<i64> {
    let text = browser
        .find(&format!("#svc-{service} .lag"))
        .await?
        .text()
        .await;
    text.strip_prefix("lag ")?.replace(',', "").parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_on_the_page_flows_through_the_chain_and_its_timeline() {
    let d = spawn_lab().await.with_dashboard().await;
    let browser = Browser::start().await;
    browser.goto(&d.url).await;
    browser
        .wait_text(".lane[data-topic='order.created'] .count", |t| {
            t.starts_with("0 records")
        })
        .await;
    mark(&browser).await;

    // The Happy path preset places an order through the page.
    browser
        .wait_for("button[data-preset='Happy path']")
        .await
        .click()
        .await;
    // The chain counts it on order.created, and on inventory.updated once it completes.
    browser
        .wait_text(".lane[data-topic='order.created'] .count", |t| {
            t.starts_with("1 record ·")
        })
        .await;
    browser
        .wait_text(".lane[data-topic='inventory.updated'] .count", |t| {
            t.starts_with("1 record ·")
        })
        .await;

    // The toast links to the order's saga; the timeline fills in without a reload.
    browser.wait_for("#toast a").await.click().await;
    let heading = browser.wait_text("h1 .badge", |t| t == "CONFIRMED").await;
    assert_eq!(heading, "CONFIRMED");
    let updated = browser
        .wait_text(".event[data-topic='inventory.updated']", |t| {
            t.contains("partition")
        })
        .await;
    assert!(updated.contains("offset 0"), "{updated}");
    assert!(updated.contains("caused by payment.completed"), "{updated}");
    let lanes = browser
        .execute(
            "return [...document.querySelectorAll('#timeline .event')].map(e => e.dataset.topic);",
            json!([]),
        )
        .await;
    assert_eq!(
        lanes,
        json!(["order.created", "payment.completed", "inventory.updated"])
    );
    assert!(still_marked(&browser).await, "the page was never reloaded");

    browser.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_shows_a_record_at_its_partition_and_offset_with_its_headers() {
    let d = spawn_lab().await.with_dashboard().await;
    let order = d
        .client
        .place_order("alice", &[("LATTE", 1, 5000)])
        .await
        .unwrap();
    let id = order.id;
    d.client.wait_terminal(id, SAGA_TIMEOUT).await.unwrap();
    // Where the dashboard's observer saw order.created, and its ce_id.
    let api = reqwest::Client::new();
    let seen: Value = lab::client::eventually("the observer saw it", SAGA_TIMEOUT, || async {
        let v: Value = api
            .get(format!("{}/api/orders/{id}", d.url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["events"]
            .as_array()?
            .iter()
            .find(|e| e["topic"] == topics::ORDER_CREATED)
            .cloned()
    })
    .await
    .unwrap();
    let (partition, offset) = (
        seen["partition"].as_i64().unwrap(),
        seen["offset"].as_i64().unwrap(),
    );
    let ce_id = seen["id"].as_str().unwrap().to_owned();

    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/#/topics/{}", d.url, topics::ORDER_CREATED))
        .await;
    // The partition table counts the record.
    browser
        .wait_text("#partitions tbody", |t| !t.is_empty())
        .await;
    // Seek to its partition and offset.
    load_messages(
        &browser,
        "document.getElementById('partition').value = String(arguments[0]);\
         const from = document.getElementById('from'); from.value = 'offset'; from.onchange();\
         document.getElementById('from-value').value = String(arguments[1]);",
        json!([partition, offset]),
    )
    .await;
    let selector = format!(".record[data-partition='{partition}'][data-offset='{offset}']");
    let record = browser.wait_text(&selector, |t| t.contains("ce_id")).await;
    assert!(
        record.contains(&format!("partition {partition} · offset {offset}")),
        "{record}"
    );
    assert!(record.contains(&ce_id), "its ce_id header: {record}");
    assert!(
        record.contains("/order-service"),
        "its ce_source header: {record}"
    );
    assert!(
        record.contains(&format!("key {id}")),
        "its key is the order id: {record}"
    );
    assert!(
        record.contains("\"customer_id\": \"alice\""),
        "the value, pretty: {record}"
    );
    // Which version of its topic's schema the record was written with (its frame's id).
    let registry = d.registry().await;
    let v1 = registry.version("order.created-value", "1").await.unwrap();
    assert!(
        record.contains(&format!("schema v1 (id {})", v1.id)),
        "its schema version: {record}"
    );

    browser.close().await;
    d.stop().await;
}

/// The Schemas view: every subject the services registered, with its level and versions, and
/// what changed between two versions of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schemas_view_lists_subjects_and_shows_what_a_new_version_changed() {
    let d = spawn_lab().await.with_dashboard().await;
    let registry = d.registry().await;
    let subject = "order.created-value";
    let mut v2 = registry.version(subject, "1").await.unwrap().schema;
    v2["properties"]["note"] = json!({"type": "string"});
    let v2_id = registry.register(subject, &v2).await.unwrap();

    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/#/schemas/{subject}", d.url))
        .await;
    let rows = browser
        .wait_text("table.schemas tbody", |t| {
            t.contains("payment.completed-value")
        })
        .await;
    for topic in topics::ALL {
        assert!(rows.contains(&format!("{topic}-value")), "{topic}: {rows}");
    }
    let row = browser
        .wait_text(&format!("tr[data-subject='{subject}']"), |t| !t.is_empty())
        .await;
    assert!(row.contains("BACKWARD"), "{row}");
    assert!(row.contains(&format!("v2 (id {v2_id})")), "{row}");
    let diff = browser.wait_text(".diff", |t| !t.is_empty()).await;
    assert_eq!(diff.trim(), "+ note: string (optional)");
    browser.close().await;
    d.stop().await;
}

/// The message browser reads as a consumer of either isolation level: `read_committed` leaves an
/// aborted transaction's record out, `read_uncommitted` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_browser_reads_committed_or_everything() {
    let d = spawn_lab().await.with_dashboard().await;
    let brokers = d.shared.lock().await.as_ref().unwrap().brokers().to_owned();
    tokio::task::spawn_blocking(move || {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let wait = std::time::Duration::from_secs(20);
        let p: BaseProducer = saga_shared::kafka::client_config(&brokers)
            .set("transactional.id", "dashboard-isolation")
            .create()
            .unwrap();
        p.init_transactions(wait).unwrap();
        for (value, commit) in [("kept", true), ("dropped", false), ("also kept", true)] {
            p.begin_transaction().unwrap();
            p.send(
                BaseRecord::to("isolation-demo")
                    .partition(0)
                    .key("k")
                    .payload(value),
            )
            .map_err(|(e, _)| e)
            .unwrap();
            lab::kafka::drain(&p, wait).unwrap();
            if commit {
                p.commit_transaction(wait).unwrap();
            } else {
                p.abort_transaction(wait).unwrap();
            }
        }
    })
    .await
    .unwrap();

    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/#/topics/isolation-demo", d.url))
        .await;
    browser
        .wait_text("#partitions tbody", |t| !t.is_empty())
        .await;
    // Waits for the list to show `last` (the answer to this Load: an earlier answer arriving
    // late is dropped by the page).
    let load = |isolation: &'static str, last: &'static str| {
        let browser = &browser;
        async move {
            load_messages(
                browser,
                "document.getElementById('partition').value = '0';\
                 document.getElementById('from').value = 'earliest';\
                 document.getElementById('isolation').value = arguments[0];\
                 document.getElementById('records').replaceChildren();",
                json!([isolation]),
            )
            .await;
            browser
                .wait_text("#records", |t| t.contains("also kept") && t.contains(last))
                .await
        }
    };
    let committed = load("read_committed", "kept").await;
    assert!(committed.contains("partition 0 · offset 0"), "{committed}");
    assert!(
        !committed.contains("dropped"),
        "read_committed: {committed}"
    );
    let everything = load("read_uncommitted", "dropped").await;
    assert!(
        everything.contains("dropped"),
        "read_uncommitted: {everything}"
    );

    browser.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_reset_to_earliest_while_its_service_is_stopped_rereads_and_charges_nothing_twice()
{
    let d = spawn_lab().await.with_dashboard().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let o = d
            .client
            .place_order("alice", &[("LATTE", 1, 5000)])
            .await
            .unwrap();
        ids.push(o.id);
    }
    for id in &ids {
        d.client.wait_terminal(*id, SAGA_TIMEOUT).await.unwrap();
    }
    let balance = d.client.wallet_balance("alice").await.unwrap();
    assert_eq!(balance, 100_000 - 10_000);
    let duplicate = [("service", "payment-service"), ("outcome", "duplicate")];
    let duplicates_before = metric_sum(&d.client, "events_consumed_total", &duplicate).await;

    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/#/groups/payment-service", d.url))
        .await;
    // While the service runs, the page refuses the reset and says why.
    browser
        .wait_text("#reset-why", |t| t.contains("active"))
        .await;
    // Stop the service from the page; the group empties.
    browser
        .wait_text("#group-service", |t| t == "Stop payment")
        .await;
    browser.find("#group-service").await.unwrap().click().await;
    browser
        .wait_text("#members", |t| t.contains("No active member"))
        .await;
    // Reset to earliest (the form's default) from the page.
    browser.find("#reset").await.unwrap().click().await;
    let moved = browser
        .wait_text("#reset-result", |t| t.starts_with("Moved"))
        .await;
    assert!(moved.contains("order.created"), "{moved}");
    let committed = browser
        .wait_text("#group-partitions", |t| !t.is_empty())
        .await;
    assert!(!committed.is_empty());

    // Start it again: it re-reads both orders' order.created, recognises them, charges nothing.
    browser
        .wait_text("#group-service", |t| t == "Start payment")
        .await;
    browser.find("#group-service").await.unwrap().click().await;
    eventually_metric(
        &d.client,
        "events_consumed_total",
        &duplicate,
        duplicates_before + 2.0,
    )
    .await;
    browser.wait_text("#group-lag", |t| t == "lag 0").await;
    assert_eq!(d.client.wallet_balance("alice").await.unwrap(), balance);
    for id in &ids {
        let payments = d.client.payments(*id).await.unwrap();
        assert_eq!(payments.len(), 1, "one payment for {id}");
    }

    browser.close().await;
    d.stop().await;
}

/// How far behind the page says `service` is, in seconds (`· 2.5 s behind`; none while it has
/// no lag).
async fn behind_on_page(browser: &Browser, service: &str) -> Option<f64> {
    let text = browser
        .find(&format!("#svc-{service} .behind"))
        .await?
        .text()
        .await;
    text.strip_prefix("· ")?
        .strip_suffix(" s behind")?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_service_shows_its_lag_rising_and_back_to_zero_when_started() {
    let d = spawn_lab().await.with_dashboard().await;
    let browser = Browser::start().await;
    browser.goto(&d.url).await;
    browser
        .wait_text("#svc-inventory .lag", |t| t == "lag 0")
        .await;
    // One order first: inventory's group commits an offset (on one partition only), so the
    // group exists on the broker while it is stopped.
    let first = d
        .client
        .place_order("carol", &[("AMERICANO", 1, 4000)])
        .await
        .unwrap();
    d.client
        .wait_terminal(first.id, SAGA_TIMEOUT)
        .await
        .unwrap();
    // Stop inventory with its button on the page.
    browser
        .wait_text(
            ".svcline[data-service='inventory'] button[data-action=toggle]",
            |t| t == "Stop",
        )
        .await;
    browser
        .find(".svcline[data-service='inventory'] button[data-action=toggle]")
        .await
        .unwrap()
        .click()
        .await;
    browser
        .wait_text("#svc-inventory .state", |t| t.starts_with("stopped"))
        .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let o = d
            .client
            .place_order("carol", &[("AMERICANO", 1, 4000)])
            .await
            .unwrap();
        ids.push(o.id);
    }
    // The payments pile up in payment.completed, which nobody in inventory's group reads.
    lab::client::eventually("inventory's lag on the page", SAGA_TIMEOUT, || async {
        (lag_on_page(&browser, "inventory").await? >= 3).then_some(())
    })
    .await
    .unwrap();
    // The group's own page counts the same lag, also on partitions it never committed.
    let group = get_json(
        d.client.http(),
        format!("{}/api/groups/inventory-service", d.url),
    )
    .await;
    assert!(
        group["lag"].as_i64().is_some_and(|lag| lag >= 3),
        "the group's page shows its lag: {group}"
    );
    // And in time: the oldest unread payment grows older while inventory stays stopped.
    let first =
        lab::client::eventually("inventory's time behind on the page", SAGA_TIMEOUT, || {
            behind_on_page(&browser, "inventory")
        })
        .await
        .unwrap();
    lab::client::eventually("inventory falling further behind", SAGA_TIMEOUT, || async {
        behind_on_page(&browser, "inventory")
            .await
            .filter(|now| *now >= first + 1.0)
    })
    .await
    .unwrap();
    browser
        .find(".svcline[data-service='inventory'] button[data-action=toggle]")
        .await
        .unwrap()
        .click()
        .await;
    lab::client::eventually("inventory's lag back to 0", SAGA_TIMEOUT, || async {
        (lag_on_page(&browser, "inventory").await? == 0).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        behind_on_page(&browser, "inventory").await,
        None,
        "no time behind without lag"
    );
    for id in &ids {
        let done = d.client.wait_terminal(*id, SAGA_TIMEOUT).await.unwrap();
        assert_eq!(done.status, OrderStatus::Confirmed);
    }

    browser.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_shown_and_replayed_from_the_dashboard() {
    let t = spawn_lab_with(|c| {
        c.service.max_attempts = 2;
        c.service.retry_max_ms = 100;
    })
    .await;
    // Payment fails every attempt, so the order's order.created is dead-lettered.
    let faults = t.lab.faults(Service::Payment);
    faults.fail_handlers.store(true, Ordering::SeqCst);
    let d = t.with_dashboard().await;
    let order = d
        .client
        .place_order("carol", &[("MOCHA", 1, 5500)])
        .await
        .unwrap();
    let id = order.id;
    let dlq = topics::dlq(topics::ORDER_CREATED);

    let browser = Browser::start().await;
    browser.goto(&format!("{}/#/dlq", d.url)).await;
    // The page refreshes itself until the record is there.
    let section = format!("[data-dlq='{dlq}']");
    browser
        .wait_text(&format!("{section} .count"), |t| {
            t == "1 record(s), 1 waiting"
        })
        .await;
    let letter = browser
        .find(&format!("{section} table"))
        .await
        .unwrap()
        .text()
        .await;
    assert!(letter.contains("payment-service"), "the group: {letter}");
    assert!(letter.contains("injected fault"), "the error: {letter}");
    assert!(
        letter.contains("order.created["),
        "where it came from: {letter}"
    );

    // The fault is gone; the record's Replay sends it back to payment and the order completes,
    // charged once.
    faults.fail_handlers.store(false, Ordering::SeqCst);
    browser
        .find(&format!("{section} button[data-replay-one]"))
        .await
        .expect("the record's Replay button")
        .click()
        .await;
    browser
        .wait_text("#toast", |t| t.starts_with("replayed 1 record(s)"))
        .await;
    let done = d.client.wait_terminal(id, SAGA_TIMEOUT).await.unwrap();
    assert_eq!(done.status, OrderStatus::Confirmed);
    assert_eq!(d.client.wallet_balance("carol").await.unwrap(), 44_500);

    // The page shows it replayed, with nothing left to replay.
    browser
        .wait_text(&format!("{section} .count"), |t| {
            t == "1 record(s), 0 waiting"
        })
        .await;
    browser
        .wait_text(
            &format!("{section} tr[data-state='replayed'] td:nth-child(2)"),
            |t| t == "replayed",
        )
        .await;
    assert!(
        browser
            .find(&format!("{section} button[data-replay]"))
            .await
            .is_none()
    );
    assert!(
        browser
            .find(&format!("{section} button[data-replay-one]"))
            .await
            .is_none()
    );
    // The API says the same, and a bulk replay sends nothing.
    let http = d.client.http();
    let listed = get_json(http, format!("{}/api/dlq/{}", d.url, topics::ORDER_CREATED)).await;
    assert_eq!(
        (listed["waiting"].as_u64(), listed["replayed"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(listed["records"][0]["replayed"], true);
    let replayed: serde_json::Value = http
        .post(format!(
            "{}/api/dlq/{}/replay",
            d.url,
            topics::ORDER_CREATED
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            replayed["replayed"].as_u64(),
            replayed["already_replayed"].as_u64()
        ),
        (Some(0), Some(1))
    );
    // Half a selection is refused.
    let half = http
        .post(format!(
            "{}/api/dlq/{}/replay?partition=0",
            d.url,
            topics::ORDER_CREATED
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(half.status(), 400);
    assert_eq!(half.headers()["content-type"], "application/problem+json");

    // Two more dead letters of payment's group: a record's details show every header and the
    // value, and the group's button sends back both, and only what that group gave up on.
    faults.fail_handlers.store(true, Ordering::SeqCst);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let o = d
            .client
            .place_order("carol", &[("MOCHA", 1, 5500)])
            .await
            .unwrap();
        ids.push(o.id);
    }
    browser
        .wait_text(&format!("{section} .count"), |t| {
            t == "3 record(s), 2 waiting"
        })
        .await;
    browser
        .find(&format!("{section} tr[data-state='waiting'] summary"))
        .await
        .expect("a waiting record's details")
        .click()
        .await;
    let details = browser
        .wait_text(&format!("{section} tr[data-state='waiting'] dl"), |t| {
            t.contains("dlq_original_offset")
        })
        .await;
    assert!(details.contains("dlq_attempts"), "every header: {details}");
    assert!(details.contains("\"order_id\""), "the value: {details}");
    faults.fail_handlers.store(false, Ordering::SeqCst);
    browser
        .find(&format!(
            "{section} button[data-replay-group='payment-service']"
        ))
        .await
        .expect("the group's Replay button")
        .click()
        .await;
    browser
        .wait_text("#toast", |t| t.starts_with("replayed 2 record(s)"))
        .await;
    for id in ids {
        let done = d.client.wait_terminal(id, SAGA_TIMEOUT).await.unwrap();
        assert_eq!(done.status, OrderStatus::Confirmed);
    }
    assert_eq!(d.client.wallet_balance("carol").await.unwrap(), 33_500);

    browser.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_speaks_korean_when_asked_and_switches_back() {
    let d = spawn_lab().await.with_dashboard().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/?lang=ko#/", d.url)).await;
    // The header, the chain's boxes and a lane, in the Korean tutorial's words.
    browser
        .wait_text("nav a[data-view='groups']", |t| t == "컨슈머 그룹")
        .await;
    browser
        .wait_text("#svc-inventory .lag", |t| t == "랙 0")
        .await;
    browser
        .wait_text(".lane[data-topic='order.created'] .count", |t| {
            t.starts_with("레코드 0개")
        })
        .await;
    browser
        .wait_text(
            ".svcline[data-service='inventory'] button[data-action=toggle]",
            |t| t == "멈춤",
        )
        .await;
    let lang = browser
        .execute("return document.documentElement.lang", json!([]))
        .await;
    assert_eq!(lang, json!("ko"));
    // A group's page: its headings and table headers too.
    browser
        .goto(&format!("{}/#/groups/payment-service", d.url))
        .await;
    browser
        .wait_text("#group-partitions thead", |t| t.contains("로그 끝"))
        .await;
    // The switch offers English, and the choice is kept.
    browser.wait_for("#lang").await.click().await;
    browser
        .wait_text("nav a[data-view='groups']", |t| t == "Consumer groups")
        .await;
    browser.goto(&format!("{}/#/", d.url)).await;
    browser
        .wait_text("#svc-inventory .lag", |t| t == "lag 0")
        .await;
    assert_eq!(
        browser.wait_for("#lang").await.text().await,
        "한국어",
        "the switch offers the other language"
    );

    browser.close().await;
    d.stop().await;
}
