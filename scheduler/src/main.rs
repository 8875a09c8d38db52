use syncfleet_common::{shutdown, telemetry};
use syncfleet_scheduler::SchedulerConfig;

fn main() -> anyhow::Result<()> {
    telemetry::main_with("syncfleet-scheduler", |source| async move {
        let config = SchedulerConfig::from_source(&source)?;
        syncfleet_scheduler::run(config, shutdown::on_signal()).await
    })
}
