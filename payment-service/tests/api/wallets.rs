use serde_json::Value;

use payment_service::PaymentService;
use saga_shared::testing::TestApp;

#[tokio::test]
async fn seeded_wallets_are_listed_and_read_one_by_one() {
    let app = TestApp::spawn::<PaymentService>().await;
    let wallets: Vec<Value> = app.get_json("/wallets").await;
    let names: Vec<&str> = wallets
        .iter()
        .map(|w| w["customer_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    let alice: Value = app.get_json("/wallets/alice").await;
    assert_eq!(alice["balance"], 100000);
}

#[tokio::test]
async fn a_bad_or_unknown_customer_is_a_problem() {
    let app = TestApp::spawn::<PaymentService>().await;
    for (path, status, detail) in [
        ("/wallets/a%20b", 400, "customer_id must be at most 64"),
        ("/wallets/zoe", 404, "no wallet for customer zoe"),
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), status, "{path}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let problem: Value = res.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().starts_with(detail),
            "{problem}"
        );
    }
}
