//! The Gmail API behind the [`crate::mailbox::Mailbox`] trait: the OAuth2
//! refresh grant at Google's token endpoint (through [`crate::oauth`]), one
//! mailbox-wide message stream (a full sync with `messages.list` and batched
//! `messages.get`, then `history.list`), the product's label, the add-in
//! state, and every error mapped to the taxonomy. Gmail's API writes no
//! events or contacts (those are other Google APIs).
//! `shared/reference/providers.md` says how Gmail behaves; the simulator in
//! `syncfleet-simulators` reproduces it for the tests.

mod batch;
mod client;
mod cursor;
mod errors;
mod messages;
mod sync;

pub use client::{GmailClient, GmailOptions, MAX_BATCH, MAX_PAGE_SIZE, QuotaCosts};
pub use messages::PREVIEW_CHARS;
