//! The inventory service's own tests: products over HTTP and its saga handler (reserve every line
//! or none, forged quantities) on a database of its own, without a broker or the other services.

mod saga;

use inventory_service::InventoryService;
use lab_postgres::TestServer;
use saga_shared::testing::TestApp;

/// The service on a fresh database; keep the server for as long as the test runs.
pub async fn spawn_app() -> (TestApp, TestServer) {
    let pg = TestServer::start().await.expect("PostgreSQL starts");
    let url = pg.fresh_database().await.expect("a fresh database");
    (TestApp::spawn::<InventoryService>(&url).await, pg)
}
