//! The dashboard in a real browser: a dead-lettered order shows up on the page, its DLQ page
//! says why it failed, and the Replay button sends it back so the order completes.

use std::sync::atomic::Ordering;

use lab::Service;
use saga_shared::events::topics;

use crate::browser::Browser;
use crate::helpers::{SAGA_TIMEOUT, spawn_lab_with};

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
        .place_order("carol", &[("MOCHA", 1, 4500)])
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    let dlq = topics::dlq(topics::ORDER_CREATED);

    let browser = Browser::start().await;
    // The main page counts the DLQ's records (it refreshes itself; the test reloads it).
    let row = format!("tr[id='{dlq}']");
    lab::client::eventually("the DLQ count on the dashboard", SAGA_TIMEOUT, || async {
        browser.goto(&d.url).await;
        let cell = browser.find(&format!("{row} td.records")).await?;
        (cell.text().await == "1").then_some(())
    })
    .await
    .unwrap();
    assert!(
        browser
            .find("h1")
            .await
            .unwrap()
            .text()
            .await
            .contains("saga lab"),
        "the dashboard's title"
    );

    // "show" opens the DLQ page: where the record came from and why it failed.
    browser
        .find(&format!("{row} a"))
        .await
        .expect("a link to the DLQ page")
        .click()
        .await;
    let count = browser.text_on_page(&format!("/dlq/{dlq}"), "#count").await;
    assert_eq!(count, "1");
    let letter = browser.find("#letters tr + tr").await.unwrap().text().await;
    assert!(letter.contains("payment-service"), "the group: {letter}");
    assert!(letter.contains("injected fault"), "the error: {letter}");
    assert!(letter.contains(&id), "the order's event: {letter}");

    // The fault is gone; Replay sends the record back and the order completes, charged once.
    faults.fail_handlers.store(false, Ordering::SeqCst);
    browser
        .find("button[type=submit]")
        .await
        .expect("the Replay button")
        .click()
        .await;
    // The button posts, and the answer redirects to the DLQ page.
    let replayed = browser.text_on_page("replayed=", "#replayed").await;
    assert_eq!(replayed, "Replayed 1 record(s) to their original topic.");
    let done = d.client.wait_terminal(&id, SAGA_TIMEOUT).await.unwrap();
    assert_eq!(done["status"], "CONFIRMED");
    assert_eq!(d.client.wallet_balance("carol").await.unwrap(), 45_500);

    browser.close().await;
    d.stop().await;
}
