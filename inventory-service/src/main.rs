use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = inventory_service::Config::parse();
    saga_shared::service::serve::<inventory_service::InventoryService>(&config.common, config.port)
        .await?;
    Ok(())
}
