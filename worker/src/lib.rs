//! The sync worker: consumes the priority and cadence queues, holds a per-user
//! lease while a session runs, writes the session with its issues and log in
//! one transaction, and only then acknowledges the message. Admin jobs run
//! the admin actions that touch the mailbox or the CRM.

pub mod admin;
pub mod config;
mod consumer;
mod dead_letters;
pub mod heartbeat;
pub mod metrics;
mod push;
mod session;
pub mod sync;

pub use config::WorkerConfig;
pub use consumer::run;
