use syncfleet_common::{shutdown, telemetry};
use syncfleet_simulators::{
    config::SimulatorConfig,
    salesforce::{SalesforceConfig, SalesforceSimulator},
};

fn main() -> anyhow::Result<()> {
    telemetry::main_with("syncfleet-simulators", |source| async move {
        let config = SimulatorConfig::from_source(&source)?;
        let simulator = SalesforceSimulator::new(SalesforceConfig {
            daily_api_max: config.salesforce_daily_api_max,
            ..SalesforceConfig::default()
        });
        let server = simulator.serve(config.listen, shutdown::on_signal()).await?;
        tracing::info!(address = %server.addr(), "Salesforce simulator listening.");
        server.stopped().await?;
        Ok(())
    })
}
