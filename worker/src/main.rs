use std::sync::Arc;

use syncfleet_common::{config::Source, shutdown, telemetry};
use syncfleet_worker::{WorkerConfig, sync::SettingsCheck};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let source = Source::from_env();
    telemetry::init(&source)?;
    let config = WorkerConfig::from_source(&source)?;
    syncfleet_worker::run(config, Arc::new(SettingsCheck), shutdown::on_signal()).await
}
