//! Fast tests of one service, in the manner of each service's `tests/api/`: its HTTP endpoints and
//! its event handler on a database of its own (migrated like the real one), with no broker.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::consumer::{HandleError, Incoming, Subscription};
use crate::envelope::Envelope;
use crate::events::{Event, SagaEvent, Topic};
use crate::service::SagaService;

/// Service `S`'s own endpoints served on a free port of 127.0.0.1, and its handler.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    pub pool: PgPool,
    handler: Arc<dyn Subscription>,
    publishes: &'static [Topic],
    writes_catalogue: bool,
    http: reqwest::Client,
}

impl TestApp {
    /// Service `S` on a fresh database (on the test binary's PostgreSQL server, see
    /// [`lab_postgres::test_database`]), migrated like the real one, its router served with the
    /// middleware every service has until the test's runtime ends: the one `spawn_app` of the
    /// four services' tests.
    pub async fn spawn<S: SagaService>() -> TestApp {
        let database_url = lab_postgres::test_database()
            .await
            .expect("a fresh database on the tests' PostgreSQL server");
        let pool = crate::db::connect(&database_url, 1, 5)
            .await
            .expect("the test database accepts connections");
        crate::db::migrator(S::MIGRATOR)
            .run(&pool)
            .await
            .expect("the service's migrations apply to an empty database");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let address = format!("http://{}", listener.local_addr().expect("bound"));
        let router = crate::http::with_middleware((S::ROUTER)(pool.clone()));
        tokio::spawn(async move { axum::serve(listener, router).await });
        TestApp {
            address,
            pool,
            handler: Arc::new(S::Handler::default()),
            publishes: S::PUBLISHES,
            writes_catalogue: S::CATALOGUE == crate::catalogue::Role::Writes,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("the service answers")
    }

    /// `GET path`, which must succeed, as JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let res = self.get(path).await;
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().await.expect("a JSON body")
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.send_json(reqwest::Method::PATCH, path, body).await
    }

    async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .request(method, self.url(path))
            .json(body)
            .send()
            .await
            .expect("the service answers")
    }

    /// Hands `event` (sent by `source`, as the first event of its order) to the service's handler in
    /// one transaction, committed when the handler succeeds: what a consumer does after decoding.
    pub async fn handle<E: Event>(&self, source: &str, event: E) -> Result<(), HandleError>
    where
        SagaEvent: From<E>,
    {
        let incoming = Incoming {
            envelope: Envelope::first::<E>(source, event.order_id()),
            event: SagaEvent::from(event),
        };
        let mut tx = self.pool.begin().await?;
        self.handler.deliver(&mut tx, &incoming).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The topics and payloads of the events the service has put in its outbox, oldest first
    /// (without the catalogue's records: [`TestApp::catalogue_outbox`]). Each topic must be one
    /// the service declares it publishes ([`SagaService::PUBLISHES`]).
    pub async fn outbox(&self) -> Vec<(String, serde_json::Value)> {
        let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT topic, payload FROM outbox WHERE topic <> $1 OR NOT $2 ORDER BY id",
        )
        .bind(crate::catalogue::TOPIC)
        .bind(self.writes_catalogue)
        .fetch_all(&self.pool)
        .await
        .expect("the outbox is readable");
        for (topic, _) in &rows {
            assert!(
                self.publishes.iter().any(|t| t.name() == topic),
                "published to {topic}, which the service does not declare in PUBLISHES"
            );
        }
        rows
    }

    /// The keys and values of the catalogue's records in the outbox, oldest first.
    pub async fn catalogue_outbox(&self) -> Vec<(String, serde_json::Value)> {
        sqlx::query_as("SELECT record_key, payload FROM outbox WHERE topic = $1 ORDER BY id")
            .bind(crate::catalogue::TOPIC)
            .fetch_all(&self.pool)
            .await
            .expect("the outbox is readable")
    }
}
