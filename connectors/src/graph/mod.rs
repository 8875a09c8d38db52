//! Microsoft Graph for Office 365 mailboxes: message delta of Inbox and Sent
//! Items (`$skiptoken` pages, a `$deltatoken` link stored as the next
//! session's cursor), events and contacts written through JSON `$batch`, the
//! product's master category and mail folder, and the add-in, with every
//! answer mapped to the taxonomy. Tokens come from the Microsoft identity
//! platform through [`crate::oauth::OAuthSession`], which hands each rotated
//! refresh token to its sink. `shared/reference/providers.md` says how Graph
//! behaves; the simulator in `syncfleet-simulators` reproduces it for the
//! tests.

mod batch;
mod client;
mod delta;
mod errors;
mod items;
mod setup;

pub use batch::{BATCH_LIMIT, INLINE_RETRY_LIMIT};
pub use client::{GraphClient, GraphOptions};
pub use items::CRM_ID_PROPERTY;
