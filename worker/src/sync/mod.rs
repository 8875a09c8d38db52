//! The sync work the worker drives, as a trait, and what a session records.
//!
//! The worker owns everything around a session (lease, session row, retries,
//! acknowledgement); a [`SyncWork`] only does the work and reports through the
//! [`SessionContext`] it is handed.

mod credentials;
mod engine;
pub mod gate;
mod participants;
mod providers;
pub mod settings;
pub mod spool;
mod state;

use std::{collections::BTreeMap, future::Future, time::Duration};

use sqlx::PgPool;
use syncfleet_common::{
    domain::{IssueCategory, IssueSource, Scope},
    queue::JobEnvelope,
    session_log::SessionLog,
};
use uuid::Uuid;

pub use credentials::{KeptSalesforceSession, SALESFORCE_SESSION_LIFETIME, TOKEN_STORE_RETRY};
pub use engine::{Budget, DEFAULT_BASELINE_DAYS, MailboxSync, TASK_EXTERNAL_ID_FIELD};
pub use gate::FleetGate;
pub use participants::{FREE_MAIL_DOMAINS, FilterSettings};
pub use providers::{ProviderConfig, SETTINGS as PROVIDER_SETTINGS};
pub use settings::SettingsCheck;
pub use spool::TOKEN_SPOOL_DIR;

use crate::admin::{AdminAction, AdminOutcome};

/// The work of one sync session, and of the admin actions.
pub trait SyncWork: Send + Sync + 'static {
    /// Runs one session. `Ok` means the session completed (possibly with
    /// issues recorded in the context); `Err` ends it as failed, and the
    /// failure's class decides whether the job is retried.
    fn run(&self, session: &mut SessionContext) -> impl Future<Output = Result<(), SyncFailure>> + Send;

    /// Runs the outside part of an admin action (the mailbox, the CRM) for
    /// the context's user; the worker records the job, its lease and its
    /// effect on the user around it (see [`crate::admin`]). The default
    /// refuses: a work that only syncs (the tests' fakes) runs no admin action.
    fn admin(
        &self,
        _context: &mut SessionContext,
        action: AdminAction,
    ) -> impl Future<Output = Result<AdminOutcome, SyncFailure>> + Send {
        async move {
            Err(SyncFailure::new(
                FailureClass::Permanent,
                IssueSource::Engine,
                format!("this worker cannot run admin actions ({action})"),
            ))
        }
    }

    /// Adds the work's own series to the worker's registry.
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}

    /// Where the work counts what the heartbeat reports (throttled answers,
    /// Salesforce usage); the worker adds its sessions to the same one.
    fn tally(&self) -> Option<crate::heartbeat::Tally> {
        None
    }

    /// Waits, at most `limit`, for what the work still does past its
    /// sessions (a rotated refresh token still being stored), before the
    /// worker exits.
    fn drain(&self, _limit: Duration) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Puts back, once PostgreSQL answers and before the worker takes a
    /// job, what an earlier run of the worker left unfinished (rotated
    /// refresh tokens a crash kept from their store).
    fn recover(&self, _pool: &PgPool) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// One problem found during a session; the session goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIssue {
    /// Which side caused it.
    pub source: IssueSource,
    /// What kind of problem.
    pub category: IssueCategory,
    /// The affected item, when there is one.
    pub item_ref: Option<String>,
    /// What went wrong, for the admin.
    pub message: String,
}

/// What a session knows and records while it runs.
#[derive(Debug)]
pub struct SessionContext {
    /// The database, for the work's own reads and state.
    pub pool: PgPool,
    /// The session's id.
    pub session_id: Uuid,
    /// The user being synchronized.
    pub user_id: Uuid,
    /// Their organization.
    pub organization_id: Uuid,
    /// The job that started the session.
    pub job: JobEnvelope,
    /// What the session covered; set by the work.
    pub scope: Scope,
    /// The step log stored with the session.
    pub log: SessionLog,
    /// Issues recorded so far.
    pub issues: Vec<NewIssue>,
    /// Items written to the CRM.
    pub items_to_crm: i32,
    /// Items written to the mailbox.
    pub items_to_mailbox: i32,
    /// Calls made per provider.
    pub calls: BTreeMap<String, u32>,
    /// Cursors advanced, by stream: stored with the session's close, which
    /// comes after every CRM write they cover (a session that never closes
    /// leaves the old ones, and its replay rewrites the same records).
    pub cursors: BTreeMap<String, String>,
    /// The user's settings as the claim read them, taken by the session's
    /// first step.
    pub settings: Option<Box<settings::Settings>>,
    /// Set by the work when it stopped at its budget with more to do: the
    /// session succeeds and a follow-up job continues where it stopped.
    pub continuation: bool,
}

impl SessionContext {
    /// A fresh context for a claimed session.
    pub fn new(pool: PgPool, session_id: Uuid, user_id: Uuid, organization_id: Uuid, job: JobEnvelope) -> Self {
        Self {
            pool,
            session_id,
            user_id,
            organization_id,
            job,
            scope: Scope::Incremental,
            log: SessionLog::new(),
            issues: Vec::new(),
            items_to_crm: 0,
            items_to_mailbox: 0,
            calls: BTreeMap::new(),
            cursors: BTreeMap::new(),
            settings: None,
            continuation: false,
        }
    }

    /// Records an issue, and a log line for it.
    pub fn issue(
        &mut self,
        source: IssueSource,
        category: IssueCategory,
        item_ref: Option<String>,
        message: impl Into<String>,
    ) {
        let message = message.into();
        self.log.push(source.as_str(), "warn", format!("{category}: {message}"));
        self.issues.push(NewIssue {
            source,
            category,
            item_ref,
            message,
        });
    }
}

/// How a failure is handled; connectors map every provider error to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Missing or inconsistent configuration: fix it and the next session works.
    Settings,
    /// Credentials refused: permanent until re-authorized.
    Authorization,
    /// The provider asked to slow down.
    Throttled,
    /// A quota is exhausted.
    Quota,
    /// The delta token expired: a full resync follows.
    SyncStateExpired,
    /// A record was locked by someone else.
    LockContention,
    /// A fault that may pass: network, timeouts, 5xx, database hiccups.
    Transient,
    /// A fault that will not pass by retrying.
    Permanent,
    /// The fleet's own limits for an account are spent for a while: the job
    /// waits in the retry queues, and no failure is counted against the user.
    Deferred,
}

impl FailureClass {
    /// Whether the job is retried through the retry queues.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Throttled | Self::LockContention | Self::Transient | Self::Deferred
        )
    }

    /// The class counted toward auto-suspend: `auth`, `throttling` or
    /// `other`; `deferred` counts nothing and resets nothing.
    pub fn suspend_class(self) -> &'static str {
        match self {
            Self::Authorization => "auth",
            Self::Throttled | Self::Quota => "throttling",
            Self::Deferred => "deferred",
            _ => "other",
        }
    }

    /// The issue category stored for it.
    pub fn category(self) -> IssueCategory {
        match self {
            Self::Settings => IssueCategory::Settings,
            Self::Authorization => IssueCategory::Auth,
            Self::Throttled | Self::Deferred => IssueCategory::Throttled,
            Self::Quota => IssueCategory::Quota,
            Self::SyncStateExpired => IssueCategory::SyncStateReset,
            Self::LockContention => IssueCategory::LockContention,
            Self::Transient => IssueCategory::Transient,
            Self::Permanent => IssueCategory::Internal,
        }
    }
}

/// Why a session failed as a whole.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{class:?} failure from {side}: {message}")]
pub struct SyncFailure {
    /// How to handle it.
    pub class: FailureClass,
    /// Which side caused it.
    pub side: IssueSource,
    /// What went wrong; never holds a secret.
    pub message: String,
    /// The delay the provider asked for, if any.
    pub retry_after: Option<Duration>,
    /// The token endpoint refused the stored grant: the credential is dead
    /// until the user authorizes again (see [`ConnectorError::is_grant_refused`]).
    pub grant_refused: bool,
}

impl SyncFailure {
    /// A failure of the given class.
    pub fn new(class: FailureClass, side: IssueSource, message: impl Into<String>) -> Self {
        Self {
            class,
            side,
            message: message.into(),
            retry_after: None,
            grant_refused: false,
        }
    }

    /// A refused grant met right after the user's session was abandoned: the
    /// abandoned session's worker may have rotated the token (a strict
    /// provider revoked the stored one) and still be storing the new one, or
    /// have left it in its spool for its restart. Not an authorization
    /// failure yet: transient, so the job is retried shortly with whatever
    /// is stored by then; a refusal by the retry is conclusive.
    pub fn inconclusive_refusal(self) -> Self {
        Self {
            class: FailureClass::Transient,
            message: format!(
                "{} (right after an abandoned session, whose rotated token may not be stored yet: retried)",
                self.message
            ),
            grant_refused: false,
            ..self
        }
    }

    /// A database error met by the engine: transient (the job is retried).
    pub fn database(error: sqlx::Error) -> Self {
        Self::new(
            FailureClass::Transient,
            IssueSource::Engine,
            format!("database error: {error}"),
        )
    }
}
