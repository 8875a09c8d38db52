//! The worker's settings.

use std::{net::SocketAddr, time::Duration};

use backon::BackoffBuilder;

use syncfleet_common::{
    config::{COMMON_SETTINGS, CommonConfig, ConfigError, Setting, Source},
    ops::OPS_LISTEN,
};

pub const WORKER_ID: Setting = Setting {
    name: "SYNCFLEET_WORKER_ID",
    default: "<hostname>-<pid>",
    doc: "Name of this worker in sessions and leases.",
};
pub const WORKER_CONCURRENCY: Setting = Setting {
    name: "SYNCFLEET_WORKER_CONCURRENCY",
    default: "256",
    doc: "Cadence jobs in flight per worker (the cadence channel's prefetch).",
};
pub const WORKER_PRIORITY_CONCURRENCY: Setting = Setting {
    name: "SYNCFLEET_WORKER_PRIORITY_CONCURRENCY",
    default: "32",
    doc: "Force-sync and admin jobs in flight per worker, on their own channel.",
};
pub const USER_LEASE: Setting = Setting {
    name: "SYNCFLEET_USER_LEASE",
    default: "60s",
    doc: "Per-user lease; renewed every third of it while a session runs, taken over once expired.",
};
pub const SHUTDOWN_GRACE: Setting = Setting {
    name: "SYNCFLEET_SHUTDOWN_GRACE",
    default: "25s",
    doc: "On SIGTERM, how long in-flight jobs may run before they are handed back.",
};
pub const RETRY_BASE_DELAY: Setting = Setting {
    name: "SYNCFLEET_RETRY_BASE_DELAY",
    default: "5s",
    doc: "First retry delay of a transient failure; doubles each attempt, with jitter.",
};
pub const RETRY_MAX_DELAY: Setting = Setting {
    name: "SYNCFLEET_RETRY_MAX_DELAY",
    default: "10m",
    doc: "Longest retry delay.",
};
pub const RETRY_MAX_ATTEMPTS: Setting = Setting {
    name: "SYNCFLEET_RETRY_MAX_ATTEMPTS",
    default: "5",
    doc: "Attempts of one job before it is dead-lettered.",
};

pub const SESSION_TIME_BUDGET: Setting = Setting {
    name: "SYNCFLEET_SESSION_TIME_BUDGET",
    default: "120s",
    doc: "Time one session may spend syncing before it stops and a follow-up job continues (first syncs, resyncs).",
};
pub const SESSION_ITEM_BUDGET: Setting = Setting {
    name: "SYNCFLEET_SESSION_ITEM_BUDGET",
    default: "5000",
    doc: "Mailbox changes one session handles before it stops and a follow-up job continues.",
};

pub const SUSPEND_AFTER_AUTH_FAILURES: Setting = Setting {
    name: "SYNCFLEET_SUSPEND_AFTER_AUTH_FAILURES",
    default: "6",
    doc: "Consecutive sessions failed on authorization after which the user's sync is disabled due to an authorization error.",
};
pub const SUSPEND_AFTER_THROTTLING_FAILURES: Setting = Setting {
    name: "SYNCFLEET_SUSPEND_AFTER_THROTTLING_FAILURES",
    default: "10",
    doc: "Consecutive sessions failed on throttling or quota after which the user's sync is disabled due to a throttling error.",
};
pub const SUSPEND_AFTER_OTHER_FAILURES: Setting = Setting {
    name: "SYNCFLEET_SUSPEND_AFTER_OTHER_FAILURES",
    default: "10",
    doc: "Consecutive sessions failed on any other error after which the user's sync is disabled due to another error.",
};
pub const PUSH_BATCH_SIZE: Setting = Setting {
    name: "SYNCFLEET_PUSH_BATCH_SIZE",
    default: "1000",
    doc: "Recipients of a customization push applied per transaction.",
};

pub const GROUP_COMMIT_BATCH: Setting = Setting {
    name: "SYNCFLEET_GROUP_COMMIT_BATCH",
    default: "128",
    doc: "Most sessions whose claims (or quiet closes) one statement writes together; 1 writes each on its own.",
};

pub const HEARTBEAT_INTERVAL: Setting = Setting {
    name: "SYNCFLEET_HEARTBEAT_INTERVAL",
    default: "10s",
    doc: "How often a worker writes its heartbeat, with what it counted for the operator console; three missed ones and it shows as silent.",
};

/// Every setting the worker reads, for the README check.
pub fn settings() -> Vec<Setting> {
    let mut settings = COMMON_SETTINGS.to_vec();
    settings.extend([
        WORKER_ID,
        WORKER_CONCURRENCY,
        WORKER_PRIORITY_CONCURRENCY,
        USER_LEASE,
        SHUTDOWN_GRACE,
        RETRY_BASE_DELAY,
        RETRY_MAX_DELAY,
        RETRY_MAX_ATTEMPTS,
        OPS_LISTEN,
        SESSION_TIME_BUDGET,
        SESSION_ITEM_BUDGET,
        SUSPEND_AFTER_AUTH_FAILURES,
        SUSPEND_AFTER_THROTTLING_FAILURES,
        SUSPEND_AFTER_OTHER_FAILURES,
        PUSH_BATCH_SIZE,
        GROUP_COMMIT_BATCH,
        HEARTBEAT_INTERVAL,
    ]);
    settings.extend_from_slice(crate::sync::PROVIDER_SETTINGS);
    settings.extend_from_slice(crate::sync::gate::SETTINGS);
    settings
}

/// How transient failures are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First delay.
    pub base_delay: Duration,
    /// Largest delay.
    pub max_delay: Duration,
    /// Attempts before the job is dead-lettered.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`: exponential with jitter.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.max_delay)
    }
}

/// The worker's configuration.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Connections shared by every service.
    pub common: CommonConfig,
    /// This worker's name.
    pub worker_id: String,
    /// Prefetch of the cadence channel.
    pub cadence_prefetch: u16,
    /// Prefetch of the priority channel.
    pub priority_prefetch: u16,
    /// Per-user lease.
    pub user_lease: Duration,
    /// Drain time on shutdown.
    pub shutdown_grace: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Where /healthz, /readyz and /metrics are served.
    pub ops_listen: SocketAddr,
    /// When consecutive failures disable a user's sync.
    pub suspend: SuspendPolicy,
    /// Recipients of a push applied per transaction.
    pub push_batch_size: i64,
    /// Most sessions per group-commit statement.
    pub group_commit_batch: usize,
    /// How often the worker writes its heartbeat.
    pub heartbeat_interval: Duration,
}

/// Auto-suspend (M18): how many consecutive failed sessions of one class
/// disable a user's sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuspendPolicy {
    /// Authorization failures.
    pub auth: u32,
    /// Throttling and quota failures.
    pub throttling: u32,
    /// Every other failure.
    pub other: u32,
}

impl SuspendPolicy {
    /// The threshold of a class (`auth`, `throttling`, `other`).
    pub fn threshold(&self, class: &str) -> u32 {
        match class {
            "auth" => self.auth,
            "throttling" => self.throttling,
            _ => self.other,
        }
    }
}

impl WorkerConfig {
    /// Reads the worker's settings.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let worker_id = match source.string(&WORKER_ID).as_str() {
            "<hostname>-<pid>" => default_worker_id(),
            other => other.to_owned(),
        };
        let user_lease = source.duration(&USER_LEASE)?;
        if user_lease < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                name: USER_LEASE.name,
                reason: "must be at least 1s".to_owned(),
            });
        }
        Ok(Self {
            common: CommonConfig::from_source(source)?,
            worker_id,
            cadence_prefetch: source.positive(&WORKER_CONCURRENCY)?,
            priority_prefetch: source.positive(&WORKER_PRIORITY_CONCURRENCY)?,
            user_lease,
            shutdown_grace: source.duration(&SHUTDOWN_GRACE)?,
            retry: RetryPolicy {
                base_delay: source.duration(&RETRY_BASE_DELAY)?,
                max_delay: source.duration(&RETRY_MAX_DELAY)?,
                max_attempts: source.positive(&RETRY_MAX_ATTEMPTS)?,
            },
            ops_listen: source.get(&OPS_LISTEN)?,
            suspend: SuspendPolicy {
                auth: source.positive(&SUSPEND_AFTER_AUTH_FAILURES)?,
                throttling: source.positive(&SUSPEND_AFTER_THROTTLING_FAILURES)?,
                other: source.positive(&SUSPEND_AFTER_OTHER_FAILURES)?,
            },
            push_batch_size: i64::from(source.positive::<u32>(&PUSH_BATCH_SIZE)?),
            group_commit_batch: source.positive::<u32>(&GROUP_COMMIT_BATCH)? as usize,
            heartbeat_interval: match source.duration(&HEARTBEAT_INTERVAL)? {
                interval if interval >= Duration::from_millis(100) => interval,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: HEARTBEAT_INTERVAL.name,
                        reason: "must be at least 100ms".to_owned(),
                    });
                }
            },
        })
    }
}

/// The sync's budget per session.
pub fn budget(source: &Source) -> Result<crate::sync::Budget, ConfigError> {
    Ok(crate::sync::Budget {
        time: source.duration(&SESSION_TIME_BUDGET)?,
        items: source.positive(&SESSION_ITEM_BUDGET)?,
    })
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_documented_in_the_readme_with_its_default() {
        syncfleet_common::config::assert_documented(&settings(), include_str!("../../README.md"));
    }

    #[test]
    fn retry_delays_grow_and_stay_under_the_cap() {
        let policy = RetryPolicy {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_attempts: 10,
        };
        // With jitter a delay lies in [d, 2d) of the exponential step d.
        assert!(policy.delay_after(1) < Duration::from_secs(2));
        assert!(policy.delay_after(4) >= Duration::from_secs(8));
        assert!(policy.delay_after(30) <= Duration::from_secs(120));
    }

    #[test]
    fn a_lease_under_a_second_is_refused() {
        let source = Source::from_pairs([("SYNCFLEET_USER_LEASE", "200ms")]);
        let error = WorkerConfig::from_source(&source).unwrap_err().to_string();
        assert!(error.contains("SYNCFLEET_USER_LEASE"), "{error}");
    }
}
