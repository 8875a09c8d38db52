//! The scheduler through the real PostgreSQL and RabbitMQ, with real workers.

#![allow(clippy::unwrap_used)]

mod broker_restart;
mod cadence;
mod chart_metrics;
mod failover;
mod gauges;
mod maintenance;
mod outbox;
mod startup;
mod support;
mod traces;
