use std::sync::Arc;

use syncfleet_common::{shutdown, telemetry};
use syncfleet_worker::{
    WorkerConfig, config,
    sync::{MailboxSync, ProviderConfig},
};

fn main() -> anyhow::Result<()> {
    telemetry::main_with("syncfleet-worker", |source| async move {
        let worker = WorkerConfig::from_source(&source)?;
        let sync = MailboxSync::new(ProviderConfig::from_source(&source)?, config::budget(&source)?)?;
        syncfleet_worker::run(worker, Arc::new(sync), shutdown::on_signal()).await
    })
}
