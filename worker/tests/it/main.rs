//! The worker through the real PostgreSQL and RabbitMQ.

#![allow(clippy::unwrap_used)]

mod lifecycle;
mod priority;
mod sessions;
mod support;
mod sync;
