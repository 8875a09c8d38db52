//! Clients for the outside services the fleet talks to: Microsoft Graph, EWS
//! and Gmail mailboxes behind one [`mailbox::Mailbox`] trait, and Salesforce. Only this crate speaks to outside services. Every failure is a
//! [`ConnectorError`], the one taxonomy the worker decides retries, issues and
//! auto-suspend on; no error text ever holds a secret.
//!
//! Every client shares one [`http::HttpClient`]: no redirects, no proxy, and
//! the SSRF guard of [`ssrf`] on every URL and every resolved address.
//!
//! ## TLS
//!
//! HTTPS comes with the `tls` feature: rustls on the ring provider (reqwest's
//! `rustls-no-provider`), so no C toolchain-heavy crate (aws-lc-sys,
//! openssl-sys) is built. Cargo unifies features across the workspace, and
//! once reqwest has a rustls backend *every* reqwest client in the process
//! (the OTLP exporter's too) panics when built before a rustls provider is
//! installed; so a binary that turns the feature on must call
//! [`http::install_tls_provider`] first thing, before telemetry starts. The
//! feature stays off until `common::telemetry::main_with` does so.

pub mod error;
pub mod ews;
pub mod gmail;
pub mod graph;
pub mod http;
pub mod mailbox;
pub mod oauth;
pub mod salesforce;
pub mod ssrf;

pub use error::{ConnectorError, ErrorKind, Provider};
