//! The connectors against the simulators, started in-process on port 0.

#![allow(clippy::unwrap_used)]

mod ews;
mod gmail;
mod graph;
mod salesforce;
mod secrets;
mod ssrf;
mod support;
