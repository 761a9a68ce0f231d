//! `POST /orders` with an `Idempotency-Key`: a retry answers the first order and creates nothing.

use serde_json::{Value, json};

use saga_shared::testing::TestApp;

async fn post_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url("/orders"))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn orders_in_db(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn latte(quantity: i64) -> Value {
    json!({"customer_id": "alice", "items": [{"sku": "LATTE", "quantity": quantity, "unit_price": 5000}]})
}

#[tokio::test]
async fn the_same_key_twice_places_one_order_and_answers_it_again() {
    let app = crate::spawn().await;
    let first = post_with_key(&app, "order-7f3a", &latte(2)).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers()["location"].clone();
    let first: Value = first.json().await.unwrap();

    // The saga moves on meanwhile; the retry still answers the first answer.
    sqlx::query("UPDATE orders SET status = 'CONFIRMED', updated_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
    let again = post_with_key(&app, "order-7f3a", &latte(2)).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], location);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "the first answer, again");

    // The same order with `"currency": "KRW"` spelled out is the same request.
    let mut explicit = latte(2);
    explicit["currency"] = json!("KRW");
    let third = post_with_key(&app, "order-7f3a", &explicit).await;
    assert_eq!(third.status(), 201);
    assert_eq!(third.json::<Value>().await.unwrap()["id"], first["id"]);

    assert_eq!(orders_in_db(&app).await, 1);
    assert_eq!(
        app.outbox().await.len(),
        1,
        "one order.created, so one charge"
    );

    // Another key, or none, is another order.
    assert_eq!(
        post_with_key(&app, "order-7f3b", &latte(2)).await.status(),
        201
    );
    assert_eq!(app.post_json("/orders", &latte(2)).await.status(), 201);
    assert_eq!(app.post_json("/orders", &latte(2)).await.status(), 201);
    assert_eq!(orders_in_db(&app).await, 4);
}

#[tokio::test]
async fn the_same_key_with_another_order_is_a_422_problem() {
    let app = crate::spawn().await;
    assert_eq!(post_with_key(&app, "k-1", &latte(1)).await.status(), 201);
    let res = post_with_key(&app, "k-1", &latte(3)).await;
    assert_eq!(res.status(), 422);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["status"], 422);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("Idempotency-Key"), "{detail}");
    assert_eq!(orders_in_db(&app).await, 1);
    assert_eq!(app.outbox().await.len(), 1);

    // A key that is not 1 to 255 visible ASCII characters is malformed input.
    for bad in ["", "has space", &"k".repeat(256)] {
        let res = post_with_key(&app, bad, &latte(1)).await;
        assert_eq!(res.status(), 400, "{bad:?}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(orders_in_db(&app).await, 1);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_place_one_order() {
    let app = crate::spawn().await;
    // Eight clients at once, each on its own connection.
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = app.url("/orders");
        requests.spawn(async move {
            let res = reqwest::Client::new()
                .post(url)
                .header("Idempotency-Key", "same-key")
                .json(&latte(1))
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        });
    }
    let answers = requests.join_all().await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(status, order)| {
            assert_eq!(*status, 201, "{order}");
            order["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every answer is the one order: {answers:?}");
    assert_eq!(orders_in_db(&app).await, 1);
    assert_eq!(app.outbox().await.len(), 1);
}
