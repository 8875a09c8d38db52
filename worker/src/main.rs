use std::sync::Arc;

use syncfleet_common::{shutdown, telemetry};
use syncfleet_worker::{WorkerConfig, sync::SettingsCheck};

fn main() -> anyhow::Result<()> {
    telemetry::main_with("syncfleet-worker", |source| async move {
        let config = WorkerConfig::from_source(&source)?;
        syncfleet_worker::run(config, Arc::new(SettingsCheck), shutdown::on_signal()).await
    })
}
