use syncfleet_common::{shutdown, telemetry};
use syncfleet_simulators::{
    Server,
    config::SimulatorConfig,
    ews::{EwsConfig, EwsSimulator},
    gmail::{GmailConfig, GmailSimulator},
    graph::{GraphConfig, GraphSimulator},
    salesforce::{SalesforceConfig, SalesforceSimulator},
    smtp::{SmtpConfig, SmtpSimulator},
};

/// mimalloc, as the worker: the simulators share the load test's machine
/// with the fleet, and glibc's malloc made them spend more of it than they need.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    telemetry::main_with("syncfleet-simulators", |source| async move {
        let config = SimulatorConfig::from_source(&source)?;
        let salesforce = SalesforceSimulator::new(SalesforceConfig {
            daily_api_max: config.salesforce_daily_api_max,
            rotate_refresh_tokens: config.salesforce_rotate_refresh_tokens,
            session_timeout: config.salesforce_session_timeout,
            ..SalesforceConfig::default()
        });
        let graph = GraphSimulator::new(GraphConfig {
            revoke_rotated_refresh_tokens: config.graph_revoke_rotated_refresh_tokens,
            ..GraphConfig::default()
        });
        let ews = EwsSimulator::new(EwsConfig::default());
        let gmail = GmailSimulator::new(GmailConfig::default());
        let smtp = SmtpSimulator::new(SmtpConfig::default());
        let (latency, jitter) = (config.latency, config.latency_jitter);
        salesforce.set_latency(latency, jitter);
        graph.set_latency(latency, jitter);
        ews.set_latency(latency, jitter);
        gmail.set_latency(latency, jitter);
        smtp.set_latency(latency, jitter);

        // One HTTP listener for every HTTP simulator: their paths are the
        // providers' own and never overlap; each control API has its prefix.
        let router = salesforce
            .router()
            .merge(graph.router())
            .merge(ews.router())
            .merge(gmail.router())
            .merge(smtp.router());
        let stop = shutdown::on_signal();
        let http = Server::start(config.listen, router, stop.clone()).await?;
        let mail = smtp.serve(config.smtp_listen, stop).await?;
        tracing::info!(
            http = %http.addr(),
            smtp = %mail.addr(),
            "Simulators listening: Salesforce, Graph, EWS, Gmail and their token endpoints over HTTP; SMTP."
        );
        http.stopped().await?;
        mail.stopped().await?;
        Ok(())
    })
}
