//! The worker's Prometheus series.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use syncfleet_common::ops::seconds_histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub queue: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    pub trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabel {
    pub write: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: &'static str,
}

/// The gate's series: how outside calls wait for their accounts' limits.
#[derive(Clone, Debug)]
pub struct GateMetrics {
    /// Time a call waited at the gate before it went, by provider.
    pub wait_seconds: Histograms<ProviderLabel>,
    /// Jobs deferred because an account's limits were spent, by provider.
    pub deferrals: Family<ProviderLabel, Counter>,
    /// Throttled answers with a delay (429 `Retry-After`, `BackOffMilliseconds`)
    /// received, each putting the account on cooldown, by provider.
    pub throttled: Family<ProviderLabel, Counter>,
    /// What the heartbeat reports for the operator console.
    pub tally: crate::heartbeat::Tally,
}

impl Default for GateMetrics {
    fn default() -> Self {
        Self {
            wait_seconds: Family::new_with_constructor(seconds_histogram),
            deferrals: Family::default(),
            throttled: Family::default(),
            tally: crate::heartbeat::Tally::default(),
        }
    }
}

impl GateMetrics {
    /// Adds the series to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "syncfleet_rate_limit_wait_seconds",
            "Time an outside call waited for its account's fleet-wide limits, by provider",
            self.wait_seconds.clone(),
        );
        registry.register(
            "syncfleet_rate_limit_deferrals",
            "Jobs deferred because an account's limits were spent for long, by provider",
            self.deferrals.clone(),
        );
        registry.register(
            "syncfleet_provider_throttled",
            "Throttled answers with a delay received from providers (the account cools down fleet-wide), by provider",
            self.throttled.clone(),
        );
    }
}

/// Every series the worker exports.
pub struct WorkerMetrics {
    /// Deliveries handled, by queue and outcome.
    pub jobs: Family<JobLabels, Counter>,
    /// Time from delivery to settlement, by queue.
    pub job_seconds: Histograms<QueueLabel>,
    /// Duration of each sync step.
    pub step_seconds: Histograms<StepLabel>,
    /// Session start minus the time the job was scheduled for.
    pub lag_seconds: Histograms<TriggerLabel>,
    /// Sessions written, by status.
    pub sessions: Family<StatusLabel, Counter>,
    /// Deliveries being handled now.
    pub in_flight: Gauge,
    /// Dead letters recorded, by reason.
    pub dead_letters: Family<ReasonLabel, Counter>,
    /// Group-commit statements run, by write (`claim`, `close`).
    pub group_statements: Family<WriteLabel, Counter>,
    /// Sessions those statements wrote (claims opened, closes released), by write.
    pub group_writes: Family<WriteLabel, Counter>,
}

impl WorkerMetrics {
    /// Creates the series and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            jobs: Family::default(),
            job_seconds: Family::new_with_constructor(seconds_histogram),
            step_seconds: Family::new_with_constructor(seconds_histogram),
            lag_seconds: Family::new_with_constructor(seconds_histogram),
            sessions: Family::default(),
            in_flight: Gauge::default(),
            dead_letters: Family::default(),
            group_statements: Family::default(),
            group_writes: Family::default(),
        };
        registry.register(
            "syncfleet_worker_group_commit_statements",
            "Group-commit statements run, by write (claim, close)",
            metrics.group_statements.clone(),
        );
        registry.register(
            "syncfleet_worker_group_commit_writes",
            "Sessions the group-commit statements wrote (claims opened, closes released), by write (claim, close)",
            metrics.group_writes.clone(),
        );
        registry.register(
            "syncfleet_worker_jobs",
            "Deliveries handled, by queue and outcome",
            metrics.jobs.clone(),
        );
        registry.register(
            "syncfleet_worker_job_duration_seconds",
            "Time from delivery to settlement",
            metrics.job_seconds.clone(),
        );
        registry.register(
            "syncfleet_sync_step_duration_seconds",
            "Duration of each sync step",
            metrics.step_seconds.clone(),
        );
        registry.register(
            "syncfleet_scheduling_lag_seconds",
            "Session start minus the time its job was scheduled for",
            metrics.lag_seconds.clone(),
        );
        registry.register(
            "syncfleet_sessions",
            "Sync sessions written, by status",
            metrics.sessions.clone(),
        );
        registry.register(
            "syncfleet_worker_in_flight",
            "Deliveries being handled",
            metrics.in_flight.clone(),
        );
        registry.register(
            "syncfleet_dead_letters",
            "Dead letters recorded, by reason",
            metrics.dead_letters.clone(),
        );
        metrics
    }
}
