//! The sync session (S1-S8): settings, connectivity of both sides, the
//! mailbox's initialization, mail to CRM, CRM to mailbox, each cursor stored
//! only after the CRM writes it covers, one issue per failed item, and a
//! budget after which the session stops and a follow-up job goes on.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use reqwest::Url;
use secrecy::SecretString;
use serde_json::{Map, Value, json};
use syncfleet_common::{
    domain::{AccessType, IssueCategory, IssueSource, Scope},
    secrets::{CredentialKind, Owner},
};
use syncfleet_connectors::{
    ConnectorError, ErrorKind, Provider,
    ews::{EwsClient, EwsLogon, EwsOptions},
    gate::CallGate,
    gmail::{GmailClient, GmailOptions},
    graph::{GraphClient, GraphOptions},
    http::HttpClient,
    mailbox::{
        ContactDraft, Continuation, EventDraft, MailFolder, MailMessage, Mailbox, MessageChange, MessagePage, Upsert,
    },
    oauth::{OAuthApp, OAuthSession},
    salesforce::{self, PersonKind, SObject, SalesforceClient, SalesforceCredentials, SalesforceOptions},
};
use tracing::instrument;

use super::{
    FailureClass, SessionContext, SyncFailure, SyncWork,
    credentials::{self, TokenStores},
    gate::provider_name,
    participants::{self, FilterSettings, ParticipantFilter},
    providers::ProviderConfig,
    settings::{self, Settings, SettingsCheck},
    state::{self, Direction, Mapping},
};
use crate::admin::{self, AdminAction, AdminOutcome};

/// The Task field the fleet's external ids live in (a unique external id field
/// the org installs with the product).
pub const TASK_EXTERNAL_ID_FIELD: &str = "Syncfleet_External_Id__c";

/// Days of mail taken on a first sync, unless the organization sets its own.
pub const DEFAULT_BASELINE_DAYS: u32 = 6;

/// How much one session may do before it stops and a follow-up job goes on.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Wall time of the mailbox-to-CRM and CRM-to-mailbox steps.
    pub time: Duration,
    /// Mailbox changes handled.
    pub items: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            time: Duration::from_secs(120),
            items: 5_000,
        }
    }
}

/// The real sync, for every access type.
pub struct MailboxSync {
    providers: Arc<ProviderConfig>,
    http: HttpClient,
    budget: Budget,
    gate: Arc<dyn CallGate>,
    metrics: Option<crate::metrics::GateMetrics>,
    tokens: TokenStores,
}

impl MailboxSync {
    /// The sync with its providers, budget and the gate every call passes.
    pub fn new(providers: ProviderConfig, budget: Budget, gate: Arc<dyn CallGate>) -> anyhow::Result<Self> {
        let http = providers.http_client()?;
        let tokens = TokenStores::new(
            providers.key_ring.clone(),
            providers.token_store_retry,
            providers.salesforce_session_lifetime,
            providers.token_spool.clone(),
        );
        Ok(Self {
            providers: Arc::new(providers),
            http,
            budget,
            gate,
            metrics: None,
            tokens,
        })
    }

    /// Exports the gate's series with the worker's.
    pub fn with_gate_metrics(mut self, metrics: crate::metrics::GateMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// Which side a provider is on.
fn side_of(provider: Provider) -> IssueSource {
    match provider {
        Provider::Salesforce => IssueSource::Crm,
        Provider::Graph | Provider::Ews | Provider::Gmail => IssueSource::Mailbox,
    }
}

/// The issue category of a connector error.
fn category_of(kind: ErrorKind) -> IssueCategory {
    match kind {
        ErrorKind::Authorization => IssueCategory::Auth,
        ErrorKind::Throttled => IssueCategory::Throttled,
        ErrorKind::QuotaExhausted => IssueCategory::Quota,
        ErrorKind::SyncStateExpired => IssueCategory::SyncStateReset,
        ErrorKind::Validation => IssueCategory::Validation,
        ErrorKind::LockContention => IssueCategory::LockContention,
        ErrorKind::Duplicate => IssueCategory::Duplicate,
        ErrorKind::Transient => IssueCategory::Transient,
        ErrorKind::Permanent => IssueCategory::Internal,
        ErrorKind::RateLimited => IssueCategory::Throttled,
    }
}

/// A connector error that ends the session.
fn failure(error: ConnectorError) -> SyncFailure {
    let class = match error.kind() {
        ErrorKind::Authorization => FailureClass::Authorization,
        ErrorKind::Throttled => FailureClass::Throttled,
        ErrorKind::QuotaExhausted => FailureClass::Quota,
        ErrorKind::SyncStateExpired => FailureClass::SyncStateExpired,
        ErrorKind::LockContention => FailureClass::LockContention,
        ErrorKind::Transient => FailureClass::Transient,
        ErrorKind::Validation | ErrorKind::Duplicate | ErrorKind::Permanent => FailureClass::Permanent,
        ErrorKind::RateLimited => FailureClass::Deferred,
    };
    SyncFailure {
        class,
        side: side_of(error.provider()),
        message: error.to_string(),
        retry_after: error.retry_after(),
        grant_refused: error.is_grant_refused(),
    }
}

fn settings_failure(side: IssueSource, message: impl Into<String>) -> SyncFailure {
    SyncFailure::new(FailureClass::Settings, side, message)
}

fn bounded(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

impl SyncWork for MailboxSync {
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        if let Some(metrics) = &self.metrics {
            metrics.register(registry);
        }
        self.tokens.register(registry);
    }

    fn tally(&self) -> Option<crate::heartbeat::Tally> {
        self.metrics.as_ref().map(|metrics| metrics.tally.clone())
    }

    async fn drain(&self, limit: Duration) {
        self.tokens.drain(limit).await;
    }

    async fn recover(&self, pool: &sqlx::PgPool) {
        self.tokens.recover(pool).await;
    }

    #[instrument(name = "sync_session", skip_all, fields(user_id = %session.user_id))]
    async fn run(&self, session: &mut SessionContext) -> Result<(), SyncFailure> {
        session.scope = Scope::Incremental;
        let settings = settings::check(session).await?;
        let crm = self.salesforce(session, &settings).await?;
        let result = match self.mailbox(session, &settings).await? {
            OpenMailbox::Graph(mailbox) => self.sync(session, &settings, Provider::Graph, &mailbox, &crm).await,
            OpenMailbox::Ews(mailbox) => self.sync(session, &settings, Provider::Ews, &mailbox, &crm).await,
            OpenMailbox::Gmail(mailbox) => self.sync(session, &settings, Provider::Gmail, &mailbox, &crm).await,
        };
        session.calls.insert(
            provider_name(Provider::Salesforce).to_owned(),
            u32::try_from(crm.calls()).unwrap_or(u32::MAX),
        );
        result
    }

    #[instrument(name = "admin_action", skip_all, fields(user_id = %context.user_id, action = %action))]
    async fn admin(&self, context: &mut SessionContext, action: AdminAction) -> Result<AdminOutcome, SyncFailure> {
        match action {
            AdminAction::CheckSettings => Ok(admin::settings_found(&settings::check(context).await?)),
            // Nothing to do outside: the next sync initializes the mailbox
            // and takes the mail afresh.
            AdminAction::ReinitializeMailbox => Ok(AdminOutcome::default()),
            AdminAction::CheckCrm => {
                let settings = SettingsCheck::load(context).await?;
                let crm = self.salesforce(context, &settings).await?;
                admin::on_crm(&crm).await.map_err(failure)
            }
            AdminAction::CheckMailbox
            | AdminAction::ResetMailbox
            | AdminAction::InstallSidebar
            | AdminAction::RemoveSidebar
            | AdminAction::CheckSidebar => {
                let settings = SettingsCheck::load(context).await?;
                let address = settings.email.as_str();
                match self.mailbox(context, &settings).await? {
                    OpenMailbox::Graph(mailbox) => admin::on_mailbox(&mailbox, Provider::Graph, address, action).await,
                    OpenMailbox::Ews(mailbox) => admin::on_mailbox(&mailbox, Provider::Ews, address, action).await,
                    OpenMailbox::Gmail(mailbox) => admin::on_mailbox(&mailbox, Provider::Gmail, address, action).await,
                }
                .map_err(failure)
            }
        }
    }
}

/// The user's mailbox client, by access type.
enum OpenMailbox {
    Graph(GraphClient),
    Ews(EwsClient),
    Gmail(GmailClient),
}

impl MailboxSync {
    /// The client of the user's mailbox: their credentials opened, no call
    /// made yet.
    async fn mailbox(&self, session: &SessionContext, settings: &Settings) -> Result<OpenMailbox, SyncFailure> {
        match settings.access_type {
            AccessType::Office365 => Ok(OpenMailbox::Graph(self.graph(session, settings).await?)),
            AccessType::ExchangeDirect if settings.has(CredentialKind::MailboxRefreshToken) => {
                // Direct access through Office 365 OAuth instead of a password.
                Ok(OpenMailbox::Graph(self.graph(session, settings).await?))
            }
            AccessType::ExchangeDirect | AccessType::ExchangeImpersonation => {
                Ok(OpenMailbox::Ews(self.ews(session, settings).await?))
            }
            AccessType::Gmail => Ok(OpenMailbox::Gmail(self.gmail(session, settings).await?)),
        }
    }

    /// `owner`'s `kind`, opened from the credentials the settings query read.
    fn credential(
        &self,
        settings: &Settings,
        owner: Owner,
        kind: CredentialKind,
        side: IssueSource,
    ) -> Result<SecretString, SyncFailure> {
        let stored = settings
            .credentials
            .get(owner, kind)
            .ok_or_else(|| settings_failure(side, format!("no {} is stored", kind.as_str())))?;
        stored.open(self.tokens.ring()).map_err(|error| {
            SyncFailure::new(
                FailureClass::Permanent,
                IssueSource::Engine,
                format!("the stored {}: {error}", kind.as_str()),
            )
        })
    }

    async fn salesforce(&self, session: &SessionContext, settings: &Settings) -> Result<SalesforceClient, SyncFailure> {
        let instance = settings
            .salesforce_instance_url
            .as_deref()
            .ok_or_else(|| settings_failure(IssueSource::Crm, "no Salesforce instance URL is set"))?;
        let login_url: Url = instance
            .parse()
            .map_err(|_| settings_failure(IssueSource::Crm, "the Salesforce instance URL is not a URL"))?;
        let refresh_token = self.credential(
            settings,
            Owner::User(session.user_id),
            CredentialKind::CrmRefreshToken,
            IssueSource::Crm,
        )?;
        let kept = credentials::kept_salesforce(&settings.credentials, self.tokens.ring(), session.user_id, &login_url);
        let kept_session = kept.as_ref().and_then(|kept| {
            let instance_url = kept.instance_url.parse().ok()?;
            Some((SecretString::from(kept.access_token.clone()), instance_url))
        });
        let sink = self
            .tokens
            .crm_sink(&session.pool, session.user_id, &login_url, &refresh_token);
        let client = SalesforceClient::new(
            self.http.clone(),
            self.providers.salesforce_app(login_url.clone()),
            SalesforceCredentials {
                refresh_token,
                session: kept_session,
            },
            SalesforceOptions {
                reserve_percent: self.providers.salesforce_reserve_percent,
                ..SalesforceOptions::default()
            },
        )
        .map_err(failure)?;
        let client = match kept {
            Some(kept) => client.with_identity(kept.org_id, kept.user_id),
            None => client,
        };
        let org = login_url.host_str().unwrap_or_default().to_owned();
        Ok(client
            .with_token_sink(Arc::new(sink))
            .with_gate(self.gate.clone(), &org))
    }

    /// The user's Microsoft or Google session: their refresh token opened,
    /// the access token kept from the last session if it is still valid,
    /// every new grant kept (a rotated refresh token durably, before use).
    fn mailbox_oauth(
        &self,
        session: &SessionContext,
        settings: &Settings,
        app: &Arc<OAuthApp>,
    ) -> Result<OAuthSession, SyncFailure> {
        let owner = Owner::User(session.user_id);
        let refresh_token = self.credential(
            settings,
            owner,
            CredentialKind::MailboxRefreshToken,
            IssueSource::Mailbox,
        )?;
        let sink = self
            .tokens
            .mailbox_sink(&session.pool, session.user_id, app.provider, &refresh_token);
        let oauth = OAuthSession::new(self.http.clone(), app.clone(), refresh_token).with_sink(Arc::new(sink));
        Ok(
            match credentials::kept(
                &settings.credentials,
                self.tokens.ring(),
                owner,
                CredentialKind::MailboxAccessToken,
            ) {
                Some((token, valid_until)) => oauth.with_access_token(token, valid_until),
                None => oauth,
            },
        )
    }

    async fn graph(&self, session: &SessionContext, settings: &Settings) -> Result<GraphClient, SyncFailure> {
        let oauth = self.mailbox_oauth(session, settings, &self.providers.microsoft)?;
        let options = GraphOptions {
            base_url: self.providers.graph_url.clone(),
            ..GraphOptions::default()
        };
        Ok(GraphClient::new(self.http.clone(), options, settings.email.clone(), oauth).with_gate(self.gate.clone()))
    }

    async fn gmail(&self, session: &SessionContext, settings: &Settings) -> Result<GmailClient, SyncFailure> {
        let oauth = self.mailbox_oauth(session, settings, &self.providers.google)?;
        let options = GmailOptions {
            base_url: self.providers.gmail_url.clone(),
            ..GmailOptions::default()
        };
        Ok(GmailClient::new(self.http.clone(), options, oauth).with_gate(self.gate.clone(), &settings.email))
    }

    async fn ews(&self, session: &SessionContext, settings: &Settings) -> Result<EwsClient, SyncFailure> {
        let impersonation = settings.access_type == AccessType::ExchangeImpersonation;
        let url = settings
            .ews_url
            .as_deref()
            .ok_or_else(|| settings_failure(IssueSource::Mailbox, "no EWS URL is set"))?;
        let url: Url = url
            .parse()
            .map_err(|_| settings_failure(IssueSource::Mailbox, "the EWS URL is not a URL"))?;
        let logon = if impersonation {
            let password = self.credential(
                settings,
                Owner::Organization(session.organization_id),
                CredentialKind::ImpersonationPassword,
                IssueSource::Mailbox,
            )?;
            EwsLogon::Impersonation {
                service_account: settings.impersonation_account.clone().unwrap_or_default(),
                password,
                smtp_address: settings.email.clone(),
            }
        } else {
            let password = self.credential(
                settings,
                Owner::User(session.user_id),
                CredentialKind::MailboxPassword,
                IssueSource::Mailbox,
            )?;
            EwsLogon::Direct {
                account: settings.account_logon.clone().unwrap_or_else(|| settings.email.clone()),
                password,
            }
        };
        EwsClient::new(self.http.clone(), EwsOptions::default(), url, logon)
            .map(|client| client.with_gate(self.gate.clone()))
            .map_err(failure)
    }

    /// S2-S7 against one mailbox; the calls made are counted whatever happens.
    async fn sync<M: Mailbox>(
        &self,
        session: &mut SessionContext,
        settings: &Settings,
        provider: Provider,
        mailbox: &M,
        crm: &SalesforceClient,
    ) -> Result<(), SyncFailure> {
        let result = self.steps(session, settings, mailbox, crm).await;
        session
            .calls
            .insert(provider_name(provider).to_owned(), mailbox.calls());
        result
    }

    async fn steps<M: Mailbox>(
        &self,
        session: &mut SessionContext,
        settings: &Settings,
        mailbox: &M,
        crm: &SalesforceClient,
    ) -> Result<(), SyncFailure> {
        // S2 and S3, connectivity. A first session checks both sides with a
        // light call each before it initializes the mailbox; later ones are
        // proven by their first call to each side (a kept access token makes
        // no refresh, and Salesforce reports the org's usage on every answer,
        // so a steady-state session makes no call of its own for this).
        if !settings.mailbox_initialized {
            let started = Instant::now();
            mailbox.check().await.map_err(failure)?;
            session
                .log
                .finish_step("check_mailbox", started, "The mailbox answered.");
            let started = Instant::now();
            let limits = crm.limits().await.map_err(failure)?;
            session.log.finish_step(
                "check_crm",
                started,
                format!(
                    "Salesforce answered; {} of {} daily API requests remain.",
                    limits.remaining, limits.max
                ),
            );
        }

        let organization_filter: FilterSettings =
            serde_json::from_value(settings.organization_settings.clone()).unwrap_or_default();
        let user_filter: FilterSettings = settings
            .user_settings
            .clone()
            .and_then(|value| serde_json::from_value(value).ok())
            .unwrap_or_default();
        let baseline_days = organization_filter.baseline_days.unwrap_or(DEFAULT_BASELINE_DAYS);
        let since = Utc::now() - chrono::Duration::days(i64::from(baseline_days));

        // S4: the first run initializes the mailbox.
        if !settings.mailbox_initialized {
            let started = Instant::now();
            session.scope = Scope::Initial;
            mailbox.initialize().await.map_err(failure)?;
            sqlx::query!(
                "UPDATE users SET mailbox_status = 'initialized', updated_at = now() \
                 WHERE id = $1 AND mailbox_status = 'not_initialized'",
                session.user_id
            )
            .execute(&session.pool)
            .await
            .map_err(SyncFailure::database)?;
            session.log.finish_step(
                "initialize_mailbox",
                started,
                format!("Category and folders created; mail of the last {baseline_days} days is taken."),
            );
        }

        // S5: mail to CRM, one stream at a time.
        let cursors = &settings.cursors;
        let filter = ParticipantFilter::new(&settings.email, &organization_filter, &user_filter);
        let deadline = Instant::now() + self.budget.time;
        let mut handled = 0usize;
        // Every folder's first page in one request where the provider can.
        let streams: Vec<(MailFolder, Option<&str>)> = mailbox
            .folders()
            .iter()
            .map(|folder| {
                let cursor = cursors.get(&format!("mail:{}", folder.as_str()));
                (*folder, cursor.map(String::as_str))
            })
            .collect();
        let mut first_pages = mailbox.first_pages(&streams, since).await.map_err(failure)?.into_iter();
        for folder in mailbox.folders() {
            let first = first_pages.next();
            let started = Instant::now();
            let outcome = self
                .mail_to_crm(
                    session,
                    mailbox,
                    crm,
                    &filter,
                    cursors,
                    *folder,
                    since,
                    deadline,
                    &mut handled,
                    first,
                )
                .await?;
            session
                .log
                .finish_step(&format!("mail_to_crm:{}", folder.as_str()), started, outcome);
            if session.continuation {
                break;
            }
        }

        // S6: CRM to mailbox.
        if session.continuation {
            session.log.push(
                "crm_to_mailbox",
                "info",
                "Skipped this time: the session's budget is spent; the follow-up job does it.",
            );
        } else if mailbox.writes_crm_items() {
            let started = Instant::now();
            let outcome = self.crm_to_mailbox(session, mailbox, crm, cursors, since).await?;
            session.log.finish_step("crm_to_mailbox", started, outcome);
        } else {
            session.log.push(
                "crm_to_mailbox",
                "info",
                "This mailbox type takes no events or contacts from the CRM.",
            );
        }
        if let Some(usage) = crm.api_usage() {
            if let (Some(metrics), Some(org)) = (&self.metrics, crm.org_id()) {
                metrics.tally.salesforce_usage(
                    &org.to_lowercase(),
                    usage.used,
                    usage.max,
                    self.providers.salesforce_reserve_percent,
                );
            }
            session.log.push(
                "crm_usage",
                "info",
                format!(
                    "The Salesforce org has used {} of its {} daily API requests.",
                    usage.used, usage.max
                ),
            );
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn mail_to_crm<M: Mailbox>(
        &self,
        session: &mut SessionContext,
        mailbox: &M,
        crm: &SalesforceClient,
        filter: &ParticipantFilter,
        cursors: &HashMap<String, String>,
        folder: MailFolder,
        since: DateTime<Utc>,
        deadline: Instant,
        handled: &mut usize,
        mut first: Option<Result<MessagePage, ConnectorError>>,
    ) -> Result<String, SyncFailure> {
        let stream = format!("mail:{}", folder.as_str());
        let mut cursor = cursors.get(&stream).cloned();
        let (mut pages, mut logged, mut skipped, mut removed) = (0u32, 0u32, 0u32, 0u32);
        loop {
            if Instant::now() >= deadline || *handled >= self.budget.items {
                session.continuation = true;
                return Ok(format!(
                    "{pages} page(s), {logged} logged, {skipped} without a CRM match; the budget is spent, a follow-up job goes on."
                ));
            }
            let answer = match first.take() {
                Some(answer) => answer,
                None => mailbox.message_changes(folder, cursor.as_deref(), since).await,
            };
            let page = match answer {
                Ok(page) => page,
                Err(error) if error.kind() == ErrorKind::SyncStateExpired && cursor.is_some() => {
                    session.issue(
                        IssueSource::Mailbox,
                        IssueCategory::SyncStateReset,
                        None,
                        format!("{error}; a full resync of {} follows", folder.as_str()),
                    );
                    session.scope = Scope::FullResync;
                    cursor = None;
                    continue;
                }
                Err(error) => return Err(failure(error)),
            };
            pages += 1;
            *handled += page.changes.len();
            let mut messages = Vec::new();
            for change in page.changes {
                match change {
                    MessageChange::Upsert(message) => messages.push(message),
                    MessageChange::Removed { .. } => removed += 1,
                }
            }
            let (written, unmatched) = self.log_messages(session, crm, filter, &messages).await?;
            logged += written;
            skipped += unmatched;
            // The cursor moves only once the CRM writes it covers are done.
            let (token, complete) = match page.continuation {
                Continuation::More(token) => (token, false),
                Continuation::Complete(token) => (token, true),
            };
            if cursors.get(&stream) != Some(&token) {
                session.cursors.insert(stream.clone(), token.clone());
            }
            cursor = Some(token);
            if complete {
                return Ok(format!(
                    "{pages} page(s): {logged} logged, {skipped} without a CRM match, {removed} removed in the mailbox."
                ));
            }
        }
    }

    /// Matches the messages' participants and upserts one Task per message
    /// with a match; answers (written, without a match).
    async fn log_messages(
        &self,
        session: &mut SessionContext,
        crm: &SalesforceClient,
        filter: &ParticipantFilter,
        messages: &[MailMessage],
    ) -> Result<(u32, u32), SyncFailure> {
        // The same message may come twice in a round: the last copy wins.
        let mut unique: BTreeMap<String, (&MailMessage, Vec<String>)> = BTreeMap::new();
        for message in messages {
            let candidates = filter.candidates(message);
            unique.insert(
                participants::external_id(session.user_id, message),
                (message, candidates),
            );
        }
        let addresses: Vec<String> = unique
            .values()
            .flat_map(|(_, candidates)| candidates.iter().cloned())
            .collect();
        if addresses.is_empty() {
            return Ok((0, u32::try_from(unique.len()).unwrap_or(u32::MAX)));
        }
        let people = crm.find_people(&addresses).await.map_err(failure)?;
        let mut records = Vec::new();
        let mut items = Vec::new();
        let mut unmatched = 0u32;
        for (external_id, (message, candidates)) in &unique {
            // Contacts before Leads; among them the first participant.
            let person = candidates
                .iter()
                .filter_map(|address| people.get(address))
                .min_by_key(|person| person.kind != PersonKind::Contact);
            let Some(person) = person else {
                unmatched += 1;
                continue;
            };
            records.push(task_record(external_id, message, &person.id));
            items.push((message.id.clone(), external_id.clone()));
        }
        if records.is_empty() {
            return Ok((0, unmatched));
        }
        let outcomes = crm
            .upsert(SObject::Task, TASK_EXTERNAL_ID_FIELD, records)
            .await
            .map_err(failure)?;
        let mut mappings = Vec::new();
        for ((item, external_id), outcome) in items.into_iter().zip(outcomes) {
            match outcome {
                Ok(upserted) => mappings.push(Mapping {
                    mailbox_item_id: item,
                    crm_object: "Task",
                    crm_id: upserted.id,
                    external_id,
                }),
                Err(error) if !error.is_retryable() => {
                    session.issue(
                        side_of(error.provider()),
                        category_of(error.kind()),
                        Some(item),
                        error.to_string(),
                    );
                }
                Err(error) => return Err(failure(error)),
            }
        }
        state::save_mappings(&session.pool, session.user_id, Direction::MailboxToCrm, &mappings)
            .await
            .map_err(SyncFailure::database)?;
        let written = u32::try_from(mappings.len()).unwrap_or(u32::MAX);
        session.items_to_crm += i32::try_from(written).unwrap_or(i32::MAX);
        Ok((written, unmatched))
    }

    /// S6: the user's Events and Contacts changed in the CRM since the
    /// watermark, written into the mailbox.
    async fn crm_to_mailbox<M: Mailbox>(
        &self,
        session: &mut SessionContext,
        mailbox: &M,
        crm: &SalesforceClient,
        cursors: &HashMap<String, String>,
        since: DateTime<Utc>,
    ) -> Result<String, SyncFailure> {
        let owner = crm.resolve_user_id().await.map_err(failure)?;
        const EVENT_FIELDS: &[&str] = &[
            "Id",
            "Subject",
            "Description",
            "Location",
            "StartDateTime",
            "EndDateTime",
            "LastModifiedDate",
        ];
        const CONTACT_FIELDS: &[&str] = &[
            "Id",
            "FirstName",
            "LastName",
            "Email",
            "Phone",
            "Title",
            "LastModifiedDate",
        ];
        let streams = [(SObject::Event, EVENT_FIELDS), (SObject::Contact, CONTACT_FIELDS)].map(|(object, fields)| {
            let stream = format!("crm:{}", object.name().to_lowercase());
            let watermark = cursors
                .get(&stream)
                .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
                .map_or(since, |time| time.with_timezone(&Utc));
            (object, stream, watermark, fields)
        });
        // Both objects' changes in one call of the org's allocation.
        let changes: Vec<(SObject, DateTime<Utc>, &[&str])> = streams
            .iter()
            .map(|(object, _, watermark, fields)| (*object, *watermark, *fields))
            .collect();
        let changed = crm.changed_owned_records_of(&owner, &changes).await.map_err(failure)?;
        let mut summary = Vec::new();
        for ((object, stream, watermark, _), records) in streams.into_iter().zip(changed) {
            // The query is inclusive to the second: what the watermark already
            // covers comes back and is skipped.
            let records: Vec<_> = records
                .into_iter()
                .filter(|record| modified_at(record).is_none_or(|modified| modified > watermark))
                .collect();
            if records.is_empty() {
                summary.push(format!("0 {}s", object.name()));
                continue;
            }
            let ids: Vec<String> = records.iter().filter_map(|record| text(record, "Id")).collect();
            let existing = state::mailbox_items_of(&session.pool, session.user_id, &ids)
                .await
                .map_err(SyncFailure::database)?;
            let mut newest = watermark;
            let mut written = 0;
            for chunk in records.chunks(20) {
                let (ids, outcomes) = match object {
                    SObject::Event => {
                        let (ids, drafts) = upserts(chunk, &existing, event_draft, |event| &event.crm_id);
                        (ids, mailbox.upsert_events(&drafts).await.map_err(failure)?)
                    }
                    _ => {
                        let (ids, drafts) = upserts(chunk, &existing, contact_draft, |contact| &contact.crm_id);
                        (ids, mailbox.upsert_contacts(&drafts).await.map_err(failure)?)
                    }
                };
                let mut mappings = Vec::new();
                for (crm_id, outcome) in ids.into_iter().zip(outcomes) {
                    match outcome {
                        Ok(mailbox_item_id) => mappings.push(Mapping {
                            mailbox_item_id,
                            crm_object: object.name(),
                            external_id: crm_id.clone(),
                            crm_id,
                        }),
                        Err(error) if !error.is_retryable() => session.issue(
                            side_of(error.provider()),
                            category_of(error.kind()),
                            Some(crm_id),
                            error.to_string(),
                        ),
                        Err(error) => return Err(failure(error)),
                    }
                }
                state::save_mappings(&session.pool, session.user_id, Direction::CrmToMailbox, &mappings)
                    .await
                    .map_err(SyncFailure::database)?;
                written += mappings.len();
                session.items_to_mailbox += i32::try_from(mappings.len()).unwrap_or(i32::MAX);
                if let Some(last) = chunk.iter().filter_map(modified_at).max() {
                    newest = newest.max(last);
                }
            }
            session.cursors.insert(stream.clone(), newest.to_rfc3339());
            summary.push(format!("{written} {}(s)", object.name()));
        }
        Ok(format!("Written into the mailbox: {}.", summary.join(", ")))
    }
}

fn text(record: &Map<String, Value>, field: &str) -> Option<String> {
    record.get(field).and_then(Value::as_str).map(str::to_owned)
}

fn time(record: &Map<String, Value>, field: &str) -> Option<DateTime<Utc>> {
    salesforce::parse_datetime(record.get(field)?.as_str()?)
}

fn modified_at(record: &Map<String, Value>) -> Option<DateTime<Utc>> {
    time(record, "LastModifiedDate")
}

/// The CRM ids and drafts of `records`, each with the mailbox item it was
/// written to before, if any.
fn upserts<T>(
    records: &[Map<String, Value>],
    existing: &HashMap<String, String>,
    draft: fn(&Map<String, Value>) -> Option<T>,
    crm_id: fn(&T) -> &String,
) -> (Vec<String>, Vec<Upsert<T>>) {
    records
        .iter()
        .filter_map(draft)
        .map(|item| {
            let id = crm_id(&item).clone();
            let existing = existing.get(&id).cloned();
            (id, Upsert { existing, item })
        })
        .unzip()
}

fn event_draft(record: &Map<String, Value>) -> Option<EventDraft> {
    Some(EventDraft {
        crm_id: text(record, "Id")?,
        subject: text(record, "Subject").unwrap_or_default(),
        body: text(record, "Description").unwrap_or_default(),
        location: text(record, "Location").unwrap_or_default(),
        start: time(record, "StartDateTime")?,
        end: time(record, "EndDateTime")?,
    })
}

fn contact_draft(record: &Map<String, Value>) -> Option<ContactDraft> {
    Some(ContactDraft {
        crm_id: text(record, "Id")?,
        email: text(record, "Email").unwrap_or_default(),
        first_name: text(record, "FirstName").unwrap_or_default(),
        last_name: text(record, "LastName").unwrap_or_default(),
        company: String::new(),
        phone: text(record, "Phone").unwrap_or_default(),
    })
}

/// The Task an email becomes.
fn task_record(external_id: &str, message: &MailMessage, who_id: &str) -> Map<String, Value> {
    let subject = if message.subject.trim().is_empty() {
        "Email: (no subject)".to_owned()
    } else {
        format!("Email: {}", message.subject.trim())
    };
    let direction = if message.sent_by_owner { "Sent" } else { "Received" };
    let from = message
        .from
        .as_ref()
        .map(|address| address.address.as_str())
        .unwrap_or_default();
    let description = format!(
        "{direction} {}\nFrom: {from}\n\n{}",
        message.sent_at.format("%Y-%m-%d %H:%M UTC"),
        message.body_preview
    );
    [
        (TASK_EXTERNAL_ID_FIELD, json!(external_id)),
        ("Subject", json!(bounded(&subject, 255))),
        ("Description", json!(bounded(&description, 32_000))),
        ("ActivityDate", json!(message.sent_at.format("%Y-%m-%d").to_string())),
        ("Status", json!("Completed")),
        ("Priority", json!("Normal")),
        ("TaskSubtype", json!("Email")),
        ("WhoId", json!(who_id)),
    ]
    .into_iter()
    .map(|(field, value)| (field.to_owned(), value))
    .collect()
}
