//! The versioned JSON job envelope carried by every message.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::Trigger;

/// The envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u16 = 1;

// Its text is its name on the wire (the envelope's `kind`, the message's
// type) and in `dead_jobs.kind`.
crate::domain::text_enum! {
    /// What a job asks the worker to do.
    JobKind {
        /// A sync session for `user_id`.
        Sync => "sync",
        /// An admin action for `user_id` (`params.action` names it).
        Admin => "admin",
        /// A customization push (`params.push_id`).
        Push => "push",
    }
}

/// An admin action, named in the job's `params.action` and in its row's
/// `action` by its kebab-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// Removes the product's category and folders from the mailbox and
    /// disables sync; the next enabled sync initializes the mailbox again.
    ResetMailbox,
    /// Drops the user's sync state and the mail's item mappings; the next
    /// sync (due at once) starts afresh. The Task upserts by external id keep
    /// the CRM free of duplicates, and the kept mappings of the CRM's events
    /// and contacts keep the mailbox free of them.
    ReinitializeMailbox,
    /// Checks that the mailbox and the CRM are configured.
    CheckSettings,
    /// Checks that Salesforce answers with the stored authorization.
    CheckCrm,
    /// Checks that the mailbox answers with the stored credentials.
    CheckMailbox,
    /// Installs the sidebar add-in in the mailbox.
    InstallSidebar,
    /// Removes the sidebar add-in from the mailbox.
    RemoveSidebar,
    /// Reads whether the sidebar add-in is installed.
    CheckSidebar,
}

impl AdminAction {
    /// Every action.
    pub const ALL: [Self; 8] = [
        Self::ResetMailbox,
        Self::ReinitializeMailbox,
        Self::CheckSettings,
        Self::CheckCrm,
        Self::CheckMailbox,
        Self::InstallSidebar,
        Self::RemoveSidebar,
        Self::CheckSidebar,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResetMailbox => "reset-mailbox",
            Self::ReinitializeMailbox => "reinitialize-mailbox",
            Self::CheckSettings => "check-settings",
            Self::CheckCrm => "check-crm",
            Self::CheckMailbox => "check-mailbox",
            Self::InstallSidebar => "install-sidebar",
            Self::RemoveSidebar => "remove-sidebar",
            Self::CheckSidebar => "check-sidebar",
        }
    }

    /// The action of that name.
    pub fn from_action(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == name)
    }

    /// Whether it changes the mailbox or the user's sync state: it then holds
    /// the user's lease while it runs and is retried on passing faults.
    pub fn mutates(self) -> bool {
        matches!(
            self,
            Self::ResetMailbox | Self::ReinitializeMailbox | Self::InstallSidebar | Self::RemoveSidebar
        )
    }
}

impl std::fmt::Display for AdminAction {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One job on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobEnvelope {
    /// Always [`ENVELOPE_VERSION`] for messages this build writes.
    pub version: u16,
    /// Stable across retries and redeliveries of the same job.
    pub job_id: Uuid,
    /// What to do.
    pub kind: JobKind,
    /// The user concerned, for sync and admin jobs.
    pub user_id: Option<Uuid>,
    /// What caused the job.
    pub trigger: Trigger,
    /// The slot it was scheduled for, or when it was requested.
    pub scheduled_at: DateTime<Utc>,
    /// When it was first published.
    pub enqueued_at: DateTime<Utc>,
    /// 1 for the first run; grows with each retry.
    pub attempt: u32,
    /// Kind-specific parameters.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub params: serde_json::Value,
    /// W3C trace context (`traceparent`, `tracestate`) of whoever enqueued it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trace: BTreeMap<String, String>,
}

/// Why bytes are not a job this build can run.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the message is not a valid job envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("envelope version {0} is not supported (this build reads version {ENVELOPE_VERSION})")]
    UnsupportedVersion(u16),
    #[error("a {0:?} job needs a user_id")]
    MissingUser(JobKind),
}

impl JobEnvelope {
    /// A first-attempt sync job for a user.
    pub fn sync(user_id: Uuid, trigger: Trigger, scheduled_at: DateTime<Utc>) -> Self {
        Self::sync_with_id(Uuid::now_v7(), user_id, trigger, scheduled_at)
    }

    /// A first-attempt sync job with a chosen id.
    pub fn sync_with_id(job_id: Uuid, user_id: Uuid, trigger: Trigger, scheduled_at: DateTime<Utc>) -> Self {
        Self {
            version: ENVELOPE_VERSION,
            job_id,
            kind: JobKind::Sync,
            user_id: Some(user_id),
            trigger,
            scheduled_at,
            enqueued_at: Utc::now(),
            attempt: 1,
            params: serde_json::Value::Null,
            trace: BTreeMap::new(),
        }
    }

    /// A first-attempt admin job for a user: `action` is the admin action's
    /// name (`reset-mailbox`, `check-crm`...), carried in `params.action`.
    pub fn admin(user_id: Uuid, action: &str, requested_at: DateTime<Utc>) -> Self {
        Self {
            kind: JobKind::Admin,
            params: serde_json::json!({ "action": action }),
            ..Self::sync(user_id, Trigger::Admin, requested_at)
        }
    }

    /// The action an admin job names in `params.action`.
    pub fn admin_action(&self) -> Option<&str> {
        self.params.get("action").and_then(serde_json::Value::as_str)
    }

    /// A first-attempt push job: the push's id is the job's id and is carried
    /// in `params.push_id`; a push names no user.
    pub fn push(push_id: Uuid, requested_at: DateTime<Utc>) -> Self {
        Self {
            job_id: push_id,
            kind: JobKind::Push,
            user_id: None,
            params: serde_json::json!({ "push_id": push_id }),
            ..Self::sync(push_id, Trigger::Admin, requested_at)
        }
    }

    /// The push a push job names in `params.push_id`.
    pub fn push_id(&self) -> Option<Uuid> {
        self.params
            .get("push_id")
            .and_then(serde_json::Value::as_str)
            .and_then(|id| id.parse().ok())
    }

    /// The same job, one attempt further.
    pub fn next_attempt(&self) -> Self {
        Self {
            attempt: self.attempt.saturating_add(1),
            ..self.clone()
        }
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of plain fields always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a message body, refusing other versions and incomplete jobs.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u16,
        }
        let VersionOnly { version } = serde_json::from_slice(bytes)?;
        if version != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        let envelope: Self = serde_json::from_slice(bytes)?;
        if matches!(envelope.kind, JobKind::Sync | JobKind::Admin) && envelope.user_id.is_none() {
            return Err(EnvelopeError::MissingUser(envelope.kind));
        }
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips() {
        let job = JobEnvelope::sync(Uuid::new_v4(), Trigger::Force, Utc::now());
        assert_eq!(JobEnvelope::decode(&job.encode()).expect("decodes"), job);
    }

    #[test]
    fn another_version_is_refused_by_number() {
        let mut job =
            serde_json::to_value(JobEnvelope::sync(Uuid::new_v4(), Trigger::Cadence, Utc::now())).expect("serializes");
        job["version"] = 2.into();
        let error = JobEnvelope::decode(&serde_json::to_vec(&job).expect("serializes")).unwrap_err();
        assert!(matches!(error, EnvelopeError::UnsupportedVersion(2)));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            JobEnvelope::decode(b"\xff{not json"),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn a_sync_job_without_user_is_refused() {
        let mut job = JobEnvelope::sync(Uuid::new_v4(), Trigger::Cadence, Utc::now());
        job.user_id = None;
        assert!(matches!(
            JobEnvelope::decode(&job.encode()),
            Err(EnvelopeError::MissingUser(JobKind::Sync))
        ));
    }

    #[test]
    fn an_admin_job_names_its_action() {
        let job = JobEnvelope::admin(Uuid::new_v4(), "reset-mailbox", Utc::now());
        let read = JobEnvelope::decode(&job.encode()).expect("decodes");
        assert_eq!(read, job);
        assert_eq!((read.kind, read.trigger), (JobKind::Admin, Trigger::Admin));
        assert_eq!(read.admin_action(), Some("reset-mailbox"));
    }

    #[test]
    fn every_admin_action_reads_back_from_its_name() {
        for action in AdminAction::ALL {
            assert_eq!(AdminAction::from_action(action.as_str()), Some(action));
        }
        assert_eq!(AdminAction::from_action("force-sync"), None);
    }

    #[test]
    fn only_the_checks_leave_the_mailbox_as_it_is() {
        let readers: Vec<&str> = AdminAction::ALL
            .into_iter()
            .filter(|action| !action.mutates())
            .map(AdminAction::as_str)
            .collect();
        assert_eq!(
            readers,
            ["check-settings", "check-crm", "check-mailbox", "check-sidebar"]
        );
    }

    #[test]
    fn a_push_job_names_its_push_and_no_user() {
        let push_id = Uuid::now_v7();
        let job = JobEnvelope::push(push_id, Utc::now());
        let read = JobEnvelope::decode(&job.encode()).expect("decodes");
        assert_eq!(read, job);
        assert_eq!((read.kind, read.user_id, read.job_id), (JobKind::Push, None, push_id));
        assert_eq!(read.push_id(), Some(push_id));
    }

    #[test]
    fn the_next_attempt_keeps_the_job_id() {
        let job = JobEnvelope::sync(Uuid::new_v4(), Trigger::Cadence, Utc::now());
        let retry = job.next_attempt();
        assert_eq!((retry.job_id, retry.attempt), (job.job_id, 2));
    }
}
