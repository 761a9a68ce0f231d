use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = notification_service::Config::parse();
    saga_shared::service::serve::<notification_service::NotificationService>(
        &config.common,
        config.port,
    )
    .await?;
    Ok(())
}
