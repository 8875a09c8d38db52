//! A session's credentials: opened from the sealed set the settings query
//! read (no query of their own), access tokens kept between sessions, and
//! every grant stored durably before its access token is used.
//!
//! A rotated refresh token is the one thing a fault must never drop: a strict
//! provider revoked the old one the moment it answered. Its store is retried
//! with a bounded backoff while the session waits, in a task of its own that
//! outlives the session (a session aborted when its lease is lost or the
//! grace period ends does not abort the store), and the worker waits for
//! these tasks before it exits. The time from the provider's answer to the
//! durable commit is measured (`syncfleet_worker_token_store_seconds`).
//! Before the first attempt, the rotation is written to the worker's disk
//! ([`super::spool`]): a worker killed meanwhile finds it when it starts
//! again, and a store that gave up is taken up by a later pass.

use std::{future::Future, pin::Pin, sync::Mutex, time::Duration};

use backon::Retryable;
use chrono::{DateTime, Utc};
use prometheus_client::{
    metrics::{counter::Counter, histogram::Histogram},
    registry::Registry,
};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use syncfleet_common::{
    config::Setting,
    ops::seconds_histogram,
    secrets::{self, CredentialKind, Grant, KeyRing, Owner, StoredCredentials},
};
use syncfleet_connectors::{
    ConnectorError, Provider,
    oauth::{GrantSink, OAuthGrant},
    salesforce::{TokenGrant, TokenSink},
};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};
use uuid::Uuid;

use super::spool::Spool;

pub const TOKEN_STORE_RETRY: Setting = Setting {
    name: "SYNCFLEET_TOKEN_STORE_RETRY",
    default: "120s",
    doc: "How long the worker keeps retrying to store a rotated refresh token it holds in memory (the database unreachable) before giving up; it waits for these stores on shutdown too.",
};
pub const SALESFORCE_SESSION_LIFETIME: Setting = Setting {
    name: "SYNCFLEET_SALESFORCE_SESSION_LIFETIME",
    default: "2h",
    doc: "How long a Salesforce access token is kept for later sessions: the orgs' session timeout (Salesforce's default is 2 hours); a refused one is refreshed at once.",
};

/// The stores of the grants of every session of a worker: the keys, the
/// retry budget, the tasks still storing, and their series.
#[derive(Clone)]
pub struct TokenStores {
    ring: KeyRing,
    retry_for: Duration,
    salesforce_lifetime: Duration,
    spool: Spool,
    tracker: TaskTracker,
    metrics: TokenMetrics,
}

/// The series of the token stores.
#[derive(Clone, Debug)]
struct TokenMetrics {
    store_seconds: Histogram,
    retries: Counter,
    failures: Counter,
    spool_failures: Counter,
    spool_stored: Counter,
}

impl TokenStores {
    /// Stores sealing with `ring`, retrying for `retry_for`, rotations
    /// spooled in `spool`.
    pub fn new(ring: KeyRing, retry_for: Duration, salesforce_lifetime: Duration, spool: Spool) -> Self {
        Self {
            ring,
            retry_for,
            salesforce_lifetime,
            spool,
            tracker: TaskTracker::new(),
            metrics: TokenMetrics {
                store_seconds: seconds_histogram(),
                retries: Counter::default(),
                failures: Counter::default(),
                spool_failures: Counter::default(),
                spool_stored: Counter::default(),
            },
        }
    }

    /// Stores what the spool holds (a crash's rotations) before the worker
    /// takes jobs, then, once a minute, the entries of stores that gave up.
    pub async fn recover(&self, pool: &PgPool) {
        let replayed = self.spool.replay(pool, &self.ring, Duration::ZERO).await;
        self.metrics.spool_stored.inc_by(replayed.stored as u64);
        let (stores, pool) = (self.clone(), pool.clone());
        // Older than the retry budget: no store of this worker still holds it.
        let abandoned = self.retry_for + Duration::from_secs(30);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            every.tick().await;
            loop {
                every.tick().await;
                let replayed = stores.spool.replay(&pool, &stores.ring, abandoned).await;
                stores.metrics.spool_stored.inc_by(replayed.stored as u64);
            }
        });
    }

    /// The keys.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// Adds the stores' series to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "syncfleet_worker_token_store_seconds",
            "Time from a provider's token answer to its grant being durable (retries included)",
            self.metrics.store_seconds.clone(),
        );
        registry.register(
            "syncfleet_worker_token_store_retries",
            "Attempts to store a grant that failed and were retried",
            self.metrics.retries.clone(),
        );
        registry.register(
            "syncfleet_worker_token_store_failures",
            "Grants that could not be stored within the retry budget (a rotated refresh token may be lost)",
            self.metrics.failures.clone(),
        );
        registry.register(
            "syncfleet_worker_token_spool_failures",
            "Rotated refresh tokens that could not be written to the token spool before their store",
            self.metrics.spool_failures.clone(),
        );
        registry.register(
            "syncfleet_worker_token_spool_stored",
            "Rotated refresh tokens stored from the token spool (left by a crash or a store that gave up)",
            self.metrics.spool_stored.clone(),
        );
    }

    /// Waits for the stores still running (on shutdown), at most `limit`.
    pub async fn drain(&self, limit: Duration) {
        self.tracker.close();
        if tokio::time::timeout(limit, self.tracker.wait()).await.is_err() {
            error!(
                pending = self.tracker.len(),
                "Token stores were still failing at exit; their rotated refresh tokens are lost."
            );
        }
    }

    /// A sink keeping `user`'s mailbox grants obtained with `refresh_token`.
    pub fn mailbox_sink(
        &self,
        pool: &PgPool,
        user: Uuid,
        provider: Provider,
        refresh_token: &SecretString,
    ) -> KeepGrants {
        self.sink(pool, user, provider, None, refresh_token)
    }

    /// A sink keeping `user`'s Salesforce grants obtained at `login_url`
    /// with `refresh_token`.
    pub fn crm_sink(&self, pool: &PgPool, user: Uuid, login_url: &Url, refresh_token: &SecretString) -> KeepGrants {
        self.sink(
            pool,
            user,
            Provider::Salesforce,
            Some(login_url.to_string()),
            refresh_token,
        )
    }

    fn sink(
        &self,
        pool: &PgPool,
        user: Uuid,
        provider: Provider,
        login_url: Option<String>,
        refresh_token: &SecretString,
    ) -> KeepGrants {
        KeepGrants {
            stores: self.clone(),
            pool: pool.clone(),
            owner: Owner::User(user),
            provider,
            login_url,
            refresh_token: Mutex::new(refresh_token.clone()),
        }
    }

    /// Seals and stores `credentials` of `owner` in one statement, retrying
    /// transient failures for the retry budget, in a task that outlives the
    /// caller. `answered` is when the provider's answer arrived. A rotation
    /// (`consumed` names the refresh token it replaced, of `refresh_kind`)
    /// is spooled first, and its entry deleted once stored.
    async fn durable(
        &self,
        pool: &PgPool,
        owner: Owner,
        provider: Provider,
        credentials: Vec<Grant>,
        consumed: Option<(CredentialKind, SecretString)>,
        answered: Instant,
    ) -> Result<(), ConnectorError> {
        let stores = self.clone();
        let pool = pool.clone();
        let task = self.tracker.spawn(async move {
            let spooled = match &consumed {
                Some((refresh_kind, previous)) => {
                    match stores
                        .spool
                        .write(&stores.ring, owner, *refresh_kind, previous, &credentials)
                        .await
                    {
                        Ok(path) => Some(path),
                        Err(error) => {
                            stores.metrics.spool_failures.inc();
                            warn!(%error, dir = %stores.spool.dir().display(), "Could not write a rotated token to the spool; storing it without.");
                            None
                        }
                    }
                }
                None => None,
            };
            let attempt = || secrets::store_grants(&pool, &stores.ring, owner, &credentials);
            let result = attempt
                .retry(syncfleet_common::db::transient_backoff(
                    Duration::from_secs(5),
                    stores.retry_for,
                ))
                .when(syncfleet_common::db::is_transient)
                .notify(|error, delay| {
                    stores.metrics.retries.inc();
                    warn!(%error, retry_in_ms = delay.as_millis() as u64, "Could not store a grant; retrying.");
                })
                .await;
            match &result {
                Ok(()) => {
                    stores.metrics.store_seconds.observe(answered.elapsed().as_secs_f64());
                    if let Some(path) = &spooled {
                        stores.spool.remove(path).await;
                    }
                }
                // The spool entry stays: a later pass stores it.
                Err(_) => {
                    stores.metrics.failures.inc();
                }
            }
            result
        });
        match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(ConnectorError::Transient {
                provider,
                message: format!("could not store the new token: {error}"),
            }),
            Err(join) => Err(ConnectorError::Transient {
                provider,
                message: format!("could not store the new token: {join}"),
            }),
        }
    }
}

/// Keeps the grants of one user's authorization at one provider.
pub struct KeepGrants {
    stores: TokenStores,
    pool: PgPool,
    owner: Owner,
    provider: Provider,
    /// Salesforce: the login host the session was obtained at.
    login_url: Option<String>,
    /// The refresh token the next rotation consumes: the session's, then
    /// each rotated one once stored.
    refresh_token: Mutex<SecretString>,
}

/// A Salesforce session as it is kept, sealed as one document.
#[derive(Serialize, Deserialize)]
pub struct KeptSalesforceSession {
    /// The access token.
    pub access_token: String,
    /// The API base it works with.
    pub instance_url: String,
    /// The login host it was obtained at: a session is used only while the
    /// user's instance URL still names it.
    pub login_url: String,
    /// The org it acts in.
    pub org_id: Option<String>,
    /// The user it acts as.
    pub user_id: Option<String>,
}

impl KeepGrants {
    fn refresh_kind(&self) -> CredentialKind {
        match self.provider {
            Provider::Salesforce => CredentialKind::CrmRefreshToken,
            _ => CredentialKind::MailboxRefreshToken,
        }
    }

    fn access_kind(&self) -> CredentialKind {
        match self.provider {
            Provider::Salesforce => CredentialKind::CrmAccessToken,
            _ => CredentialKind::MailboxAccessToken,
        }
    }

    fn current_refresh_token(&self) -> SecretString {
        self.refresh_token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    async fn keep(
        &self,
        access: SecretString,
        valid_until: DateTime<Utc>,
        rotated: Option<&SecretString>,
    ) -> Result<(), ConnectorError> {
        let answered = Instant::now();
        let mut credentials = vec![(self.access_kind(), access, Some(valid_until))];
        let consumed = rotated.map(|rotated| {
            credentials.push((self.refresh_kind(), rotated.clone(), None));
            (self.refresh_kind(), self.current_refresh_token())
        });
        match self
            .stores
            .durable(&self.pool, self.owner, self.provider, credentials, consumed, answered)
            .await
        {
            Ok(()) => {
                if let Some(rotated) = rotated {
                    *self
                        .refresh_token
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = rotated.clone();
                }
                Ok(())
            }
            // Keeping the access token is an optimization; only a rotated
            // refresh token's loss fails the call.
            Err(error) if rotated.is_some() => Err(error),
            Err(error) => {
                warn!(%error, "Could not keep the access token; the next session refreshes.");
                Ok(())
            }
        }
    }
}

impl GrantSink for KeepGrants {
    fn store<'a>(
        &'a self,
        grant: &'a OAuthGrant,
    ) -> Pin<Box<dyn Future<Output = Result<(), ConnectorError>> + Send + 'a>> {
        Box::pin(self.keep(
            grant.access_token.clone(),
            grant.valid_until,
            grant.refresh_token.as_ref(),
        ))
    }
}

impl TokenSink for KeepGrants {
    fn store<'a>(
        &'a self,
        grant: &'a TokenGrant,
    ) -> Pin<Box<dyn Future<Output = Result<(), ConnectorError>> + Send + 'a>> {
        Box::pin(async move {
            let kept = KeptSalesforceSession {
                access_token: grant.access_token.expose_secret().to_owned(),
                instance_url: grant.instance_url.to_string(),
                login_url: self.login_url.clone().unwrap_or_default(),
                org_id: grant.org_id.clone(),
                user_id: grant.user_id.clone(),
            };
            // Serializing a struct of strings cannot fail.
            let document = SecretString::from(serde_json::to_string(&kept).unwrap_or_default());
            let usable = self
                .stores
                .salesforce_lifetime
                .saturating_sub(syncfleet_connectors::oauth::EXPIRY_MARGIN);
            let valid_until = Utc::now() + chrono::Duration::from_std(usable).unwrap_or_default();
            self.keep(document, valid_until, grant.refresh_token.as_ref()).await
        })
    }
}

/// The access token kept for `owner`'s `kind`, while still valid.
pub fn kept(
    credentials: &StoredCredentials,
    ring: &KeyRing,
    owner: Owner,
    kind: CredentialKind,
) -> Option<(SecretString, DateTime<Utc>)> {
    let stored = credentials.get(owner, kind)?;
    let valid_until = stored.expires_at.filter(|until| *until > Utc::now())?;
    // A kept token that does not open is only a missed optimization.
    stored.open(ring).ok().map(|token| (token, valid_until))
}

/// The Salesforce session kept for `user`, obtained at `login_url`.
pub fn kept_salesforce(
    credentials: &StoredCredentials,
    ring: &KeyRing,
    user: Uuid,
    login_url: &Url,
) -> Option<KeptSalesforceSession> {
    let (document, _) = kept(credentials, ring, Owner::User(user), CredentialKind::CrmAccessToken)?;
    let kept: KeptSalesforceSession = serde_json::from_str(document.expose_secret()).ok()?;
    (kept.login_url == login_url.as_str()).then_some(kept)
}
