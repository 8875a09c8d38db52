//! The worker's gate on outside calls: the limits of each account (L1),
//! shared by the fleet through the Redis limiter (L2), counted per call (L3).
//! A call waits for its turn a short while; an account spent for longer
//! defers the job instead of holding its worker slot.

use std::time::Duration;

use crate::metrics::{GateMetrics, ProviderLabel};
use syncfleet_common::{
    config::{ConfigError, Setting, Source},
    ratelimit::{Admission, Limit, Limiter},
};
use syncfleet_connectors::{
    ConnectorError, Provider,
    gate::{Account, CallGate, CallPermit, GateFuture},
};

pub const LIMIT_GRAPH_CONCURRENCY: Setting = Setting {
    name: "SYNCFLEET_LIMIT_GRAPH_CONCURRENCY",
    default: "4",
    doc: "Graph requests in flight at once per mailbox, across the fleet.",
};
pub const LIMIT_GRAPH_REQUESTS: Setting = Setting {
    name: "SYNCFLEET_LIMIT_GRAPH_REQUESTS",
    default: "10000",
    doc: "Graph requests per mailbox per SYNCFLEET_LIMIT_GRAPH_WINDOW, across the fleet.",
};
pub const LIMIT_GRAPH_WINDOW: Setting = Setting {
    name: "SYNCFLEET_LIMIT_GRAPH_WINDOW",
    default: "10m",
    doc: "The window of SYNCFLEET_LIMIT_GRAPH_REQUESTS.",
};
pub const LIMIT_EWS_CONCURRENCY: Setting = Setting {
    name: "SYNCFLEET_LIMIT_EWS_CONCURRENCY",
    default: "27",
    doc: "EWS requests in flight at once per logon account (the service account under impersonation); 10 for Exchange 2010.",
};
pub const LIMIT_GMAIL_USER_UNITS: Setting = Setting {
    name: "SYNCFLEET_LIMIT_GMAIL_USER_UNITS",
    default: "15000",
    doc: "Gmail quota units per user per minute, across the fleet.",
};
pub const LIMIT_GMAIL_PROJECT_UNITS: Setting = Setting {
    name: "SYNCFLEET_LIMIT_GMAIL_PROJECT_UNITS",
    default: "1200000",
    doc: "Gmail quota units per minute for the whole project (every user), across the fleet.",
};
pub const LIMIT_SALESFORCE_DAILY_REQUESTS: Setting = Setting {
    name: "SYNCFLEET_LIMIT_SALESFORCE_DAILY_REQUESTS",
    default: "15000",
    doc: "A Salesforce org's daily API allocation until the org reports its own (Sforce-Limit-Info), which then applies.",
};
pub const LIMIT_SALESFORCE_RESERVE_PERCENT: Setting = Setting {
    name: "SYNCFLEET_LIMIT_SALESFORCE_RESERVE_PERCENT",
    default: "20",
    doc: "Share of each org's daily allocation the fleet never uses, kept for the customer's other integrations.",
};
pub const LIMIT_SALESFORCE_CONCURRENCY: Setting = Setting {
    name: "SYNCFLEET_LIMIT_SALESFORCE_CONCURRENCY",
    default: "25",
    doc: "Salesforce requests in flight at once per org, across the fleet.",
};
pub const LIMIT_MAX_WAIT: Setting = Setting {
    name: "SYNCFLEET_LIMIT_MAX_WAIT",
    default: "5s",
    doc: "Longest a call waits for its account's limits; an account spent for longer defers the job through the retry queues.",
};
pub const LIMIT_FALLBACK_SHARE: Setting = Setting {
    name: "SYNCFLEET_LIMIT_FALLBACK_SHARE",
    default: "4",
    doc: "While Redis is unreachable each worker takes 1/N of every limit: set it to at least the number of workers.",
};

/// How long a call's admission waits for others to share its Redis round
/// trip: a session's calls take 50-300 ms at the providers, so 5 ms costs them
/// little, and at a few hundred sessions a second it turns about four round
/// trips a session (two admissions, two releases) into about one.
const LIMITER_LINGER: Duration = Duration::from_millis(5);

/// The gate's settings, for the README check.
pub const SETTINGS: &[Setting] = &[
    LIMIT_GRAPH_CONCURRENCY,
    LIMIT_GRAPH_REQUESTS,
    LIMIT_GRAPH_WINDOW,
    LIMIT_EWS_CONCURRENCY,
    LIMIT_GMAIL_USER_UNITS,
    LIMIT_GMAIL_PROJECT_UNITS,
    LIMIT_SALESFORCE_DAILY_REQUESTS,
    LIMIT_SALESFORCE_RESERVE_PERCENT,
    LIMIT_SALESFORCE_CONCURRENCY,
    LIMIT_MAX_WAIT,
    LIMIT_FALLBACK_SHARE,
];

/// The limits of each provider's accounts.
#[derive(Debug, Clone, Copy)]
pub struct ProviderLimits {
    pub graph: Limit,
    pub ews: Limit,
    pub gmail_user: Limit,
    pub gmail_project: Limit,
    pub salesforce: Limit,
    /// The share of an org's reported allocation kept for the customer.
    pub salesforce_reserve_percent: u64,
}

impl ProviderLimits {
    /// Reads the limits.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let reserve: u64 = source.get(&LIMIT_SALESFORCE_RESERVE_PERCENT)?;
        if reserve >= 100 {
            return Err(ConfigError::Invalid {
                name: LIMIT_SALESFORCE_RESERVE_PERCENT.name,
                reason: "must be under 100".to_owned(),
            });
        }
        let daily: u64 = source.positive(&LIMIT_SALESFORCE_DAILY_REQUESTS)?;
        let minute = Duration::from_secs(60);
        Ok(Self {
            graph: Limit {
                rate: Some((
                    source.positive(&LIMIT_GRAPH_REQUESTS)?,
                    source.duration(&LIMIT_GRAPH_WINDOW)?,
                )),
                concurrency: Some(source.positive(&LIMIT_GRAPH_CONCURRENCY)?),
            },
            ews: Limit {
                rate: None,
                concurrency: Some(source.positive(&LIMIT_EWS_CONCURRENCY)?),
            },
            gmail_user: Limit {
                rate: Some((source.positive(&LIMIT_GMAIL_USER_UNITS)?, minute)),
                concurrency: None,
            },
            gmail_project: Limit {
                rate: Some((source.positive(&LIMIT_GMAIL_PROJECT_UNITS)?, minute)),
                concurrency: None,
            },
            salesforce: Limit {
                rate: Some((
                    (daily * (100 - reserve) / 100).max(1),
                    Duration::from_secs(24 * 60 * 60),
                )),
                concurrency: Some(source.positive(&LIMIT_SALESFORCE_CONCURRENCY)?),
            },
            salesforce_reserve_percent: reserve,
        })
    }
}

/// The gate every session's clients share.
#[derive(Debug, Clone)]
pub struct FleetGate {
    limiter: Limiter,
    limits: ProviderLimits,
    max_wait: Duration,
    metrics: GateMetrics,
    /// The daily allocation each Salesforce org reported, as last seen: the
    /// org's rate follows it instead of the configured default.
    allocations: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
}

impl FleetGate {
    /// A gate on `limiter` with these limits.
    pub fn new(limiter: Limiter, limits: ProviderLimits, max_wait: Duration) -> Self {
        Self {
            limiter,
            limits,
            max_wait,
            metrics: GateMetrics::default(),
            allocations: Default::default(),
        }
    }

    /// The gate's series.
    pub fn metrics(&self) -> &GateMetrics {
        &self.metrics
    }

    /// The gate the settings describe, on the fleet's Redis.
    pub fn from_source(
        source: &Source,
        redis_url: secrecy::SecretString,
        prefix: &str,
        lease_ttl: Duration,
    ) -> Result<Self, ConfigError> {
        let share: u32 = source.positive(&LIMIT_FALLBACK_SHARE)?;
        Ok(Self::new(
            Limiter::lingering(redis_url, prefix, lease_ttl, share, LIMITER_LINGER),
            ProviderLimits::from_source(source)?,
            source.duration(&LIMIT_MAX_WAIT)?,
        ))
    }

    /// The limited keys a call with `account` spends from.
    fn keys(&self, account: &Account) -> Vec<(String, Limit)> {
        let key = |kind: &str| format!("{kind}:{}", account.name);
        match account.provider {
            Provider::Graph => vec![(key("graph"), self.limits.graph)],
            Provider::Ews => vec![(key("ews"), self.limits.ews)],
            Provider::Gmail => vec![
                (key("gmail"), self.limits.gmail_user),
                ("gmail-project".to_owned(), self.limits.gmail_project),
            ],
            Provider::Salesforce => vec![(key("salesforce"), self.salesforce_limit(account))],
        }
    }

    /// An org's limit: its reported allocation (remembered from the last
    /// answer that carried it) less the reserve, or the configured one.
    fn salesforce_limit(&self, account: &Account) -> Limit {
        let mut allocations = self
            .allocations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(max) = account.allocation {
            allocations.insert(account.name.clone(), max);
        }
        match allocations.get(&account.name) {
            Some(max) => Limit {
                rate: Some((
                    (max * (100 - self.limits.salesforce_reserve_percent) / 100).max(1),
                    Duration::from_secs(24 * 60 * 60),
                )),
                ..self.limits.salesforce
            },
            None => self.limits.salesforce,
        }
    }

    async fn admit_key(
        &self,
        account: &Account,
        key: &str,
        limit: Limit,
        cost: u32,
    ) -> Result<CallPermit, ConnectorError> {
        let mut waited = Duration::ZERO;
        let label = ProviderLabel {
            provider: provider_name(account.provider),
        };
        loop {
            match self.limiter.acquire(key, limit, cost).await {
                Admission::Granted(permit) => {
                    self.metrics
                        .wait_seconds
                        .get_or_create(&label)
                        .observe(waited.as_secs_f64());
                    let limiter = self.limiter.clone();
                    return Ok(CallPermit::releasing(move || {
                        tokio::spawn(async move { limiter.release(permit).await });
                    }));
                }
                Admission::Wait(delay) if waited + delay > self.max_wait => {
                    self.metrics.deferrals.get_or_create(&label).inc();
                    return Err(ConnectorError::RateLimited {
                        provider: account.provider,
                        retry_after: delay,
                        message: "the job is deferred until the account's limits allow calls again".to_owned(),
                    });
                }
                Admission::Wait(delay) => {
                    tokio::time::sleep(delay).await;
                    waited += delay;
                }
            }
        }
    }
}

impl CallGate for FleetGate {
    fn admit<'a>(&'a self, account: &'a Account, cost: u32) -> GateFuture<'a, Result<CallPermit, ConnectorError>> {
        Box::pin(async move {
            let mut permits = Vec::new();
            for (key, limit) in self.keys(account) {
                permits.push(self.admit_key(account, &key, limit, cost).await?);
            }
            Ok(CallPermit::releasing(move || drop(permits)))
        })
    }

    fn throttled<'a>(&'a self, account: &'a Account, delay: Duration) -> GateFuture<'a, ()> {
        Box::pin(async move {
            self.metrics
                .throttled
                .get_or_create(&ProviderLabel {
                    provider: provider_name(account.provider),
                })
                .inc();
            self.metrics.tally.throttled(provider_name(account.provider));
            if let Some((key, _)) = self.keys(account).into_iter().next() {
                let reason = format!(
                    "{} answered throttled and asked to wait {} ms",
                    provider_display(account.provider),
                    delay.as_millis()
                );
                self.limiter.cool_down(&key, delay, &reason).await;
            }
        })
    }
}

/// The provider's name as people read it.
fn provider_display(provider: Provider) -> &'static str {
    match provider {
        Provider::Graph => "Microsoft Graph",
        Provider::Ews => "Exchange (EWS)",
        Provider::Gmail => "Gmail",
        Provider::Salesforce => "Salesforce",
    }
}

/// The provider's name in metrics and in the sessions' `calls`.
pub(crate) fn provider_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Graph => "graph",
        Provider::Ews => "ews",
        Provider::Gmail => "gmail",
        Provider::Salesforce => "salesforce",
    }
}
