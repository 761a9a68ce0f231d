use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = payment_service::Config::parse();
    saga_shared::service::serve::<payment_service::PaymentService>(&config.common, config.port)
        .await?;
    Ok(())
}
