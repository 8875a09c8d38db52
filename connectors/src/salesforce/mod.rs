//! Salesforce REST: the OAuth refresh grant, `/limits`, SOQL lookups with
//! `nextRecordsUrl` paging, sObject Collections upserts by external id, and the
//! `Sforce-Limit-Info` usage, with every error mapped to the taxonomy.
//! `shared/reference/providers.md` says how Salesforce behaves; the simulator
//! in `syncfleet-simulators` reproduces it for the tests.

mod auth;
mod client;
mod errors;
mod query;

pub use auth::{ConnectedApp, TokenGrant, TokenSink};
pub use client::{
    COLLECTION_LIMIT, DailyApiRequests, PersonKind, PersonMatch, SObject, SalesforceClient, SalesforceCredentials,
    SalesforceOptions, Upserted,
};
pub use errors::ApiUsage;
