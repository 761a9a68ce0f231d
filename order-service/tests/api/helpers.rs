use lab_postgres::TestServer;
use order_service::OrderService;
use saga_shared::testing::TestApp;

/// The service on a fresh database; keep the server for as long as the test runs.
pub async fn spawn_app() -> (TestApp, TestServer) {
    let pg = TestServer::start().await.expect("PostgreSQL starts");
    let url = pg.fresh_database().await.expect("a fresh database");
    (TestApp::spawn::<OrderService>(&url).await, pg)
}
