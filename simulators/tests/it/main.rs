//! The simulators over real HTTP, each started in-process on port 0.

#![allow(clippy::unwrap_used)]

mod binary;
mod ews;
mod gmail;
mod graph;
mod salesforce;
mod smtp;
mod support;
