//! Clients for the outside services the fleet talks to: Microsoft Graph, EWS
//! and Gmail mailboxes behind one [`mailbox::Mailbox`] trait, and Salesforce.
//! Only this crate speaks to outside services. Every failure is a
//! [`ConnectorError`], the one taxonomy the worker decides retries, issues and
//! auto-suspend on; no error text ever holds a secret.
//!
//! Every client shares one [`http::HttpClient`]: no redirects, no proxy, and
//! the SSRF guard of [`ssrf`] on every URL and every resolved address.
//!
//! ## TLS
//!
//! HTTPS goes through rustls on the ring provider (reqwest's
//! `rustls-no-provider`), so no C toolchain-heavy crate (aws-lc-sys,
//! openssl-sys) is built. Once reqwest has a rustls backend *every* reqwest
//! client of the process (the OTLP exporter's too) needs a rustls provider
//! installed before it is built: `common::telemetry` installs ring's first
//! thing, and [`http::HttpClient::new`] does too.

pub mod error;
pub mod ews;
pub mod gate;
pub mod gmail;
pub mod graph;
pub mod http;
pub mod mailbox;
pub mod oauth;
pub mod salesforce;
pub mod ssrf;

pub use error::{ConnectorError, ErrorKind, Provider};
