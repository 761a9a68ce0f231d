//! A small HTTP client for the services, used by the lab's commands, the tests and the benchmark.
//! It speaks the services' own types: what it sends and what it reads are theirs.

use std::time::{Duration, Instant};

use inventory_service::api::Product;
use notification_service::api::{Notification, NotificationKind};
use order_service::api::Order;
use order_service::domain::{LineRequest, OrderRequest};
use payment_service::api::{Payment, Wallet};
use serde::de::DeserializeOwned;
use uuid::Uuid;

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
    #[error("{method} {url} answered with a body that is not what it documents: {error}")]
    Body {
        method: &'static str,
        url: String,
        error: String,
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
        order: impl Into<String>,
        payment: impl Into<String>,
        inventory: impl Into<String>,
        notification: impl Into<String>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(256)
            .build()
            .expect("reqwest client builds");
        Self {
            http,
            order: order.into(),
            payment: payment.into(),
            inventory: inventory.into(),
            notification: notification.into(),
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET url`, which must answer 200 with a `T`.
    async fn get<T: DeserializeOwned>(&self, url: String) -> Result<T, ClientError> {
        let res = self.http.get(&url).send().await?;
        Self::decode("GET", url, 200, res).await
    }

    /// `res` as a `T` if it has status `expected`, else the status and body as an error.
    async fn decode<T: DeserializeOwned>(
        method: &'static str,
        url: String,
        expected: u16,
        res: reqwest::Response,
    ) -> Result<T, ClientError> {
        let status = res.status().as_u16();
        let body = res.text().await?;
        if status != expected {
            return Err(ClientError::Status {
                method,
                url,
                status,
                body,
            });
        }
        serde_json::from_str(&body).map_err(|e| ClientError::Body {
            method,
            url,
            error: e.to_string(),
        })
    }

    /// `POST /orders` of `customer` buying `items` (sku, quantity, unit price: the catalogue's,
    /// or the order is refused); returns the created order.
    pub async fn place_order(
        &self,
        customer: &str,
        items: &[(&str, i64, i64)],
    ) -> Result<Order, ClientError> {
        let items = items
            .iter()
            .map(|&(sku, quantity, unit_price)| LineRequest {
                sku: sku.to_owned(),
                quantity,
                unit_price: Some(unit_price),
            });
        self.order_lines(customer, items.collect()).await
    }

    /// `POST /orders` of `customer` buying `items` (sku, quantity) at the catalogue's prices.
    pub async fn place_order_at_list_prices(
        &self,
        customer: &str,
        items: &[(&str, i64)],
    ) -> Result<Order, ClientError> {
        let items = items.iter().map(|&(sku, quantity)| LineRequest {
            sku: sku.to_owned(),
            quantity,
            unit_price: None,
        });
        self.order_lines(customer, items.collect()).await
    }

    async fn order_lines(
        &self,
        customer: &str,
        items: Vec<LineRequest>,
    ) -> Result<Order, ClientError> {
        self.post_order(&OrderRequest {
            customer_id: customer.to_owned(),
            items,
            currency: None,
        })
        .await
    }

    /// `POST /orders` with `request`; returns the created order.
    pub async fn post_order(&self, request: &OrderRequest) -> Result<Order, ClientError> {
        let url = format!("{}/orders", self.order);
        let res = self.http.post(&url).json(request).send().await?;
        Self::decode("POST", url, 201, res).await
    }

    pub async fn order(&self, id: Uuid) -> Result<Order, ClientError> {
        self.get(format!("{}/orders/{id}", self.order)).await
    }

    pub async fn wallet_balance(&self, customer: &str) -> Result<i64, ClientError> {
        let wallet: Wallet = self
            .get(format!("{}/wallets/{customer}", self.payment))
            .await?;
        Ok(wallet.balance)
    }

    pub async fn wallets(&self) -> Result<Vec<Wallet>, ClientError> {
        self.get(format!("{}/wallets", self.payment)).await
    }

    pub async fn payments(&self, order_id: Uuid) -> Result<Vec<Payment>, ClientError> {
        self.get(format!("{}/payments?order_id={order_id}", self.payment))
            .await
    }

    /// `(stock, reserved)` of a product.
    pub async fn product(&self, sku: &str) -> Result<(i64, i64), ClientError> {
        let p: Product = self
            .get(format!("{}/products/{sku}", self.inventory))
            .await?;
        Ok((p.stock, p.reserved))
    }

    pub async fn products(&self) -> Result<Vec<Product>, ClientError> {
        self.get(format!("{}/products", self.inventory)).await
    }

    pub async fn notifications(&self, order_id: Uuid) -> Result<Vec<Notification>, ClientError> {
        self.get(format!(
            "{}/notifications?order_id={order_id}",
            self.notification
        ))
        .await
    }

    /// Polls the order until it is CONFIRMED or CANCELLED, or `timeout` passes.
    pub async fn wait_terminal(&self, id: Uuid, timeout: Duration) -> Result<Order, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let order = self.order(id).await?;
            if order.status.is_terminal() {
                return Ok(order);
            }
            if Instant::now() > deadline {
                return Err(ClientError::Timeout(
                    timeout,
                    format!("order {id} ({})", order.status.as_str()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until the order has a notification of `kind`; returns all of the order's.
    pub async fn wait_notification(
        &self,
        id: Uuid,
        kind: NotificationKind,
        timeout: Duration,
    ) -> Result<Vec<Notification>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.notifications(id).await?;
            if n.iter().any(|n| n.kind == kind) {
                return Ok(n);
            }
            if Instant::now() > deadline {
                return Err(ClientError::Timeout(
                    timeout,
                    format!("a {:?} notification for {id}", kind.as_str()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
