use syncfleet_common::{config::Source, shutdown, telemetry};
use syncfleet_scheduler::SchedulerConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let source = Source::from_env();
    telemetry::init(&source)?;
    let config = SchedulerConfig::from_source(&source)?;
    syncfleet_scheduler::run(config, shutdown::on_signal()).await
}
