use anyhow::Context;
use syncfleet_api::ApiConfig;
use syncfleet_common::{config::Source, db, shutdown, telemetry};
use tracing::info;

const USAGE: &str = "usage: syncfleet-api [serve | migrate]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let source = Source::from_env();
    telemetry::init(&source)?;
    let config = ApiConfig::from_source(&source)?;
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".to_owned());
    let pool = db::connect(&config.common).await.context("connecting to PostgreSQL")?;
    match command.as_str() {
        "migrate" => {
            db::migrate(&pool).await.context("applying migrations")?;
            info!("Migrations applied.");
            Ok(())
        }
        "serve" => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            info!(address = %config.listen, "API listening.");
            syncfleet_api::serve(listener, pool, shutdown::on_signal(), config.drain_delay).await?;
            info!("API stopped.");
            Ok(())
        }
        other => anyhow::bail!("unknown command {other:?}; {USAGE}"),
    }
}
