use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = order_service::Config::parse();
    saga_shared::service::serve::<order_service::OrderService>(&config.common, config.port).await?;
    Ok(())
}
