//! The three ends of the saga: confirmed, cancelled for lack of money, compensated for lack of stock.

use serde_json::Value;

use crate::helpers::*;

fn count_kind(notifications: &[Value], kind: &str) -> usize {
    notifications.iter().filter(|n| n["kind"] == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_confirms_charges_once_and_reserves_once() {
    let t = spawn_lab().await;
    let c = &t.client;
    let res = c
        .http()
        .post(format!("{}/orders", c.order))
        .json(&serde_json::json!({"customer_id":"alice","items":[{"sku":"LATTE","quantity":2,"unit_price":5000}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/orders/{id}"));
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["total"], 10000);

    let order = c.wait_terminal(&id, SAGA_TIMEOUT).await.unwrap();
    assert_eq!(order["status"], "CONFIRMED", "{order:#}");
    let order = order_with_steps(c, &id, 3).await;
    assert_eq!(
        timeline_events(&order),
        ["order.created", "payment.completed", "inventory.updated"]
    );
    let notes = c
        .wait_notification(&id, "confirmed", SAGA_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(count_kind(&notes, "confirmed"), 1);
    assert_eq!(count_kind(&notes, "cancelled"), 0);
    assert_eq!(c.wallet_balance("alice").await.unwrap(), 90_000);
    assert_eq!(c.product("LATTE").await.unwrap(), (98, 2));
    let payments = c.payments(&id).await.unwrap();
    assert_eq!(payments.as_array().unwrap().len(), 1);
    assert_eq!(payments[0]["status"], "CAPTURED");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_funds_cancels_without_touching_stock() {
    let t = spawn_lab().await;
    let c = &t.client;
    let order = c.place_order("bob", &[("MOCHA", 3, 5500)]).await.unwrap();
    let id = order["id"].as_str().unwrap();
    let order = c.wait_terminal(id, SAGA_TIMEOUT).await.unwrap();
    assert_eq!(order["status"], "CANCELLED", "{order:#}");
    assert!(
        order["reason"]
            .as_str()
            .unwrap()
            .contains("insufficient funds"),
        "{order:#}"
    );
    assert_eq!(
        timeline_events(&order),
        ["order.created", "payment.failed", "order.cancelled"]
    );
    let notes = c
        .wait_notification(id, "cancelled", SAGA_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(count_kind(&notes, "cancelled"), 1);
    assert_eq!(count_kind(&notes, "confirmed"), 0);
    assert_eq!(c.wallet_balance("bob").await.unwrap(), 10_000);
    assert_eq!(c.product("MOCHA").await.unwrap(), (30, 0));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_stock_charges_then_refunds() {
    let t = spawn_lab().await;
    let c = &t.client;
    let order = c
        .place_order("carol", &[("LATTE", 1, 5000), ("ICED_TEA", 2, 4500)])
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap();
    let order = c.wait_terminal(id, SAGA_TIMEOUT).await.unwrap();
    assert_eq!(order["status"], "CANCELLED", "{order:#}");
    let order = order_with_steps(c, id, 5).await;
    assert!(
        order["reason"]
            .as_str()
            .unwrap()
            .contains("out of stock: ICED_TEA"),
        "{order:#}"
    );
    assert_eq!(
        timeline_events(&order),
        [
            "order.created",
            "payment.completed",
            "inventory.failed",
            "payment.refunded",
            "order.cancelled"
        ]
    );
    // Whatever order the events arrived in, the timeline replays them in time order.
    let statuses: Vec<&str> = order["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["PENDING", "PAID", "COMPENSATING", "CANCELLED", "CANCELLED"]
    );
    c.wait_notification(id, "cancelled", SAGA_TIMEOUT)
        .await
        .unwrap();
    // Charged, then refunded: the wallet is back where it was, and no stock moved.
    assert_eq!(c.wallet_balance("carol").await.unwrap(), 50_000);
    let payments = c.payments(id).await.unwrap();
    assert_eq!(payments[0]["status"], "REFUNDED");
    assert_eq!(c.product("LATTE").await.unwrap(), (100, 0));
    assert_eq!(c.product("ICED_TEA").await.unwrap(), (0, 0));
    t.stop().await;
}
