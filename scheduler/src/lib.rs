//! The cadence scheduler: one active leader, elected through PostgreSQL, puts
//! a sync job for every due user on the cadence queue, recovers what crashed
//! workers left behind, keeps the time partitions in shape, and relays the
//! email outbox over SMTP.

pub mod config;
mod fleet;
mod leader;
mod metrics;
pub mod outbox;
mod scheduler;
mod tick;

pub use config::SchedulerConfig;
pub use scheduler::run;
pub use tick::{Tick, TickReport, sweep};
