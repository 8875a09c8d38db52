//! Exchange Web Services (on-premises Exchange): SOAP over HTTP(S) with Basic
//! authentication, Direct Logon or Impersonation, `SyncFolderItems` paging
//! with a batched `GetItem`, batched `CreateItem`/`UpdateItem` of events and
//! contacts, the product's folder and category, and the sidebar add-in, with
//! every answer mapped to the taxonomy. `shared/reference/providers.md` says
//! how Exchange behaves; the simulator in `syncfleet-simulators` reproduces it
//! for the tests.

mod categories;
mod client;
mod errors;
mod parse;
mod soap;

pub use client::{EwsClient, EwsLogon, EwsOptions, MAX_CHANGES_RETURNED};
