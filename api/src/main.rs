use anyhow::Context;
use syncfleet_api::ApiConfig;
use syncfleet_common::{db, shutdown, telemetry};
use tracing::info;

const USAGE: &str = "usage: syncfleet-api [serve | migrate]";

fn main() -> anyhow::Result<()> {
    telemetry::main_with("syncfleet-api", |source| async move {
        run(ApiConfig::from_source(&source)?).await
    })
}

async fn run(config: ApiConfig) -> anyhow::Result<()> {
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
