//! The Salesforce simulator: the OAuth refresh grant, `/limits`, SOQL queries
//! with paging, sObject Collections create and upsert by external id, the
//! rolling daily allocation with its `Sforce-Limit-Info` header, and the
//! errors Salesforce answers with, as `shared/reference/providers.md` describes
//! them. One server simulates many orgs; an access token says which.
//!
//! A test drives it through [`SalesforceSimulator`]: it creates orgs, tokens and
//! records, arms faults, sets latency and reads records and counters back.

mod control;
mod faults;
mod limits;
mod routes;
mod soql;
mod store;

use std::{collections::BTreeMap, fmt, io, net::SocketAddr, sync::Arc, time::Duration, time::Instant};

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

pub use faults::Fault;
pub use limits::ApiUsage;

use crate::Server;
use store::{Org, Store, schema_of};

/// How the simulated Salesforce behaves.
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// Records per query page (Salesforce: 2,000).
    pub page_size: usize,
    /// The daily API allocation of an org created without its own.
    pub daily_api_max: u64,
    /// Whether a refresh answers with a new refresh token and revokes the one
    /// it was given (refresh token rotation on the connected app).
    pub rotate_refresh_tokens: bool,
    /// How long an access token lives after it was issued.
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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrgId(pub String);

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
    /// A refresh token of that org.
    pub refresh_token: String,
}

impl SalesforceSimulator {
    /// A simulator with no orgs yet.
    pub fn new(config: SalesforceConfig) -> Self {
        Self {
            store: Arc::new(Store::new(config)),
        }
    }

    /// The simulator's routes (the API and its control API), to serve or to
    /// merge into a larger router.
    pub fn router(&self) -> axum::Router {
        routes::router(self.store.clone()).merge(control::router(self.clone()))
    }

    /// Serves the simulator on `listen` (port 0 picks a free port) until
    /// `shutdown` is cancelled.
    pub async fn serve(&self, listen: SocketAddr, shutdown: CancellationToken) -> io::Result<Server> {
        Server::start(listen, self.router(), shutdown).await
    }

    /// A simulator on a free loopback port with one org and a refresh token
    /// for it, what a test starts with; it stops when `shutdown` is cancelled.
    pub async fn start_local(config: SalesforceConfig, shutdown: CancellationToken) -> io::Result<LocalSalesforce> {
        let simulator = Self::new(config);
        let server = simulator.serve(SocketAddr::from(([127, 0, 0, 1], 0)), shutdown).await?;
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

    /// Creates an org whose daily allocation is `daily_api_max` calls.
    pub fn create_org_with_allocation(&self, daily_api_max: u64) -> OrgId {
        self.store.with(|state| {
            let id = OrgId(state.next_id("00D"));
            state.orgs.insert(
                id.clone(),
                Org {
                    allocation: limits::DailyAllocation::new(daily_api_max, Instant::now()),
                    objects: Default::default(),
                    counters: Counters::default(),
                    faults: Default::default(),
                },
            );
            id
        })
    }

    /// Issues a refresh token for `org`, as a user's authorization would.
    pub fn issue_refresh_token(&self, org: &OrgId) -> String {
        let token = format!("5Aep861{}", uuid::Uuid::new_v4().simple());
        self.store
            .with(|state| state.refresh_tokens.insert(token.clone(), org.clone()));
        token
    }

    /// Revokes a refresh token: refreshing with it answers `invalid_grant`.
    pub fn revoke_refresh_token(&self, token: &str) {
        self.store.with(|state| state.refresh_tokens.remove(token));
    }

    /// Ends every session of `org`: its access tokens answer `INVALID_SESSION_ID`.
    pub fn expire_sessions(&self, org: &OrgId) {
        self.store
            .with(|state| state.access_tokens.retain(|_, session| &session.org != org));
    }

    /// Puts a record of `object` in `org` as if created in Salesforce, and
    /// returns its id. `fields` is a JSON object of the record's fields.
    pub fn insert_record(&self, org: &OrgId, object: &str, fields: Value) -> Result<String, SeedError> {
        let schema = schema_of(object).ok_or_else(|| SeedError::UnknownType(object.to_owned()))?;
        let Value::Object(fields) = fields else {
            return Err(SeedError::Refused("fields must be a JSON object".to_owned()));
        };
        let record = store::incoming(schema, &fields).map_err(SeedError::Refused)?;
        self.store.with(|state| {
            if !state.orgs.contains_key(org) {
                return Err(SeedError::UnknownOrg(org.clone()));
            }
            let results = store::create_records(state, org, &[record], true, None);
            match results.into_iter().next() {
                Some(Ok(written)) => Ok(written.id),
                Some(Err(error)) => Err(SeedError::Refused(format!("{}: {}", error.status_code, error.message))),
                None => Err(SeedError::Refused("no record".to_owned())),
            }
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

    /// Disarms every fault of `org`.
    pub fn clear_faults(&self, org: &OrgId) {
        self.store.with(|state| {
            if let Some(org) = state.orgs.get_mut(org) {
                org.faults.clear();
            }
        });
    }

    /// Every call waits `latency` before it is answered.
    pub fn set_latency(&self, latency: Duration) {
        self.store.with(|state| state.latency = latency);
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
