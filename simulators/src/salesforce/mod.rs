//! The Salesforce simulator: the OAuth refresh grant (with refresh token
//! rotation per org), sessions that time out, `/limits`, SOQL queries with
//! paging, sObject Collections create and upsert by external id, the
//! Composite resource (up to 25 subrequests counted as one call), the
//! rolling daily allocation with its `Sforce-Limit-Info` header, and the
//! errors Salesforce answers with, as `shared/reference/providers.md` describes
//! them. One server simulates many orgs, each with its users; an access token
//! says which org and user, and the token answer's identity URL
//! (`id`: `.../id/{orgId}/{userId}`) names them. Records carry `OwnerId`,
//! `CreatedDate`, `LastModifiedDate` and `SystemModstamp`, maintained as
//! Salesforce does, so the changes of one owner can be queried.
//!
//! A test drives it through [`SalesforceSimulator`]: it creates orgs, users,
//! tokens and records, updates records, arms faults, sets latency and reads
//! records and counters back.

mod composite;
mod control;
mod faults;
mod limits;
mod routes;
mod soql;
mod store;

use std::{collections::BTreeMap, fmt, io, sync::Arc, time::Duration, time::Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

pub use composite::{MAX_QUERY_SUBREQUESTS, MAX_SUBREQUESTS};
pub use faults::Fault;
pub use limits::ApiUsage;
pub use store::ValidationRule;

use crate::{BulkError, Server, shared::Latency};
use store::{Principal, Store, schema_of};

/// How the simulated Salesforce behaves.
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// Records per query page (Salesforce: 2,000).
    pub page_size: usize,
    /// The daily API allocation of an org created without its own.
    pub daily_api_max: u64,
    /// Whether a refresh answers with a new refresh token and invalidates the
    /// one it was given at once (refresh token rotation on the connected app;
    /// off by default, as in Salesforce). Each org may differ
    /// ([`SalesforceSimulator::set_refresh_token_rotation`]).
    pub rotate_refresh_tokens: bool,
    /// How long an access token lives after it was issued (the org's session
    /// timeout, two hours by default): past it, calls answer `401
    /// INVALID_SESSION_ID`.
    pub session_timeout: Duration,
}

impl Default for SalesforceConfig {
    fn default() -> Self {
        Self {
            page_size: 2000,
            daily_api_max: 15_000,
            rotate_refresh_tokens: false,
            session_timeout: Duration::from_secs(2 * 60 * 60),
        }
    }
}

/// The most records one sObject Collections call takes.
pub const MAX_COLLECTION_RECORDS: usize = 200;

/// A simulated org's id (`00D...`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct OrgId(pub String);

/// The most orgs one [`SalesforceSimulator::create_orgs`] creates.
pub const MAX_BULK_ORGS: usize = 10_000;

/// The most refresh tokens, and the most access tokens,
/// [`SalesforceSimulator::create_orgs`] issues for one org.
pub const MAX_BULK_REFRESH_TOKENS: usize = 1_000;

/// An org to create in bulk, with its records and refresh tokens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BulkOrg {
    /// Records by sObject type, each a JSON object of fields as
    /// [`SalesforceSimulator::insert_record`] takes them; those without an
    /// `OwnerId` belong to the org's owner.
    #[serde(default)]
    pub records: BTreeMap<String, Vec<Value>>,
    /// How many refresh tokens of the owner to issue (1 unless given).
    #[serde(default = "one_token")]
    pub refresh_tokens: usize,
    /// How many access tokens (sessions) of the owner to issue, as refreshes
    /// at the org's creation would have obtained them (none unless given).
    #[serde(default)]
    pub access_tokens: usize,
}

fn one_token() -> usize {
    1
}

/// An org created in bulk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedOrg {
    /// Its id.
    #[serde(rename = "org_id")]
    pub org: OrgId,
    /// Its one user (its default user), who owns its records.
    #[serde(rename = "owner_id")]
    pub owner: String,
    /// Refresh tokens of the owner.
    pub refresh_tokens: Vec<String>,
    /// Access tokens (sessions) of the owner, when the org asked for them:
    /// each times out as a refreshed one does, and calls the instance the
    /// bulk call was made to (the token answer's `instance_url`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access_tokens: Vec<String>,
}

impl fmt::Display for OrgId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The endpoints the simulator counts calls to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /services/oauth2/token`.
    Token,
    /// `GET /services/data/vXX.X/limits`.
    Limits,
    /// `GET /services/data/vXX.X/query?q=...`.
    Query,
    /// `GET /services/data/vXX.X/query/{locator}` (a `nextRecordsUrl`).
    QueryMore,
    /// `POST /services/data/vXX.X/composite/sobjects`.
    CompositeCreate,
    /// `PATCH /services/data/vXX.X/composite/sobjects/{type}/{field}`.
    CompositeUpsert,
    /// `POST /services/data/vXX.X/composite` itself (its subrequests count
    /// under their own endpoints; the allocation counts the composite once).
    Composite,
}

impl Endpoint {
    /// The endpoint's name in the control API.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::Limits => "limits",
            Endpoint::Query => "query",
            Endpoint::QueryMore => "query_more",
            Endpoint::CompositeCreate => "composite_create",
            Endpoint::CompositeUpsert => "composite_upsert",
            Endpoint::Composite => "composite",
        }
    }
}

/// What an org (or the simulator, for calls no org could be told from) saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Calls received, by endpoint.
    pub calls: BTreeMap<Endpoint, u64>,
    /// Calls answered `REQUEST_LIMIT_EXCEEDED` (daily or concurrent limit).
    pub throttled: u64,
    /// Calls answered by an armed fault.
    pub faults: u64,
}

impl Counters {
    /// Calls received by `endpoint`.
    pub fn calls_to(&self, endpoint: Endpoint) -> u64 {
        self.calls.get(&endpoint).copied().unwrap_or_default()
    }

    /// Calls received in all.
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }
}

/// A handle on one simulated Salesforce: serve it, then shape and observe its
/// state. Clones share the state.
#[derive(Debug, Clone)]
pub struct SalesforceSimulator {
    store: Arc<Store>,
}

/// Why a record could not be put in the simulator directly.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// No such org.
    #[error("unknown org {0}")]
    UnknownOrg(OrgId),
    /// The simulator does not know the type.
    #[error("unknown sObject type {0}")]
    UnknownType(String),
    /// No such user in the org.
    #[error("unknown user {0}")]
    UnknownUser(String),
    /// No record of the type has that id in the org.
    #[error("unknown record {0}")]
    UnknownRecord(String),
    /// Salesforce would refuse the record (the error code and message).
    #[error("the record is refused: {0}")]
    Refused(String),
}

/// What [`SalesforceSimulator::start_local`] starts.
pub struct LocalSalesforce {
    /// The simulator, for faults, counters and more orgs.
    pub simulator: SalesforceSimulator,
    /// Where it listens.
    pub server: Server,
    /// The org created for the test.
    pub org: OrgId,
    /// A refresh token of that org's default user (see
    /// [`SalesforceSimulator::default_user`]).
    pub refresh_token: String,
}

pub(crate) fn new_refresh_token() -> String {
    format!("5Aep861{}", uuid::Uuid::new_v4().simple())
}

/// A seed's fields for `object`, checked as Salesforce would check them, with
/// the audit fields allowed.
fn seed_fields(object: &str, fields: &Value) -> Result<store::IncomingRecord, SeedError> {
    let schema = schema_of(object).ok_or_else(|| SeedError::UnknownType(object.to_owned()))?;
    let Value::Object(fields) = fields else {
        return Err(SeedError::Refused("fields must be a JSON object".to_owned()));
    };
    store::incoming(schema, fields, true)
        .map_err(|refusal| SeedError::Refused(format!("{}: {}", refusal.code, refusal.message)))
}

/// A record Salesforce refused, as a seed's error.
fn refused(error: &store::RecordError) -> SeedError {
    SeedError::Refused(format!("{}: {}", error.status_code, error.message))
}

impl SalesforceSimulator {
    crate::shared::http_handle!(SalesforceConfig, "orgs");

    /// A simulator on a free loopback port with one org and a refresh token
    /// for it, what a test starts with; it stops when `shutdown` is cancelled.
    pub async fn start_local(config: SalesforceConfig, shutdown: CancellationToken) -> io::Result<LocalSalesforce> {
        let simulator = Self::new(config);
        let server = simulator.serve(crate::LOOPBACK, shutdown).await?;
        let org = simulator.create_org();
        let refresh_token = simulator.issue_refresh_token(&org);
        Ok(LocalSalesforce {
            simulator,
            server,
            org,
            refresh_token,
        })
    }

    /// Creates an org with the configured daily allocation.
    pub fn create_org(&self) -> OrgId {
        self.create_org_with_allocation(self.store.config.daily_api_max)
    }

    /// Creates an org whose daily allocation is `daily_api_max` calls, with
    /// one user, its default user.
    pub fn create_org_with_allocation(&self, daily_api_max: u64) -> OrgId {
        self.store.with(|state| state.create_org(daily_api_max).0)
    }

    /// Creates every org of `orgs`, each with one user (its owner), its
    /// records (checked and written as [`Self::insert_record`] does), its
    /// refresh tokens and its access tokens, and answers them in order; or,
    /// if a record would be refused, a type is unknown, an org asks for more
    /// than [`MAX_BULK_REFRESH_TOKENS`] tokens of a kind or there are more than
    /// [`MAX_BULK_ORGS`] orgs, creates none and says which
    /// (`orgs[2].records.Contact[5]: ...`). The store's lock is taken once.
    pub fn create_orgs(&self, orgs: &[BulkOrg]) -> Result<Vec<CreatedOrg>, BulkError> {
        BulkError::check_count("orgs", orgs.len(), MAX_BULK_ORGS)?;
        let mut prepared = Vec::with_capacity(orgs.len());
        for (index, org) in orgs.iter().enumerate() {
            for (field, count) in [
                ("refresh_tokens", org.refresh_tokens),
                ("access_tokens", org.access_tokens),
            ] {
                if count > MAX_BULK_REFRESH_TOKENS {
                    return Err(BulkError::invalid(
                        format!("orgs[{index}].{field}"),
                        format!("at most {MAX_BULK_REFRESH_TOKENS} per org, got {count}"),
                    ));
                }
            }
            let mut objects = Vec::with_capacity(org.records.len());
            for (object, records) in &org.records {
                let at = format!("orgs[{index}].records.{object}");
                if schema_of(object).is_none() {
                    return Err(BulkError::invalid(at, SeedError::UnknownType(object.clone())));
                }
                let records = records
                    .iter()
                    .enumerate()
                    .map(|(position, fields)| {
                        seed_fields(object, fields)
                            .map_err(|error| BulkError::invalid(format!("{at}[{position}]"), error))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                objects.push((at, records));
            }
            prepared.push(objects);
        }
        let daily_api_max = self.store.config.daily_api_max;
        self.store.with(|state| {
            let mut created = Vec::with_capacity(orgs.len());
            for objects in &prepared {
                let (org, owner) = state.create_org(daily_api_max);
                created.push((org.clone(), owner.clone()));
                for (at, records) in objects {
                    let results = store::create_records(state, &org, &owner, records, false, None);
                    if let Some((position, error)) = results
                        .iter()
                        .enumerate()
                        .find_map(|(position, result)| result.as_ref().err().map(|error| (position, error)))
                    {
                        // Nothing of the batch may stay: its orgs hold all it wrote.
                        for (org, _) in &created {
                            state.orgs.remove(org);
                        }
                        return Err(BulkError::invalid(format!("{at}[{position}]"), refused(error)));
                    }
                }
            }
            Ok(created
                .into_iter()
                .zip(orgs)
                .map(|((org, owner), spec)| {
                    let principal = Principal {
                        org: org.clone(),
                        user: owner.clone(),
                    };
                    let refresh_tokens = (0..spec.refresh_tokens)
                        .map(|_| state.issue_refresh_token(principal.clone()))
                        .collect();
                    let access_tokens = (0..spec.access_tokens)
                        .map(|_| state.issue_access_token(principal.clone()))
                        .collect();
                    CreatedOrg {
                        org,
                        owner,
                        refresh_tokens,
                        access_tokens,
                    }
                })
                .collect())
        })
    }

    /// Every org of the simulator, in id order.
    pub fn orgs(&self) -> Vec<OrgId> {
        self.store.with(|state| state.orgs.keys().cloned().collect())
    }

    /// Adds a user to `org` and returns its id (`005...`).
    pub fn create_user(&self, org: &OrgId) -> Result<String, SeedError> {
        self.store.with(|state| {
            let user = state.next_id("005");
            let org_state = state
                .orgs
                .get_mut(org)
                .ok_or_else(|| SeedError::UnknownOrg(org.clone()))?;
            org_state.users.push(user.clone());
            Ok(user)
        })
    }

    /// The users of `org`, the default user first.
    pub fn users(&self, org: &OrgId) -> Vec<String> {
        self.store
            .with(|state| state.orgs.get(org).map(|org| org.users.clone()))
            .unwrap_or_default()
    }

    /// The user of `org` created with it: the one [`Self::issue_refresh_token`]
    /// authorizes as, and the owner of seeded records that name none.
    pub fn default_user(&self, org: &OrgId) -> Option<String> {
        self.store
            .with(|state| state.orgs.get(org).and_then(|org| org.users.first().cloned()))
    }

    /// Issues a refresh token of `org`'s default user, as that user's
    /// authorization would. A token of an unknown org is refused on refresh.
    pub fn issue_refresh_token(&self, org: &OrgId) -> String {
        match self.default_user(org) {
            Some(user) => self
                .store
                .with(|state| state.issue_refresh_token(Principal { org: org.clone(), user })),
            None => new_refresh_token(),
        }
    }

    /// Issues a refresh token of `user` of `org`: its refreshes answer that
    /// user's identity URL and the records its calls create are that user's.
    pub fn issue_refresh_token_for(&self, org: &OrgId, user: &str) -> Result<String, SeedError> {
        self.store.with(|state| {
            let org_state = state.orgs.get(org).ok_or_else(|| SeedError::UnknownOrg(org.clone()))?;
            if !org_state.users.iter().any(|known| known == user) {
                return Err(SeedError::UnknownUser(user.to_owned()));
            }
            Ok(state.issue_refresh_token(Principal {
                org: org.clone(),
                user: user.to_owned(),
            }))
        })
    }

    /// Revokes a refresh token: refreshing with it answers `invalid_grant`.
    pub fn revoke_refresh_token(&self, token: &str) {
        self.store.with(|state| state.refresh_tokens.remove(token));
    }

    /// Switches refresh token rotation on or off for `org`'s connected app:
    /// with it, every refresh answers a new `refresh_token` and the one used
    /// answers `invalid_grant` ("expired access/refresh token") from then on.
    /// Overrides [`SalesforceConfig::rotate_refresh_tokens`] for the org.
    pub fn set_refresh_token_rotation(&self, org: &OrgId, rotate: bool) -> Result<(), SeedError> {
        self.store.with(|state| {
            let org_state = state
                .orgs
                .get_mut(org)
                .ok_or_else(|| SeedError::UnknownOrg(org.clone()))?;
            org_state.rotate_refresh_tokens = Some(rotate);
            Ok(())
        })
    }

    /// Whether refreshes of `org` rotate the refresh token (`None`: no such org).
    pub fn rotates_refresh_tokens(&self, org: &OrgId) -> Option<bool> {
        let default = self.store.config.rotate_refresh_tokens;
        self.store.with(|state| {
            state
                .orgs
                .get(org)
                .map(|org| org.rotate_refresh_tokens.unwrap_or(default))
        })
    }

    /// Ends every session of `org`: its access tokens answer `INVALID_SESSION_ID`.
    pub fn expire_sessions(&self, org: &OrgId) {
        self.store
            .with(|state| state.access_tokens.retain(|_, session| &session.principal.org != org));
    }

    /// Puts a record of `object` in `org` as if created in Salesforce by the
    /// org's default user, and returns its id. `fields` is a JSON object of the
    /// record's fields; `OwnerId` (a user of the org) defaults to the default
    /// user, and `CreatedDate` and `LastModifiedDate` may be given (any RFC
    /// 3339 time) to date the record in the past; else they are now.
    pub fn insert_record(&self, org: &OrgId, object: &str, fields: Value) -> Result<String, SeedError> {
        let record = seed_fields(object, &fields)?;
        self.store.with(|state| {
            let user = state
                .orgs
                .get(org)
                .and_then(|org| org.users.first().cloned())
                .ok_or_else(|| SeedError::UnknownOrg(org.clone()))?;
            let results = store::create_records(state, org, &user, &[record], true, None);
            match results.into_iter().next() {
                Some(Ok(written)) => Ok(written.id),
                Some(Err(error)) => Err(refused(&error)),
                None => Err(SeedError::Refused("no record".to_owned())),
            }
        })
    }

    /// Changes the record `id` of `object` in `org` as an edit in Salesforce
    /// by the org's default user would: `fields` are written over it and its
    /// `LastModifiedDate` and `SystemModstamp` become now (or the
    /// `LastModifiedDate` given).
    pub fn update_record(&self, org: &OrgId, object: &str, id: &str, fields: Value) -> Result<(), SeedError> {
        let record = seed_fields(object, &fields)?;
        if record.fields.contains_key("CreatedDate") {
            return Err(SeedError::Refused(
                "INVALID_FIELD_FOR_INSERT_UPDATE: Unable to create/update fields: CreatedDate".to_owned(),
            ));
        }
        self.store.with(|state| {
            let org_state = state.orgs.get(org).ok_or_else(|| SeedError::UnknownOrg(org.clone()))?;
            let user = org_state.users.first().cloned().unwrap_or_default();
            let exists = org_state
                .objects
                .get(record.schema.name)
                .is_some_and(|records| records.iter().any(|stored| stored.get("Id") == Some(&json!(id))));
            if !exists {
                return Err(SeedError::UnknownRecord(id.to_owned()));
            }
            store::validate_update(org_state, &record, id).map_err(|error| refused(&error))?;
            store::update(state, org, &user, record.schema, id, &record.fields);
            Ok(())
        })
    }

    /// Puts a Contact with `email` in `org`.
    pub fn insert_contact(&self, org: &OrgId, email: &str) -> Result<String, SeedError> {
        self.insert_record(
            org,
            "Contact",
            serde_json::json!({"Email": email, "LastName": "Contact"}),
        )
    }

    /// Puts a Lead with `email` in `org`.
    pub fn insert_lead(&self, org: &OrgId, email: &str) -> Result<String, SeedError> {
        self.insert_record(
            org,
            "Lead",
            serde_json::json!({"Email": email, "LastName": "Lead", "Company": "Simulated"}),
        )
    }

    /// The records of `object` in `org`, in creation order.
    pub fn records(&self, org: &OrgId, object: &str) -> Vec<Map<String, Value>> {
        let Some(schema) = schema_of(object) else {
            return Vec::new();
        };
        self.store.with(|state| {
            state
                .orgs
                .get(org)
                .and_then(|org| org.objects.get(schema.name))
                .cloned()
                .unwrap_or_default()
        })
    }

    /// The org's use of its daily allocation now.
    pub fn api_usage(&self, org: &OrgId) -> Option<ApiUsage> {
        self.store
            .with(|state| state.orgs.get_mut(org).map(|org| org.allocation.usage(Instant::now())))
    }

    /// Sets the calls counted in the org's last 24 hours, as if made now.
    pub fn set_api_usage(&self, org: &OrgId, used: u64) {
        self.store.with(|state| {
            if let Some(org) = state.orgs.get_mut(org) {
                org.allocation.set_used(used, Instant::now());
            }
        });
    }

    /// Changes the org's daily allocation.
    pub fn set_daily_api_max(&self, org: &OrgId, max: u64) {
        self.store.with(|state| {
            if let Some(org) = state.orgs.get_mut(org) {
                org.allocation.set_max(max);
            }
        });
    }

    /// The next `times` calls of `org` that `fault` applies to answer with it.
    pub fn inject_fault(&self, org: &OrgId, fault: Fault, times: u32) {
        self.arm(org, fault, None, times);
    }

    /// The next `times` calls of `org` to `endpoint` answer with `fault`.
    pub fn inject_fault_on(&self, org: &OrgId, endpoint: Endpoint, fault: Fault, times: u32) {
        self.arm(org, fault, Some(endpoint), times);
    }

    fn arm(&self, org: &OrgId, fault: Fault, endpoint: Option<Endpoint>, times: u32) {
        self.store.with(|state| {
            if let Some(org) = state.orgs.get_mut(org) {
                org.faults.arm(fault, endpoint, times);
            }
        });
    }

    /// Adds one of the org's own validation rules: writes of a record whose
    /// field contains the rule's text are refused.
    pub fn add_validation_rule(&self, org: &OrgId, rule: ValidationRule) {
        self.store.with(|state| {
            if let Some(org) = state.orgs.get_mut(org) {
                org.rules.push(rule);
            }
        });
    }

    /// Disarms every fault of `org`.
    pub fn clear_faults(&self, org: &OrgId) {
        self.store.with(|state| {
            if let Some(org) = state.orgs.get_mut(org) {
                org.faults.clear();
            }
        });
    }

    /// Every call (the token endpoint's too) waits `base` plus a uniformly
    /// random part of `jitter` before it is answered.
    pub fn set_latency(&self, base: Duration, jitter: Duration) {
        self.store.with(|state| state.latency = Latency { base, jitter });
    }

    /// What `org` saw so far.
    pub fn counters(&self, org: &OrgId) -> Counters {
        self.store
            .with(|state| state.orgs.get(org).map(|org| org.counters.clone()))
            .unwrap_or_default()
    }

    /// Calls no org could be told from (unknown tokens, bad requests).
    pub fn unattributed_counters(&self) -> Counters {
        self.store.with(|state| state.unattributed.clone())
    }
}
