//! Salesforce REST: the OAuth refresh grant (with the user's id from the
//! identity URL), `/limits`, SOQL lookups and the changes of one owner's
//! records with `nextRecordsUrl` paging, several queries in one Composite
//! call, sObject Collections upserts by external id, and the
//! `Sforce-Limit-Info` usage, with every error mapped to the taxonomy.
//! `shared/reference/providers.md` says how Salesforce behaves; the simulator
//! in `syncfleet-simulators` reproduces it for the tests.

mod auth;
mod client;
mod composite;
mod errors;
mod query;

pub use auth::{ConnectedApp, TokenGrant, TokenSink};
pub use client::{
    COLLECTION_LIMIT, DailyApiRequests, PersonKind, PersonMatch, SObject, SalesforceClient, SalesforceCredentials,
    SalesforceOptions, Upserted, parse_datetime,
};
pub use composite::{COMPOSITE_QUERY_LIMIT, QueryOutcome};
pub use errors::ApiUsage;
