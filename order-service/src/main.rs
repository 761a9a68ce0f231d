use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    saga_shared::telemetry::init_tracing("info");
    let config = order_service::Config::parse();
    let app = order_service::Application::build(config).await?;
    app.run_until_stopped().await?;
    Ok(())
}
