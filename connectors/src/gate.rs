//! The gate every connector passes before each call to a provider: the
//! fleet-wide limits of the outside account the call uses (L1-L3). The
//! connectors name the account and the call's cost; the worker's gate decides
//! (through Redis, shared by every worker) when the call may go, or that the
//! account is spent for long and the job must be deferred.
//!
//! Without a gate a client calls freely (the connectors' own tests).

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::error::{ConnectorError, Provider};

/// A boxed future, as the gate's methods answer.
pub type GateFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A call let through; dropping it ends the call (its concurrency slot is
/// freed).
pub struct CallPermit {
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl CallPermit {
    /// A permit that frees nothing.
    pub fn free() -> Self {
        Self { on_drop: None }
    }

    /// A permit that runs `release` when the call is over.
    pub fn releasing(release: impl FnOnce() + Send + 'static) -> Self {
        Self {
            on_drop: Some(Box::new(release)),
        }
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        if let Some(release) = self.on_drop.take() {
            release();
        }
    }
}

impl fmt::Debug for CallPermit {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("CallPermit")
    }
}

/// An outside account whose limits a call spends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    /// The provider.
    pub provider: Provider,
    /// The account at that provider: a mailbox, an EWS logon account (the
    /// service account under impersonation), a Salesforce org.
    pub name: String,
    /// The allocation the provider reported for the account, when it did (a
    /// Salesforce org's daily API requests, from `Sforce-Limit-Info`).
    pub allocation: Option<u64>,
}

/// Decides when calls may go.
pub trait CallGate: Send + Sync + fmt::Debug {
    /// Waits until a call costing `cost` units may be made with `account`;
    /// an error (`RateLimited`) when the account is spent for longer than a
    /// session should wait.
    fn admit<'a>(&'a self, account: &'a Account, cost: u32) -> GateFuture<'a, Result<CallPermit, ConnectorError>>;

    /// The provider asked to wait `delay` before calling with `account`
    /// again: every worker waits.
    fn throttled<'a>(&'a self, account: &'a Account, delay: Duration) -> GateFuture<'a, ()>;
}

/// A client's gate and the account it calls with.
#[derive(Debug, Clone)]
pub struct Gated {
    gate: Option<Arc<dyn CallGate>>,
    account: Account,
}

impl Gated {
    /// No gate: every call goes at once.
    pub fn open(provider: Provider, name: impl Into<String>) -> Self {
        Self {
            gate: None,
            account: Account {
                provider,
                name: name.into(),
                allocation: None,
            },
        }
    }

    /// Calls with `account` pass `gate`.
    pub fn through(gate: Arc<dyn CallGate>, provider: Provider, name: impl Into<String>) -> Self {
        Self {
            gate: Some(gate),
            account: Account {
                provider,
                name: name.into(),
                allocation: None,
            },
        }
    }

    /// The account.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// Waits for the gate to let a call of `cost` units through.
    pub async fn admit(&self, cost: u32) -> Result<CallPermit, ConnectorError> {
        match &self.gate {
            Some(gate) => gate.admit(&self.account, cost).await,
            None => Ok(CallPermit::free()),
        }
    }

    /// [`Gated::admit`] for the account `name` of the same provider with the
    /// allocation it reported (a client that learns its account's real name
    /// and allocation, as a Salesforce org's, from its answers).
    pub async fn admit_as(&self, name: &str, allocation: Option<u64>, cost: u32) -> Result<CallPermit, ConnectorError> {
        match &self.gate {
            Some(gate) => {
                let account = Account {
                    provider: self.account.provider,
                    name: name.to_owned(),
                    allocation,
                };
                gate.admit(&account, cost).await
            }
            None => Ok(CallPermit::free()),
        }
    }

    /// Puts the account `name` of the same provider on cooldown for `delay`,
    /// for every worker.
    pub async fn throttled_as(&self, name: &str, delay: Duration) {
        if let Some(gate) = &self.gate {
            let account = Account {
                provider: self.account.provider,
                name: name.to_owned(),
                allocation: None,
            };
            gate.throttled(&account, delay).await;
        }
    }

    /// Tells the gate what a throttled answer asked for.
    pub async fn throttled(&self, delay: Duration) {
        if let Some(gate) = &self.gate {
            gate.throttled(&self.account, delay).await;
        }
    }

    /// Shares the `Retry-After` of a throttled answer, if it has one (the
    /// caller knows which of its provider's answers throttle).
    pub async fn share_retry_after(&self, headers: &HeaderMap) {
        if let Some(delay) = retry_after(headers) {
            self.throttled(delay).await;
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the providers).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}
