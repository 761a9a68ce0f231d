use serde_json::{Value, json};

#[tokio::test]
async fn a_valid_order_is_pending_and_its_event_is_in_the_outbox() {
    let app = crate::spawn().await;
    let body = json!({"customer_id": "alice", "items": [
        {"sku": "LATTE", "quantity": 2, "unit_price": 5000},
        {"sku": "MOCHA", "quantity": 1, "unit_price": 5500}]});
    let res = app.post_json("/orders", &body).await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = res.json().await.unwrap();
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["total"], 15500);
    assert_eq!(
        location,
        format!("/orders/{}", order["id"].as_str().unwrap())
    );

    // The same order reads back, with the first step of its timeline.
    let read: Value = app.get_json(&location).await;
    assert_eq!(read["total"], 15500);
    assert_eq!(read["timeline"][0]["event"], "order.created");

    // order.created waits in the outbox, with the order's content.
    let outbox = app.outbox().await;
    assert_eq!(outbox.len(), 1);
    let (topic, payload) = &outbox[0];
    assert_eq!(topic, "order.created");
    assert_eq!(payload["order_id"], order["id"]);
    assert_eq!(payload["total"], 15500);
    assert_eq!(payload["items"][0]["sku"], "LATTE");
}

#[tokio::test]
async fn orders_the_rules_refuse_are_422_problems_and_store_nothing() {
    let app = crate::spawn().await;
    let line = |q: i64, p: i64| json!({"sku": "LATTE", "quantity": q, "unit_price": p});
    let cases = [
        (
            json!({"customer_id": " ", "items": [line(1, 1)]}),
            "customer_id must not be empty",
        ),
        (
            json!({"customer_id": "a b", "items": [line(1, 1)]}),
            "customer_id must be at most 64",
        ),
        (
            json!({"customer_id": "alice", "items": []}),
            "items must not be empty",
        ),
        (
            json!({"customer_id": "alice", "items": [line(1, 1), line(0, 1)]}),
            "items[1].quantity must be between 1 and 1000",
        ),
        (
            json!({"customer_id": "alice", "items": [line(1, 10_000_001)]}),
            "items[0].unit_price must be between 1 and 10000000",
        ),
        (
            json!({"customer_id": "alice", "items": [{"sku": "LA TTE", "quantity": 1, "unit_price": 1}]}),
            "items[0].sku must be 1 to 64",
        ),
        (
            json!({"customer_id": "alice", "items": [line(1, 1)], "currency": "USD"}),
            "currency must be KRW",
        ),
        // The client cannot set its own price, nor order what the catalogue does not list.
        (
            json!({"customer_id": "alice", "items": [line(2, 5000), line(1, 1)]}),
            "items[1].unit_price: 1 is not the price of LATTE (5000)",
        ),
        (
            json!({"customer_id": "alice", "items": [{"sku": "ICED_TEA", "quantity": 1}]}),
            "items[0].sku: ICED_TEA is not in the catalogue",
        ),
    ];
    for (body, reason) in cases {
        let res = app.post_json("/orders", &body).await;
        assert_eq!(res.status(), 422, "{body}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let problem: Value = res.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.starts_with(reason), "{body}: {detail}");
    }
    // Malformed JSON is a 400 problem too.
    let res = reqwest::Client::new()
        .post(app.url("/orders"))
        .header("content-type", "application/json")
        .body("{\"customer_id\":")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(app.outbox().await.is_empty());
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn the_list_filters_by_status_and_an_unknown_order_is_404() {
    let app = crate::spawn().await;
    let body = json!({"customer_id": "bob", "items": [{"sku": "LATTE", "quantity": 1, "unit_price": 5000}]});
    for _ in 0..3 {
        let res = app.post_json("/orders", &body).await;
        assert_eq!(res.status(), 201);
    }
    let pending: Vec<Value> = app.get_json("/orders?status=PENDING&limit=2").await;
    assert_eq!(pending.len(), 2);
    let confirmed: Vec<Value> = app.get_json("/orders?status=CONFIRMED").await;
    assert!(confirmed.is_empty());
    let res = app.get(&format!("/orders/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn an_order_is_priced_from_the_catalogue_and_follows_its_changes() {
    let app = crate::spawn().await;
    let order = |sku: &str| json!({"customer_id": "carol", "items": [{"sku": sku, "quantity": 2}]});
    let res = app.post_json("/orders", &order("MOCHA")).await;
    assert_eq!(res.status(), 201);
    let placed: Value = res.json().await.unwrap();
    assert_eq!(placed["items"][0]["unit_price"], 5500);
    assert_eq!(placed["total"], 11000);

    // A later catalogue record changes the price of the next order, not of the one placed.
    crate::list(&app, &[("MOCHA", 6000)]).await;
    let again: Value = app
        .post_json("/orders", &order("MOCHA"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["total"], 12000);
    let first: Value = app
        .get_json(&format!("/orders/{}", placed["id"].as_str().unwrap()))
        .await;
    assert_eq!(first["total"], 11000);
    let listed: Value = app.get_json("/catalogue").await;
    let mocha = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["sku"] == "MOCHA")
        .unwrap();
    assert_eq!(mocha["unit_price"], 6000);
}
