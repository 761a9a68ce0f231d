//! `schema-registry`: the registry on its own, as the container lab runs it (the `lab` binary
//! serves the same one in its process). Confluent's REST API on `--listen`, its data in the
//! `_schemas` topic of `--brokers`.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "schema-registry",
    version,
    about = "A schema registry with Confluent's REST API for JSON Schema, kept in the compacted topic _schemas"
)]
struct Args {
    /// Kafka bootstrap servers (comma separated) of the broker that keeps `_schemas`.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Address to serve the REST API on.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8085")]
    listen: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer())
        .with(filter)
        .init();
    let args = Args::parse();
    match serve(&args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let registry = schema_registry::Registry::open(&args.brokers)
        .await
        .map_err(|e| format!("opening _schemas on {}: {e}", args.brokers))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", args.listen))?;
    tracing::info!(listen = %args.listen, brokers = %args.brokers, "schema registry serving");
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    axum::serve(listener, schema_registry::api::router(registry))
        .with_graceful_shutdown(stop)
        .await?;
    Ok(())
}
