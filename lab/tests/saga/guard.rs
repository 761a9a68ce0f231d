//! The dashboard against other sites, over real HTTP on a real lab: a change asked by another
//! site's page (its `Origin`, `Sec-Fetch-Site`, or a form's body) is refused and changes nothing;
//! a request naming the dashboard by a foreign host name (DNS rebinding) is refused on every
//! route; its own page, curl and the `lab` commands work; `/api/status` shows no password.

use lab::Service;
use lab::dashboard::Dashboard;
use lab::dashboard::guard::Guard;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{DashboardLab, get_json, spawn_lab};

async fn running(d: &DashboardLab, svc: Service) -> bool {
    d.shared.lock().await.as_ref().unwrap().is_running(svc)
}

/// Asserts `res` is a 403 problem whose detail contains `reason`.
async fn forbidden(res: reqwest::Response, reason: &str) {
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "{res:?}");
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "{res:?}"
    );
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["status"], 403, "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(reason), "{detail:?} names {reason:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_asked_by_another_site_is_refused_and_changes_nothing() {
    let d = spawn_lab().await.with_dashboard().await;
    let http = reqwest::Client::new();
    let stop = format!("{}/api/services/payment/stop", d.url);
    let start = format!("{}/api/services/payment/start", d.url);

    // Another site's page: fetch() sends its Origin; a form post its Origin and a form body.
    for (name, value, reason) in [
        (
            "origin",
            "http://evil.example",
            "another site (Origin \"http://evil.example\")",
        ),
        ("origin", "http://127.0.0.1:1", "another site"),
        (
            "sec-fetch-site",
            "cross-site",
            "another site (Sec-Fetch-Site \"cross-site\")",
        ),
    ] {
        let res = http.post(&stop).header(name, value).send().await.unwrap();
        forbidden(res, reason).await;
    }
    // A form with `enctype="text/plain"` from a browser that sends no Origin.
    let res = http
        .post(&stop)
        .header("content-type", "text/plain")
        .body("x=y")
        .send()
        .await
        .unwrap();
    forbidden(res, "a form's body (text/plain)").await;
    let res = http
        .post(format!("{}/api/orders", d.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            r#"{"customer_id":"mallory","items":[{"sku":"LATTE","quantity":1,"unit_price":5000}]}"#,
        )
        .send()
        .await
        .unwrap();
    forbidden(res, "a form's body").await;
    assert!(
        running(&d, Service::Payment).await,
        "no refused request stopped payment"
    );
    let orders = get_json(&http, format!("{}/orders", d.client.order)).await;
    assert_eq!(orders, serde_json::json!([]), "no order was placed");

    // The dashboard's own page (its Origin, as the browser tests' fetches send it) works.
    let res = http
        .post(&stop)
        .header("origin", &d.url)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{res:?}");
    assert!(!running(&d, Service::Payment).await);
    // curl and the `lab` commands send no Origin: they work.
    let res = http.post(&start).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{res:?}");
    assert!(running(&d, Service::Payment).await);
    // So does JSON from them.
    let res = http
        .post(format!("{}/api/faults/payment", d.url))
        .json(&serde_json::json!({"fail_handlers": false, "slow_ms": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{res:?}");
    // Reading with a foreign Origin is the browser's business: no CORS header lets it read.
    let res = http
        .get(format!("{}/api/status", d.url))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        !res.headers().contains_key("access-control-allow-origin"),
        "{res:?}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_name_is_refused_on_every_route_and_status_shows_no_password() {
    let d = spawn_lab().await.with_dashboard().await;
    let http = reqwest::Client::new();
    let port = d.url.rsplit(':').next().unwrap().to_owned();
    let rebound = format!("evil.example:{port}");
    for path in [
        "/",
        "/assets/app.js",
        "/api/status",
        "/api/live",
        "/nowhere",
    ] {
        let res = http
            .get(format!("{}{path}", d.url))
            .header("host", &rebound)
            .send()
            .await
            .unwrap();
        forbidden(res, "not served as \"evil.example:").await;
    }
    let res = http
        .post(format!("{}/api/services/payment/stop", d.url))
        .header("host", &rebound)
        .header("origin", format!("http://{rebound}"))
        .send()
        .await
        .unwrap();
    forbidden(res, "--dashboard-allowed-hosts").await;
    assert!(running(&d, Service::Payment).await, "payment still runs");

    // The names and addresses it is served as.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        // A forwarded or mapped port, e.g. `ssh -L 9000:127.0.0.1:8080`.
        "localhost:9000".to_owned(),
    ] {
        let res = http
            .get(format!("{}/", d.url))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{host}: {res:?}");
    }

    // A name given to the lab (`--dashboard-allowed-hosts`), on a second dashboard of this lab.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let named_url = format!("http://{}", listener.local_addr().unwrap());
    let brokers = d.shared.lock().await.as_ref().unwrap().brokers().to_owned();
    let named = Dashboard::serve_guarded(
        d.shared.clone(),
        d.client.clone(),
        brokers,
        listener,
        Guard::new(["lab.example"]).unwrap(),
    )
    .unwrap();
    let res = http
        .get(format!("{named_url}/api/status"))
        .header("host", "lab.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{res:?}");
    let res = http
        .get(format!("{}/api/status", d.url))
        .header("host", "lab.example")
        .send()
        .await
        .unwrap();
    forbidden(res, "not served as \"lab.example\"").await;
    named.shutdown().await;

    // No password in /api/status, though each database URL has one.
    let body = http
        .get(format!("{}/api/status", d.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let status: Value = serde_json::from_str(&body).unwrap();
    for svc in Service::ALL {
        let real = d
            .shared
            .lock()
            .await
            .as_ref()
            .unwrap()
            .db_url(svc)
            .to_owned();
        let password = reqwest::Url::parse(&real)
            .unwrap()
            .password()
            .unwrap()
            .to_owned();
        assert!(
            !body.contains(&password),
            "{svc:?}'s password shown: {body}"
        );
        let shown = status["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == svc.name())
            .unwrap()["database_url"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(shown, real.replace(&format!(":{password}@"), ":***@"));
    }
    d.stop().await;
}
