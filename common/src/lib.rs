//! What every Syncfleet service shares: configuration read from `SYNCFLEET_*`
//! variables, the domain's vocabulary, the cadence arithmetic, the Salesforce
//! reserve rule, database access and migrations, the queue topology and its
//! publisher, secrets at rest, and telemetry.

pub mod batch;
pub mod cadence;
pub mod config;
pub mod db;
pub mod domain;
pub mod ops;
pub mod queue;
pub mod ratelimit;
pub mod reconnect;
pub mod reserve;
pub mod secrets;
pub mod session_log;
pub mod shutdown;
pub mod telemetry;
