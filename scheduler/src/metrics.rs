//! The scheduler's Prometheus series.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use syncfleet_common::ops::seconds_histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: &'static str,
}

/// Every series the scheduler exports.
pub struct SchedulerMetrics {
    /// 1 while this instance leads.
    pub leader: Gauge,
    /// Cadence jobs published (confirmed and committed).
    pub published: Counter,
    /// Due slots skipped: organization disabled, or a session already running.
    pub skipped: Counter,
    /// Duration of a scheduling pass.
    pub tick_seconds: Histogram,
    /// Messages ready in each queue, as last seen by the leader.
    pub queue_depth: Family<QueueLabel, Gauge>,
    /// Emails waiting in the outbox.
    pub outbox_backlog: Gauge,
    /// Sessions ended as abandoned by the sweep (their lease expired).
    pub abandoned: Counter,
    /// Cadence jobs presumed lost and scheduled again.
    pub recovered: Counter,
    /// Age of the oldest email waiting in the outbox (0 when none waits).
    pub outbox_oldest_seconds: Gauge,
    /// Users whose sync auto-suspend disabled, by class.
    pub auto_suspended: Family<ClassLabel, Gauge>,
    /// Salesforce orgs at or above 90% of their daily allocation less the reserve.
    pub orgs_near_reserve: Gauge,
    /// Dead jobs neither replayed nor discarded.
    pub dead_jobs_waiting: Gauge,
    /// Workers whose heartbeat stopped without a clean stop in the last hour.
    pub workers_silent: Gauge,
}

impl SchedulerMetrics {
    /// Creates the series and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            leader: Gauge::default(),
            published: Counter::default(),
            skipped: Counter::default(),
            tick_seconds: seconds_histogram(),
            queue_depth: Family::default(),
            outbox_backlog: Gauge::default(),
            abandoned: Counter::default(),
            recovered: Counter::default(),
            outbox_oldest_seconds: Gauge::default(),
            auto_suspended: Family::default(),
            orgs_near_reserve: Gauge::default(),
            dead_jobs_waiting: Gauge::default(),
            workers_silent: Gauge::default(),
        };
        for class in ["auth", "throttling", "other"] {
            metrics.auto_suspended.get_or_create(&ClassLabel { class }).set(0);
        }
        registry.register(
            "syncfleet_scheduler_leader",
            "1 while this instance leads",
            metrics.leader.clone(),
        );
        registry.register(
            "syncfleet_scheduler_jobs_published",
            "Cadence jobs published and committed",
            metrics.published.clone(),
        );
        registry.register(
            "syncfleet_scheduler_slots_skipped",
            "Due slots skipped (organization disabled or a session running)",
            metrics.skipped.clone(),
        );
        registry.register(
            "syncfleet_scheduler_tick_duration_seconds",
            "Duration of a scheduling pass",
            metrics.tick_seconds.clone(),
        );
        registry.register(
            "syncfleet_queue_depth",
            "Messages ready in each queue, as last seen by the leader",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "syncfleet_outbox_backlog",
            "Emails waiting in the outbox",
            metrics.outbox_backlog.clone(),
        );
        registry.register(
            "syncfleet_sessions_abandoned_by_sweep",
            "Sessions ended as abandoned because their lease expired",
            metrics.abandoned.clone(),
        );
        registry.register(
            "syncfleet_cadence_jobs_recovered",
            "Cadence jobs presumed lost and scheduled again",
            metrics.recovered.clone(),
        );
        registry.register(
            "syncfleet_outbox_oldest_seconds",
            "Age of the oldest email waiting in the outbox, as last seen by the leader",
            metrics.outbox_oldest_seconds.clone(),
        );
        registry.register(
            "syncfleet_users_auto_suspended",
            "Users whose sync auto-suspend disabled, by class, as last seen by the leader",
            metrics.auto_suspended.clone(),
        );
        registry.register(
            "syncfleet_salesforce_orgs_near_reserve",
            "Salesforce orgs at or above 90% of their daily allocation less the reserve, as last seen by the leader",
            metrics.orgs_near_reserve.clone(),
        );
        registry.register(
            "syncfleet_dead_jobs_waiting",
            "Dead jobs neither replayed nor discarded, as last seen by the leader",
            metrics.dead_jobs_waiting.clone(),
        );
        registry.register(
            "syncfleet_workers_silent",
            "Workers whose heartbeat stopped without a clean stop in the last hour, as last seen by the leader",
            metrics.workers_silent.clone(),
        );
        metrics
    }
}
