//! Step 1 of a session (S1): are the mailbox and the CRM configured, and is
//! the organization enabled? [`check`] answers the user's settings for the
//! steps that follow; [`SettingsCheck`] runs it as a whole session (scope
//! `check`), the admin action "check settings".

use std::{collections::HashMap, time::Instant};

use syncfleet_common::{
    domain::{AccessType, IssueCategory, IssueSource, Scope},
    secrets::{CredentialColumn, CredentialKind, Owner, StoredCredentials},
};
use uuid::Uuid;

use super::{FailureClass, SessionContext, SyncFailure, SyncWork};

/// The settings check, run as the whole session (scope `check`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SettingsCheck;

/// What the session needs to know about the user and their organization.
#[derive(Debug)]
pub struct Settings {
    pub sync_enabled: bool,
    pub access_type: AccessType,
    pub ews_url: Option<String>,
    pub impersonation_account: Option<String>,
    pub salesforce_instance_url: Option<String>,
    /// The mailbox's SMTP address.
    pub email: String,
    /// The Exchange account name, when it differs from the address.
    pub account_logon: Option<String>,
    /// Whether the mailbox was initialized (S4 done once).
    pub mailbox_initialized: bool,
    /// The organization's settings document.
    pub organization_settings: serde_json::Value,
    /// The user's own preset, if any.
    pub user_settings: Option<serde_json::Value>,
    /// The user's credentials and the organization's, sealed.
    pub credentials: StoredCredentials,
    /// Every stored cursor of the user, by stream (the session holds the
    /// user's lease, so nothing else moves them meanwhile).
    pub cursors: HashMap<String, String>,
    user_id: Uuid,
    organization_id: Uuid,
}

/// Runs `sqlx::query!` on a statement that selects the settings of user `u`
/// in organization `o` between `$before` and `$after` (string literals, which
/// the compile-checked macros join with `+`): the settings' own read, the
/// claim's and the fast claims' spell these columns once. Their credentials
/// are [`CREDENTIALS_SELECT`](syncfleet_common::secrets::CREDENTIALS_SELECT)
/// (a test checks that the two agree), typed for
/// [`StoredCredentials::from_column`].
macro_rules! query_with_settings {
    ($before:literal, $after:literal $(, $argument:expr)* $(,)?) => {
        sqlx::query!(
            $before
                + "o.sync_enabled, o.access_type AS \"access_type: syncfleet_common::domain::AccessType\", \
                   o.ews_url, o.impersonation_account, u.salesforce_instance_url, \
                   u.email, u.account_logon, u.mailbox_status = 'initialized' AS \"mailbox_initialized!\", \
                   o.settings AS organization_settings, \
                   (SELECT p.settings FROM sync_settings_presets p WHERE p.user_id = u.id AND p.scope = 'user') \
                       AS user_settings, \
                   (SELECT coalesce(json_agg(json_build_array(c.organization_id IS NOT NULL, c.kind, c.key_version, \
                          encode(c.nonce, 'base64'), encode(c.ciphertext, 'base64'), c.expires_at, \
                          c.refused_at IS NOT NULL)), '[]') \
                    FROM credentials c WHERE c.user_id = u.id OR c.organization_id = o.id) \
                       AS \"credentials!: syncfleet_common::secrets::CredentialColumn\", \
                   ARRAY(SELECT s.stream FROM sync_state s WHERE s.user_id = u.id ORDER BY s.stream) \
                       AS \"cursor_streams!\", \
                   ARRAY(SELECT s.token FROM sync_state s WHERE s.user_id = u.id ORDER BY s.stream) \
                       AS \"cursor_tokens!\""
                + $after
            $(, $argument)*
        )
    };
}
pub(crate) use query_with_settings;

/// The [`SettingsRow`] of `$record`, a row a [`query_with_settings`]
/// statement answered (its settings columns moved out of it).
macro_rules! settings_row {
    ($record:ident) => {
        $crate::sync::settings::SettingsRow {
            sync_enabled: $record.sync_enabled,
            access_type: $record.access_type,
            ews_url: $record.ews_url,
            impersonation_account: $record.impersonation_account,
            salesforce_instance_url: $record.salesforce_instance_url,
            email: $record.email,
            account_logon: $record.account_logon,
            mailbox_initialized: $record.mailbox_initialized,
            organization_settings: $record.organization_settings,
            user_settings: $record.user_settings,
            credentials: $record.credentials,
            cursor_streams: $record.cursor_streams,
            cursor_tokens: $record.cursor_tokens,
        }
    };
}
pub(crate) use settings_row;

/// The settings as [`query_with_settings`] selects them.
pub(crate) struct SettingsRow {
    pub(crate) sync_enabled: bool,
    pub(crate) access_type: AccessType,
    pub(crate) ews_url: Option<String>,
    pub(crate) impersonation_account: Option<String>,
    pub(crate) salesforce_instance_url: Option<String>,
    pub(crate) email: String,
    pub(crate) account_logon: Option<String>,
    pub(crate) mailbox_initialized: bool,
    pub(crate) organization_settings: serde_json::Value,
    pub(crate) user_settings: Option<serde_json::Value>,
    pub(crate) credentials: CredentialColumn,
    pub(crate) cursor_streams: Vec<String>,
    pub(crate) cursor_tokens: Vec<String>,
}

/// The user's settings in one statement, for a context the claim did not
/// read them for.
async fn read(pool: &sqlx::PgPool, user_id: Uuid) -> Result<Option<SettingsRow>, sqlx::Error> {
    let row = query_with_settings!(
        "SELECT ",
        " FROM users u JOIN organizations o ON o.id = u.organization_id WHERE u.id = $1",
        user_id
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| settings_row!(row)))
}

impl Settings {
    /// The settings of `user` in `organization` as selected.
    pub(crate) fn from_row(row: SettingsRow, user: Uuid, organization: Uuid) -> Self {
        Self {
            sync_enabled: row.sync_enabled,
            access_type: row.access_type,
            ews_url: row.ews_url,
            impersonation_account: row.impersonation_account,
            salesforce_instance_url: row.salesforce_instance_url,
            email: row.email,
            account_logon: row.account_logon,
            mailbox_initialized: row.mailbox_initialized,
            organization_settings: row.organization_settings,
            user_settings: row.user_settings,
            credentials: StoredCredentials::from_column(user, organization, row.credentials),
            cursors: row.cursor_streams.into_iter().zip(row.cursor_tokens).collect(),
            user_id: user,
            organization_id: organization,
        }
    }

    /// Whether the user has a credential of `kind`.
    pub fn has(&self, kind: CredentialKind) -> bool {
        self.credentials.has(Owner::User(self.user_id), kind)
    }

    /// The side whose stored authorization the provider refused, and what to
    /// do: the session stops there, without calling the provider again with
    /// it, until a new one is stored.
    pub fn refused(&self) -> Option<(IssueSource, &'static str)> {
        let refused = |kind| {
            self.credentials
                .get(Owner::User(self.user_id), kind)
                .is_some_and(|credential| credential.refused)
        };
        if refused(CredentialKind::MailboxRefreshToken) || refused(CredentialKind::MailboxPassword) {
            Some((
                IssueSource::Mailbox,
                "the mailbox's authorization was refused by the provider: reconnect the mailbox",
            ))
        } else if refused(CredentialKind::CrmRefreshToken) {
            Some((
                IssueSource::Crm,
                "Salesforce refused the authorization: reconnect Salesforce",
            ))
        } else {
            None
        }
    }

    /// Whether the organization's impersonation password is stored.
    fn has_impersonation_password(&self) -> bool {
        self.credentials.has(
            Owner::Organization(self.organization_id),
            CredentialKind::ImpersonationPassword,
        )
    }
}

/// A missing piece of configuration and the side it belongs to.
type Missing = (IssueSource, &'static str);

impl SettingsCheck {
    /// The user's settings as stored, unchecked, with their credentials and
    /// cursors: the claim read them in its statement; a context without them
    /// (an admin job) reads them in one statement.
    pub(crate) async fn load(session: &mut SessionContext) -> Result<Settings, SyncFailure> {
        if let Some(settings) = session.settings.take() {
            return Ok(*settings);
        }
        let row = read(&session.pool, session.user_id)
            .await
            .map_err(SyncFailure::database)?
            .ok_or_else(|| {
                SyncFailure::new(
                    FailureClass::Permanent,
                    IssueSource::Engine,
                    "the user no longer exists",
                )
            })?;
        Ok(Settings::from_row(row, session.user_id, session.organization_id))
    }

    fn missing(settings: &Settings) -> Vec<Missing> {
        let has = |kind: CredentialKind| settings.has(kind);
        let mut missing = Vec::new();
        if !settings.sync_enabled {
            missing.push((IssueSource::Engine, "synchronization is disabled for the organization"));
        }
        match settings.access_type {
            AccessType::ExchangeDirect => {
                if !has(CredentialKind::MailboxPassword) && !has(CredentialKind::MailboxRefreshToken) {
                    missing.push((
                        IssueSource::Mailbox,
                        "no Exchange password or Office 365 authorization is stored",
                    ));
                }
            }
            AccessType::ExchangeImpersonation => {
                if settings.ews_url.is_none() || settings.impersonation_account.is_none() {
                    missing.push((
                        IssueSource::Mailbox,
                        "the organization has no EWS URL or impersonation account",
                    ));
                }
                if !settings.has_impersonation_password() && !has(CredentialKind::MailboxRefreshToken) {
                    missing.push((
                        IssueSource::Mailbox,
                        "the organization's impersonation password is not stored",
                    ));
                }
            }
            AccessType::Office365 | AccessType::Gmail => {
                if !has(CredentialKind::MailboxRefreshToken) {
                    missing.push((
                        IssueSource::Mailbox,
                        "the mailbox has not been authorized (no OAuth refresh token)",
                    ));
                }
            }
        }
        if settings.salesforce_instance_url.is_none() {
            missing.push((IssueSource::Crm, "no Salesforce instance URL is set"));
        }
        if !has(CredentialKind::CrmRefreshToken) {
            missing.push((
                IssueSource::Crm,
                "Salesforce has not been authorized (no OAuth refresh token)",
            ));
        }
        missing
    }
}

/// Loads the user's settings and fails the session with a settings issue
/// per missing piece when something is not configured.
pub async fn check(session: &mut SessionContext) -> Result<Settings, SyncFailure> {
    let started = Instant::now();
    let settings = SettingsCheck::load(session).await?;
    let missing = SettingsCheck::missing(&settings);
    if let Some((first_source, _)) = missing.first().copied() {
        for (source, message) in &missing {
            session.issue(*source, IssueCategory::Settings, None, *message);
        }
        session.log.finish_step(
            "check_settings",
            started,
            format!("{} setting(s) missing.", missing.len()),
        );
        let summary = missing
            .iter()
            .map(|(_, message)| *message)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(SyncFailure::new(FailureClass::Settings, first_source, summary));
    }
    if let Some((side, message)) = settings.refused() {
        session
            .log
            .finish_step("check_settings", started, "An authorization was refused.");
        return Err(SyncFailure::new(FailureClass::Authorization, side, message));
    }
    session.log.finish_step(
        "check_settings",
        started,
        "Mailbox and CRM are configured and the organization is enabled.",
    );
    Ok(settings)
}

impl SyncWork for SettingsCheck {
    #[tracing::instrument(name = "check_settings", skip_all, fields(user_id = %session.user_id))]
    async fn run(&self, session: &mut SessionContext) -> Result<(), SyncFailure> {
        session.scope = Scope::Check;
        check(session).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use syncfleet_common::secrets::CREDENTIALS_SELECT;

    use super::*;

    #[test]
    fn the_settings_select_the_credentials_as_common_spells_them() {
        let column = CREDENTIALS_SELECT
            .strip_suffix(" AS credentials")
            .expect("common names the column credentials");
        // The settings' own read (any statement of the macro would do).
        let statement = query_with_settings!(
            "SELECT ",
            " FROM users u JOIN organizations o ON o.id = u.organization_id WHERE u.id = $1",
            Uuid::nil()
        );
        let sql = sqlx::Execute::sql(&statement);
        assert!(sql.contains(&format!("{column} AS \"credentials!: ")), "{sql}");
    }
}
