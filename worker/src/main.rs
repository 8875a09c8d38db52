use std::{sync::Arc, time::Duration};

use syncfleet_common::{shutdown, telemetry};
use syncfleet_worker::{
    WorkerConfig, config,
    sync::{FleetGate, MailboxSync, ProviderConfig},
};

/// mimalloc rather than glibc's malloc: a session's work is many small,
/// short-lived allocations (HTTP bodies, JSON values, SQL rows) made and freed
/// across the runtime's threads, where the fleet load test's profile found
/// glibc's allocator taking a quarter of the worker's CPU. Built without
/// transparent huge pages (`no_thp`): with them its arena was backed by 2 MB
/// pages that a purge of a few kB cannot return (43-53 MB of a worker's RSS
/// in the fleet load test's P1); without them P4's peak fell by 50 MB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    telemetry::main_with("syncfleet-worker", |source| async move {
        let worker = WorkerConfig::from_source(&source)?;
        let providers = ProviderConfig::from_source(&source)?;
        // A concurrency lease outlives the longest call, so only a dead
        // worker's leases expire.
        let lease = providers.call_timeout + Duration::from_secs(5);
        let gate = FleetGate::from_source(
            &source,
            worker.common.redis_url.clone(),
            &worker.common.queue_prefix,
            lease,
        )?;
        let metrics = gate.metrics().clone();
        let sync = MailboxSync::new(providers, config::budget(&source)?, Arc::new(gate))?.with_gate_metrics(metrics);
        syncfleet_worker::run(worker, Arc::new(sync), shutdown::on_signal()).await
    })
}
