//! The Salesforce REST client: one user's session (access token, instance URL,
//! refresh token) and the calls the sync needs.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use chrono::{DateTime, Utc};
use reqwest::{
    Method, StatusCode, Url,
    header::{ACCEPT, HeaderMap},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};
use tracing::{debug, instrument};

use super::{
    auth::{self, ConnectedApp, TokenGrant, TokenSink},
    errors::{self, ApiUsage, RecordError},
    query::{self, QueryPage},
};
use crate::{
    error::{ConnectorError, Provider},
    gate::{CallGate, Gated},
    http::{HttpClient, transport_error},
};

const SALESFORCE: Provider = Provider::Salesforce;

/// How long a job waits when the org's usage reached the customer's reserve:
/// the rolling allocation frees calls as the day goes on.
const RESERVE_RETRY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The most records one sObject Collections call takes.
pub const COLLECTION_LIMIT: usize = 200;

/// How the client talks to Salesforce.
#[derive(Debug, Clone)]
pub struct SalesforceOptions {
    /// The REST API version, `vXX.X`.
    pub api_version: String,
    /// The most values in one SOQL `IN` list.
    pub lookup_batch_size: usize,
    /// About the most characters of literals in one SOQL `IN` list, which
    /// keeps the query URL well under the length Salesforce accepts.
    pub lookup_batch_chars: usize,
    /// The share of the org's daily allocation (percent) the fleet never
    /// uses: once `Sforce-Limit-Info` reports the rest used, calls stop.
    pub reserve_percent: u8,
}

impl Default for SalesforceOptions {
    fn default() -> Self {
        Self {
            api_version: "v62.0".to_owned(),
            lookup_batch_size: 100,
            lookup_batch_chars: 4000,
            reserve_percent: 0,
        }
    }
}

/// A user's stored Salesforce credentials.
#[derive(Debug, Clone)]
pub struct SalesforceCredentials {
    /// The refresh token of the user's authorization.
    pub refresh_token: SecretString,
    /// A still-valid access token and its instance URL, when one is kept;
    /// without them the first call refreshes.
    pub session: Option<(SecretString, Url)>,
}

/// The objects the connector writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SObject {
    /// An activity logged from an email (`TaskSubtype=Email`).
    Task,
    /// A calendar event.
    Event,
    /// A contact.
    Contact,
    /// A lead.
    Lead,
}

impl SObject {
    /// The API name.
    pub fn name(self) -> &'static str {
        match self {
            SObject::Task => "Task",
            SObject::Event => "Event",
            SObject::Contact => "Contact",
            SObject::Lead => "Lead",
        }
    }
}

/// Whether a participant matched a Contact or a Lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PersonKind {
    /// A Contact matched (Contacts win over Leads).
    Contact,
    /// Only a Lead matched.
    Lead,
}

/// The CRM record an email address matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonMatch {
    /// The Contact's or Lead's id, to use as `WhoId`.
    pub id: String,
    /// Which object it is.
    pub kind: PersonKind,
}

/// A record written by an upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    /// The record's id.
    pub id: String,
    /// Whether this call created it (false: it existed and was updated, or a
    /// concurrent writer created it first).
    pub created: bool,
}

/// `DailyApiRequests` of `/limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DailyApiRequests {
    /// The org's daily allocation.
    pub max: u64,
    /// Calls left in the rolling 24 hours.
    pub remaining: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Limits {
    daily_api_requests: DailyApiRequests,
}

#[derive(Debug, Deserialize)]
struct RecordAnswer {
    #[serde(default)]
    id: Option<String>,
    success: bool,
    #[serde(default)]
    errors: Vec<RecordError>,
    #[serde(default)]
    created: Option<bool>,
}

/// The session the client holds; replaced by each refresh.
struct Session {
    access_token: Option<SecretString>,
    instance_url: Option<Url>,
    refresh_token: SecretString,
    /// Counts refreshes, so concurrent calls rejected with the same token
    /// refresh once between them.
    generation: u64,
}

/// The org and user ids the last grant named.
#[derive(Debug, Clone, Default)]
struct Identity {
    org_id: Option<String>,
    user_id: Option<String>,
}

/// A Salesforce REST client for one user.
pub struct SalesforceClient {
    http: HttpClient,
    app: ConnectedApp,
    options: SalesforceOptions,
    session: tokio::sync::Mutex<Session>,
    usage: Mutex<Option<ApiUsage>>,
    identity: Mutex<Identity>,
    sink: Option<Arc<dyn TokenSink>>,
    calls: AtomicU64,
    gate: Gated,
}

impl std::fmt::Debug for SalesforceClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SalesforceClient")
            .field("login_url", &self.app.login_url.as_str())
            .field("api_version", &self.options.api_version)
            .finish_non_exhaustive()
    }
}

pub(super) fn unexpected(error: &serde_json::Error) -> ConnectorError {
    // Only the position: the text of a serde error may quote the answer.
    ConnectorError::permanent(
        SALESFORCE,
        format!("unexpected answer (line {}, column {})", error.line(), error.column()),
    )
}

fn refused(what: &str, refused: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::permanent(SALESFORCE, format!("{what}: {refused}"))
}

fn checked_name(name: &str) -> Result<&str, ConnectorError> {
    if query::is_identifier(name) {
        Ok(name)
    } else {
        Err(ConnectorError::permanent(
            SALESFORCE,
            format!("{name:?} is not a field or object name"),
        ))
    }
}

/// The query of `object`'s records owned by `owner_id` changed since
/// `since`, selecting `fields` (with `Id` and `LastModifiedDate`).
fn changed_owned_soql(
    object: SObject,
    owner_id: &str,
    since: DateTime<Utc>,
    fields: &[&str],
) -> Result<String, ConnectorError> {
    let mut selected: Vec<&str> = Vec::with_capacity(fields.len() + 2);
    for required in ["Id", "LastModifiedDate"] {
        if !fields.iter().any(|field| field.eq_ignore_ascii_case(required)) {
            selected.push(required);
        }
    }
    for field in fields {
        selected.push(checked_name(field)?);
    }
    Ok(query::changed_owned(&selected, object.name(), owner_id, since))
}

impl SalesforceClient {
    /// A client for one user. The login URL and a kept instance URL must pass
    /// the HTTP client's SSRF policy; nothing is called yet.
    pub fn new(
        http: HttpClient,
        app: ConnectedApp,
        credentials: SalesforceCredentials,
        options: SalesforceOptions,
    ) -> Result<Self, ConnectorError> {
        let token_url = auth::token_url(&app)?;
        http.check_url(&token_url)
            .map_err(|error| refused("login URL", error))?;
        let (access_token, instance_url) = match credentials.session {
            Some((token, instance_url)) => {
                http.check_url(&instance_url)
                    .map_err(|error| refused("instance URL", error))?;
                (Some(token), Some(instance_url))
            }
            None => (None, None),
        };
        if !options.api_version.starts_with('v') || options.api_version.contains('/') {
            return Err(ConnectorError::permanent(SALESFORCE, "the API version must read vXX.X"));
        }
        Ok(Self {
            http,
            app,
            options,
            session: tokio::sync::Mutex::new(Session {
                access_token,
                instance_url,
                refresh_token: credentials.refresh_token,
                generation: 0,
            }),
            usage: Mutex::new(None),
            identity: Mutex::new(Identity::default()),
            sink: None,
            calls: AtomicU64::new(0),
            gate: Gated::open(SALESFORCE, "org"),
        })
    }

    /// Hands every grant to `sink` before it is used.
    pub fn with_token_sink(mut self, sink: Arc<dyn TokenSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The org and user a kept session acts as (the refresh that obtained it
    /// named them): with them, a session that makes no refresh still knows
    /// the org its calls count against and the user whose records it reads.
    pub fn with_identity(self, org_id: Option<String>, user_id: Option<String>) -> Self {
        *self.identity.lock().unwrap_or_else(PoisonError::into_inner) = Identity { org_id, user_id };
        self
    }

    /// Every API call passes `gate`, spending from the limits of `org` (the
    /// org's daily allocation and its concurrent requests; the login host
    /// names it until the first refresh names the org).
    pub fn with_gate(mut self, gate: Arc<dyn CallGate>, org: &str) -> Self {
        self.gate = Gated::through(gate, SALESFORCE, org.to_lowercase());
        self
    }

    /// Calls made to Salesforce so far (token refreshes included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The org's API usage as the last answer reported it.
    pub fn api_usage(&self) -> Option<ApiUsage> {
        *self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The user's id (`005...`) as the last refresh's identity URL named it;
    /// `None` before the first refresh (a kept session names no user).
    pub fn user_id(&self) -> Option<String> {
        self.identity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .user_id
            .clone()
    }

    /// The org's id (`00D...`) as the last refresh's identity URL named it.
    pub fn org_id(&self) -> Option<String> {
        self.identity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .org_id
            .clone()
    }

    /// The user's id, refreshing once to learn it if no refresh happened yet.
    #[instrument(skip_all)]
    pub async fn resolve_user_id(&self) -> Result<String, ConnectorError> {
        if let Some(user_id) = self.user_id() {
            return Ok(user_id);
        }
        self.refresh()
            .await?
            .user_id
            .ok_or_else(|| ConnectorError::permanent(SALESFORCE, "the token answer names no user (no identity URL)"))
    }

    /// Refreshes the access token now and returns the grant (its rotated
    /// refresh token, if any, is already the one the client uses).
    #[instrument(skip_all)]
    pub async fn refresh(&self) -> Result<TokenGrant, ConnectorError> {
        let mut session = self.session.lock().await;
        self.refresh_locked(&mut session).await
    }

    async fn refresh_locked(&self, session: &mut Session) -> Result<TokenGrant, ConnectorError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let grant = auth::refresh(&self.http, &self.app, &session.refresh_token).await?;
        if let Some(sink) = &self.sink {
            sink.store(&grant).await?;
        }
        session.access_token = Some(grant.access_token.clone());
        session.instance_url = Some(grant.instance_url.clone());
        if grant.user_id.is_some() {
            *self.identity.lock().unwrap_or_else(PoisonError::into_inner) = Identity {
                org_id: grant.org_id.clone(),
                user_id: grant.user_id.clone(),
            };
        }
        if let Some(rotated) = &grant.refresh_token {
            session.refresh_token = rotated.clone();
        }
        session.generation += 1;
        debug!(
            rotated = grant.refresh_token.is_some(),
            "Salesforce access token refreshed."
        );
        Ok(grant)
    }

    /// The token and base to call with, refreshing first if there is none.
    async fn current(&self) -> Result<(SecretString, Url, u64), ConnectorError> {
        let mut session = self.session.lock().await;
        if let (Some(token), Some(instance_url)) = (&session.access_token, &session.instance_url) {
            return Ok((token.clone(), instance_url.clone(), session.generation));
        }
        let grant = self.refresh_locked(&mut session).await?;
        Ok((grant.access_token, grant.instance_url, session.generation))
    }

    /// After `generation`'s token was refused: refresh, unless a concurrent
    /// call already did.
    async fn refresh_after_rejection(&self, generation: u64) -> Result<(), ConnectorError> {
        let mut session = self.session.lock().await;
        if session.generation == generation {
            debug!("Salesforce refused the session; refreshing once.");
            self.refresh_locked(&mut session).await?;
        }
        Ok(())
    }

    /// Refuses a call once the org's usage, as Salesforce last reported it
    /// (every integration of the org counted), reaches the share the fleet may
    /// use: the rest is the customer's reserve.
    fn check_reserve(&self) -> Result<(), ConnectorError> {
        let Some(usage) = self.api_usage() else {
            return Ok(());
        };
        let reserve = u64::from(self.options.reserve_percent.min(100));
        let allowed = usage.max - usage.max * reserve / 100;
        if usage.used < allowed {
            return Ok(());
        }
        Err(ConnectorError::RateLimited {
            provider: SALESFORCE,
            retry_after: RESERVE_RETRY,
            message: format!(
                "the org used {} of its {} daily API requests; the last {}% are kept for the customer's other integrations",
                usage.used, usage.max, self.options.reserve_percent
            ),
        })
    }

    fn record_usage(&self, headers: &HeaderMap) {
        let usage = headers
            .get("sforce-limit-info")
            .and_then(|value| value.to_str().ok())
            .and_then(ApiUsage::parse);
        if let Some(usage) = usage {
            *self.usage.lock().unwrap_or_else(PoisonError::into_inner) = Some(usage);
        }
    }

    pub(super) fn api_path(&self, rest: &str) -> String {
        format!("/services/data/{}/{rest}", self.options.api_version)
    }

    /// Calls the REST API: `target` builds the URL from the instance URL. A
    /// `401` refreshes the session once and retries; any other error answer is
    /// classified.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        target: impl Fn(&Url) -> Result<Url, ConnectorError>,
        body: Option<&Value>,
    ) -> Result<T, ConnectorError> {
        let mut retried = false;
        loop {
            let (token, instance_url, generation) = self.current().await?;
            let url = target(&instance_url)?;
            self.http
                .check_url(&url)
                .map_err(|error| refused("instance URL", error))?;
            let mut request = self
                .http
                .inner()
                .request(method.clone(), url)
                .bearer_auth(token.expose_secret())
                .header(ACCEPT, "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Err(error) = self.check_reserve() {
                // Every worker stops calling this org, not only this session.
                if let Some(org) = self.org_id() {
                    self.gate.throttled_as(&org.to_lowercase(), RESERVE_RETRY).await;
                }
                return Err(error);
            }
            // The org's id once a refresh named it (one host may serve
            // several orgs), its login host before.
            let allocation = self.api_usage().map(|usage| usage.max);
            let permit = match self.org_id() {
                Some(org) => self.gate.admit_as(&org.to_lowercase(), allocation, 1).await?,
                None => self.gate.admit(1).await?,
            };
            self.calls.fetch_add(1, Ordering::Relaxed);
            let response = request
                .send()
                .await
                .map_err(|error| transport_error(SALESFORCE, error))?;
            self.record_usage(response.headers());
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response
                .bytes()
                .await
                .map_err(|error| transport_error(SALESFORCE, error))?;
            drop(permit);
            if status == StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                self.refresh_after_rejection(generation).await?;
                continue;
            }
            if !status.is_success() {
                return Err(errors::from_response(status, &headers, &bytes));
            }
            return serde_json::from_slice(&bytes).map_err(|error| unexpected(&error));
        }
    }

    /// A light call that proves the session and the API work:
    /// `DailyApiRequests` of `/limits`.
    #[instrument(skip_all)]
    pub async fn limits(&self) -> Result<DailyApiRequests, ConnectorError> {
        let path = self.api_path("limits");
        let limits: Limits = self.call(Method::GET, |base| join(base, &path), None).await?;
        Ok(limits.daily_api_requests)
    }

    /// The records of `object` whose `filter_field` equals one of `values`,
    /// with `fields`: batched SOQL `IN` lists, every page followed.
    #[instrument(skip_all, fields(object = object, values = values.len()))]
    pub async fn select_in(
        &self,
        object: &str,
        fields: &[&str],
        filter_field: &str,
        values: &[String],
    ) -> Result<Vec<Map<String, Value>>, ConnectorError> {
        let object = checked_name(object)?;
        let filter_field = checked_name(filter_field)?;
        for field in fields {
            checked_name(field)?;
        }
        let mut records = Vec::new();
        let batches = query::batches(values, self.options.lookup_batch_size, self.options.lookup_batch_chars);
        for batch in batches {
            let soql = query::select_in(fields, object, filter_field, &batch);
            records.append(&mut self.query_all(&soql).await?);
        }
        Ok(records)
    }

    /// Every record `soql` selects: the first page, then each
    /// `nextRecordsUrl` until `done`.
    async fn query_all(&self, soql: &str) -> Result<Vec<Map<String, Value>>, ConnectorError> {
        let query_path = self.api_path("query");
        let mut page: QueryPage = self
            .call(
                Method::GET,
                |base| {
                    let mut url = join(base, &query_path)?;
                    url.query_pairs_mut().append_pair("q", soql);
                    Ok(url)
                },
                None,
            )
            .await?;
        let mut records = Vec::new();
        loop {
            records.append(&mut page.records);
            if page.done {
                break;
            }
            let Some(next) = page.next_records_url.take() else {
                break;
            };
            page = self.call(Method::GET, |base| next_page(base, &next), None).await?;
        }
        Ok(records)
    }

    /// The records of `object` owned by `owner_id` and last modified at or
    /// after `since`, oldest change first, with `fields` (`Id` and
    /// `LastModifiedDate` are always selected), every page followed.
    ///
    /// SOQL compares to the second, so `since` is rounded down to its second
    /// and the query uses `>=`: nothing modified after `since` is missed, and
    /// the records modified within that second (those seen last time among
    /// them) come back again. Keep as the next `since` the greatest
    /// `LastModifiedDate` seen ([`parse_datetime`] reads it) and skip a
    /// record whose `LastModifiedDate` is not after the one already handled.
    #[instrument(skip_all, fields(object = object.name()))]
    pub async fn changed_owned_records(
        &self,
        object: SObject,
        owner_id: &str,
        since: DateTime<Utc>,
        fields: &[&str],
    ) -> Result<Vec<Map<String, Value>>, ConnectorError> {
        self.query_all(&changed_owned_soql(object, owner_id, since, fields)?)
            .await
    }

    /// [`SalesforceClient::changed_owned_records`] of several objects in one
    /// Composite call (one call of the org's allocation for up to five),
    /// each `(object, since, fields)`; the records in the same order.
    #[instrument(skip_all, fields(objects = changes.len()))]
    pub async fn changed_owned_records_of(
        &self,
        owner_id: &str,
        changes: &[(SObject, DateTime<Utc>, &[&str])],
    ) -> Result<Vec<Vec<Map<String, Value>>>, ConnectorError> {
        let queries = changes
            .iter()
            .map(|(object, since, fields)| changed_owned_soql(*object, owner_id, *since, fields))
            .collect::<Result<Vec<_>, _>>()?;
        self.query_many(&queries).await?.into_iter().collect()
    }

    /// The Contact or Lead each address matches (keys are the addresses in
    /// lower case). Contacts take priority: Leads are looked up only for the
    /// addresses no Contact matched. Among several matches the first wins.
    #[instrument(skip_all, fields(addresses = emails.len()))]
    pub async fn find_people(&self, emails: &[String]) -> Result<HashMap<String, PersonMatch>, ConnectorError> {
        let mut seen = HashSet::new();
        let mut pending: Vec<String> = emails
            .iter()
            .map(|email| email.trim().to_lowercase())
            .filter(|email| !email.is_empty() && seen.insert(email.clone()))
            .collect();
        let mut found = HashMap::new();
        for (object, kind) in [("Contact", PersonKind::Contact), ("Lead", PersonKind::Lead)] {
            if pending.is_empty() {
                break;
            }
            let records = self.select_in(object, &["Id", "Email"], "Email", &pending).await?;
            for record in records {
                let (Some(id), Some(email)) = (
                    record.get("Id").and_then(Value::as_str),
                    record.get("Email").and_then(Value::as_str),
                ) else {
                    continue;
                };
                found.entry(email.to_lowercase()).or_insert_with(|| PersonMatch {
                    id: id.to_owned(),
                    kind,
                });
            }
            pending.retain(|email| !found.contains_key(email));
        }
        Ok(found)
    }

    /// Upserts `records` of `object` by `external_id_field` (each record must
    /// carry it) with sObject Collections, 200 at a time, and returns each
    /// record's outcome in input order. A `DUPLICATE_VALUE` on the external id
    /// (a concurrent writer created it first) counts as done with the existing
    /// record's id. A failure of a whole call (quota, session, outage) is the
    /// outer error; the chunks before it are written, and retrying the whole
    /// list is safe since every write is keyed by its external id.
    #[instrument(skip_all, fields(object = object.name(), records = records.len()))]
    pub async fn upsert(
        &self,
        object: SObject,
        external_id_field: &str,
        records: Vec<Map<String, Value>>,
    ) -> Result<Vec<Result<Upserted, ConnectorError>>, ConnectorError> {
        let external_id_field = checked_name(external_id_field)?;
        let path = self.api_path(&format!("composite/sobjects/{}/{external_id_field}", object.name()));
        let mut outcomes = Vec::with_capacity(records.len());
        for chunk in records.chunks(COLLECTION_LIMIT) {
            let typed: Vec<Value> = chunk
                .iter()
                .map(|record| {
                    let mut record = record.clone();
                    record.insert("attributes".to_owned(), json!({"type": object.name()}));
                    Value::Object(record)
                })
                .collect();
            let body = json!({"allOrNone": false, "records": typed});
            let answers: Vec<RecordAnswer> = self.call(Method::PATCH, |base| join(base, &path), Some(&body)).await?;
            if answers.len() != chunk.len() {
                return Err(ConnectorError::permanent(
                    SALESFORCE,
                    format!("{} results for {} records", answers.len(), chunk.len()),
                ));
            }
            for (record, answer) in chunk.iter().zip(answers) {
                outcomes.push(self.outcome(object, external_id_field, record, answer).await);
            }
        }
        Ok(outcomes)
    }

    async fn outcome(
        &self,
        object: SObject,
        external_id_field: &str,
        record: &Map<String, Value>,
        answer: RecordAnswer,
    ) -> Result<Upserted, ConnectorError> {
        if answer.success {
            let id = answer
                .id
                .ok_or_else(|| ConnectorError::permanent(SALESFORCE, "a successful record has no id"))?;
            return Ok(Upserted {
                id,
                created: answer.created.unwrap_or(false),
            });
        }
        let Some(first) = answer.errors.first() else {
            return Err(ConnectorError::permanent(SALESFORCE, "a failed record has no error"));
        };
        let error = errors::from_record_error(first);
        let on_external_id = first.status_code == "DUPLICATE_VALUE"
            && first
                .fields
                .iter()
                .any(|field| field.eq_ignore_ascii_case(external_id_field));
        let ConnectorError::Duplicate { existing_id, .. } = &error else {
            return Err(error);
        };
        if !on_external_id {
            return Err(error);
        }
        if let Some(id) = existing_id {
            return Ok(Upserted {
                id: id.clone(),
                created: false,
            });
        }
        // The message did not name the record: look it up by its external id.
        let Some(key) = record.get(external_id_field).and_then(Value::as_str) else {
            return Err(error);
        };
        let found = self
            .select_in(object.name(), &["Id"], external_id_field, &[key.to_owned()])
            .await?;
        match found.first().and_then(|found| found.get("Id")).and_then(Value::as_str) {
            Some(id) => Ok(Upserted {
                id: id.to_owned(),
                created: false,
            }),
            None => Err(error),
        }
    }
}

/// A dateTime as Salesforce answers it (`2026-11-22T10:00:00.000+0000`; RFC
/// 3339 is read too).
pub fn parse_datetime(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(value))
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

pub(super) fn join(base: &Url, path: &str) -> Result<Url, ConnectorError> {
    base.join(path)
        .map_err(|error| ConnectorError::permanent(SALESFORCE, format!("bad API URL: {error}")))
}

/// The URL of a `nextRecordsUrl`, which must be a path under the API on the
/// same instance (never another host).
pub(super) fn next_page(base: &Url, next: &str) -> Result<Url, ConnectorError> {
    if !next.starts_with("/services/data/") || next.contains("://") || next.starts_with("//") {
        return Err(ConnectorError::permanent(
            SALESFORCE,
            "nextRecordsUrl is not a path under /services/data/",
        ));
    }
    join(base, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salesforce_datetimes_are_read_with_their_offset() {
        let expected: DateTime<Utc> = "2026-11-22T10:00:00.123Z".parse().unwrap();
        assert_eq!(parse_datetime("2026-11-22T10:00:00.123+0000"), Some(expected));
        assert_eq!(parse_datetime("2026-11-22T11:00:00.123+01:00"), Some(expected));
        assert_eq!(parse_datetime("2026-11-22"), None);
    }

    #[test]
    fn a_next_records_url_cannot_leave_the_instance() {
        let base = Url::parse("https://example.my.salesforce.com").unwrap();
        assert_eq!(
            next_page(&base, "/services/data/v62.0/query/01g-2000")
                .unwrap()
                .as_str(),
            "https://example.my.salesforce.com/services/data/v62.0/query/01g-2000"
        );
        for bad in [
            "https://evil.example/services/data/",
            "//evil.example/services/data/",
            "/other",
        ] {
            assert!(next_page(&base, bad).is_err(), "{bad}");
        }
    }
}
