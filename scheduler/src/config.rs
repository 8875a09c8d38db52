//! The scheduler's settings.

use std::{net::SocketAddr, time::Duration};

use syncfleet_common::{
    config::{COMMON_SETTINGS, CommonConfig, ConfigError, Setting, Source},
    db::Retention,
    ops::OPS_LISTEN,
};

pub const SYNC_INTERVAL: Setting = Setting {
    name: "SYNCFLEET_SYNC_INTERVAL",
    default: "30m",
    doc: "Cadence: every enabled user syncs once per interval, at a slot spread by user id.",
};
pub const SCHEDULER_TICK: Setting = Setting {
    name: "SYNCFLEET_SCHEDULER_TICK",
    default: "1s",
    doc: "How often the leader looks for due users.",
};
pub const SCHEDULER_BATCH: Setting = Setting {
    name: "SYNCFLEET_SCHEDULER_BATCH",
    default: "1000",
    doc: "Users published per transaction.",
};
pub const LEADER_LEASE: Setting = Setting {
    name: "SYNCFLEET_LEADER_LEASE",
    default: "10s",
    doc: "Leadership lease; a standby takes over once it expires (renewed every third of it).",
};
pub const QUEUED_JOB_TIMEOUT: Setting = Setting {
    name: "SYNCFLEET_QUEUED_JOB_TIMEOUT",
    default: "2h",
    doc: "A cadence job queued longer than this is presumed lost and the user is scheduled again.",
};
pub const SWEEP_INTERVAL: Setting = Setting {
    name: "SYNCFLEET_SWEEP_INTERVAL",
    default: "15s",
    doc: "How often expired leases are released (their sessions end as abandoned) and lost jobs recovered.",
};
pub const MAINTENANCE_INTERVAL: Setting = Setting {
    name: "SYNCFLEET_MAINTENANCE_INTERVAL",
    default: "1h",
    doc: "How often partitions are created ahead and dropped past retention.",
};
pub const RETENTION_SESSIONS_DAYS: Setting = Setting {
    name: "SYNCFLEET_RETENTION_SESSIONS_DAYS",
    default: "30",
    doc: "Days sessions and sync issues are kept.",
};
pub const RETENTION_LOGS_DAYS: Setting = Setting {
    name: "SYNCFLEET_RETENTION_LOGS_DAYS",
    default: "7",
    doc: "Days session logs are kept.",
};
pub const RETENTION_ACTIVITIES_DAYS: Setting = Setting {
    name: "SYNCFLEET_RETENTION_ACTIVITIES_DAYS",
    default: "365",
    doc: "Days activities are kept.",
};
pub const PARTITIONS_AHEAD_DAYS: Setting = Setting {
    name: "SYNCFLEET_PARTITIONS_AHEAD_DAYS",
    default: "7",
    doc: "Days of partitions created ahead of today.",
};

/// Every setting the scheduler reads, for the README check.
pub fn settings() -> Vec<Setting> {
    let mut settings = COMMON_SETTINGS.to_vec();
    settings.extend([
        SYNC_INTERVAL,
        SCHEDULER_TICK,
        SCHEDULER_BATCH,
        LEADER_LEASE,
        QUEUED_JOB_TIMEOUT,
        SWEEP_INTERVAL,
        MAINTENANCE_INTERVAL,
        RETENTION_SESSIONS_DAYS,
        RETENTION_LOGS_DAYS,
        RETENTION_ACTIVITIES_DAYS,
        PARTITIONS_AHEAD_DAYS,
        OPS_LISTEN,
    ]);
    settings.extend_from_slice(crate::outbox::SETTINGS);
    settings
}

/// The scheduler's configuration.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Connections shared by every service.
    pub common: CommonConfig,
    /// The cadence interval.
    pub interval: Duration,
    /// Time between ticks.
    pub tick: Duration,
    /// Users per transaction.
    pub batch_size: i64,
    /// Leadership lease.
    pub leader_lease: Duration,
    /// When a queued cadence job counts as lost.
    pub queued_job_timeout: Duration,
    /// Time between recovery sweeps.
    pub sweep_interval: Duration,
    /// Time between partition maintenance passes.
    pub maintenance_interval: Duration,
    /// How long history is kept.
    pub retention: Retention,
    /// Where /healthz, /readyz and /metrics are served.
    pub ops_listen: SocketAddr,
    /// How the leader relays the email outbox.
    pub outbox: crate::outbox::OutboxConfig,
}

impl SchedulerConfig {
    /// Reads the scheduler's settings.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let leader_lease = source.duration(&LEADER_LEASE)?;
        if leader_lease < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                name: LEADER_LEASE.name,
                reason: "must be at least 1s".to_owned(),
            });
        }
        Ok(Self {
            common: CommonConfig::from_source(source)?,
            interval: source.duration(&SYNC_INTERVAL)?,
            tick: source.duration(&SCHEDULER_TICK)?,
            batch_size: source.positive(&SCHEDULER_BATCH)?,
            leader_lease,
            queued_job_timeout: source.duration(&QUEUED_JOB_TIMEOUT)?,
            sweep_interval: source.duration(&SWEEP_INTERVAL)?,
            maintenance_interval: source.duration(&MAINTENANCE_INTERVAL)?,
            retention: Retention {
                sessions_days: source.positive(&RETENTION_SESSIONS_DAYS)?,
                logs_days: source.positive(&RETENTION_LOGS_DAYS)?,
                activities_days: source.positive(&RETENTION_ACTIVITIES_DAYS)?,
                ahead_days: source.positive(&PARTITIONS_AHEAD_DAYS)?,
            },
            ops_listen: source.get(&OPS_LISTEN)?,
            outbox: crate::outbox::OutboxConfig::from_source(source)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_documented_in_the_readme_with_its_default() {
        syncfleet_common::config::assert_documented(&settings(), include_str!("../../README.md"));
    }
}
