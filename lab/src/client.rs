//! A small HTTP client for the services, used by the lab's commands, the tests and the benchmark.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::system::{Lab, Service};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// Base URLs of the four services and a shared connection pool.
#[derive(Debug, Clone)]
pub struct LabClient {
    http: reqwest::Client,
    pub order: String,
    pub payment: String,
    pub inventory: String,
    pub notification: String,
}

impl LabClient {
    pub fn new(lab: &Lab) -> Self {
        Self::with_urls(
            lab.url(Service::Order),
            lab.url(Service::Payment),
            lab.url(Service::Inventory),
            lab.url(Service::Notification),
        )
    }

    pub fn with_urls(
        order: String,
        payment: String,
        inventory: String,
        notification: String,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(256)
            .build()
            .expect("reqwest client builds");
        Self {
            http,
            order,
            payment,
            inventory,
            notification,
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn get(&self, url: String) -> Result<Value, ClientError> {
        let res = self.http.get(&url).send().await?;
        let status = res.status().as_u16();
        let body = res.text().await?;
        if status != 200 {
            return Err(ClientError::Status {
                method: "GET",
                url,
                status,
                body,
            });
        }
        Ok(serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    /// `POST /orders`; returns the created order.
    pub async fn place_order(
        &self,
        customer: &str,
        items: &[(&str, i64, i64)],
    ) -> Result<Value, ClientError> {
        let items: Vec<Value> = items
            .iter()
            .map(|(sku, q, p)| json!({"sku": sku, "quantity": q, "unit_price": p}))
            .collect();
        self.post_order(json!({"customer_id": customer, "items": items}))
            .await
    }

    pub async fn post_order(&self, body: Value) -> Result<Value, ClientError> {
        let url = format!("{}/orders", self.order);
        let res = self.http.post(&url).json(&body).send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        if status != 201 {
            return Err(ClientError::Status {
                method: "POST",
                url,
                status,
                body: text,
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn order(&self, id: &str) -> Result<Value, ClientError> {
        self.get(format!("{}/orders/{id}", self.order)).await
    }

    pub async fn wallet_balance(&self, customer: &str) -> Result<i64, ClientError> {
        let w = self
            .get(format!("{}/wallets/{customer}", self.payment))
            .await?;
        Ok(w["balance"].as_i64().unwrap_or_default())
    }

    pub async fn wallets(&self) -> Result<Value, ClientError> {
        self.get(format!("{}/wallets", self.payment)).await
    }

    pub async fn payments(&self, order_id: &str) -> Result<Value, ClientError> {
        self.get(format!("{}/payments?order_id={order_id}", self.payment))
            .await
    }

    /// `(stock, reserved)` of a product.
    pub async fn product(&self, sku: &str) -> Result<(i64, i64), ClientError> {
        let p = self
            .get(format!("{}/products/{sku}", self.inventory))
            .await?;
        Ok((
            p["stock"].as_i64().unwrap_or_default(),
            p["reserved"].as_i64().unwrap_or_default(),
        ))
    }

    pub async fn products(&self) -> Result<Value, ClientError> {
        self.get(format!("{}/products", self.inventory)).await
    }

    pub async fn notifications(&self, order_id: &str) -> Result<Vec<Value>, ClientError> {
        let v = self
            .get(format!(
                "{}/notifications?order_id={order_id}",
                self.notification
            ))
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Polls the order until it is CONFIRMED or CANCELLED, or `timeout` passes.
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> Result<Value, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let order = self.order(id).await?;
            if matches!(order["status"].as_str(), Some("CONFIRMED" | "CANCELLED")) {
                return Ok(order);
            }
            if Instant::now() > deadline {
                return Err(ClientError::Timeout(
                    timeout,
                    format!("order {id} ({})", order["status"]),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until the order has notification `kind`.
    pub async fn wait_notification(
        &self,
        id: &str,
        kind: &str,
        timeout: Duration,
    ) -> Result<Vec<Value>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.notifications(id).await?;
            if n.iter().any(|n| n["kind"] == kind) {
                return Ok(n);
            }
            if Instant::now() > deadline {
                return Err(ClientError::Timeout(
                    timeout,
                    format!("a {kind:?} notification for {id}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether a terminal order's timeline holds every step its ending implies. Events of different
/// topics may reach the order service in any order, so an order can be terminal a moment before an
/// earlier step is recorded.
pub fn timeline_complete(order: &Value) -> bool {
    let events: Vec<&str> = order["timeline"]
        .as_array()
        .map(|t| t.iter().filter_map(|e| e["event"].as_str()).collect())
        .unwrap_or_default();
    let has = |e: &str| events.contains(&e);
    match order["status"].as_str() {
        Some("CONFIRMED") => has("payment.completed") && has("inventory.updated"),
        Some("CANCELLED") if has("payment.failed") => has("order.cancelled"),
        Some("CANCELLED") => {
            has("payment.completed")
                && has("inventory.failed")
                && has("payment.refunded")
                && has("order.cancelled")
        }
        _ => false,
    }
}

/// Waits until `check` returns `Some`, polling every 50 ms, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(ClientError::Timeout(timeout, what.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
